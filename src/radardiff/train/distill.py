"""Distillation: a student that samples in a few network calls.

Both methods train through the :class:`Trainer`'s loop (accelerate, EMA, atomic checkpoints,
bit-identical resume, NaN stop, TensorBoard); the student starts from the teacher's EMA weights on
the teacher's normalisation, and its run directory is a normal run.

**Progressive distillation** (Salimans and Ho 2022). A student starts as a copy of the
teacher's EMA network and learns to do in one DDIM step what two DDIM steps of the teacher do. Each stage halves the step count: stage 0 turns the teacher's
``teacher_steps`` DDIM steps into half as many, and the student then becomes the teacher of the
next stage, down to ``steps``.

On the student's grid of N steps the trained timesteps are ``t_i = T i / N - 1`` (i = 1..N,
fractional in general; ``t_0`` is the end, abar = 1). For a training image x and a random i, with
``z = a_t x + s_t eps`` (``a = sqrt(abar)``, ``s = sqrt(1 - abar)``), the teacher's two DDIM steps
``t_i -> t_{i-1/2} -> t_{i-1}`` give ``z''``; the one x0 that a single DDIM step from ``z`` would
have to use to land on ``z''`` is the target (their Algorithm 2):

    x~ = (z'' - (s_{t_{i-1}} / s_t) z) / (a_{t_{i-1}} - (s_{t_{i-1}} / s_t) a_t)

and the loss is ``(1 + SNR_t) |x^ - x~|^2`` over valid pixels (their "SNR+1" weighting: the MSE
of v). The teacher's DDIM steps use its denoiser as sampling does (x0 clipping, guidance). The
learning rate falls linearly to 0 within each stage; at a stage's end the student's EMA becomes
both the next teacher and the next student's start, with fresh optimizer moments.

The student is sampled by ``radardiff sample`` with DDIM at ``steps`` steps (its recipe's
default); each checkpoint also keeps the current stage's teacher (``teacher/``), so a killed
distillation resumes bit-identically.

**Consistency distillation** (Song et al. 2023, Algorithm 2). The student's x0 estimate
``f(z, t)`` learns to be the same for every state of one probability-flow ODE trajectory of the
teacher, so one call at the largest noise level gives a sample. The teacher's ODE is discretised on
``teacher_steps`` Karras noise levels ``sigma_1 < ... < sigma_N`` (rho = 7, from the schedule's
smallest to its largest, as trained timesteps ``t_n = t(sigma_n)``) plus the end ``t_0`` (data,
where ``f`` is the identity: the boundary condition). For a training image, a random n and
``z_n = a_n x + s_n eps``, one DDIM step of the teacher ``t_n -> t_{n-1}`` gives ``z_{n-1}``, and
the loss is the pseudo-Huber distance ``sqrt(|f(z_n, t_n) - f^-(z_{n-1}, t_{n-1})|^2 + c^2) - c``
(per pixel, over valid pixels; Song and Dhariwal 2023), ``f^-`` the target network: an EMA of
the student with decay ``target_ema`` per step (0.95, Song et al. 2023), kept in each checkpoint
(``target/``), or with ``target_ema = 0`` the student itself without gradient (Song and Dhariwal
2023). The learning rate falls linearly to 0 over the one stage of ``steps_per_stage`` steps.
The student samples by multistep consistency sampling (the ``consistency`` sampler) at ``steps``
calls.
"""

from __future__ import annotations

import copy
import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from radardiff._files import replace_dir
from radardiff.config import DistillConfig, RunConfig, RunDir, validate_config
from radardiff.config.io import apply_overrides, config_to_dict
from radardiff.data.normalize import Normalizer, valid_sample_indices
from radardiff.diffusion import Denoiser, default_clip, fill_invalid, masked_mean, x0_and_eps
from radardiff.diffusion.samplers import karras_sigmas
from radardiff.diffusion.schedule import signal_noise
from radardiff.errors import ConfigError
from radardiff.models import LoadedRun, load_run
from radardiff.models.run import write_manifest
from radardiff.train.checkpoint import load_weights
from radardiff.train.loop import Trainer
from radardiff.train.objective import Objective
from radardiff.train.step import batch_conditioning, target_and_condition, to_device

log = logging.getLogger(__name__)


def student_config(
    teacher: LoadedRun,
    distill: dict,
    name: str | None = None,
    overrides: list[str] | None = None,
) -> RunConfig:
    """The student's run config: the teacher's model, process and data, the distillation
    section (``distill`` over the defaults), the training it implies, its sampler at the
    student's steps (DDIM, or the consistency sampler), then ``--set`` style ``overrides``."""
    check_teacher(teacher, distill.get("method", "progressive"))
    t = teacher.cfg
    defaults = {k: v for k, v in config_to_dict(t.distill).items() if k != "teacher_steps"}
    d = validate_config(
        {
            **defaults,
            **distill,
            "teacher": str(teacher.run.root.resolve()),
            "teacher_checkpoint": teacher.checkpoint_name,
        },
        "distill",
        DistillConfig,
    )
    train = t.train.model_copy(
        update={
            "steps": d.stages * d.steps_per_stage,
            "lr": d.lr,
            "warmup_steps": 0,
            "lr_schedule": "constant",
            "checkpoint_every": min(t.train.checkpoint_every, d.steps_per_stage),
        }
    )
    sampler = "consistency" if d.method == "consistency" else "ddim"
    sample = t.sample.model_copy(
        update={"sampler": sampler, "steps": d.steps, "options": {}, "eta": 0.0}
    )
    data = t.data.model_copy(update={"val": None})
    cfg = t.model_copy(
        update={
            "name": name or f"{t.name}-distilled{d.steps}",
            "distill": d,
            "train": train,
            "sample": sample,
            "data": data,
        }
    )
    if overrides:
        cfg = validate_config(apply_overrides(config_to_dict(cfg), overrides), "--set")
        steps = cfg.distill.stages * cfg.distill.steps_per_stage  # after a --set of distill.*
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": steps})})
    return cfg


def check_teacher(teacher: LoadedRun, method: str = "progressive") -> None:
    """Refuse, with one line, a teacher that distillation by ``method`` cannot serve."""
    d = teacher.cfg.diffusion
    where = f"{teacher.run.root}: cannot be distilled by {method} distillation"
    if d.variance == "learned_range":
        raise ConfigError(
            f"{where}: its variance is learned (the student learns only the mean; a variance "
            "would not be distilled)"
        )
    if d.prediction == "eps":
        raise ConfigError(
            f"{where}: it predicts eps, whose x0 estimate is unstable at the few-step student's "
            "noise levels (Salimans and Ho 2022, sec. 4); train the teacher with "
            "diffusion.prediction = 'v' (the recipes' default)"
        )
    if teacher.cfg.distill.method != "none":
        raise ConfigError(f"{teacher.run.root}: is itself a distilled student; distil its teacher")


def two_step_target(denoise, z: torch.Tensor, times, coefs) -> torch.Tensor:
    """The x0 that one DDIM step from ``z`` must use to land where two DDIM steps of
    ``denoise`` land (Salimans and Ho 2022, Algorithm 2).

    ``times`` = (t, t_mid); ``coefs`` = ((a_t, s_t), (a_mid, s_mid), (a_end, s_end)), each
    broadcastable to ``z``; a DDIM step from level 1 to level 2 is ``a_2 x0 + s_2 eps`` with the
    denoiser's coherent (x0, eps).
    """
    (a_t, s_t), (a_m, s_m), (a_e, s_e) = coefs
    first = denoise(z, times[0])
    z_mid = (a_m * first.x0 + s_m * first.eps).to(z.dtype)
    second = denoise(z_mid, times[1])
    z_end = a_e * second.x0 + s_e * second.eps
    ratio = s_e / s_t
    return (z_end - ratio * z) / (a_e - ratio * a_t)


KEPT_TEACHER = "teacher_run"


def kept_teacher(student: RunDir) -> Path:
    """Where a student run keeps what it needs of its teacher (:func:`keep_teacher`)."""
    return student.root / KEPT_TEACHER


def keep_teacher(teacher: LoadedRun, student: RunDir) -> Path:
    """Keep the teacher checkpoint the student learns from inside the student's run, as a run of
    its own (config, normaliser, data description and the one checkpoint's weights, with a
    manifest), so that the student can always resume: the teacher's own run may go on training
    and its ``keep_last`` rotation delete that checkpoint. The weights are saved from the network
    loaded (and verified) when the student started, not copied from files that may be gone."""
    dest = kept_teacher(student)
    src = teacher.run

    def write(tmp: Path) -> None:
        for path in (src.config, src.normalizer, src.data_info):
            shutil.copy2(path, tmp / path.name)
        ckpt = tmp / "checkpoints" / teacher.checkpoint_name
        teacher.model.save_pretrained(ckpt / teacher.weights, safe_serialization=True)
        write_manifest(ckpt, teacher.cfg)
        shutil.copy2(teacher.checkpoint / "state.json", ckpt / "state.json")
        (tmp / "checkpoints" / "latest").write_text(teacher.checkpoint_name + "\n")

    replace_dir(dest, write)
    return dest


def load_teacher(cfg: RunConfig, student: RunDir, resume: bool) -> LoadedRun:
    """The teacher of a student run: the one it keeps (on resume), else the teacher's run."""
    kept = kept_teacher(student)
    if resume and kept.is_dir():
        return load_run(kept, checkpoint=cfg.distill.teacher_checkpoint)
    if resume and RunDir(student.root).latest_checkpoint() is not None:
        log.warning("%s: keeps no copy of its teacher (an older radardiff); loading %s",
                    student.root, cfg.distill.teacher)  # fmt: skip
    return load_run(cfg.distill.teacher, checkpoint=cfg.distill.teacher_checkpoint)


class _DistillObjective(Objective):
    """A student that starts as the teacher run's EMA network, on the teacher's normalisation,
    and learns from the teacher as sampling uses it."""

    created = (KEPT_TEACHER,)

    def __init__(self, teacher_run: LoadedRun) -> None:
        check_teacher(teacher_run, self.method)
        self.teacher_run = teacher_run
        self.teacher: torch.nn.Module | None = None
        self._teacher_denoiser: Denoiser | None = None

    def run_ready(self, trainer) -> None:
        if not kept_teacher(trainer.run_dir).is_dir():
            keep_teacher(self.teacher_run, trainer.run_dir)

    def normalizer(self, trainer) -> Normalizer:
        norm = copy.deepcopy(self.teacher_run.normalizer)
        norm.valid_indices = valid_sample_indices(trainer.data, to_db=norm.to_db)
        return norm

    def network(self, trainer) -> torch.nn.Module:
        model = super().network(trainer)
        model.load_state_dict(self.teacher_run.model.state_dict())
        self.teacher = copy.deepcopy(self.teacher_run.model).float().eval()
        self.teacher.requires_grad_(False)
        return model

    def teacher_denoiser(self, trainer) -> Denoiser:
        """The teacher as sampling uses it: the run's x0 clipping, the distillation's guidance,
        the training's precision; on the kernels where the student trains on them (the teacher
        runs without gradients)."""
        if self._teacher_denoiser is None:
            trainer.net.follow(self.teacher)
            self._teacher_denoiser = trainer.denoiser.with_options(
                network=self.teacher.to(trainer.acc.device),
                clip=default_clip(trainer.cfg, trainer.normalizer),
                guidance=trainer.cfg.distill.guidance,
                precision=trainer.precision,
            )
        return self._teacher_denoiser

    def lr(self, trainer, step: int) -> float:
        per = trainer.cfg.distill.steps_per_stage
        return trainer.cfg.distill.lr * (1.0 - (step % per) / per)

    @staticmethod
    def coefs(trainer, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, s) shaped (B, 1, 1, 1), float64; t < 0 is the chain's end (abar = 1)."""
        end = t < 0
        abar = trainer.diffusion.schedule.abar_at_tensor(t.clamp_min(0.0))
        return signal_noise(torch.where(end, torch.ones_like(abar), abar).reshape(-1, 1, 1, 1))

    def student_x0(self, trainer, z, t, cond, denoiser=None) -> torch.Tensor:
        """The student's (or ``denoiser``'s) x0 estimate of ``z`` at trained times ``t`` (>= 0),
        unclipped."""
        out = (denoiser or trainer.denoiser).network_output(z, t, cond)
        abar = (self.coefs(trainer, t)[0] ** 2).reshape(-1)
        c = z.shape[1]
        return x0_and_eps(out[:, :c].float(), z, abar, trainer.cfg.diffusion.prediction)[0]

    @staticmethod
    def inputs(trainer, batch, gen, noise_gen):
        """(clean x0 with invalid pixels filled, mask, conditioning, noise) of a batch."""
        device = trainer.acc.device
        x0, low = target_and_condition(trainer.cfg, to_device(batch["image"], device))
        mask = to_device(batch["mask"], device)
        noise = torch.randn(x0.shape, generator=noise_gen, device=noise_gen.device).to(device)
        cond = batch_conditioning(
            trainer.denoiser, trainer.diffusion, batch, gen, noise_gen, low, drop_labels=False
        )
        return fill_invalid(x0, mask), mask, cond, noise


class ProgressiveObjective(_DistillObjective):
    """Progressive distillation of the teacher (see the module docstring)."""

    method = "progressive"

    @staticmethod
    def stage(trainer) -> int:
        d = trainer.cfg.distill
        return min(trainer.state.step // d.steps_per_stage, d.stages - 1)

    def student_steps(self, trainer, stage: int | None = None) -> int:
        stage = self.stage(trainer) if stage is None else stage
        return trainer.cfg.distill.teacher_steps // 2 ** (stage + 1)

    def after_step(self, trainer) -> None:
        per, step = trainer.cfg.distill.steps_per_stage, trainer.state.step
        if step % per or step >= trainer.cfg.train.steps:
            return
        # a stage ends: its student (EMA) teaches the next one and starts it
        best = trainer.ema.primary.state_dict()
        self.teacher.load_state_dict(best)
        trainer.raw_model.load_state_dict(best)
        for ema in trainer.ema.models:
            ema.load_state_dict(best)
        inner = getattr(trainer.opt, "optimizer", trainer.opt)
        inner.state.clear()
        self._teacher_denoiser = None

    def extras(self) -> dict[str, torch.nn.Module]:
        return {"teacher": self.teacher}

    def load_extras(self, ckpt: Path) -> None:
        if (ckpt / "teacher").is_dir():
            load_weights(self.teacher, ckpt / "teacher")

    def loss(self, trainer, batch, gen, noise_gen):
        device, n_steps = trainer.acc.device, self.student_steps(trainer)
        T = trainer.cfg.diffusion.timesteps
        b = batch["image"].shape[0]
        i = to_device(torch.randint(1, n_steps + 1, (b,), generator=gen), device).double()
        t, t_mid, t_end = (T * (i - k) / n_steps - 1.0 for k in (0.0, 0.5, 1.0))
        x0, mask, cond, noise = self.inputs(trainer, batch, gen, noise_gen)
        coefs = tuple(self.coefs(trainer, tt) for tt in (t, t_mid, t_end))
        (a_t, s_t) = coefs[0]
        z = (a_t * x0 + s_t * noise).float()
        with torch.no_grad():
            teacher = self.teacher_denoiser(trainer)
            target = two_step_target(lambda x, tt: teacher(x, tt, cond), z, (t, t_mid), coefs)
        x_hat = self.student_x0(trainer, z, t, cond)
        abar = (a_t**2).reshape(-1)
        weight = (1.0 + abar / (1.0 - abar)).float()  # 1 + SNR: the MSE of v
        per_sample = masked_mean((x_hat - target.float()) ** 2, mask) * weight
        return per_sample.mean(), per_sample.detach(), t.float()


def consistency_grid(schedule, intervals: int) -> torch.Tensor:
    """The consistency distillation's times ``t_0 < t_1 < ... < t_N`` (``N = intervals``):
    ``t_0 = -1`` is the end of the chain (data), ``t_1..t_N`` the trained timesteps of N Karras
    noise levels (rho = 7) from the schedule's smallest to its largest, float64."""
    sig = karras_sigmas(schedule.sigma_min, schedule.sigma_max, intervals)[::-1]
    return torch.from_numpy(np.append(-1.0, schedule.time_at(sig.copy())))


def consistency_target(
    teacher, student, z: torch.Tensor, t_n: torch.Tensor, t_prev: torch.Tensor, coefs_prev
) -> torch.Tensor:
    """The consistency distillation's target for ``z`` at times ``t_n``: the student's x0
    estimate ``f(z_prev, t_prev)`` of one DDIM step of the teacher's ODE to ``t_prev``,
    ``z_prev = a_prev x0 + s_prev eps``; where ``t_prev < 0`` (the end: data), ``z_prev`` itself
    (``f(x, end) = x``, the boundary condition).

    ``teacher(z, t)`` returns a coherent (x0, eps) pair, ``student(z, t)`` an x0 estimate;
    ``coefs_prev = (a_prev, s_prev)`` broadcastable to ``z``.
    """
    out = teacher(z, t_n)
    a_p, s_p = coefs_prev
    z_prev = (a_p * out.x0 + s_p * out.eps).to(z.dtype)
    end = (t_prev < 0).reshape(-1, *([1] * (z.dim() - 1)))
    return torch.where(end, z_prev, student(z_prev, t_prev.clamp_min(0.0)).to(z.dtype))


def pseudo_huber(diff: torch.Tensor, c: float) -> torch.Tensor:
    """``sqrt(diff^2 + c^2) - c`` per element: squared error below c, absolute error above."""
    return (diff.square() + c * c).sqrt() - c


class ConsistencyObjective(_DistillObjective):
    """Consistency distillation of the teacher (see the module docstring)."""

    method = "consistency"

    def __init__(self, teacher_run: LoadedRun) -> None:
        super().__init__(teacher_run)
        self.target: torch.nn.Module | None = None
        self._target_denoiser: Denoiser | None = None
        self._grid: torch.Tensor | None = None

    def network(self, trainer) -> torch.nn.Module:
        model = super().network(trainer)
        if trainer.cfg.distill.target_ema > 0:
            self.target = copy.deepcopy(self.teacher).float().eval()
            self.target.requires_grad_(False)
        return model

    def after_step(self, trainer) -> None:
        if self.target is None:
            return
        dst = list(self.target.parameters())
        src = [p.detach().float() for p in trainer.raw_model.parameters()]
        torch._foreach_lerp_(dst, src, 1.0 - trainer.cfg.distill.target_ema)

    def extras(self) -> dict[str, torch.nn.Module]:
        return {} if self.target is None else {"target": self.target}

    def load_extras(self, ckpt: Path) -> None:
        if self.target is not None and (ckpt / "target").is_dir():
            load_weights(self.target, ckpt / "target")

    def target_x0(self, trainer, z: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
        """f^-: the target network's x0 estimate (the student itself when target_ema = 0)."""
        if self.target is None:
            return self.student_x0(trainer, z, t, cond)
        if self._target_denoiser is None:
            self._target_denoiser = trainer.denoiser.with_options(
                network=self.target.to(trainer.acc.device)
            )
        return self.student_x0(trainer, z, t, cond, self._target_denoiser)

    def loss(self, trainer, batch, gen, noise_gen):
        d, device = trainer.cfg.distill, trainer.acc.device
        if self._grid is None:
            self._grid = consistency_grid(trainer.diffusion.schedule, d.teacher_steps)
        b = batch["image"].shape[0]
        n = torch.randint(1, d.teacher_steps + 1, (b,), generator=gen)
        t_n, t_prev = (to_device(self._grid[k], device) for k in (n, n - 1))
        x0, mask, cond, noise = self.inputs(trainer, batch, gen, noise_gen)
        a_n, s_n = self.coefs(trainer, t_n)
        z = (a_n * x0 + s_n * noise).float()
        with torch.no_grad():
            teacher = self.teacher_denoiser(trainer)
            target = consistency_target(
                lambda x, tt: teacher(x, tt, cond),
                lambda x, tt: self.target_x0(trainer, x, tt, cond),
                z,
                t_n,
                t_prev,
                self.coefs(trainer, t_prev),
            )
        x_hat = self.student_x0(trainer, z, t_n, cond)
        per_sample = masked_mean(pseudo_huber(x_hat - target, d.huber_c), mask)
        return per_sample.mean(), per_sample.detach(), t_n.float()


OBJECTIVES = {"progressive": ProgressiveObjective, "consistency": ConsistencyObjective}


def distiller(cfg: RunConfig, out, resume: bool = False) -> Trainer:
    """The trainer of the student run ``out`` of ``cfg.distill.teacher`` (or of its resume)."""
    if cfg.distill.method not in OBJECTIVES:
        raise ConfigError(
            f"distill.method '{cfg.distill.method}': use 'progressive' or 'consistency'"
        )
    teacher = load_teacher(cfg, RunDir(out), resume)
    return Trainer(cfg, out, resume, objective=OBJECTIVES[cfg.distill.method](teacher))


def distill(cfg: RunConfig, out, resume: bool = False, on_progress=None):
    """Distil ``cfg.distill.teacher`` into the student run ``out`` (or resume it)."""
    return distiller(cfg, out, resume).run(on_progress)


__all__ = [
    "ConsistencyObjective",
    "ProgressiveObjective",
    "check_teacher",
    "consistency_grid",
    "consistency_target",
    "distill",
    "distiller",
    "pseudo_huber",
    "student_config",
]
