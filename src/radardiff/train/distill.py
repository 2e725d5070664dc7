"""Progressive distillation (Salimans and Ho 2022): a student that samples in a few steps.

A student starts as a copy of the teacher's EMA network and learns to do in one DDIM step what
two DDIM steps of the teacher do. Each stage halves the step count: stage 0 turns the teacher's
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

The student is a normal run directory: sampled by ``radardiff sample`` with DDIM at ``steps``
steps (its recipe's default), its weights load with ``UNet2DModel.from_pretrained``; each
checkpoint also keeps the current stage's teacher (``teacher/``), so a killed distillation
resumes bit-identically.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from radardiff.config import DistillConfig, RunConfig, validate_config
from radardiff.config.io import apply_overrides, config_to_dict
from radardiff.data.normalize import Normalizer, valid_sample_indices
from radardiff.diffusion import Denoiser, default_clip, fill_invalid, masked_mean, x0_and_eps
from radardiff.errors import ConfigError
from radardiff.models import LoadedRun, load_run
from radardiff.train.checkpoint import load_weights
from radardiff.train.loop import Trainer
from radardiff.train.step import batch_conditioning, target_and_condition, to_device


def student_config(
    teacher: LoadedRun,
    distill: dict,
    name: str | None = None,
    overrides: list[str] | None = None,
) -> RunConfig:
    """The student's run config: the teacher's model, process and data, the distillation
    section (``distill`` over the defaults), the training it implies, DDIM at the student's
    steps as its sampler, then ``--set`` style ``overrides``."""
    check_teacher(teacher)
    t = teacher.cfg
    d = validate_config(
        {
            **config_to_dict(t.distill),
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
    sample = t.sample.model_copy(
        update={"sampler": "ddim", "steps": d.steps, "options": {}, "eta": 0.0}
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


def check_teacher(teacher: LoadedRun) -> None:
    """Refuse, with one line, a teacher that progressive distillation cannot serve."""
    d = teacher.cfg.diffusion
    where = f"{teacher.run.root}: cannot be distilled progressively"
    if d.variance == "learned_range":
        raise ConfigError(f"{where}: its variance is learned (the student's steps are DDIM's)")
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


class ProgressiveDistiller(Trainer):
    """A :class:`Trainer` whose objective is progressive distillation of ``teacher``."""

    METHOD = "progressive"

    def __init__(self, cfg: RunConfig, out, resume: bool = False) -> None:
        self.teacher_run = load_run(cfg.distill.teacher, checkpoint=cfg.distill.teacher_checkpoint)
        check_teacher(self.teacher_run)
        super().__init__(cfg, out, resume)

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
        the training's precision."""
        return self.denoiser.with_options(
            network=self.teacher.to(self.acc.device),
            clip=default_clip(self.cfg, self.normalizer),
            guidance=self.cfg.distill.guidance,
            precision=self.cfg.train.mixed_precision,
        )

    # ---- stages -------------------------------------------------------------------------------
    @property
    def stage(self) -> int:
        return min(self.state.step // self.cfg.distill.steps_per_stage, self.cfg.distill.stages - 1)

    def student_steps(self, stage: int | None = None) -> int:
        stage = self.stage if stage is None else stage
        return self.cfg.distill.teacher_steps // 2 ** (stage + 1)

    def _lr(self, step: int) -> float:
        per = self.cfg.distill.steps_per_stage
        return self.cfg.distill.lr * (1.0 - (step % per) / per)

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
    _teacher_denoiser: Denoiser | None = None

    def _loss(self, batch, gen, noise_gen):
        if self._teacher_denoiser is None:
            self._teacher_denoiser = self._make_teacher_denoiser()
        device = self.acc.device
        n_steps = self.student_steps()
        T = self.cfg.diffusion.timesteps
        x0, low = target_and_condition(self.cfg, to_device(batch["image"], device))
        mask = to_device(batch["mask"], device)
        b = x0.shape[0]
        i = to_device(torch.randint(1, n_steps + 1, (b,), generator=gen), device).double()
        t, t_mid, t_end = (T * (i - k) / n_steps - 1.0 for k in (0.0, 0.5, 1.0))
        a_t, s_t = self._coefs(t)
        a_m, s_m = self._coefs(t_mid)
        a_e, s_e = self._coefs(t_end)
        noise = torch.randn(x0.shape, generator=noise_gen, device=noise_gen.device).to(device)
        x0 = fill_invalid(x0, mask)
        z = (a_t * x0 + s_t * noise).float()
        cond = batch_conditioning(
            self.denoiser, self.diffusion, batch, gen, noise_gen, low, drop_labels=False
        )
        with torch.no_grad():
            teacher = self._teacher_denoiser
            target = two_step_target(
                lambda x, tt: teacher(x, tt, cond),
                z,
                (t, t_mid),
                ((a_t, s_t), (a_m, s_m), (a_e, s_e)),
            )
        out = self.denoiser.network_output(z, t, cond)
        c = x0.shape[1]
        abar = (a_t**2).reshape(-1)
        x_hat, _ = x0_and_eps(out[:, :c].float(), z, abar, self.cfg.diffusion.prediction)
        weight = (1.0 + abar / (1.0 - abar)).float()  # 1 + SNR: the MSE of v
        per_sample = masked_mean((x_hat - target.float()) ** 2, mask) * weight
        return per_sample.mean(), per_sample.detach(), t.float()

    def _coefs(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, s) shaped (B, 1, 1, 1), float64; t < 0 is the chain's end (abar = 1)."""
        end = t < 0
        abar = self.diffusion.schedule.abar_at_tensor(t.clamp_min(0.0))
        abar = torch.where(end, torch.ones_like(abar), abar).reshape(-1, 1, 1, 1)
        return abar.sqrt(), (1.0 - abar).clamp_min(0.0).sqrt()


def distill(cfg: RunConfig, out, resume: bool = False, on_progress=None):
    """Distil ``cfg.distill.teacher`` into the student run ``out`` (or resume it)."""
    if cfg.distill.method != "progressive":
        raise ConfigError(f"distill.method '{cfg.distill.method}': use 'progressive'")
    return ProgressiveDistiller(cfg, out, resume).run(on_progress)


__all__ = ["ProgressiveDistiller", "check_teacher", "distill", "student_config"]
