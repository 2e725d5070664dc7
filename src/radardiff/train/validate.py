"""Validation: the EMA model, in eval mode, on a fixed subset of the val split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from radardiff.data.dataset_file import DatasetFile
from radardiff.data.normalize import Normalizer
from radardiff.diffusion import Denoiser, GaussianDiffusion
from radardiff.train.step import loss_terms


@dataclass
class ValidationResult:
    """Means over the validation samples and the fixed timesteps."""

    loss: float
    mse: float
    # the mean per-timestep term L_t of the variational bound, bits/dim, at the fixed evenly
    # spread timesteps: a number to follow across validations, not the bound itself (L_t falls
    # by orders of magnitude from t = 0, so T x this mean is no estimate of sum_t L_t; the bound
    # is `radardiff evaluate --likelihood-run`, over every timestep)
    vlb_term_bpd: float


def validation_timesteps(T: int, n_timesteps: int = 8) -> np.ndarray:
    """The fixed timesteps of every validation: the midpoints of ``n_timesteps`` equal strata
    of [0, T), so that the mean over them is a stratified estimate of the training loss's mean
    over uniform t. (Evenly spread ends would weight t = 0, whose decoder term dominates a
    hybrid loss, 1/8 instead of 1/T: a validation loss ~300x the training loss.)"""
    n = min(n_timesteps, T)
    return np.unique(np.floor((np.arange(n) + 0.5) * T / n).astype(np.int64))


@torch.no_grad()
def validation_loss(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    normalizer: Normalizer,
    val: DatasetFile,
    device: torch.device,
    n_timesteps: int = 8,
) -> ValidationResult:
    """Mean training loss (unweighted by timestep sampling) over fixed samples, timesteps, noise.

    The same samples, timesteps and noise are used at every validation, so the numbers compare
    across steps. Timesteps are the midpoints of equal strata of [0, T)
    (:func:`validation_timesteps`). Class-conditional runs are validated with their labels (no
    dropout). Super-resolution runs are validated in the frame of their
    condition (see :func:`radardiff.models.superres_pair`), their bits/dim included.
    """
    cfg = denoiser.cfg
    denoiser.network.eval()
    n = min(len(val), cfg.train.val_samples)
    images = normalizer.transform(val.images(np.arange(n)))
    labels = val.labels(np.arange(n))
    gen = torch.Generator().manual_seed(cfg.train.seed + 12345)
    ts = validation_timesteps(diffusion.T, n_timesteps)
    sums, count = np.zeros(3), 0
    bs = cfg.train.batch_size
    for start in range(0, n, bs):
        sl = slice(start, start + bs)
        batch = {
            "image": torch.from_numpy(images.images[sl]),
            "mask": torch.from_numpy(images.mask[sl]),
            "stats": torch.from_numpy(images.stats[sl]).float(),
        }
        if labels is not None:
            batch["label"] = torch.from_numpy(labels[sl])
        b = batch["image"].shape[0]
        for tv in ts:
            t = torch.full((b,), int(tv), dtype=torch.long, device=device)
            terms = loss_terms(denoiser, diffusion, batch, t, gen, drop_labels=False, with_vlb=True)
            sums += [float(terms.loss.sum()), float(terms.mse.sum()), float(terms.vlb.sum())]
            count += b
    loss, mse, vlb = sums / max(count, 1)
    return ValidationResult(loss=float(loss), mse=float(mse), vlb_term_bpd=float(vlb))
