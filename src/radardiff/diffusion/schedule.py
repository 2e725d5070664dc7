"""Noise schedules, their derived quantities, and respacing of a trained schedule.

Notation (Ho et al. 2020; Nichol and Dhariwal 2021): index ``t = 0..T-1`` (the papers' ``t = 1..T``),
``alpha_t = 1 - beta_t``, ``abar_t = prod_{s<=t} alpha_s``, ``q(x_t | x_0) = N(sqrt(abar_t) x_0,
(1 - abar_t) I)`` and the posterior ``q(x_{t-1} | x_t, x_0) = N(mu~_t, beta~_t I)`` with

    beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)
    mu~_t   = beta_t sqrt(abar_{t-1}) / (1 - abar_t) x_0 + (1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t) x_t

(``abar_{-1} = 1``, so ``beta~_0 = 0`` and ``mu~_0 = x_0``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from radardiff.config.schema import DiffusionConfig
from radardiff.errors import ConfigError

COSINE_OFFSET = 0.008
MAX_BETA = 0.999
# abar that stands for 0 where a noise level must be finite (sigma-space solvers, interpolation in
# log sigma): sigma_max = 4096 (diffusers takes the same), or half the smallest positive abar
# when that is smaller, so that the noise levels keep increasing
MIN_SAMPLING_ABAR = 2.0**-24


def signal_noise(abar):
    """The VP process's coefficients at noise level ``abar``: ``(a, s) = (sqrt(abar),
    sqrt(1 - abar))``, ``x_t = a x0 + s eps`` (Ho et al. 2020, eq. 4). The one place they are
    computed: a tensor gives tensors (its dtype and device), anything else float64 arrays or
    floats; ``1 - abar`` below 0 by rounding counts as 0."""
    if isinstance(abar, torch.Tensor):
        return abar.sqrt(), (1.0 - abar).clamp_min(0.0).sqrt()
    if np.ndim(abar) == 0:
        abar = float(abar)
        return math.sqrt(abar), math.sqrt(max(1.0 - abar, 0.0))
    abar = np.asarray(abar, dtype=np.float64)
    return np.sqrt(abar), np.sqrt(np.maximum(1.0 - abar, 0.0))


def cosine_alpha_bar(t: np.ndarray | float, s: float = COSINE_OFFSET) -> np.ndarray | float:
    """``f(t) = cos^2(((t + s) / (1 + s)) pi / 2)`` for continuous ``t`` in [0, 1] (Nichol and
    Dhariwal 2021, eq. 17); the schedule's ``abar`` is ``f(t/T) / f(0)`` before clipping."""
    return np.cos((np.asarray(t, dtype=np.float64) + s) / (1.0 + s) * math.pi / 2) ** 2


def make_betas(schedule: str, timesteps: int, zero_terminal_snr: bool = False) -> np.ndarray:
    """beta for t = 0..T-1, float64.

    ``linear``: Ho et al. 2020 (1e-4 to 0.02 over 1000 steps), both ends scaled by ``1000 / T`` so
    that every T approximates the same continuous process (Nichol and Dhariwal 2021, sec. 2.4 and
    their ``get_named_beta_schedule``). ``cosine``: ``beta_t = min(1 - f((t+1)/T) / f(t/T), 0.999)``
    with ``f`` from :func:`cosine_alpha_bar` (Nichol and Dhariwal 2021, eq. 17 and sec. 3.2).

    ``zero_terminal_snr``: ``sqrt(abar)`` shifted and rescaled so that it keeps its value at t = 0
    and reaches exactly 0 at t = T-1 (Lin et al. 2024, "Common diffusion noise schedules and
    sample steps are flawed", Algorithm 1): the last step then holds no signal, as the pure noise
    a sampler starts from (its last beta is 1; it needs v- or x0-prediction).

    Raises
    ------
    ConfigError
        Unknown schedule name, T < 1, or a linear schedule whose scaled beta_T reaches 1 (T <= 20).
    """
    betas = _base_betas(schedule, timesteps)
    return rescale_zero_terminal_snr(betas) if zero_terminal_snr else betas


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Betas whose ``sqrt(abar)`` is mapped linearly from [sqrt(abar_T), sqrt(abar_0)] onto
    [0, sqrt(abar_0)] (Lin et al. 2024, Algorithm 1)."""
    root = np.sqrt(np.cumprod(1.0 - np.asarray(betas, np.float64)))
    first, last = root[0], root[-1]
    root = (root - last) * first / (first - last)
    abar = root**2
    alphas = np.append(abar[0], abar[1:] / abar[:-1])
    return 1.0 - alphas


def _base_betas(schedule: str, timesteps: int) -> np.ndarray:
    if timesteps < 1:
        raise ConfigError(f"diffusion.timesteps = {timesteps}: must be at least 1")
    if schedule == "linear":
        scale = 1000.0 / timesteps
        if scale * 0.02 >= 1.0:
            raise ConfigError(
                f"diffusion.timesteps = {timesteps}: the linear schedule scaled by 1000/T gives "
                f"beta_T = {scale * 0.02:g} >= 1; use T > 20 or schedule = 'cosine'"
            )
        return np.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=np.float64)
    if schedule == "cosine":
        f = cosine_alpha_bar(np.arange(timesteps + 1, dtype=np.float64) / timesteps)
        return np.minimum(1.0 - f[1:] / f[:-1], MAX_BETA)
    raise ConfigError(f"diffusion.schedule = '{schedule}': unknown; use 'linear' or 'cosine'")


class Schedule:
    """Precomputed float64 quantities of a discrete schedule (index t = 0..T-1).

    ``timestep_map[t]`` is the timestep of the *trained* schedule that index ``t`` stands for: the
    identity for the trained schedule, the kept sub-sequence for a respaced one (:meth:`respace`).
    The network is always called with ``timestep_map[t]``.
    """

    def __init__(
        self,
        cfg: DiffusionConfig | None = None,
        *,
        betas: np.ndarray | None = None,
        timestep_map: np.ndarray | None = None,
    ) -> None:
        if (cfg is None) == (betas is None):
            raise ValueError("give either a DiffusionConfig or betas")
        self.cfg = cfg
        if betas is None:
            betas = make_betas(cfg.schedule, cfg.timesteps, cfg.zero_terminal_snr)
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0).all() and (betas <= 1).all()):
            raise ValueError("betas must be a 1-D array in (0, 1]")
        self.T = len(betas)
        self.timestep_map = (
            np.arange(self.T) if timestep_map is None else np.asarray(timestep_map, np.int64)
        )
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(self.alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.snr = self.alphas_cumprod / (1.0 - self.alphas_cumprod)
        self.posterior_variance = (
            betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        )
        # beta~_0 = 0: its log is replaced by log beta~_1 (as Nichol and Dhariwal); with T = 1
        # there is no beta~_1 and beta_0 stands in
        first = self.posterior_variance[1] if self.T > 1 else betas[0]
        self.posterior_log_variance_clipped = np.log(np.append(first, self.posterior_variance[1:]))
        self.posterior_mean_coef1 = (
            betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        )
        self.posterior_mean_coef2 = (
            (1.0 - self.alphas_cumprod_prev) * np.sqrt(self.alphas) / (1.0 - self.alphas_cumprod)
        )
        # fixed_large: beta_t, with beta_0 replaced by beta~_1 (Nichol and Dhariwal, improved-diffusion)
        self.large_variance = np.append(first, betas[1:])
        # log sigma_t = log sqrt((1 - abar_t) / abar_t), the noise level of the VE view x_t / sqrt(abar)
        # (Karras et al. 2022), on sampling_abar: abar = 0 (zero terminal SNR) made finite
        abar = self.alphas_cumprod
        if abar[-1] == 0.0:
            floor = min(MIN_SAMPLING_ABAR, 0.5 * abar[abar > 0].min()) if (abar > 0).any() else 0.5
            abar = np.where(abar == 0.0, floor, abar)
        self.sampling_abar = abar
        self.log_sigmas = 0.5 * np.log((1.0 - abar) / abar)
        self._tables: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def zero_terminal_snr(self) -> bool:
        """Whether the last step holds no signal at all (abar_{T-1} = 0)."""
        return bool(self.alphas_cumprod[-1] == 0.0)

    # continuous time: t is a (possibly fractional) trained timestep, sigma a noise level

    def log_sigma_at(self, t: np.ndarray | float) -> np.ndarray:
        """log sigma at trained timesteps ``t`` (fractional allowed): linear interpolation of
        ``log sigma`` over the kept trained timesteps, exact at them (diffusers' Euler / Heun
        interpolate the same way)."""
        return np.interp(np.asarray(t, np.float64), self.timestep_map, self.log_sigmas)

    def abar_at(self, t: np.ndarray | float) -> np.ndarray:
        """abar at trained timesteps ``t``: ``1 / (1 + sigma^2)`` of :meth:`log_sigma_at`."""
        return 1.0 / (1.0 + np.exp(2.0 * self.log_sigma_at(t)))

    def time_at(self, sigma: np.ndarray | float) -> np.ndarray:
        """The trained timestep (fractional) of noise levels ``sigma``, the inverse of
        :meth:`log_sigma_at`, clipped to the schedule's ends."""
        log_sigma = np.log(np.asarray(sigma, np.float64))
        return np.interp(log_sigma, self.log_sigmas, self.timestep_map.astype(np.float64))

    @property
    def sigma_min(self) -> float:
        return float(np.exp(self.log_sigmas[0]))

    @property
    def sigma_max(self) -> float:
        return float(np.exp(self.log_sigmas[-1]))

    def abar_at_tensor(self, t: torch.Tensor) -> torch.Tensor:
        """:meth:`abar_at` for a tensor of trained timesteps, on its device, in float64 (float32
        where the device has no float64); no host round trip, so a GPU loop never waits."""
        key = str(t.device)
        if key not in self._tables:
            dtype = torch.float32 if t.device.type == "mps" else torch.float64
            self._tables[key] = (
                torch.as_tensor(self.timestep_map, dtype=dtype, device=t.device),
                torch.as_tensor(self.log_sigmas, dtype=dtype, device=t.device),
            )
        grid, log_sigmas = self._tables[key]
        if len(grid) == 1:
            return torch.sigmoid(-2.0 * log_sigmas[0]).expand(t.shape)
        tt = t.to(grid.dtype).reshape(-1).clamp(grid[0], grid[-1])
        hi = torch.searchsorted(grid, tt).clamp(1, len(grid) - 1)
        lo = hi - 1
        w = ((tt - grid[lo]) / (grid[hi] - grid[lo])).clamp(0.0, 1.0)
        ls = log_sigmas[lo] + w * (log_sigmas[hi] - log_sigmas[lo])
        return torch.sigmoid(-2.0 * ls).reshape(t.shape)

    def respace(self, timesteps: Sequence[int] | np.ndarray) -> Schedule:
        """The same process seen only at ``timesteps`` (a sub-sequence of this schedule).

        Keeps ``abar`` at the kept steps and recomputes ``beta_k = 1 - abar_k / abar_{k-1}``, as
        improved-diffusion's ``SpacedDiffusion``: the marginals ``q(x_t | x_0)`` at the kept steps
        are unchanged, it is never a new, shorter schedule.
        """
        ts = np.asarray(timesteps, dtype=np.int64)
        if ts.ndim != 1 or len(ts) == 0 or (np.diff(ts) <= 0).any():
            raise ConfigError("respacing: timesteps must be a non-empty increasing sequence")
        if ts[0] < 0 or ts[-1] >= self.T:
            raise ConfigError(f"respacing: timesteps must lie in [0, {self.T - 1}]")
        abar = self.alphas_cumprod[ts]
        betas = 1.0 - abar / np.append(1.0, abar[:-1])
        return Schedule(betas=betas, timestep_map=self.timestep_map[ts])


def spaced_timesteps(T: int, steps: int) -> np.ndarray:
    """``steps`` timesteps of [0, T-1], evenly spread, always holding 0 (the decoder) and T-1 (the
    prior at the trained end point)."""
    if not 1 <= steps <= T:
        raise ConfigError(f"steps = {steps}: must lie in [1, T = {T}]")
    if steps == 1:
        return np.array([T - 1], dtype=np.int64)
    ts = np.unique(np.round(np.linspace(0, T - 1, steps)).astype(np.int64))
    # rounding can only merge neighbours when steps is close to T; top up with unused steps
    if len(ts) < steps:
        missing = np.setdiff1d(np.arange(T), ts)[: steps - len(ts)]
        ts = np.sort(np.concatenate([ts, missing]))
    return ts
