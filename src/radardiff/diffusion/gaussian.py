"""Gaussian diffusion for training: forward process, parameterisations and losses."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from radardiff.config.schema import DiffusionConfig
from radardiff.diffusion.schedule import Schedule


def _gather(values: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    return values[t].reshape(-1, *([1] * (ndim - 1)))


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-sample mean over all but the batch dimension, over valid (mask True) pixels only."""
    if mask is None:
        return x.mean(dim=tuple(range(1, x.ndim)))
    m = mask.to(x.dtype)
    dims = tuple(range(1, x.ndim))
    return (x * m).sum(dims) / m.sum(dims).clamp_min(1.0)


@dataclass
class LossTerms:
    """Per-sample loss terms, each of shape (B,)."""

    loss: torch.Tensor
    mse: torch.Tensor
    vlb: torch.Tensor


class GaussianDiffusion:
    """The training side of a diffusion process defined by a :class:`DiffusionConfig`."""

    def __init__(self, cfg: DiffusionConfig, device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        self.schedule = Schedule(cfg)
        self.T = cfg.timesteps
        f64 = lambda a: torch.as_tensor(a, dtype=torch.float64, device=device)  # noqa: E731
        s = self.schedule
        self.sqrt_ac = f64(s.alphas_cumprod).sqrt().float()
        self.sqrt_1m_ac = f64(1.0 - s.alphas_cumprod).sqrt().float()
        self.snr = f64(s.snr).float()

    @property
    def learned_variance(self) -> bool:
        return self.cfg.variance == "learned_range"

    def to(self, device: torch.device | str) -> GaussianDiffusion:
        for name in ("sqrt_ac", "sqrt_1m_ac", "snr"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""
        return _gather(self.sqrt_ac, t, x0.ndim) * x0 + _gather(self.sqrt_1m_ac, t, x0.ndim) * noise

    def target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the network predicts: eps, v = sqrt(abar) eps - sqrt(1-abar) x0, or x0."""
        p = self.cfg.prediction
        if p == "eps":
            return noise
        if p == "x0":
            return x0
        return _gather(self.sqrt_ac, t, x0.ndim) * noise - _gather(self.sqrt_1m_ac, t, x0.ndim) * x0

    def mse_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Min-SNR-gamma weights (Hang et al. 2023) expressed for the chosen parameterisation."""
        if self.cfg.min_snr_gamma is None:
            return torch.ones_like(t, dtype=torch.float32)
        snr = self.snr[t]
        clipped = snr.clamp(max=self.cfg.min_snr_gamma)
        return {"eps": clipped / snr, "v": clipped / (snr + 1.0), "x0": clipped}[self.cfg.prediction]

    def training_losses(
        self,
        model_output: torch.Tensor,
        x0: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> LossTerms:
        """Per-sample losses of one batch, over valid pixels only (``mask``)."""
        c = x0.shape[1]
        pred = model_output[:, :c].float()
        err = (pred - self.target(x0, t, noise)) ** 2
        mse = masked_mean(err, mask)
        vlb = torch.zeros_like(mse)
        loss = mse * self.mse_weight(t)
        if self.cfg.loss != "mse" or self.learned_variance:
            from radardiff.diffusion.vlb import vlb_terms

            # L_t in bits per dimension; with a learned variance the mean is detached inside,
            # so L_t trains only the variance (Nichol and Dhariwal 2021, sec. 3.1)
            vlb = vlb_terms(self, model_output.float(), x0, x_t, t, mask)
            if self.cfg.loss == "kl":
                loss = vlb
            elif self.cfg.loss == "rescaled_kl":
                loss = vlb * self.T
            elif self.cfg.loss == "rescaled_mse":
                # lambda * L_vlb with L_vlb = T * E_t[L_t]; lambda = 0.001 gives the paper's T/1000
                loss = loss + self.cfg.vlb_weight * self.T * vlb
            else:
                loss = loss + vlb  # plain mse with a learned variance, as the reference code
        return LossTerms(loss=loss, mse=mse, vlb=vlb)
