"""Tensor pieces shared by the forward process (:mod:`.gaussian`) and the variational bound
(:mod:`.vlb`): per-timestep coefficients, means and fills over valid pixels, and the parameters
of the reverse Gaussian.

They live here, below both, so that the bound can use them without importing the process that
in turn computes its loss from the bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def expand_at(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values[t]`` shaped (B, 1, 1, ...) in the dtype of ``like`` (float32 at least)."""
    dtype = torch.promote_types(like.dtype, torch.float32)
    return values[t].to(dtype).reshape(-1, *([1] * (like.ndim - 1)))


def _valid(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if mask is None else mask.to(torch.bool).expand_as(like)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-sample mean over all but the batch dimension, over valid (``mask`` True) pixels only.

    ``mask`` is (B, C, H, W) or broadcastable to ``x`` (e.g. (B, 1, H, W)). Masked entries are
    replaced (not multiplied) by 0, so a NaN or Inf there changes neither the value nor the
    gradient. A sample with no valid pixel gives 0.
    """
    dims = tuple(range(1, x.ndim))
    valid = _valid(mask, x)
    if valid is None:
        return x.mean(dim=dims)
    total = torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dims)
    return total / valid.sum(dims).clamp_min(1).to(x.dtype)


def fill_invalid(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``x`` with masked entries set to 0 (keeps NaN/Inf of no-data pixels out of any arithmetic,
    and out of gradients: ``where`` passes exactly zero gradient to the unselected entries)."""
    valid = _valid(mask, x)
    if valid is None:
        return x
    return torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device))


@dataclass
class PosteriorParams:
    """The Gaussian ``p(x_{t-1} | x_t)`` the network defines, and its x_0 estimate."""

    mean: torch.Tensor
    variance: torch.Tensor
    log_variance: torch.Tensor
    pred_x0: torch.Tensor
