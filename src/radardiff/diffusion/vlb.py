"""Terms of the variational bound (VLB) of a Gaussian diffusion, in bits per dimension.

The bound on ``-log p(x_0)`` (Ho et al. 2020, eq. 5; Nichol and Dhariwal 2021, eq. 4-7):

    L_vlb = L_T + sum_{t=1}^{T-1} L_t + L_0
    L_T   = KL(q(x_T | x_0) || N(0, I))                                 (prior, no parameters)
    L_t   = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))               (t > 0, two Gaussians)
    L_0   = -log p(x_0 | x_1)                                           (decoder)

(index t = 0..T-1 here; the papers' t = 1..T). Every term is a mean over the valid pixels of a
sample (``mask``) divided by ``ln 2``: bits per dimension.

Decoders, for data scaled to [-1, 1]:

- ``discretized`` (default, Ho et al. 2020 sec. 3.3): the probability mass of the Gaussian
  ``N(mu, sigma^2)`` on the bin of width ``2/255`` centred on ``x_0``, with the outer bins
  extended to infinity for ``x_0 < -0.999`` and ``x_0 > 0.999``. For 8-bit images this is the
  exact discrete likelihood; for continuous radar data it is the likelihood of ``x_0`` quantised
  to 1/127.5 of the normalised range, which makes the numbers comparable with image papers (the
  normal CDF is computed exactly with ``log_ndtr``, not with the tanh approximation of the
  reference code: the two differ by < 1e-3 in CDF).
- ``continuous``: the density ``-log N(x_0; mu, sigma^2)``; the bound is then on the differential
  entropy, can be negative, and is the natural choice for continuous data. The two are related
  by ``-log P ~ -log p - log(2/255)`` (+6.994 bits) only when sigma >> 2/255.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol

import torch

from radardiff.diffusion.tensors import PosteriorParams, expand_at, masked_mean

Decoder = Literal["discretized", "continuous"]
BIN_WIDTH = 2.0 / 255.0
LN2 = math.log(2.0)


class Process(Protocol):
    """What the bound needs of a process: :class:`radardiff.diffusion.GaussianDiffusion` has it.

    Named by what it needs rather than imported, because the process computes its training loss
    from this module.
    """

    T: int
    sqrt_ac: torch.Tensor
    alphas_cumprod: torch.Tensor

    def p_mean_variance(
        self,
        model_output: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        clip_denoised: bool = False,
        detach_mean: bool = False,
    ) -> PosteriorParams: ...

    def q_posterior_mean(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor: ...

    def q_posterior_log_variance(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor: ...


def normal_kl(
    mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor
) -> torch.Tensor:
    """Elementwise ``KL(N(m1, v1) || N(m2, v2)) = 1/2 (log v2/v1 + v1/v2 + (m1 - m2)^2 / v2 - 1)``
    in nats."""
    return 0.5 * (
        -1.0
        + logvar2
        - logvar1
        + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def _log_normal_mass(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """``log(Phi(hi) - Phi(lo))`` for standardised ``lo < hi``, accurate in both tails.

    Above the median the mass is computed by symmetry, ``Phi(-lo) - Phi(-hi)``, so that it is a
    difference of two small numbers, never of two numbers close to 1.
    """
    upper = lo > 0
    a = torch.where(upper, -hi, lo)
    b = torch.where(upper, -lo, hi)
    log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    # log(Phi(b) - Phi(a)) = log Phi(b) + log(1 - exp(log Phi(a) - log Phi(b)))
    diff = (log_a - log_b).clamp(max=-1e-12)
    return log_b + torch.log(-torch.expm1(diff))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor,
    mean: torch.Tensor,
    log_scale: torch.Tensor,
    bin_width: float = BIN_WIDTH,
    edge: float = 0.999,
) -> torch.Tensor:
    """Elementwise ``log P(x)`` of ``N(mean, exp(log_scale)^2)`` integrated over the bin
    ``[x - w/2, x + w/2]``; for ``x < -edge`` the bin is ``(-inf, x + w/2]`` and for ``x > edge``
    ``[x - w/2, inf)`` (Ho et al. 2020, eq. 13), in nats."""
    inv_s = torch.exp(-log_scale)
    hi = (x - mean + bin_width / 2) * inv_s
    lo = (x - mean - bin_width / 2) * inv_s
    mid = _log_normal_mass(lo, hi)
    left = torch.special.log_ndtr(hi)
    right = torch.special.log_ndtr(-lo)
    return torch.where(x < -edge, left, torch.where(x > edge, right, mid))


def gaussian_log_density(
    x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor
) -> torch.Tensor:
    """Elementwise ``log N(x; mean, exp(log_var))`` in nats."""
    return -0.5 * (math.log(2 * math.pi) + log_var + (x - mean) ** 2 * torch.exp(-log_var))


def vlb_terms(
    diffusion: Process,
    model_output: torch.Tensor,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    detach_mean: bool = True,
    decoder: Decoder = "discretized",
    clip_denoised: bool = False,
) -> torch.Tensor:
    """``L_t`` per sample (B,), bits per dimension over the valid pixels.

    KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) where ``t > 0`` and the decoder NLL
    ``-log p(x_0 | x_1)`` (see the module docstring for ``decoder``) where ``t == 0``.
    The model's mean comes from the parameterisation (eps / v / x0 -> x0_hat -> mu~_t(x_t, x0_hat)),
    its variance from ``diffusion.cfg.variance`` (:meth:`GaussianDiffusion.model_log_variance`).

    ``detach_mean`` (default) stops the gradient through the mean, so that in L_hybrid the VLB
    term trains only the learned variance (Nichol and Dhariwal 2021, sec. 3.1); the losses
    ``kl`` / ``rescaled_kl`` and likelihood evaluation use ``detach_mean=False``.

    ``model_output`` is (B, C, ...) or, with a learned variance, (B, 2C, ...); ``t`` indexes
    ``diffusion``'s own (possibly respaced) schedule. Masked entries must be finite (the training
    loss fills them first); they do not enter the result.
    """
    p = diffusion.p_mean_variance(model_output, x_t, t, clip_denoised, detach_mean)
    return terms_from_params(diffusion, p, x0, x_t, t, mask, decoder)


def terms_from_params(
    diffusion: Process,
    p: PosteriorParams,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    mask: torch.Tensor | None = None,
    decoder: Decoder = "discretized",
) -> torch.Tensor:
    """:func:`vlb_terms` from an already computed ``p(x_{t-1} | x_t)``."""
    # both terms on the whole batch, then chosen per sample: no host check of t (a GPU would
    # wait for it at every step)
    first = (t == 0).reshape(-1, *([1] * (x0.ndim - 1)))
    true_mean = diffusion.q_posterior_mean(x0, x_t, t)
    true_log_var = diffusion.q_posterior_log_variance(t, x0)
    kl = normal_kl(true_mean, true_log_var, p.mean, p.log_variance)
    if decoder == "discretized":
        nll = -discretized_gaussian_log_likelihood(x0, p.mean, 0.5 * p.log_variance)
    elif decoder == "continuous":
        nll = -gaussian_log_density(x0, p.mean, p.log_variance)
    else:
        raise ValueError(f"unknown decoder '{decoder}'")
    out = torch.where(first, nll, kl)
    return masked_mean(out, mask) / LN2


def prior_bpd(
    diffusion: Process, x0: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``L_T = KL(q(x_T | x_0) || N(0, I))`` per sample (B,), bits per dimension:
    ``1/2 (abar x0^2 + (1 - abar) - 1 - log(1 - abar))`` at the last step of ``diffusion``."""
    t = torch.full((x0.shape[0],), diffusion.T - 1, dtype=torch.long, device=x0.device)
    mean = expand_at(diffusion.sqrt_ac, t, x0) * x0
    log_var = torch.log1p(-expand_at(diffusion.alphas_cumprod, t, x0)).expand_as(x0)
    kl = normal_kl(mean, log_var, torch.zeros_like(x0), torch.zeros_like(x0))
    return masked_mean(kl, mask) / LN2
