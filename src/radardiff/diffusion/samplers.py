"""The sampler registry: diffusers schedulers configured from the trained schedule.

Every sampler gets the run's own betas (``trained_betas``) and parameterisation and is respaced
with ``set_timesteps(K)`` over that schedule: never a new, shorter schedule. In the notation of
:mod:`radardiff.diffusion.schedule`, a K-step sampler visits trained timesteps ``t_K > ... > t_1``
and the respaced process has ``beta'_k = 1 - abar_{t_k} / abar_{t_{k-1}}`` (``abar_{t_0} = 1``),
so the marginals ``q(x_t | x_0)`` at the visited steps are those the network was trained on
(Nichol and Dhariwal 2021, sec. 4).

The sigma-space solvers (DPM-Solver++, UniPC, Euler, Heun) work with
``sigma_t = sqrt((1 - abar_t) / abar_t)`` (Karras et al. 2022; Lu et al. 2022). When their noise
levels are not trained timesteps (Karras sigmas, log-SNR spacing) the network is called at the
continuous timestep of that noise level, ``t(sigma)`` by linear interpolation of ``log sigma_t``
over the trained ``t`` (as diffusers' Euler / Heun do); diffusers' DPM-Solver and UniPC would round
it to an integer, so the network would see another noise level than the solver assumes.

References
----------
Ho, Jain, Abbeel 2020 (DDPM); Song, Meng, Ermon 2021 (DDIM); Lu et al. 2022, "DPM-Solver++";
Zhao et al. 2023, "UniPC"; Karras et al. 2022, "Elucidating the design space" (Euler, Heun,
Karras sigmas); Nichol and Dhariwal 2021 (learned-range variance, respacing).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import diffusers
import numpy as np
import torch

from radardiff.config.schema import DiffusionConfig
from radardiff.diffusion.schedule import make_betas
from radardiff.errors import ConfigError

PREDICTION_TYPES = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}
SPACINGS = ("linspace", "leading", "trailing")


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler: the diffusers class, fixed settings, and user options with defaults.

    ``model_calls_per_step`` is the number of network evaluations per sampling step (Heun: 2).
    """

    name: str
    cls: str
    description: str
    fixed: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    stochastic: bool = False
    uses_learned_variance: bool = False
    model_calls_per_step: int = 1
    predictions: tuple[str, ...] = ("eps", "v", "x0")


_SPACING = {"timestep_spacing": "trailing"}
# use_lu_lambdas: uniform in log-SNR lambda = -2 log sigma (Lu et al. 2022, "DPM-Solver++", sec. 6)
_SIGMA_SPACINGS = {"use_karras_sigmas": False, "use_lu_lambdas": False}
SAMPLERS: dict[str, SamplerSpec] = {
    s.name: s
    for s in [
        SamplerSpec(
            "ddpm",
            "DDPMScheduler",
            "ancestral DDPM on the respaced schedule; honours a learned (range) variance",
            fixed={"clip_sample": False},
            options={**_SPACING},
            stochastic=True,
            uses_learned_variance=True,
        ),
        SamplerSpec(
            "ddim",
            "DDIMScheduler",
            "DDIM (eta=0 deterministic, eta=1 ancestral-like)",
            fixed={"clip_sample": False, "set_alpha_to_one": True},
            options={**_SPACING, "eta": 0.0},
        ),
        SamplerSpec(
            "dpmsolver++",
            "DPMSolverMultistepScheduler",
            "DPM-Solver++ multistep, orders 1-3 (data prediction)",
            fixed={"algorithm_type": "dpmsolver++", "final_sigmas_type": "zero"},
            options={
                **_SPACING,
                "solver_order": 2,
                **_SIGMA_SPACINGS,
                "lower_order_final": True,
                "solver_type": "midpoint",
            },
        ),
        SamplerSpec(
            "dpmsolver++-singlestep",
            "DPMSolverSinglestepScheduler",
            "DPM-Solver++ singlestep, orders 1-3 (linspace timesteps)",
            fixed={"algorithm_type": "dpmsolver++", "final_sigmas_type": "zero"},
            options={"solver_order": 2, **_SIGMA_SPACINGS, "lower_order_final": True},
        ),
        SamplerSpec(
            "unipc",
            "UniPCMultistepScheduler",
            "UniPC multistep predictor-corrector, orders 1-3",
            fixed={"final_sigmas_type": "zero"},
            options={**_SPACING, "solver_order": 2, **_SIGMA_SPACINGS, "solver_type": "bh2"},
        ),
        SamplerSpec(
            "euler",
            "EulerDiscreteScheduler",
            "Euler on the probability-flow ODE (Karras et al. 2022)",
            fixed={"final_sigmas_type": "zero"},
            options={**_SPACING, "use_karras_sigmas": False},
        ),
        SamplerSpec(
            "euler_ancestral",
            "EulerAncestralDiscreteScheduler",
            "Euler ancestral (stochastic)",
            options={**_SPACING},
            stochastic=True,
            predictions=("eps", "v"),  # diffusers lacks x0-prediction here
        ),
        SamplerSpec(
            "heun",
            "HeunDiscreteScheduler",
            "Heun 2nd order (2 model calls per step)",
            options={**_SPACING, "use_karras_sigmas": False},
            model_calls_per_step=2,
        ),
    ]
}
STEP_OPTIONS = {"eta"}  # passed to scheduler.step, not to the constructor
_CHOICES = {
    "timestep_spacing": SPACINGS,
    "solver_order": (1, 2, 3),
    "solver_type": {"dpmsolver++": ("midpoint", "heun"), "unipc": ("bh1", "bh2")},
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
    if "eta" in merged:
        try:
            eta = float(merged["eta"])
        except (TypeError, ValueError):
            raise ConfigError(
                f"sampler option eta must be a number, got {merged['eta']!r}"
            ) from None
        if not 0.0 <= eta <= 1.0:
            raise ConfigError(f"sampler option eta must be in [0, 1], got {merged['eta']}")
        merged["eta"] = eta
    if merged.get("use_karras_sigmas") and merged.get("use_lu_lambdas"):
        raise ConfigError("sampler options use_karras_sigmas and use_lu_lambdas exclude each other")
    return merged


@dataclass
class PreparedSampler:
    """A scheduler respaced to ``steps`` and the network time of each of its timesteps.

    ``model_times[i]`` is the (possibly fractional) trained timestep at which the network is
    evaluated for ``scheduler.timesteps[i]``.
    """

    spec: SamplerSpec
    scheduler: Any
    step_kwargs: dict[str, Any]
    steps: int
    model_times: torch.Tensor
    takes_generator: bool
    #: clip every x0 estimate to [-1, 1] (see :func:`clip_x0`)
    clip: bool = False
    #: abar at each model time (float64), for the clipping
    model_abar: torch.Tensor | None = None
    prediction: str = "eps"

    @property
    def model_calls(self) -> int:
        """Network evaluations for one sample (x2 with classifier-free guidance)."""
        return len(self.scheduler.timesteps)


def sigma_to_time(sigmas: np.ndarray, betas: np.ndarray) -> np.ndarray:
    """Continuous trained timestep of each noise level ``sigma = sqrt((1 - abar) / abar)``.

    ``log sigma_t`` increases with ``t``; ``t(sigma)`` interpolates it linearly (diffusers'
    ``_sigma_to_t`` without its rounding), clipped to ``[0, T-1]``.
    """
    abar = np.cumprod(1.0 - np.asarray(betas, np.float64))
    log_sigmas = 0.5 * np.log((1.0 - abar) / abar)
    return np.interp(np.log(np.asarray(sigmas, np.float64)), log_sigmas, np.arange(len(abar)))


def _lu_sigmas(betas: np.ndarray, steps: int) -> np.ndarray:
    """``steps`` noise levels uniform in log-SNR between the trained end points, decreasing."""
    abar = np.cumprod(1.0 - np.asarray(betas, np.float64))
    log_sigmas = 0.5 * np.log((1.0 - abar) / abar)
    return np.exp(np.linspace(log_sigmas[-1], log_sigmas[0], steps))


def make_sampler(
    name: str,
    diffusion: DiffusionConfig,
    steps: int,
    options: dict[str, Any] | None = None,
    clip: bool = False,
) -> PreparedSampler:
    """Build a registered sampler on the trained schedule of ``diffusion``, respaced to ``steps``.

    Parameters
    ----------
    name : a key of :data:`SAMPLERS`.
    diffusion : the run's diffusion config (schedule, T, parameterisation, variance).
    steps : number of sampling steps K, ``1 <= K <= T``.
    options : sampler options (see :func:`describe_samplers`); unknown ones are an error.
    clip : clip each x0 estimate to [-1, 1] (for data normalised into that range, as the
        reference code's ``clip_denoised``), for every sampler alike: see :func:`clip_x0`.

    Raises
    ------
    ConfigError
        Unknown sampler or option, an invalid option value, or K outside ``[1, T]``.
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
    if diffusion.prediction not in spec.predictions:
        fits = [n for n, sp in SAMPLERS.items() if diffusion.prediction in sp.predictions]
        raise ConfigError(
            f"sampler '{name}' does not support {diffusion.prediction}-prediction models; "
            f"use one of: {', '.join(fits)}"
        )
    merged = _check_options(spec, options or {})
    betas = make_betas(diffusion.schedule, diffusion.timesteps)
    scheduler = _build_scheduler(spec, diffusion, betas, merged)
    scheduler.set_timesteps(int(steps))
    _continuous_spacing(scheduler, spec, betas, merged, int(steps))
    times = torch.as_tensor(scheduler.timesteps).float()
    step_kwargs = {k: merged[k] for k in STEP_OPTIONS if k in merged}
    takes_gen = "generator" in inspect.signature(scheduler.step).parameters
    return PreparedSampler(
        spec,
        scheduler,
        step_kwargs,
        int(steps),
        times,
        takes_gen,
        clip=bool(clip),
        model_abar=torch.from_numpy(abar_at(betas, times.double().numpy())),
        prediction=diffusion.prediction,
    )


def abar_at(betas: np.ndarray, t: np.ndarray) -> np.ndarray:
    """abar at (possibly fractional) trained timesteps: ``log sigma`` interpolated linearly in
    t, the inverse of :func:`sigma_to_time`, exact at integer t."""
    abar = np.cumprod(1.0 - np.asarray(betas, np.float64))
    log_sigmas = 0.5 * np.log((1.0 - abar) / abar)
    ls = np.interp(np.asarray(t, np.float64), np.arange(len(abar)), log_sigmas)
    return 1.0 / (1.0 + np.exp(2.0 * ls))


def clip_x0(
    out: torch.Tensor, x_t: torch.Tensor, abar: torch.Tensor, prediction: str
) -> torch.Tensor:
    """The network output ``out`` (mean channels) re-expressed so that its x0 estimate is clipped
    to [-1, 1], consistently with ``x_t``.

    The x0 estimate is clipped and the output recomputed from it and ``x_t`` (eps' =
    (x_t - sqrt(abar) x0c) / sqrt(1 - abar), v' = sqrt(abar) eps' - sqrt(1 - abar) x0c), as in
    improved/guided-diffusion. Every sampler then sees one coherent (x0, eps) pair. diffusers'
    own ``clip_sample`` clips x0 but keeps the raw eps in DDIM's direction term, which pushes a
    deterministic trajectory off course at every clipped step: with 1000 DDIM steps on a trained
    InSAR model its semivariogram error was 0.95 against 0.004 for DDPM (radardiff's sampler
    study, H200 run of 2026-11-26).
    """
    a = abar.to(out.dtype)
    sa, s1 = a.sqrt(), (1.0 - a).sqrt()
    if prediction == "sample":
        return out.clamp(-1.0, 1.0)
    if prediction == "v":
        x0 = sa * x_t - s1 * out
    else:
        x0 = (x_t - s1 * out) / sa
    x0c = x0.clamp(-1.0, 1.0)
    eps = (x_t - sa * x0c) / s1
    return eps if prediction == "eps" else sa * eps - s1 * x0c


def _build_scheduler(spec: SamplerSpec, diffusion: DiffusionConfig, betas, merged: dict) -> Any:
    """The diffusers scheduler on the trained betas, parameterisation and (DDPM) variance."""
    cls = getattr(diffusers, spec.cls)
    ctor = {k: v for k, v in merged.items() if k not in STEP_OPTIONS}
    if "use_lu_lambdas" in ctor and "use_lu_lambdas" not in _ctor_params(cls):
        del ctor["use_lu_lambdas"]  # applied by _continuous_spacing
    if spec.uses_learned_variance:
        ctor["variance_type"] = diffusion.variance
    fixed = dict(spec.fixed)
    return cls(
        num_train_timesteps=diffusion.timesteps,
        trained_betas=betas.tolist(),
        prediction_type=PREDICTION_TYPES[diffusion.prediction],
        **fixed,
        **ctor,
    )


def _continuous_spacing(scheduler, spec: SamplerSpec, betas, merged: dict, steps: int) -> None:
    """Karras / log-SNR noise levels: the network time t(sigma), unrounded, as timesteps.

    As the scheduler's keys these also stay distinct (diffusers' rounded ones repeat when K is
    close to T, which breaks its index lookup). Log-SNR spacing is set here for the classes that
    lack ``use_lu_lambdas``.
    """
    if not (merged.get("use_karras_sigmas") or merged.get("use_lu_lambdas")):
        return
    if merged.get("use_lu_lambdas") and "use_lu_lambdas" not in _ctor_params(type(scheduler)):
        sig = _lu_sigmas(betas, steps)
        scheduler.sigmas = torch.from_numpy(np.append(sig, 0.0).astype(np.float32))
    if spec.model_calls_per_step == 1:  # Heun's interleaved times are already t(sigma)
        sig = scheduler.sigmas.double().numpy()[: len(scheduler.timesteps)]
        scheduler.timesteps = torch.from_numpy(sigma_to_time(sig, betas))


def _ctor_params(cls: type) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters)


ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def initial_noise(generators: list[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
    """x_T, one row per generator: sample i depends on its own seed only, not on the batch."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators])


def step_generators(
    generators: list[torch.Generator], device: torch.device
) -> list[torch.Generator]:
    """The generators a stochastic sampler's step noise comes from.

    On the CPU, the samples' own generators (which drew their initial noise). On a GPU, one
    generator per sample on the GPU, seeded from the sample's generator: drawing the step noise
    on the host and copying it would make every step wait for the GPU. Either way sample i's
    noise depends on its own seed only, not on the batch it is in.
    """
    if device.type == "cpu" or all(g.device == device for g in generators):
        return generators
    return [torch.Generator(device=device).manual_seed(g.initial_seed()) for g in generators]


def run_sampler(
    prepared: PreparedSampler,
    model_fn: ModelFn,
    x: torch.Tensor,
    generators: list[torch.Generator],
    data_channels: int,
    learned_variance: bool,
    callback: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Denoise ``x`` (unit Gaussian noise, one row per generator) to x_0 in network space.

    ``model_fn(x_t, t)`` returns the raw network output (guidance already applied) for the
    trained timestep ``t`` (a 0-d float tensor, fractional for Karras / log-SNR spacings). With a
    learned variance only ``ddpm`` uses the variance channels; the others take the mean channels.
    Every random draw of a stochastic sampler comes from ``generators`` (one per sample), so
    sample i does not depend on the batch it is in.

    The last DDPM and DDIM step returns its x_0 estimate, as improved-diffusion does: the chain
    ends at x_0 (``abar_prev = 1``), where the posterior mean is exactly x_0-hat. diffusers
    would stop at its timestep 0, which is the paper's x_1 (``sqrt(1 - abar_0)``-sized noise
    left in the sample; DDIM: whenever the last kept timestep is not below the stride), and add
    ``beta'_1``-sized noise under ``fixed_large`` / ``learned_range`` with trailing spacing. The
    other samplers end at sigma = 0 already.
    """
    sched = prepared.scheduler
    keep_var = learned_variance and prepared.spec.uses_learned_variance
    gen_kw = (
        {"generator": step_generators(generators, x.device)} if prepared.takes_generator else {}
    )
    times = prepared.model_times.to(x.device)  # once: a per-step host copy would stall a GPU
    abars = prepared.model_abar.to(x.device, torch.float32) if prepared.clip else None
    x = x * sched.init_noise_sigma
    last = len(sched.timesteps) - 1
    for i, t in enumerate(sched.timesteps):
        inp = sched.scale_model_input(x, t)  # the VP x_t at model time t, for every scheduler
        out = model_fn(inp, times[i])
        if abars is not None:
            mean = clip_x0(
                out[:, :data_channels].float(), inp.float(), abars[i], prepared.prediction
            )
            out = torch.cat([mean, out[:, data_channels:]], dim=1) if keep_var else mean
        if not keep_var:
            out = out[:, :data_channels]
        res = sched.step(out, t, x, return_dict=True, **gen_kw, **prepared.step_kwargs)
        x = res.prev_sample
        if i == last and prepared.spec.name in ("ddpm", "ddim"):
            x = res.pred_original_sample
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
