"""Bits per dimension of a diffusion model: the full variational bound, over all T steps or a
respaced subset of the trained schedule.

``-log2 p(x_0) / D <= L_T + sum_k L_k + L_0`` (see :mod:`radardiff.diffusion.vlb`), each term in
bits per valid dimension. A respaced bound (Nichol and Dhariwal 2021, sec. 4; improved-diffusion's
``SpacedDiffusion``) is the VLB of the same trained process observed at K of its T steps: the
kept ``abar`` are those of the trained schedule and ``beta_k = 1 - abar_k / abar_{k-1}``; it is a
valid (looser) bound, equal to the full one when all T steps are kept. The network is always
called with the *trained* timestep of each kept step.

Units: bits/dim in the network's normalised space ([-1, 1] for the per-sample min-max
normaliser). A likelihood in physical units adds ``log2 |d x_norm / d x_phys|`` per dimension
(the normaliser's Jacobian); the discretised decoder is only meaningful for data in [-1, 1].

Both decoders are returned: ``total`` with the discretised decoder (bin width 2/255, comparable
with image papers, Ho et al. 2020) and ``total_continuous`` with the Gaussian density (the
natural bound for continuous radar data; it bounds a differential entropy and can be negative).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from radardiff.diffusion.gaussian import GaussianDiffusion, fill_invalid, masked_mean
from radardiff.diffusion.schedule import spaced_timesteps
from radardiff.diffusion.vlb import prior_bpd, terms_from_params
from radardiff.errors import ConfigError

ModelFn = Callable[..., torch.Tensor]


@dataclass
class BitsPerDim:
    """The bound for one batch; per-sample tensors are (B,), per-term tensors (B, K).

    ``terms[:, k]`` is ``L_k`` of the k-th kept step (``timesteps[k]`` of the trained schedule),
    the discretised decoder NLL at k = 0; ``decoder_continuous`` replaces ``terms[:, 0]`` in
    ``total_continuous``. ``x0_mse[:, k]`` is the mean squared error of the model's x_0 estimate.
    """

    total: torch.Tensor
    total_continuous: torch.Tensor
    prior: torch.Tensor
    terms: torch.Tensor
    decoder_continuous: torch.Tensor
    x0_mse: torch.Tensor
    timesteps: torch.Tensor


@dataclass
class DatasetBitsPerDim:
    """Means over samples (each sample's bits/dim over its valid pixels) and the standard error
    of ``total``; ``terms`` (K,) is the mean of each term."""

    total: float
    total_stderr: float
    total_continuous: float
    prior: float
    terms: np.ndarray
    timesteps: np.ndarray
    n_samples: int


def respaced(diffusion: GaussianDiffusion, steps: int | Sequence[int] | None) -> GaussianDiffusion:
    """``diffusion`` itself (``None`` or ``T``), respaced at ``steps`` evenly spread steps holding 0
    and T-1, or at an explicit increasing list of trained timesteps."""
    if steps is None:
        return diffusion
    if isinstance(steps, int | np.integer):
        if steps == diffusion.T:
            return diffusion
        return diffusion.respace(spaced_timesteps(diffusion.T, int(steps)))
    return diffusion.respace(np.asarray(steps, dtype=np.int64))


@torch.no_grad()
def bits_per_dim(
    model_fn: ModelFn,
    diffusion: GaussianDiffusion,
    x0: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    steps: int | Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    clip_denoised: bool = False,
    model_kwargs: dict[str, Any] | None = None,
) -> BitsPerDim:
    """Variational bound of ``x0`` (B, C, ...) in bits per valid dimension.

    Parameters
    ----------
    model_fn : ``model_fn(x_t, t, **model_kwargs) -> output`` with ``t`` (B,) the trained
        timesteps; output (B, C, ...) or (B, 2C, ...) with a learned variance.
    diffusion : the trained process (not respaced).
    steps : None (all T), a number K of evenly spread steps, or the trained timesteps to keep.
    generator : the source of the forward-process noise, one draw of (B, C, ...) per step,
        taken from the last step down to the first.
    clip_denoised : clip the x_0 estimate to [-1, 1] (the reference does for 8-bit images).
    """
    if generator is None:
        raise ConfigError("bits_per_dim: an explicit torch.Generator is required")
    if diffusion.schedule.timestep_map[-1] != diffusion.T - 1:
        raise ConfigError("bits_per_dim: give the trained diffusion; respacing is done here")
    spaced = respaced(diffusion, steps)
    x0 = fill_invalid(x0, mask)
    valid = None if mask is None else mask.to(torch.bool)
    B, K = x0.shape[0], spaced.T
    terms = torch.zeros(B, K, dtype=torch.float64, device=x0.device)
    mse = torch.zeros_like(terms)
    decoder_cont = torch.zeros(B, dtype=torch.float64, device=x0.device)
    for k in range(K - 1, -1, -1):
        t = torch.full((B,), k, dtype=torch.long, device=x0.device)
        noise = torch.randn(
            x0.shape, generator=generator, dtype=x0.dtype, device=generator.device
        ).to(x0.device)
        x_t = spaced.q_sample(x0, t, noise)
        out = model_fn(x_t, spaced.timestep_map[t], **(model_kwargs or {}))
        out = out.to(torch.promote_types(out.dtype, x0.dtype))
        p = spaced.p_mean_variance(out, x_t, t, clip_denoised)
        terms[:, k] = terms_from_params(spaced, p, x0, x_t, t, valid).double()
        if k == 0:
            cont = terms_from_params(spaced, p, x0, x_t, t, valid, decoder="continuous")
            decoder_cont = cont.double()
        mse[:, k] = masked_mean((p.pred_x0 - x0) ** 2, valid).double()
    prior = prior_bpd(spaced, x0, valid).double()
    total = prior + terms.sum(dim=1)
    return BitsPerDim(
        total=total,
        total_continuous=total - terms[:, 0] + decoder_cont,
        prior=prior,
        terms=terms,
        decoder_continuous=decoder_cont,
        x0_mse=mse,
        timesteps=spaced.timestep_map.clone(),
    )


def dataset_bits_per_dim(
    model_fn: ModelFn,
    diffusion: GaussianDiffusion,
    batches: Iterable[Any],
    *,
    steps: int | Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    clip_denoised: bool = False,
) -> DatasetBitsPerDim:
    """:func:`bits_per_dim` averaged over the samples of ``batches``.

    Each batch is ``x0``, ``(x0, mask)`` or ``(x0, mask, model_kwargs)`` (e.g. class labels);
    the batches must already be on the device of ``diffusion``.
    """
    totals, conts, priors, term_sums, ts, n = [], [], [], None, None, 0
    for batch in batches:
        x0, mask, kw = (batch, None, None) if torch.is_tensor(batch) else (*batch, None)[:3]
        r = bits_per_dim(
            model_fn, diffusion, x0, mask, steps=steps, generator=generator,
            clip_denoised=clip_denoised, model_kwargs=kw,
        )  # fmt: skip
        totals.append(r.total.cpu())
        conts.append(r.total_continuous.cpu())
        priors.append(r.prior.cpu())
        s = r.terms.sum(dim=0).cpu()
        term_sums = s if term_sums is None else term_sums + s
        ts, n = r.timesteps.cpu().numpy(), n + x0.shape[0]
    if n == 0:
        raise ConfigError("dataset_bits_per_dim: no batches given")
    total = torch.cat(totals).numpy()
    stderr = float(total.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return DatasetBitsPerDim(
        total=float(total.mean()),
        total_stderr=stderr,
        total_continuous=float(torch.cat(conts).mean()),
        prior=float(torch.cat(priors).mean()),
        terms=(term_sums / n).numpy(),
        timesteps=ts,
        n_samples=n,
    )
