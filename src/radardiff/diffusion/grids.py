"""Sampling grids: the noise levels a sampler steps through, in one coordinate.

A grid is a 1-D float64 array of noise levels ``sigma = sqrt((1 - abar) / abar)``, decreasing,
whose last entry is 0, the data end (abar = 1): a K-step sampler steps from ``sigma[k]`` to
``sigma[k + 1]``, K + 1 entries in all (k-diffusion's ``get_sigmas_*``).

Why sigma and not the trained timestep: every solver is written in it (DPM-Solver and UniPC in
``lambda = -log sigma``, Euler and Heun in the state ``x_t / sqrt(abar)`` at noise level sigma,
DDPM and DDIM in ``abar = 1 / (1 + sigma^2)``); Karras and log-SNR spacings are defined in it;
and it has the data end, sigma = 0, which no trained timestep has. The network is called at
the continuous trained timestep of a noise level, ``t(sigma)`` (:meth:`Schedule.time_at`,
:func:`at_noise_levels`), never rounded: on a trained timestep that is the timestep itself (to
float precision), between two the interpolation in log sigma that the denoiser's abar uses too.

The spacings of trained timesteps (``trailing``, ``leading``, ``linspace``; Lin et al. 2024,
"Common diffusion noise schedules and sample steps are flawed", Table 2) visit trained timesteps
of the trained schedule, never those of a new, shorter one: in the notation of
:mod:`radardiff.diffusion.schedule`, a step from ``t_k`` to ``t_{k-1}`` is the respaced process
``beta'_k = 1 - abar_{t_k} / abar_{t_{k-1}}``, whose marginals at the visited steps are those the
network was trained on (Nichol and Dhariwal 2021, sec. 4). ``trailing`` steps down from the
last trained timestep by T/K; its next point would be ``t = -1``, the data end (``abar_{-1} =
1``). ``leading`` and ``linspace`` come in two conventions: K + 1 points whose lowest, t = 0,
stands for the data end (``zero_is_data``, DPM-Solver's), or K points that visit t = 0 before a
last step to the data end (Lin et al.'s Table 2, DDPM's and DDIM's). Karras and log-SNR grids
span the schedule's own noise levels, ``[sigma_min, sigma_max]``, with abar = 0 (zero terminal
SNR) made finite (:attr:`Schedule.sampling_abar`).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import count

import numpy as np
import torch

from radardiff.diffusion.denoiser import DenoiserOutput
from radardiff.diffusion.schedule import Schedule

Denoise = Callable[[torch.Tensor, torch.Tensor], DenoiserOutput]
#: ``denoise(x_t, sigma)``: the denoiser at noise level sigma of the VP state ``x_t``
SigmaDenoise = Callable[[torch.Tensor, float], DenoiserOutput]


def _at_times(schedule: Schedule, t: np.ndarray) -> np.ndarray:
    """The noise levels of decreasing trained timesteps ``t``, then the data end."""
    t = np.unique(t)[::-1]  # rounding merges neighbours only when K is close to T
    return np.append(np.exp(schedule.log_sigma_at(t)), 0.0)


def grid_trailing(schedule: Schedule, steps: int) -> np.ndarray:
    """``t_k = round(T - k T / K) - 1``, k = 0..K-1: down from the last trained timestep by T/K;
    the next point, -1, is the data end (Lin et al. 2024, Table 2)."""
    T = schedule.T
    return _at_times(schedule, np.round(T - np.arange(steps) * (T / steps)) - 1)


def grid_leading(schedule: Schedule, steps: int, zero_is_data: bool = True) -> np.ndarray:
    """Multiples of ``floor(T / n)`` from 0, the largest first, for n = K + 1 points, t = 0
    standing for the data end (``zero_is_data``), or n = K points visited down to t = 0."""
    n = steps + int(zero_is_data)
    t = np.minimum(np.arange(n)[::-1] * max(schedule.T // n, 1), schedule.T - 1)
    return _at_times(schedule, t[:steps])


def grid_linspace(
    schedule: Schedule, steps: int, zero_is_data: bool = True, rounded: bool = True
) -> np.ndarray:
    """n timesteps evenly spread over [0, T - 1], rounded to trained ones unless told: n = K + 1
    with t = 0 standing for the data end (``zero_is_data``), or n = K visited down to t = 0."""
    t = np.linspace(0, schedule.T - 1, steps + int(zero_is_data))[::-1][:steps]
    return _at_times(schedule, np.round(t) if rounded else t)


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> np.ndarray:
    """``n`` noise levels from ``sigma_max`` down to ``sigma_min``, evenly spaced in
    ``sigma^(1/rho)`` (Karras et al. 2022, eq. 5); ``n = 1``: ``[sigma_max]``."""
    if n == 1:
        return np.array([sigma_max], np.float64)
    ramp = np.linspace(0.0, 1.0, n)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def grid_karras(schedule: Schedule, steps: int, rho: float = 7.0) -> np.ndarray:
    """K levels of :func:`karras_sigmas` over the schedule's ``[sigma_min, sigma_max]``, then 0:
    dense at low noise for rho > 1 (Karras et al. 2022, eq. 5, rho = 7)."""
    levels = karras_sigmas(schedule.sigma_min, schedule.sigma_max, steps, rho)
    return np.append(levels, 0.0)


def grid_logsnr(schedule: Schedule, steps: int) -> np.ndarray:
    """K levels evenly spaced in ``log sigma`` (so in log-SNR ``-2 log sigma``) from sigma_max
    down to sigma_min, then 0 (Lu et al. 2022, "DPM-Solver++", sec. 6)."""
    log_sigma = np.linspace(np.log(schedule.sigma_max), np.log(schedule.sigma_min), steps)
    return np.append(np.exp(log_sigma), 0.0)


SPACINGS = ("linspace", "leading", "trailing")


def grid_spaced(
    schedule: Schedule, steps: int, spacing: str, zero_is_data: bool = True, rounded: bool = True
) -> np.ndarray:
    """The grid of trained timesteps spaced by ``spacing``, one of :data:`SPACINGS`."""
    if spacing == "trailing":
        return grid_trailing(schedule, steps)
    if spacing == "leading":
        return grid_leading(schedule, steps, zero_is_data)
    return grid_linspace(schedule, steps, zero_is_data, rounded)


def at_noise_levels(
    denoise: Denoise,
    schedule: Schedule,
    sigmas: np.ndarray,
    device: torch.device,
    callback: Callable[[int], None] | None = None,
) -> SigmaDenoise:
    """``denoise(x_t, t)`` as a function of the noise level: ``fn(x_t, sigma)`` calls it at
    ``t(sigma)`` and then ``callback(i)`` for the i-th call.

    The times of the grid's levels go to ``device`` in one copy: a copy per call would make a
    GPU wait at every step. A level off the grid (a restart's) gets its own copy once.
    """
    dtype = torch.float32 if device.type == "mps" else torch.float64
    levels = [float(s) for s in sigmas if s > 0]
    times = torch.as_tensor(schedule.time_at(np.array(levels)), dtype=dtype, device=device)
    table = dict(zip(levels, times, strict=True))
    calls = count()

    def fn(x: torch.Tensor, sigma: float) -> DenoiserOutput:
        t = table.get(sigma)
        if t is None:
            t = table[sigma] = torch.tensor(
                float(schedule.time_at(sigma)), dtype=dtype, device=device
            )
        out = denoise(x, t)
        if callback is not None:
            callback(next(calls))
        return out

    return fn
