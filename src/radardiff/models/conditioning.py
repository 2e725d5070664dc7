"""Conditioning inputs: the low-resolution image of super-resolution, the per-sample range.

Both scalars (the noise level put on the low-resolution condition, the range) reach the network
through diffusers' ``class_embed_type="timestep"``: the scalar gets the sinusoidal timestep
embedding and an MLP, and is added to the time embedding. That is why the two cannot be combined
with each other or with class labels in one model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

RANGE_EPS = 1e-12


def degrade(x: torch.Tensor, low_size: int) -> torch.Tensor:
    """Area-average ``x`` (B, C, H, W) down to ``low_size`` pixels on a side."""
    return F.interpolate(x, size=(low_size, low_size), mode="area")


def upsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear upsampling of the low-resolution condition to the model's size."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def condition_frame(low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mid-point and half-range (B, C, 1, 1) of each low-resolution image, channel by channel."""
    lo = low.amin(dim=(2, 3), keepdim=True)
    hi = low.amax(dim=(2, 3), keepdim=True)
    return (hi + lo) / 2, ((hi - lo) / 2).clamp_min(1e-6)


def superres_pair(x0: torch.Tensor, low_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The super-resolution target and its condition, both in the frame of the condition.

    ``x0`` (B, C, H, W, network space) is area-averaged to ``low_size``; both are then shifted and
    scaled by the low-resolution image's own mid-point and half-range, so the condition spans
    exactly [-1, 1] and the target a little more (area averaging narrows the range). At sampling
    the low-resolution image is all there is: framing it the same way needs nothing the model
    cannot see, and ``c + h * x0`` returns the output exactly to the low-resolution image's
    network space (see :func:`radardiff.sample.generate`). Returns (target, condition upsampled
    to H).
    """
    low = degrade(x0, low_size)
    c, h = condition_frame(low)
    return (x0 - c) / h, upsample((low - c) / h, x0.shape[-1])


def log_range(stats: torch.Tensor) -> torch.Tensor:
    """log10 of the per-sample range (hi - lo of channel 0) from (B, C, 2) min-max statistics."""
    spread = (stats[:, 0, 1] - stats[:, 0, 0]).abs()
    return torch.log10(spread.clamp_min(RANGE_EPS))


def range_embedding_value(stats: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """The range as a 'timestep' for the embedding: 500 + 100 z, z the standardised log-range.

    The sinusoidal embedding resolves values over the trained timestep scale (0..T), so the
    standardised log-range is mapped onto that scale; z is clipped to +-4.
    """
    z = (log_range(stats) - mean) / max(std, 1e-6)
    return 500.0 + 100.0 * z.clamp(-4.0, 4.0)


def log_range_moments(stats: torch.Tensor) -> tuple[float, float]:
    """Mean and standard deviation of the log-range over a training set's statistics."""
    lr = log_range(stats).double()
    mean = float(lr.mean())
    std = float(lr.std()) if lr.numel() > 1 else 1.0
    return mean, std if math.isfinite(std) and std > 0 else 1.0
