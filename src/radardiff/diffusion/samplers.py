"""The sampler registry: diffusers schedulers configured from the trained schedule.

Every sampler gets the run's own betas (``trained_betas``) and parameterisation, and is respaced
with ``set_timesteps(K)`` over that schedule: never a new, shorter schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import diffusers
import torch

from radardiff.config.schema import DiffusionConfig
from radardiff.diffusion.schedule import make_betas
from radardiff.errors import ConfigError

PREDICTION_TYPES = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}
SPACINGS = ("linspace", "leading", "trailing")


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler: the diffusers class, fixed settings, and user options with defaults."""

    name: str
    cls: str
    description: str
    fixed: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    stochastic: bool = False
    uses_learned_variance: bool = False


_SPACING = {"timestep_spacing": "trailing"}
SAMPLERS: dict[str, SamplerSpec] = {
    s.name: s
    for s in [
        SamplerSpec(
            "ddpm", "DDPMScheduler", "ancestral DDPM, respaced; honours a learned variance",
            fixed={"clip_sample": False}, options={**_SPACING}, stochastic=True,
            uses_learned_variance=True,
        ),
        SamplerSpec(
            "ddim", "DDIMScheduler", "DDIM (eta=0 deterministic, eta=1 DDPM-like)",
            fixed={"clip_sample": False, "set_alpha_to_one": True}, options={**_SPACING, "eta": 0.0},
        ),
        SamplerSpec(
            "dpmsolver++", "DPMSolverMultistepScheduler", "DPM-Solver++ multistep (orders 1-3)",
            fixed={"algorithm_type": "dpmsolver++", "final_sigmas_type": "zero"},
            options={**_SPACING, "solver_order": 2, "use_karras_sigmas": False,
                     "use_lu_lambdas": False, "lower_order_final": True},
        ),
        SamplerSpec(
            "dpmsolver++-singlestep", "DPMSolverSinglestepScheduler",
            "DPM-Solver++ singlestep (orders 1-3)",
            fixed={"algorithm_type": "dpmsolver++", "final_sigmas_type": "zero"},
            options={"solver_order": 2, "use_karras_sigmas": False, "lower_order_final": True},
        ),
        SamplerSpec(
            "unipc", "UniPCMultistepScheduler", "UniPC multistep predictor-corrector",
            options={**_SPACING, "solver_order": 2, "use_karras_sigmas": False},
        ),
        SamplerSpec(
            "euler", "EulerDiscreteScheduler", "Euler (Karras et al. 2022 ODE form)",
            options={**_SPACING, "use_karras_sigmas": False},
        ),
        SamplerSpec(
            "euler_ancestral", "EulerAncestralDiscreteScheduler", "Euler ancestral (stochastic)",
            options={**_SPACING}, stochastic=True,
        ),
        SamplerSpec(
            "heun", "HeunDiscreteScheduler", "Heun 2nd order (2 model calls per step)",
            options={**_SPACING, "use_karras_sigmas": False},
        ),
    ]
}
STEP_OPTIONS = {"eta"}  # passed to scheduler.step, not to the constructor


def _check_options(spec: SamplerSpec, options: dict[str, Any]) -> dict[str, Any]:
    unknown = set(options) - set(spec.options)
    if unknown:
        valid = ", ".join(spec.options) or "none"
        raise ConfigError(
            f"sampler '{spec.name}': unknown option(s) {', '.join(sorted(unknown))}; valid: {valid}"
        )
    merged = {**spec.options, **options}
    if "timestep_spacing" in merged and merged["timestep_spacing"] not in SPACINGS:
        raise ConfigError(f"sampler option timestep_spacing must be one of {', '.join(SPACINGS)}")
    if "solver_order" in merged and merged["solver_order"] not in (1, 2, 3):
        raise ConfigError(f"sampler option solver_order must be 1, 2 or 3, got {merged['solver_order']}")
    if "eta" in merged and not 0.0 <= float(merged["eta"]) <= 1.0:
        raise ConfigError(f"sampler option eta must be in [0, 1], got {merged['eta']}")
    return merged


@dataclass
class PreparedSampler:
    spec: SamplerSpec
    scheduler: Any
    step_kwargs: dict[str, Any]
    steps: int


def make_sampler(
    name: str, diffusion: DiffusionConfig, steps: int, options: dict[str, Any] | None = None
) -> PreparedSampler:
    """Build and respace a registered sampler on the trained schedule of ``diffusion``."""
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler '{name}'; available: {', '.join(SAMPLERS)}")
    spec = SAMPLERS[name]
    if steps < 1 or steps > diffusion.timesteps:
        raise ConfigError(
            f"--steps {steps} is out of range: the model was trained with T={diffusion.timesteps}"
        )
    merged = _check_options(spec, options or {})
    ctor = {k: v for k, v in merged.items() if k not in STEP_OPTIONS}
    variance = {}
    if spec.uses_learned_variance:
        variance = {"variance_type": diffusion.variance}
    cls = getattr(diffusers, spec.cls)
    scheduler = cls(
        num_train_timesteps=diffusion.timesteps,
        trained_betas=make_betas(diffusion.schedule, diffusion.timesteps).tolist(),
        prediction_type=PREDICTION_TYPES[diffusion.prediction],
        **spec.fixed, **variance, **ctor,
    )
    scheduler.set_timesteps(steps)
    step_kwargs = {k: merged[k] for k in STEP_OPTIONS if k in merged}
    return PreparedSampler(spec=spec, scheduler=scheduler, step_kwargs=step_kwargs, steps=steps)


ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def initial_noise(generators: list[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
    """x_T, one row per generator: sample i depends on its own seed only, not on the batch."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators])


def run_sampler(
    prepared: PreparedSampler,
    model_fn: ModelFn,
    x: torch.Tensor,
    generators: list[torch.Generator],
    data_channels: int,
    learned_variance: bool,
    callback: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Denoise ``x`` (unit Gaussian noise) to x_0 in network space.

    ``model_fn(x_t, t)`` returns the raw network output (guidance already applied). With a learned
    variance only ``ddpm`` uses the variance channels; the other samplers take the mean channels.
    """
    sched = prepared.scheduler
    keep_var = learned_variance and prepared.spec.uses_learned_variance
    x = x * sched.init_noise_sigma
    for i, t in enumerate(sched.timesteps):
        inp = sched.scale_model_input(x, t)
        out = model_fn(inp, t)
        if not keep_var:
            out = out[:, :data_channels]
        gen = generators if prepared.spec.stochastic or prepared.step_kwargs.get("eta") else None
        x = sched.step(out, t, x, generator=gen, return_dict=True, **prepared.step_kwargs).prev_sample
        if callback is not None:
            callback(i)
    return x


def describe_samplers() -> list[str]:
    """One line per sampler with its options and defaults (for ``--list-samplers``)."""
    lines = []
    for spec in SAMPLERS.values():
        opts = ", ".join(f"{k}={v}" for k, v in spec.options.items()) or "no options"
        lines.append(f"{spec.name:24s} {spec.description} [{opts}]")
    return lines
