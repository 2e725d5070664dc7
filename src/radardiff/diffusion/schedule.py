"""Noise schedules and the forward process q(x_t | x_0)."""

from __future__ import annotations

import math

import numpy as np

from radardiff.config.schema import DiffusionConfig


def make_betas(schedule: str, timesteps: int) -> np.ndarray:
    """beta_1..beta_T in float64.

    ``linear``: Ho et al. 2020, scaled by 1000/T so that any T gives the same process
    (Nichol and Dhariwal 2021, eq. in appendix). ``cosine``: Nichol and Dhariwal 2021, eq. 17,
    ``alpha_bar(t) = cos^2(((t/T + s) / (1 + s)) pi / 2)``, s = 0.008, betas clipped at 0.999.
    """
    if schedule == "linear":
        scale = 1000.0 / timesteps
        return np.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=np.float64)
    if schedule == "cosine":
        s = 0.008
        f = lambda t: math.cos((t / timesteps + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
        return np.array(
            [min(1 - f(i + 1) / f(i), 0.999) for i in range(timesteps)], dtype=np.float64
        )
    raise ValueError(f"unknown schedule '{schedule}'")


class Schedule:
    """Precomputed float64 quantities of a discrete schedule (index t = 0..T-1)."""

    def __init__(self, cfg: DiffusionConfig) -> None:
        self.cfg = cfg
        self.T = cfg.timesteps
        self.betas = make_betas(cfg.schedule, cfg.timesteps)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = np.cumprod(self.alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.snr = self.alphas_cumprod / (1.0 - self.alphas_cumprod)
        # posterior q(x_{t-1} | x_t, x_0)
        self.posterior_variance = (
            self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        )
        # log of the variance, with the t = 0 value (which is 0) replaced by the next one
        self.posterior_log_variance_clipped = np.log(
            np.append(self.posterior_variance[1], self.posterior_variance[1:])
        )
        self.posterior_mean_coef1 = (
            self.betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        )
        self.posterior_mean_coef2 = (
            (1.0 - self.alphas_cumprod_prev) * np.sqrt(self.alphas) / (1.0 - self.alphas_cumprod)
        )
