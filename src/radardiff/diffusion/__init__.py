"""Schedules, forward process, parameterisations, losses, timestep samplers, sampling grids and
solvers, sampler registry."""

from radardiff.diffusion.denoiser import (
    Conditioning,
    Denoiser,
    DenoiserOutput,
    clip_x0,
    default_clip,
    x0_and_eps,
)
from radardiff.diffusion.gaussian import GaussianDiffusion, LossTerms
from radardiff.diffusion.grids import (
    grid_karras,
    grid_leading,
    grid_linspace,
    grid_logsnr,
    grid_trailing,
    karras_sigmas,
)
from radardiff.diffusion.likelihood import (
    BitsPerDim,
    DatasetBitsPerDim,
    bits_per_dim,
    dataset_bits_per_dim,
)
from radardiff.diffusion.samplers import (
    SAMPLERS,
    Denoise,
    PreparedSampler,
    SamplerSpec,
    check_serves,
    describe_samplers,
    initial_noise,
    make_sampler,
)
from radardiff.diffusion.schedule import Schedule, make_betas, signal_noise, spaced_timesteps
from radardiff.diffusion.tensors import fill_invalid, masked_mean
from radardiff.diffusion.timesteps import (
    LossSecondMomentSampler,
    UniformSampler,
    make_timestep_sampler,
)
from radardiff.diffusion.vlb import prior_bpd, vlb_terms

__all__ = [
    "signal_noise",
    "Conditioning",
    "Denoiser",
    "DenoiserOutput",
    "clip_x0",
    "default_clip",
    "fill_invalid",
    "x0_and_eps",
    "SAMPLERS",
    "BitsPerDim",
    "DatasetBitsPerDim",
    "bits_per_dim",
    "dataset_bits_per_dim",
    "prior_bpd",
    "spaced_timesteps",
    "vlb_terms",
    "GaussianDiffusion",
    "LossSecondMomentSampler",
    "LossTerms",
    "UniformSampler",
    "make_timestep_sampler",
    "PreparedSampler",
    "SamplerSpec",
    "Denoise",
    "check_serves",
    "Schedule",
    "describe_samplers",
    "initial_noise",
    "make_betas",
    "make_sampler",
    "masked_mean",
    "grid_karras",
    "grid_leading",
    "grid_linspace",
    "grid_logsnr",
    "grid_trailing",
    "karras_sigmas",
]
