"""Gaussian diffusion for training: forward process, parameterisations, variances and losses.

References
----------
Ho, Jain, Abbeel 2020, "Denoising diffusion probabilistic models" (L_simple, decoder).
Nichol and Dhariwal 2021, "Improved denoising diffusion probabilistic models" (learned-range
variance, L_hybrid = L_simple + lambda L_vlb with a stop-gradient on the mean, respacing).
Salimans and Ho 2022, "Progressive distillation" (v-prediction).
Hang et al. 2023, "Efficient diffusion training via Min-SNR weighting strategy".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from radardiff.config.schema import DiffusionConfig
from radardiff.diffusion.denoiser import x0_and_eps
from radardiff.diffusion.schedule import Schedule, signal_noise
from radardiff.diffusion.tensors import PosteriorParams, expand_at, fill_invalid, masked_mean
from radardiff.diffusion.vlb import vlb_terms
from radardiff.errors import ConfigError

_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "sqrt_ac",
    "sqrt_1m_ac",
    "snr",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "log_betas",
    "large_variance",
    "log_large_variance",
)


@dataclass
class LossTerms:
    """Per-sample loss terms, each of shape (B,).

    ``loss`` is what is minimised (before timestep importance weights); ``mse`` the unweighted
    mean squared error of the parameterisation's target over valid pixels; ``vlb`` the term
    ``L_t`` of the variational bound in bits per dimension (KL for t > 0, decoder NLL at t = 0).
    """

    loss: torch.Tensor
    mse: torch.Tensor
    vlb: torch.Tensor | None


class GaussianDiffusion:
    """The training side of a diffusion process defined by a :class:`DiffusionConfig`.

    Coefficients are kept as float64 tensors (float32 on devices without float64) and gathered
    into the dtype of the data (float32 at least), as improved-diffusion does.

    Parameters
    ----------
    cfg : DiffusionConfig
        Schedule, T, parameterisation, variance type, loss, min-SNR gamma.
    device : torch device for the coefficient tensors (see also :meth:`to`).
    schedule : Schedule, optional
        A respaced schedule (:meth:`respace`); defaults to the trained schedule of ``cfg``.
    """

    def __init__(
        self,
        cfg: DiffusionConfig,
        device: torch.device | str = "cpu",
        schedule: Schedule | None = None,
    ) -> None:
        self.cfg = cfg
        self.schedule = Schedule(cfg) if schedule is None else schedule
        self.T = self.schedule.T
        s = self.schedule
        sqrt_ac, sqrt_1m_ac = signal_noise(s.alphas_cumprod)
        arrays = {
            "betas": s.betas,
            "alphas_cumprod": s.alphas_cumprod,
            "sqrt_ac": sqrt_ac,
            "sqrt_1m_ac": sqrt_1m_ac,
            "snr": s.snr,
            "posterior_variance": s.posterior_variance,
            "posterior_log_variance_clipped": s.posterior_log_variance_clipped,
            "posterior_mean_coef1": s.posterior_mean_coef1,
            "posterior_mean_coef2": s.posterior_mean_coef2,
            "log_betas": np.log(s.betas),
            "large_variance": s.large_variance,
            "log_large_variance": np.log(s.large_variance),
        }
        self._arrays = arrays
        self.timestep_map = torch.as_tensor(s.timestep_map, dtype=torch.long)
        self.to(device)

    @property
    def learned_variance(self) -> bool:
        return self.cfg.variance == "learned_range"

    @property
    def out_channels_factor(self) -> int:
        """Model output channels per data channel: 2 with a learned variance, else 1."""
        return 2 if self.learned_variance else 1

    def to(self, device: torch.device | str) -> GaussianDiffusion:
        device = torch.device(device)
        dtype = torch.float32 if device.type == "mps" else torch.float64
        for name in _BUFFERS:
            setattr(self, name, torch.as_tensor(self._arrays[name], dtype=dtype, device=device))
        self.timestep_map = self.timestep_map.to(device)
        return self

    def respace(self, timesteps: Sequence[int] | np.ndarray) -> GaussianDiffusion:
        """The same trained process seen at ``timesteps`` only (see :meth:`Schedule.respace`).

        Index ``k`` of the result stands for trained timestep ``timestep_map[k]``: call the
        network with that. The learned-range variance interpolates between the respaced
        ``beta_k`` and ``beta~_k``, as in improved-diffusion's ``SpacedDiffusion``.
        """
        return GaussianDiffusion(
            self.cfg, self.betas.device, schedule=self.schedule.respace(timesteps)
        )

    # forward process and parameterisations

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""
        return expand_at(self.sqrt_ac, t, x0) * x0 + expand_at(self.sqrt_1m_ac, t, x0) * noise

    def target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the network predicts: eps, ``v = sqrt(abar) eps - sqrt(1 - abar) x0``, or x0."""
        p = self.cfg.prediction
        if p == "eps":
            return noise
        if p == "x0":
            return x0
        return expand_at(self.sqrt_ac, t, x0) * noise - expand_at(self.sqrt_1m_ac, t, x0) * x0

    def predict_x0(self, pred: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_0 from the network's mean output (see :func:`radardiff.diffusion.x0_and_eps`)."""
        return x0_and_eps(pred, x_t, self.alphas_cumprod[t], self.cfg.prediction)[0]

    def q_posterior_mean(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """mu~_t(x_t, x_0), the mean of q(x_{t-1} | x_t, x_0)."""
        return (
            expand_at(self.posterior_mean_coef1, t, x_t) * x0
            + expand_at(self.posterior_mean_coef2, t, x_t) * x_t
        )

    def q_posterior_log_variance(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """log beta~_t (clipped at t = 0 to log beta~_1), shaped for broadcasting with ``like``."""
        return expand_at(self.posterior_log_variance_clipped, t, like)

    def model_log_variance(
        self, model_output: torch.Tensor, t: torch.Tensor, channels: int
    ) -> torch.Tensor:
        """log of the variance of p(x_{t-1} | x_t).

        ``learned_range`` (Nichol and Dhariwal 2021, eq. 15): the second half of the output
        channels is ``v``, ``frac = (v + 1) / 2`` and ``log Sigma = frac log beta_t + (1 - frac)
        log beta~_t`` (``beta~_0`` clipped to ``beta~_1``), so ``v`` in [-1, 1] keeps the variance
        between beta~_t and beta_t (``v`` is not clamped, as in the reference).
        ``fixed_small``: log beta~_t (clipped). ``fixed_large``: log beta_t with beta_0 replaced by
        beta~_1.
        """
        ref = model_output[:, :channels]
        if self.cfg.variance == "learned_range":
            frac = (model_output[:, channels:] + 1.0) / 2.0
            max_log = expand_at(self.log_betas, t, ref)
            min_log = expand_at(self.posterior_log_variance_clipped, t, ref)
            return frac * max_log + (1.0 - frac) * min_log
        table = (
            self.log_large_variance
            if self.cfg.variance == "fixed_large"
            else self.posterior_log_variance_clipped
        )
        return expand_at(table, t, ref).expand_as(ref)

    def p_mean_variance(
        self,
        model_output: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        clip_denoised: bool = False,
        detach_mean: bool = False,
    ) -> PosteriorParams:
        """Mean and variance of ``p(x_{t-1} | x_t) = N(mu~_t(x_t, x0_hat), Sigma_t)``.

        ``x0_hat`` comes from the parameterisation (:meth:`predict_x0`), clipped to [-1, 1] when
        ``clip_denoised``. ``detach_mean`` stops the gradient through the mean (the VLB term of
        L_hybrid trains only the variance).
        """
        c = x_t.shape[1]
        self.check_output(model_output, c)
        pred = model_output[:, :c]
        if detach_mean:
            pred = pred.detach()
        x0_hat = self.predict_x0(pred, x_t, t)
        if clip_denoised:
            x0_hat = x0_hat.clamp(-1.0, 1.0)
        log_var = self.model_log_variance(model_output, t, c)
        return PosteriorParams(
            mean=self.q_posterior_mean(x0_hat, x_t, t),
            variance=log_var.exp(),
            log_variance=log_var,
            pred_x0=x0_hat,
        )

    def check_output(self, model_output: torch.Tensor, channels: int) -> None:
        want = channels * self.out_channels_factor
        if model_output.shape[1] != want:
            raise ConfigError(
                f"diffusion.variance = '{self.cfg.variance}': the model must output {want} "
                f"channels for {channels}-channel data, it gives {model_output.shape[1]}"
            )

    # losses

    def mse_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Min-SNR-gamma weights (Hang et al. 2023) for the chosen parameterisation.

        With ``SNR_t = abar_t / (1 - abar_t)`` the x0-space weight ``min(SNR_t, gamma)`` is, for a
        loss written on eps (``||x0 - x0_hat||^2 = ||eps - eps_hat||^2 / SNR``) ``min(SNR, gamma) /
        SNR``, on v (``||x0 - x0_hat||^2 = ||v - v_hat||^2 / (SNR + 1)``) ``min(SNR, gamma) /
        (SNR + 1)``, and on x0 ``min(SNR, gamma)``. No gamma: 1.
        """
        if self.cfg.min_snr_gamma is None:
            return torch.ones(t.shape, dtype=torch.float32, device=t.device)
        snr = self.snr[t]
        clipped = snr.clamp(max=self.cfg.min_snr_gamma)
        w = {"eps": clipped / snr, "v": clipped / (snr + 1.0), "x0": clipped}[self.cfg.prediction]
        return w.float()

    def training_losses(
        self,
        model_output: torch.Tensor,
        x0: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        mask: torch.Tensor | None = None,
        with_vlb: bool = True,
    ) -> LossTerms:
        """Per-sample losses of one batch, over valid pixels only (``mask``).

        ``L_t`` (:func:`radardiff.diffusion.vlb.vlb_terms`, bits/dim) and the MSE of the target,
        ``w_t`` the min-SNR weight (1 without gamma):

        - ``mse``: ``w_t MSE``; with a learned variance ``+ L_t`` (mean detached), as the reference.
        - ``rescaled_mse``: ``w_t MSE + lambda T L_t`` with ``lambda = vlb_weight`` (0.001 gives
          Nichol and Dhariwal's ``T/1000``), mean detached; with a fixed variance the VLB term
          carries no gradient and is left out of the loss, as in the reference.
        - ``kl``: ``L_t``; ``rescaled_kl``: ``T L_t`` (the whole VLB, the mean is trained too).

        Entries of ``x0``, ``x_t``, ``noise`` and ``model_output`` at masked pixels are ignored
        (they may hold NaN). ``vlb`` is returned for logging and validation unless ``with_vlb`` is
        false and the loss does not need it (the training step: a fixed-variance MSE model then
        skips the VLB's work).
        """
        c = x0.shape[1]
        self.check_output(model_output, c)
        out = model_output.to(torch.promote_types(model_output.dtype, torch.float32))
        vmask = None if mask is None else mask.to(torch.bool)
        if vmask is not None:
            full = vmask.expand_as(x0)
            x0, x_t, noise = (fill_invalid(a, full) for a in (x0, x_t, noise))
            out = fill_invalid(out, torch.cat([full] * self.out_channels_factor, dim=1))
        err = (out[:, :c] - self.target(x0, t, noise)) ** 2
        mse = masked_mean(err, vmask)
        whole_vlb = self.cfg.loss in ("kl", "rescaled_kl")
        vlb = None
        if with_vlb or whole_vlb or self.learned_variance:
            vlb = vlb_terms(self, out, x0, x_t, t, vmask, detach_mean=not whole_vlb)
        if self.cfg.loss == "kl":
            loss = vlb
        elif self.cfg.loss == "rescaled_kl":
            loss = vlb * self.T
        else:
            loss = mse * self.mse_weight(t)
            if self.learned_variance:
                scale = self.cfg.vlb_weight * self.T if self.cfg.loss == "rescaled_mse" else 1.0
                loss = loss + scale * vlb
        return LossTerms(loss=loss, mse=mse, vlb=vlb)
