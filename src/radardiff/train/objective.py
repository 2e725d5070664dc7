"""What a training run optimises: an objective, handed to the one training loop.

The loop (:class:`radardiff.train.loop.Trainer`) owns everything every run needs: the run
directory and its lock, data and normalisation, the network's preparation (kernels, compile),
accelerate's processes and precision, the EMA, the optimizer, logging, validation, checkpoints
and resume. An objective owns what differs between runs: the network a fresh run starts from,
the loss of a micro-batch, the learning rate, what happens after each step, and which networks
beside the trained one its checkpoints keep. Plain training is :class:`DiffusionObjective`;
distillation's two methods are objectives too (:mod:`radardiff.train.distill`).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from radardiff.data.normalize import Normalizer
from radardiff.models import build_unet
from radardiff.train.step import train_step


def lr_at(cfg, step: int) -> float:
    """``train.lr`` at ``step``: a linear warm-up, then constant, cosine or linear decay."""
    tc = cfg.train
    if tc.warmup_steps and step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    frac = (step - tc.warmup_steps) / max(tc.steps - tc.warmup_steps, 1)
    if tc.lr_schedule == "cosine":
        return tc.lr * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
    if tc.lr_schedule == "linear":
        return tc.lr * max(1.0 - frac, 0.0)
    return tc.lr


class Objective:
    """The base objective: a diffusion network trained from scratch (see the module docstring).

    Each hook gets the trainer (:class:`radardiff.train.loop.Trainer`, which this module does not
    import: the loop imports its objectives), whose attributes it may read (``cfg``, ``acc``,
    ``denoiser``, ``diffusion``, ``normalizer``, ``net``, ``raw_model``, ``ema``, ``state`` ...).
    """

    method = "none"  # the ``distill.method`` of the runs it trains
    created: tuple[
        str, ...
    ] = ()  # entries it makes in the run directory (gone with a failed start)

    def run_ready(self, trainer) -> None:
        """Called once the run directory exists (main process), before anything is trained."""

    def normalizer(self, trainer) -> Normalizer | None:
        """The normalisation of a fresh run, or None: fitted to the training data."""
        return None

    def network(self, trainer) -> torch.nn.Module:
        """The network a fresh run starts from (the trainer seeds torch first)."""
        norm = trainer.normalizer
        return build_unet(
            trainer.cfg.model,
            norm.channels * (2 if norm.phase else 1),
            trainer.diffusion.learned_variance,
            norm.maps.width if norm.maps is not None else 0,
        )

    def prepared(self, trainer) -> None:
        """Called once the trained network is prepared (kernels, compile) and the denoiser made:
        other networks the objective runs can follow it onto the same kernels."""

    def loss(self, trainer, batch, gen, noise_gen):
        """(scalar loss, per-sample loss, per-sample timesteps) of one micro-batch."""
        raise NotImplementedError

    def lr(self, trainer, step: int) -> float:
        return lr_at(trainer.cfg, step)

    def after_step(self, trainer) -> None:
        """Called after each optimizer step and EMA update, before logging and checkpoints."""

    def extras(self) -> dict[str, torch.nn.Module]:
        """More networks saved in each checkpoint (diffusers folders named by the keys)."""
        return {}

    def load_extras(self, ckpt: Path) -> None:
        """Restore what :meth:`extras` saved, from the checkpoint resumed."""


class DiffusionObjective(Objective):
    """Improved-DDPM training: the run's parameterisation and loss (simple, hybrid with a learned
    variance, masked), timesteps from the run's timestep sampler."""

    def loss(self, trainer, batch, gen, noise_gen):
        return train_step(
            trainer.denoiser,
            trainer.diffusion,
            trainer.ts_sampler,
            batch,
            gen,
            trainer.acc.device,
            noise_gen,
        )
