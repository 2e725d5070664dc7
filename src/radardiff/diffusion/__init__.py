"""Schedules, forward process, parameterisations, losses, timestep samplers, sampler registry."""

from radardiff.diffusion.gaussian import GaussianDiffusion, LossTerms, masked_mean
from radardiff.diffusion.samplers import (
    SAMPLERS,
    PreparedSampler,
    describe_samplers,
    initial_noise,
    make_sampler,
    run_sampler,
)
from radardiff.diffusion.schedule import Schedule, make_betas
from radardiff.diffusion.timesteps import (
    LossSecondMomentSampler,
    UniformSampler,
    make_timestep_sampler,
)

__all__ = [
    "SAMPLERS",
    "GaussianDiffusion",
    "LossSecondMomentSampler",
    "LossTerms",
    "UniformSampler",
    "make_timestep_sampler",
    "PreparedSampler",
    "Schedule",
    "describe_samplers",
    "initial_noise",
    "make_betas",
    "make_sampler",
    "masked_mean",
    "run_sampler",
]
