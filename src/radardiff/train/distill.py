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
from radardiff.errors import ConfigError
from radardiff.models import LoadedRun, load_run
from radardiff.models.run import write_manifest
from radardiff.train.checkpoint import load_weights
from radardiff.train.loop import Trainer
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
            "teacher_checkpoint": teacher.checkpoint.name,
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
        ckpt = tmp / "checkpoints" / teacher.checkpoint.name
        teacher.model.save_pretrained(ckpt / teacher.weights, safe_serialization=True)
        write_manifest(ckpt, teacher.cfg)
        shutil.copy2(teacher.checkpoint / "state.json", ckpt / "state.json")
        (tmp / "checkpoints" / "latest").write_text(teacher.checkpoint.name + "\n")

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


class _Distiller(Trainer):
    """A :class:`Trainer` whose student starts as the teacher run's EMA network."""

    METHOD = ""
    CREATED = (KEPT_TEACHER,)

    def __init__(self, cfg: RunConfig, out, resume: bool = False) -> None:
        self.teacher_run = load_teacher(cfg, RunDir(out), resume)
        check_teacher(self.teacher_run, self.METHOD)
        super().__init__(cfg, out, resume)

    def _prepare_run_dir(self) -> None:
        super()._prepare_run_dir()
        if self.acc.is_main_process and not kept_teacher(self.run_dir).is_dir():
            keep_teacher(self.teacher_run, self.run_dir)
        self.acc.wait_for_everyone()

    # the student starts as the teacher, on the teacher's own normalisation
    def _normalizer(self) -> Normalizer:
        norm = copy.deepcopy(self.teacher_run.normalizer)
        norm.valid_indices = valid_sample_indices(self.data, to_db=norm.to_db)
        if self.acc.is_main_process:
            norm.save(self.run_dir.normalizer)
        return norm

    def _build_model(self) -> torch.nn.Module:
        model = super()._build_model()
        model.load_state_dict(self.teacher_run.model.state_dict())
        self.teacher = copy.deepcopy(self.teacher_run.model).float().eval()
        self.teacher.requires_grad_(False)
        return model

    def _make_teacher_denoiser(self) -> Denoiser:
        """The teacher as sampling uses it: the run's x0 clipping, the distillation's guidance,
        the training's precision; on radardiff's convolution kernels where the student trains on
        them (the teacher runs without gradients: the Winograd forward pass)."""
        self.net.follow(self.teacher)
        return self.denoiser.with_options(
            network=self.teacher.to(self.acc.device),
            clip=default_clip(self.cfg, self.normalizer),
            guidance=self.cfg.distill.guidance,
            precision=self.precision,
        )

    _teacher_denoiser: Denoiser | None = None

    @property
    def teacher_denoiser(self) -> Denoiser:
        if self._teacher_denoiser is None:
            self._teacher_denoiser = self._make_teacher_denoiser()
        return self._teacher_denoiser

    def _lr(self, step: int) -> float:
        per = self.cfg.distill.steps_per_stage
        return self.cfg.distill.lr * (1.0 - (step % per) / per)

    def _coefs(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, s) shaped (B, 1, 1, 1), float64; t < 0 is the chain's end (abar = 1)."""
        end = t < 0
        abar = self.diffusion.schedule.abar_at_tensor(t.clamp_min(0.0))
        abar = torch.where(end, torch.ones_like(abar), abar).reshape(-1, 1, 1, 1)
        return abar.sqrt(), (1.0 - abar).clamp_min(0.0).sqrt()

    def _student_x0(self, z: torch.Tensor, t: torch.Tensor, cond, denoiser=None) -> torch.Tensor:
        """The student's (or ``denoiser``'s) x0 estimate of ``z`` at trained times ``t`` (>= 0),
        unclipped."""
        out = (denoiser or self.denoiser).network_output(z, t, cond)
        abar = (self._coefs(t)[0] ** 2).reshape(-1)
        c = z.shape[1]
        return x0_and_eps(out[:, :c].float(), z, abar, self.cfg.diffusion.prediction)[0]

    def _inputs(self, batch, gen, noise_gen):
        """(clean x0 with invalid pixels filled, mask, conditioning, noise) of a batch."""
        device = self.acc.device
        x0, low = target_and_condition(self.cfg, to_device(batch["image"], device))
        mask = to_device(batch["mask"], device)
        noise = torch.randn(x0.shape, generator=noise_gen, device=noise_gen.device).to(device)
        cond = batch_conditioning(
            self.denoiser, self.diffusion, batch, gen, noise_gen, low, drop_labels=False
        )
        return fill_invalid(x0, mask), mask, cond, noise


class ProgressiveDistiller(_Distiller):
    """A :class:`Trainer` whose objective is progressive distillation of ``teacher``."""

    METHOD = "progressive"

    # ---- stages -------------------------------------------------------------------------------
    @property
    def stage(self) -> int:
        return min(self.state.step // self.cfg.distill.steps_per_stage, self.cfg.distill.stages - 1)

    def student_steps(self, stage: int | None = None) -> int:
        stage = self.stage if stage is None else stage
        return self.cfg.distill.teacher_steps // 2 ** (stage + 1)

    def _after_step(self) -> None:
        per = self.cfg.distill.steps_per_stage
        step = self.state.step
        if step % per or step >= self.cfg.train.steps:
            return
        # a stage ends: its student (EMA) teaches the next one and starts it
        best = self.ema.primary.state_dict()
        self.teacher.load_state_dict(best)
        self.raw_model.load_state_dict(best)
        for ema in self.ema.models:
            ema.load_state_dict(best)
        inner = getattr(self.opt, "optimizer", self.opt)
        inner.state.clear()
        self._teacher_denoiser = None

    def _checkpoint_extras(self) -> dict[str, torch.nn.Module]:
        return {"teacher": self.teacher}

    def _load_extras(self, ckpt: Path) -> None:
        if (ckpt / "teacher").is_dir():
            load_weights(self.teacher, ckpt / "teacher")

    # ---- the objective ------------------------------------------------------------------------
    def _loss(self, batch, gen, noise_gen):
        device = self.acc.device
        n_steps = self.student_steps()
        T = self.cfg.diffusion.timesteps
        b = batch["image"].shape[0]
        i = to_device(torch.randint(1, n_steps + 1, (b,), generator=gen), device).double()
        t, t_mid, t_end = (T * (i - k) / n_steps - 1.0 for k in (0.0, 0.5, 1.0))
        x0, mask, cond, noise = self._inputs(batch, gen, noise_gen)
        a_t, s_t = self._coefs(t)
        a_m, s_m = self._coefs(t_mid)
        a_e, s_e = self._coefs(t_end)
        z = (a_t * x0 + s_t * noise).float()
        with torch.no_grad():
            teacher = self.teacher_denoiser
            target = two_step_target(
                lambda x, tt: teacher(x, tt, cond),
                z,
                (t, t_mid),
                ((a_t, s_t), (a_m, s_m), (a_e, s_e)),
            )
        x_hat = self._student_x0(z, t, cond)
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


class ConsistencyDistiller(_Distiller):
    """A :class:`Trainer` whose objective is consistency distillation of ``teacher``."""

    METHOD = "consistency"

    _grid: torch.Tensor | None = None
    target: torch.nn.Module | None = None
    _target_denoiser: Denoiser | None = None

    def _build_model(self) -> torch.nn.Module:
        model = super()._build_model()
        if self.cfg.distill.target_ema > 0:
            self.target = copy.deepcopy(self.teacher).float().eval()
            self.target.requires_grad_(False)
        return model

    def _after_step(self) -> None:
        if self.target is None:
            return
        dst = list(self.target.parameters())
        src = [p.detach().float() for p in self.raw_model.parameters()]
        torch._foreach_lerp_(dst, src, 1.0 - self.cfg.distill.target_ema)

    def _checkpoint_extras(self) -> dict[str, torch.nn.Module]:
        return {} if self.target is None else {"target": self.target}

    def _load_extras(self, ckpt: Path) -> None:
        if self.target is not None and (ckpt / "target").is_dir():
            load_weights(self.target, ckpt / "target")

    def _target_x0(self, z: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
        """f^-: the target network's x0 estimate (the student itself when target_ema = 0)."""
        if self.target is None:
            return self._student_x0(z, t, cond)
        if self._target_denoiser is None:
            self._target_denoiser = self.denoiser.with_options(
                network=self.target.to(self.acc.device)
            )
        return self._student_x0(z, t, cond, self._target_denoiser)

    def _loss(self, batch, gen, noise_gen):
        device = self.acc.device
        if self._grid is None:
            self._grid = consistency_grid(self.diffusion.schedule, self.cfg.distill.teacher_steps)
        b = batch["image"].shape[0]
        n = torch.randint(1, self.cfg.distill.teacher_steps + 1, (b,), generator=gen)
        t_n, t_prev = (to_device(self._grid[k], device) for k in (n, n - 1))
        x0, mask, cond, noise = self._inputs(batch, gen, noise_gen)
        a_n, s_n = self._coefs(t_n)
        z = (a_n * x0 + s_n * noise).float()
        with torch.no_grad():
            target = consistency_target(
                lambda x, tt: self.teacher_denoiser(x, tt, cond),
                lambda x, tt: self._target_x0(x, tt, cond),
                z,
                t_n,
                t_prev,
                self._coefs(t_prev),
            )
        x_hat = self._student_x0(z, t_n, cond)
        per_sample = masked_mean(pseudo_huber(x_hat - target, self.cfg.distill.huber_c), mask)
        return per_sample.mean(), per_sample.detach(), t_n.float()


def distill(cfg: RunConfig, out, resume: bool = False, on_progress=None):
    """Distil ``cfg.distill.teacher`` into the student run ``out`` (or resume it)."""
    methods = {"progressive": ProgressiveDistiller, "consistency": ConsistencyDistiller}
    if cfg.distill.method not in methods:
        raise ConfigError(
            f"distill.method '{cfg.distill.method}': use 'progressive' or 'consistency'"
        )
    return methods[cfg.distill.method](cfg, out, resume).run(on_progress)


__all__ = [
    "ConsistencyDistiller",
    "ProgressiveDistiller",
    "check_teacher",
    "consistency_grid",
    "consistency_target",
    "distill",
    "pseudo_huber",
    "student_config",
]
