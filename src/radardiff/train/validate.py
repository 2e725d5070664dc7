"""Validation: the EMA model, in eval mode, on a fixed subset of the val split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from radardiff.config import RunConfig
from radardiff.data.dataset_file import DatasetFile
from radardiff.data.normalize import Normalizer
from radardiff.diffusion import GaussianDiffusion


@dataclass
class ValidationResult:
    """Means over the validation samples and the fixed timesteps."""

    loss: float
    mse: float
    vlb_bpd: float  # mean L_t in bits/dim at those timesteps (T * vlb_bpd estimates L_vlb)


@torch.no_grad()
def validation_loss(
    model: torch.nn.Module,
    diffusion: GaussianDiffusion,
    normalizer: Normalizer,
    val: DatasetFile,
    cfg: RunConfig,
    device: torch.device,
    n_timesteps: int = 8,
    range_moments: tuple[float, float] | None = None,
) -> ValidationResult:
    """Mean training loss (unweighted by timestep sampling) over fixed samples, timesteps, noise.

    The same samples, timesteps and noise are used at every validation, so the numbers compare
    across steps. Timesteps are evenly spread over [0, T). Super-resolution runs are validated
    in the frame of their condition (see :func:`radardiff.models.superres_pair`), their bits/dim
    included.
    """
    from radardiff.train.loop import conditioning, target_and_condition

    model.eval()
    n = min(len(val), cfg.train.val_samples)
    images = normalizer.transform(val.images(np.arange(n)))
    labels = val.labels(np.arange(n))
    gen = torch.Generator().manual_seed(cfg.train.seed + 12345)
    ts = np.linspace(0, diffusion.T - 1, n_timesteps).round().astype(np.int64)
    sums, count = np.zeros(3), 0
    bs = cfg.train.batch_size
    for start in range(0, n, bs):
        sl = slice(start, start + bs)
        x0, low = target_and_condition(cfg, torch.from_numpy(images.images[sl]).to(device))
        mask = torch.from_numpy(images.mask[sl]).to(device)
        batch = {"stats": torch.from_numpy(images.stats[sl]).float()}
        if labels is not None:
            batch["label"] = torch.from_numpy(labels[sl])
        for tv in ts:
            t = torch.full((x0.shape[0],), int(tv), dtype=torch.long, device=device)
            noise = torch.randn(x0.shape, generator=gen).to(device)
            x_t = diffusion.q_sample(x0, t, noise)
            extra, kwargs = conditioning(cfg, diffusion, x0, batch, gen, range_moments, low=low)
            if cfg.model.num_classes:  # validate the conditional model, not dropped labels
                kwargs["class_labels"] = batch["label"].to(device)
            inp = x_t if extra is None else torch.cat([x_t, extra], dim=1)
            out = model(inp, t, **kwargs).sample
            terms = diffusion.training_losses(out, x0, x_t, t, noise, mask)
            sums += [float(terms.loss.sum()), float(terms.mse.sum()), float(terms.vlb.sum())]
            count += x0.shape[0]
    loss, mse, vlb = sums / max(count, 1)
    return ValidationResult(loss=float(loss), mse=float(mse), vlb_bpd=float(vlb))
