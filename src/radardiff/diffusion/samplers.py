"""Samplers: the registered ones, each a grid of noise levels and a solver run over it.

A sampler is a grid (:mod:`radardiff.diffusion.grids`: trained timesteps spaced ``trailing``,
``leading`` or ``linspace``, Karras levels, or levels uniform in log-SNR) and a solver
(:mod:`radardiff.diffusion.solvers`) over it, as k-diffusion separates ``get_sigmas_*`` from
``sample_*``. :func:`make_sampler` builds a sampler's grid on a run's trained schedule from the
user's options and keeps the rest for its solver; :meth:`PreparedSampler.run` then runs the
solver over a :class:`radardiff.diffusion.Denoiser` bound to a batch's conditioning
(``denoise(x_t, t)``, guidance and x0 clipping included), called at the continuous trained
timestep of each noise level. ``x`` is unit Gaussian noise, one row per generator; every random
draw comes from the sample's own generator, so sample i does not depend on the batch it is in.
What a sampler needs of a run is said by flags on its :class:`SamplerSpec` (stochastic, network
calls per step, supported parameterisations), never by its name.

The user's options keep the names they had when most samplers were diffusers schedulers
(``timestep_spacing``, ``use_karras_sigmas``, ``use_lu_lambdas``, ``solver_order``,
``solver_type``, ``lower_order_final``): those of the grid choose it (:func:`spaced_grid`), the
others go to the solver, with trained timesteps (``eta_min_t``, ``restart_min_t``,
``restart_max_t``) as their noise levels and DDPM's ``variance=run`` as the run's variance.
Every solver is native, a few lines of its paper's update: shorter than configuring,
respacing and overriding a stateful diffusers scheduler through an adapter, and free to call the
network at a noise level between trained timesteps without rounding it. Where the diffusers
schedulers they replace differed (which ``leading`` and ``linspace``, Euler's and Heun's
Karras ends) each sampler keeps the grid it had (:attr:`SamplerSpec.grid`).

References
----------
Ho, Jain, Abbeel 2020 (DDPM); Song, Meng, Ermon 2021 (DDIM); Lu et al. 2022, "DPM-Solver++"
(and its SDE variant); Zhao et al. 2023, "UniPC"; Karras et al. 2022, "Elucidating the design
space" (Euler, Heun, Karras sigmas); Xu et al. 2023 (restart); Song et al. 2023 (consistency
models); Nichol and Dhariwal 2021 (learned-range variance, respacing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch

from radardiff.config.schema import DiffusionConfig
from radardiff.diffusion.grids import (
    SPACINGS,
    Denoise,
    at_noise_levels,
    grid_karras,
    grid_logsnr,
    grid_spaced,
    karras_sigmas,
)
from radardiff.diffusion.schedule import Schedule
from radardiff.diffusion.solvers import (
    sample_consistency,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp,
    sample_dpmpp_singlestep,
    sample_heun,
    sample_restart,
    sample_unipc,
)
from radardiff.errors import ConfigError

Callback = Callable[[int], None]
Grid = Callable[[Schedule, dict[str, Any], int], np.ndarray]
#: the options that choose the grid; the others are the solver's
GRID_OPTIONS = frozenset({"timestep_spacing", "use_karras_sigmas", "use_lu_lambdas", "rho"})
# options in trained timesteps, and the solver keyword that takes their noise level
_TIME_OPTIONS = {
    "eta_min_t": "eta_min_sigma",
    "restart_min_t": "restart_min_sigma",
    "restart_max_t": "restart_max_sigma",
}


def spaced_grid(
    schedule: Schedule, options: dict[str, Any], steps: int, zero_is_data: bool = True
) -> np.ndarray:
    """The grid the options name: Karras levels (``use_karras_sigmas``, rho = 7), levels uniform
    in log-SNR (``use_lu_lambdas``), else trained timesteps spaced by ``timestep_spacing``
    (``linspace`` for a sampler without that option; see :func:`grid_spaced`)."""
    if options.get("use_karras_sigmas"):
        return grid_karras(schedule, steps)
    if options.get("use_lu_lambdas"):
        return grid_logsnr(schedule, steps)
    spacing = options.get("timestep_spacing", "linspace")
    return grid_spaced(schedule, steps, spacing, zero_is_data)


def ode_grid(schedule: Schedule, options: dict[str, Any], steps: int) -> np.ndarray:
    """The grid of Euler, Euler ancestral and Heun: trained timesteps visited down to t = 0
    (``linspace`` unrounded: they take continuous time), and with ``use_karras_sigmas`` Karras
    levels between that grid's own first and last level rather than the schedule's ends, as the
    diffusers schedulers they replace had it (and the README's figures for them): with few steps
    Heun's error grows sharply as its smallest level falls towards sigma_min."""
    spaced = grid_spaced(schedule, steps, options["timestep_spacing"], False, rounded=False)
    if not options.get("use_karras_sigmas"):
        return spaced
    return np.append(karras_sigmas(spaced[-2], spaced[0], steps), 0.0)


def consistency_grid(schedule: Schedule, options: dict[str, Any], steps: int) -> np.ndarray:
    """The first K of K + 1 Karras levels (``rho``) from the largest noise level to the
    smallest, then 0: the last level would give data already."""
    return np.append(grid_karras(schedule, steps + 1, options["rho"])[:-2], 0.0)


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler: its solver, its user options with defaults, its grid, what it needs.

    ``solve`` is a solver of :mod:`radardiff.diffusion.solvers`; ``grid(schedule, options,
    steps)`` its grid from the merged options (:func:`spaced_grid` unless said).
    ``model_calls_per_step``: network evaluations per step (Heun: 2).
    """

    name: str
    description: str
    solve: Callable[..., torch.Tensor]
    options: dict[str, Any] = field(default_factory=dict)
    grid: Grid = spaced_grid
    stochastic: bool = False
    model_calls_per_step: int = 1
    predictions: tuple[str, ...] = ("eps", "v", "x0")


@dataclass
class PreparedSampler:
    """A sampler on a run's trained schedule with ``steps`` steps: its grid ``sigmas`` (K + 1
    noise levels, the last 0), the merged user ``options`` and its solver's
    ``solver_options``."""

    spec: SamplerSpec
    diffusion: DiffusionConfig
    schedule: Schedule
    steps: int
    options: dict[str, Any]
    sigmas: np.ndarray
    solver_options: dict[str, Any]

    @property
    def model_times(self) -> torch.Tensor:
        """The trained timestep (fractional allowed) of each noise level of the grid above 0,
        where the network is called (float64)."""
        return torch.from_numpy(self.schedule.time_at(self.sigmas[:-1]))

    @property
    def stochastic(self) -> bool:
        """Whether sampling draws noise after the initial x_T (DDIM only with eta > 0)."""
        return self.spec.stochastic and self.options.get("eta", 1.0) > 0

    def run(
        self,
        denoise: Denoise,
        x: torch.Tensor,
        generators: list[torch.Generator],
        callback: Callback | None = None,
    ) -> torch.Tensor:
        """Denoise ``x`` (unit Gaussian noise) to x0 in network space; ``callback(i)`` after
        the i-th network evaluation."""
        fn = at_noise_levels(denoise, self.schedule, self.sigmas, x.device, callback)
        return self.spec.solve(fn, x, self.sigmas, generators, **self.solver_options)


# ---- the registry -------------------------------------------------------------------------------

_SPACING = {"timestep_spacing": "trailing"}
_VISIT_ZERO = partial(spaced_grid, zero_is_data=False)  # DDPM, DDIM: Lin et al.'s Table 2
# use_lu_lambdas: uniform in log-SNR lambda = -2 log sigma (Lu et al. 2022, "DPM-Solver++", sec. 6)
_SIGMA_SPACINGS = {"use_karras_sigmas": False, "use_lu_lambdas": False}
_DPM = {"solver_order": 2, **_SIGMA_SPACINGS, "lower_order_final": True, "solver_type": "midpoint"}
SAMPLERS: dict[str, SamplerSpec] = {
    s.name: s
    for s in [
        SamplerSpec(
            "ddpm",
            "ancestral DDPM on the respaced schedule; honours a learned (range) variance "
            "(variance=run), or takes beta~ (fixed_small) or beta (fixed_large)",
            sample_ddpm,
            options={**_SPACING, "variance": "run"},
            grid=_VISIT_ZERO,
            stochastic=True,
        ),
        SamplerSpec(
            "ddim",
            "DDIM (eta=0 deterministic, eta=1 ancestral-like; eta only at trained timesteps "
            ">= eta_min_t)",
            sample_ddim,
            options={**_SPACING, "eta": 0.0, "eta_min_t": 0},
            grid=_VISIT_ZERO,
            stochastic=True,  # with eta > 0
        ),
        SamplerSpec(
            "dpmsolver++",
            "DPM-Solver++ multistep, orders 1-3 (data prediction)",
            sample_dpmpp,
            options={**_SPACING, **_DPM},
        ),
        SamplerSpec(
            "dpmsolver++-sde",
            "SDE-DPM-Solver++ multistep, orders 1-2 (Lu et al. 2022, sec. 5)",
            partial(sample_dpmpp, eta=1.0),
            options={**_SPACING, **_DPM},
            stochastic=True,
        ),
        SamplerSpec(
            "dpmsolver++-hybrid",
            "DPM-Solver++(2M), stochastic (eta) at trained timesteps >= eta_min_t, "
            "deterministic below",
            sample_dpmpp,
            options={**_SPACING, **_SIGMA_SPACINGS, "eta": 1.0, "eta_min_t": 0},
            stochastic=True,
        ),
        SamplerSpec(
            "restart",
            "Restart sampling: Heun ODE steps with `restarts` returns by fresh noise from "
            "restart_min_t up to restart_max_t, each followed by restart_steps Heun steps",
            sample_restart,
            options={
                **_SPACING,
                **_SIGMA_SPACINGS,
                "restart_min_t": 100,
                "restart_max_t": 400,
                "restarts": 1,
                "restart_steps": 3,
            },
            stochastic=True,
            model_calls_per_step=2,
        ),
        SamplerSpec(
            "consistency",
            "multistep consistency sampling: x0 of a consistency-distilled student, re-noised "
            "to each next Karras level (rho) with fresh noise",
            sample_consistency,
            options={"rho": 7.0},
            grid=consistency_grid,
            stochastic=True,  # from the second step on
        ),
        SamplerSpec(
            "dpmsolver++-singlestep",
            "DPM-Solver++ singlestep, orders 1-3 (linspace timesteps)",
            sample_dpmpp_singlestep,
            options={"solver_order": 2, **_SIGMA_SPACINGS, "lower_order_final": True},
        ),
        SamplerSpec(
            "unipc",
            "UniPC multistep predictor-corrector, orders 1-3",
            sample_unipc,
            options={**_SPACING, "solver_order": 2, **_SIGMA_SPACINGS, "solver_type": "bh2"},
        ),
        SamplerSpec(
            "euler",
            "Euler on the probability-flow ODE (Karras et al. 2022)",
            sample_ddim,  # DDIM with eta = 0 is Euler's method (see its docstring)
            options={**_SPACING, "use_karras_sigmas": False},
            grid=ode_grid,
        ),
        SamplerSpec(
            "euler_ancestral",
            "Euler ancestral",
            sample_ddpm,  # with beta~: Euler ancestral (see its docstring)
            options={**_SPACING},
            grid=ode_grid,
            stochastic=True,
        ),
        SamplerSpec(
            "heun",
            "Heun 2nd order",
            sample_heun,
            options={**_SPACING, "use_karras_sigmas": False},
            grid=ode_grid,
            model_calls_per_step=2,
        ),
    ]
}

_CHOICES = {
    "timestep_spacing": SPACINGS,
    "solver_order": {
        "dpmsolver++": (1, 2, 3),
        "dpmsolver++-sde": (1, 2),
        "dpmsolver++-singlestep": (1, 2, 3),
        "unipc": (1, 2, 3),
    },
    "solver_type": {
        "dpmsolver++": ("midpoint", "heun"),
        "dpmsolver++-sde": ("midpoint", "heun"),
        "unipc": ("bh1", "bh2"),
    },
    "variance": ("run", "fixed_small", "fixed_large"),
}


def _check_options(spec: SamplerSpec, options: dict[str, Any]) -> dict[str, Any]:
    unknown = set(options) - set(spec.options)
    if unknown:
        valid = ", ".join(spec.options) or "none"
        raise ConfigError(
            f"sampler '{spec.name}': unknown option(s) {', '.join(sorted(unknown))}; valid: {valid}"
        )
    merged = {**spec.options, **options}
    for key, value in merged.items():
        default = spec.options[key]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"sampler option {key} must be true or false, got {value!r}")
            continue
        choices = _CHOICES.get(key)
        if isinstance(choices, dict):
            choices = choices[spec.name]
        if choices is not None and value not in choices:
            raise ConfigError(
                f"sampler option {key} must be one of {', '.join(map(str, choices))}, got {value!r}"
            )
        if isinstance(default, float):
            merged[key] = _number(key, value)
    if "rho" in merged and merged["rho"] <= 0.0:
        raise ConfigError(f"sampler option rho must be positive, got {merged['rho']}")
    if "eta" in merged and not 0.0 <= merged["eta"] <= 1.0:
        raise ConfigError(f"sampler option eta must be in [0, 1], got {merged['eta']}")
    for key, low in _WHOLE_OPTIONS.items():
        value = merged.get(key)
        if key in merged and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ConfigError(
                f"sampler option {key} must be a whole number >= {low}, got {value!r}"
            )
    if "restart_min_t" in merged and merged["restart_min_t"] >= merged["restart_max_t"]:
        raise ConfigError(
            f"sampler options restart_min_t ({merged['restart_min_t']}) must be below "
            f"restart_max_t ({merged['restart_max_t']})"
        )
    if merged.get("use_karras_sigmas") and merged.get("use_lu_lambdas"):
        raise ConfigError("sampler options use_karras_sigmas and use_lu_lambdas exclude each other")
    return merged


# options that take whole numbers: trained timesteps, counts (with their smallest value)
_WHOLE_OPTIONS = {
    "eta_min_t": 0,
    "restart_min_t": 0,
    "restart_max_t": 1,
    "restarts": 0,
    "restart_steps": 1,
}


def _number(key: str, value: Any) -> float:
    try:
        if isinstance(value, bool):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"sampler option {key} must be a number, got {value!r}") from None


def check_serves(spec: SamplerSpec, diffusion: DiffusionConfig) -> None:
    """Refuse, with one line naming both, a sampler that cannot serve a run's process."""
    if diffusion.prediction not in spec.predictions:
        fits = [n for n, sp in SAMPLERS.items() if diffusion.prediction in sp.predictions]
        raise ConfigError(
            f"sampler '{spec.name}' does not support {diffusion.prediction}-prediction models; "
            f"use one of: {', '.join(fits)}"
        )


def make_sampler(
    name: str,
    diffusion: DiffusionConfig,
    steps: int,
    options: dict[str, Any] | None = None,
    schedule: Schedule | None = None,
) -> PreparedSampler:
    """A registered sampler on the trained schedule of ``diffusion``, respaced to ``steps``.

    Parameters
    ----------
    name : a key of :data:`SAMPLERS`.
    diffusion : the run's diffusion config (schedule, T, parameterisation, variance).
    steps : number of sampling steps K, ``1 <= K <= T``.
    options : sampler options (see :func:`describe_samplers`); unknown ones are an error.
    schedule : the run's trained schedule (default: built from ``diffusion``).

    Raises
    ------
    ConfigError
        Unknown sampler or option, an invalid option value, K outside ``[1, T]``, or a sampler
        that cannot serve the run.
    """
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler '{name}'; available: {', '.join(SAMPLERS)}")
    spec = SAMPLERS[name]
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer):
        raise ConfigError(f"--steps must be an integer, got {steps!r}")
    if steps < 1 or steps > diffusion.timesteps:
        raise ConfigError(
            f"--steps {steps} is out of range: the model was trained with T={diffusion.timesteps} "
            f"(use 1..{diffusion.timesteps})"
        )
    check_serves(spec, diffusion)
    merged = _check_options(spec, options or {})
    schedule = schedule or Schedule(diffusion)
    sigmas = np.asarray(spec.grid(schedule, merged, int(steps)), np.float64)
    solver = _solver_options(merged, schedule, diffusion)
    return PreparedSampler(spec, diffusion, schedule, int(steps), merged, sigmas, solver)


def _solver_options(
    merged: dict[str, Any], schedule: Schedule, diffusion: DiffusionConfig
) -> dict[str, Any]:
    """The solver's keywords: the options less the grid's, trained timesteps as their noise
    levels, DDPM's ``variance=run`` as the run's own."""
    opts = {k: v for k, v in merged.items() if k not in GRID_OPTIONS}
    for key, level in _TIME_OPTIONS.items():
        if key in opts:
            opts[level] = float(np.exp(schedule.log_sigma_at(float(opts.pop(key)))))
    if merged.get("eta_min_t", 0) > schedule.T - 1:
        opts["eta_min_sigma"] = np.inf  # a window above the last trained timestep is empty
    if opts.get("variance") == "run":
        opts["variance"] = diffusion.variance
    return opts


def initial_noise(generators: list[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
    """x_T, one row per generator: sample i depends on its own seed only, not on the batch."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators])


def describe_samplers() -> list[str]:
    """One line per sampler with its options and defaults (for ``--list-samplers``)."""
    lines = []
    for spec in SAMPLERS.values():
        opts = ", ".join(f"{k}={v}" for k, v in spec.options.items()) or "no options"
        stochastic = spec.stochastic and spec.options.get("eta", 1.0) > 0  # DDIM: eta > 0
        kind = "stochastic" if stochastic else "deterministic"
        calls = f", {spec.model_calls_per_step} calls/step" if spec.model_calls_per_step > 1 else ""
        lines.append(f"{spec.name:24s} {spec.description} ({kind}{calls}) [{opts}]")
    return lines
