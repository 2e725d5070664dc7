"""Samplers: functions of one signature over the conditioned denoiser.

Every sampler is ``run(prepared, denoise, x, generators, callback) -> x0``: ``denoise(x_t, t)`` is
a :class:`radardiff.diffusion.Denoiser` bound to a batch's conditioning (guidance and x0 clipping
included), returning a coherent (x0, eps) pair of the VP state ``x_t`` at trained timestep ``t``
(fractional allowed); ``x`` is unit Gaussian noise, one row per generator; every random draw of a
stochastic sampler comes from the sample's own generator, so sample i does not depend on the
batch it is in. What a sampler needs of a run is said by flags on its :class:`SamplerSpec`
(stochastic, learned variance, supported parameterisations, zero terminal SNR), never by its name.

Most samplers are diffusers schedulers behind one adapter (:func:`run_scheduler`): configured
with the run's own betas and respaced with ``set_timesteps(K)`` over that schedule, never a new,
shorter one. In the notation of :mod:`radardiff.diffusion.schedule`, a K-step sampler visits
trained timesteps ``t_K > ... > t_1`` and the respaced process has ``beta'_k = 1 - abar_{t_k} /
abar_{t_{k-1}}``, so the marginals at the visited steps are those the network was trained on
(Nichol and Dhariwal 2021, sec. 4). The scheduler is handed the denoiser's x0 (its
``prediction_type`` is ``sample``; eps for the one scheduler that lacks it), so clipping is
coherent by construction: the scheduler re-derives eps from the clipped x0 and x_t.

The sigma-space solvers (DPM-Solver++, UniPC, Euler, Heun) work with ``sigma_t = sqrt((1 - abar_t)
/ abar_t)`` (Karras et al. 2022; Lu et al. 2022). When their noise levels are not trained
timesteps (Karras sigmas, log-SNR spacing) the network is called at the continuous timestep of that
noise level, ``t(sigma)`` (:meth:`Schedule.time_at`); diffusers' DPM-Solver and UniPC would round
it to an integer, so the network would see another noise level than the solver assumes.

References
----------
Ho, Jain, Abbeel 2020 (DDPM); Song, Meng, Ermon 2021 (DDIM); Lu et al. 2022, "DPM-Solver++"
(and its SDE variant); Zhao et al. 2023, "UniPC"; Karras et al. 2022, "Elucidating the design
space" (Euler, Heun, Karras sigmas); Nichol and Dhariwal 2021 (learned-range variance,
respacing).
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
from radardiff.diffusion.denoiser import DenoiserOutput
from radardiff.diffusion.schedule import Schedule
from radardiff.errors import ConfigError

Denoise = Callable[[torch.Tensor, torch.Tensor], DenoiserOutput]
Callback = Callable[[int], None]
SPACINGS = ("linspace", "leading", "trailing")


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler: how it runs, its user options with defaults, what it needs.

    ``run`` is the sampler function (see the module docstring). For a diffusers scheduler,
    ``cls`` names its class, ``fixed`` its fixed settings and ``feed`` what it is handed
    (``x0`` or ``eps``). ``model_calls_per_step``: network evaluations per step (Heun: 2).
    ``ends_at_x0``: the last step returns the last x0 estimate (the chain ends at abar = 1, where
    the posterior mean is exactly x0-hat, as improved-diffusion). ``step_options``: options passed
    to each step rather than to the constructor; ``loop_options``: options of the adapter's loop
    itself (``eta_min_t``: the step's eta is 0 below that trained timestep).
    """

    name: str
    description: str
    run: Callable[..., torch.Tensor]
    options: dict[str, Any] = field(default_factory=dict)
    stochastic: bool = False
    uses_learned_variance: bool = False
    model_calls_per_step: int = 1
    predictions: tuple[str, ...] = ("eps", "v", "x0")
    cls: str | None = None
    fixed: dict[str, Any] = field(default_factory=dict)
    feed: str = "x0"
    ends_at_x0: bool = False
    step_options: frozenset[str] = frozenset()
    loop_options: frozenset[str] = frozenset()
    times_from_sigmas: bool = True  # Karras / log-SNR levels become times t(sigma) (not Heun's)
    # a native time grid (schedule, options, steps) -> model times, for samplers without a
    # diffusers scheduler (``cls`` None)
    times: Callable[[Schedule, dict[str, Any], int], np.ndarray] | None = None


@dataclass
class PreparedSampler:
    """A sampler respaced to ``steps`` over a run's trained schedule.

    ``model_times[i]`` is the (possibly fractional) trained timestep of the i-th network
    evaluation; ``options`` the merged options; ``scheduler`` the respaced diffusers scheduler
    (for inspection: each batch runs a fresh one, as schedulers keep state between steps).
    """

    spec: SamplerSpec
    diffusion: DiffusionConfig
    schedule: Schedule
    steps: int
    options: dict[str, Any]
    model_times: torch.Tensor
    scheduler: Any = None

    @property
    def stochastic(self) -> bool:
        """Whether sampling draws noise after the initial x_T (DDIM only with eta > 0)."""
        return self.spec.stochastic and self.options.get("eta", 1.0) > 0

    def fresh_scheduler(self) -> Any:
        """A new diffusers scheduler, respaced like :attr:`scheduler`."""
        return _respaced_scheduler(
            self.spec, self.diffusion, self.schedule, self.options, self.steps
        )

    def run(
        self,
        denoise: Denoise,
        x: torch.Tensor,
        generators: list[torch.Generator],
        callback: Callback | None = None,
    ) -> torch.Tensor:
        """Denoise ``x`` (unit Gaussian noise) to x0 in network space."""
        return self.spec.run(self, denoise, x, generators, callback)


# ---- the diffusers adapter --------------------------------------------------------------------


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


def _on(times: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Model times on ``device``, float64 where the device has it (the denoiser's abar)."""
    return times.to(device, torch.float32 if device.type == "mps" else torch.float64)


def run_scheduler(
    prepared: PreparedSampler,
    denoise: Denoise,
    x: torch.Tensor,
    generators: list[torch.Generator],
    callback: Callback | None = None,
) -> torch.Tensor:
    """A diffusers scheduler over the denoiser (see the module docstring).

    With a learned variance the ``ddpm`` scheduler gets the variance channels beside x0. The last
    DDPM and DDIM step returns the x0 estimate (``ends_at_x0``): diffusers would stop at its
    timestep 0, which is the paper's x_1.
    """
    spec = prepared.spec
    sched = prepared.fresh_scheduler()
    takes_gen = "generator" in inspect.signature(sched.step).parameters
    gen_kw = {"generator": step_generators(generators, x.device)} if takes_gen else {}
    step_kw = {k: v for k, v in prepared.options.items() if k in spec.step_options}
    eta_min_t = prepared.options.get("eta_min_t", 0)
    times = _on(prepared.model_times, x.device)  # once: a per-step host copy would stall a GPU
    x = x * sched.init_noise_sigma
    last = len(sched.timesteps) - 1
    for i, t in enumerate(sched.timesteps):
        inp = sched.scale_model_input(x, t)  # the VP x_t at model time t, for every scheduler
        out = denoise(inp, times[i])
        pred = out.x0 if spec.feed == "x0" else out.eps
        if spec.uses_learned_variance and out.var is not None:
            pred = torch.cat([pred, out.var.to(pred.dtype)], dim=1)
        kw = step_kw
        if "eta" in kw and float(prepared.model_times[i]) < eta_min_t:
            kw = {**step_kw, "eta": 0.0}  # deterministic below the stochastic window
        res = sched.step(pred, t, x, return_dict=True, **gen_kw, **kw)
        x = res.prev_sample
        if i == last and spec.ends_at_x0:
            x = res.pred_original_sample
        if callback is not None:
            callback(i)
    return x


# ---- native samplers -------------------------------------------------------------------------


def _noise_like(x: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """One standard normal draw per sample from its own generator (as diffusers' randn_tensor
    with a list of generators), on the device of ``x``."""
    gens = step_generators(generators, x.device)
    return torch.stack(
        [torch.randn(x.shape[1:], generator=g, device=g.device, dtype=x.dtype) for g in gens]
    ).to(x.device)


def run_dpmpp_2m(
    prepared: PreparedSampler,
    denoise: Denoise,
    x: torch.Tensor,
    generators: list[torch.Generator],
    callback: Callback | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) with stochasticity ``eta`` at trained timesteps ``>= eta_min_t``.

    In the VP state ``x = a x0 + s eps`` (``a = sqrt(abar)``, ``s = sqrt(1 - abar)``, noise level
    ``sigma = s / a``, ``lambda = -log sigma``), from noise level s_i to t_{i+1} with ``h =
    lambda_next - lambda_i`` and data prediction D (2nd order, midpoint: ``D = x0_i + (x0_i -
    x0_{i-1}) / (2 r)``, ``r = h_{i-1} / h``; 1st order at the first step):

        x_next = (s_next / s_i) e^{-eta h} x + a_next (1 - e^{-(1 + eta) h}) D
                 + s_next sqrt(1 - e^{-2 eta h}) z

    eta = 0 is DPM-Solver++(2M) on the probability-flow ODE (Lu et al. 2022, Algorithm 2),
    eta = 1 its SDE variant (sec. 5; diffusers' ``sde-dpmsolver++``), in between a partial
    re-noising (k-diffusion's ``sample_dpmpp_2m_sde``). Above ``eta_min_t`` the noise decorrelates
    each sample from the initial noise whose errors a deterministic solver would carry (at low
    SNR, an eps-prediction network's x0 estimate is mostly amplified error); below it the steps
    are deterministic and keep fine detail that few large stochastic steps would smooth away. The
    last step returns the x0 estimate (noise level 0).
    """
    eta, eta_min_t = float(prepared.options["eta"]), float(prepared.options["eta_min_t"])
    times = _on(prepared.model_times, x.device)
    log_sig = prepared.schedule.log_sigma_at(prepared.model_times.double().numpy())
    x0_prev = h_prev = None
    last = len(times) - 1
    for i in range(len(times)):
        out = denoise(x, times[i])
        x0 = out.x0.to(x.dtype)
        if i == last:
            x = x0
        else:
            lam, lam_next = -log_sig[i], -log_sig[i + 1]
            h = lam_next - lam
            e = eta if float(prepared.model_times[i]) >= eta_min_t else 0.0
            s_i, s_next = _vp_std(log_sig[i]), _vp_std(log_sig[i + 1])
            a_next = _vp_mean(log_sig[i + 1])
            d = x0 if x0_prev is None else x0 + (x0 - x0_prev) / (2.0 * h_prev / h)
            x = (s_next / s_i) * np.exp(-e * h) * x + a_next * -np.expm1(-(1.0 + e) * h) * d
            if e > 0:
                x = x + s_next * np.sqrt(-np.expm1(-2.0 * e * h)) * _noise_like(x, generators)
            x0_prev, h_prev = x0, h
        if callback is not None:
            callback(i)
    return x


def run_restart(
    prepared: PreparedSampler,
    denoise: Denoise,
    x: torch.Tensor,
    generators: list[torch.Generator],
    callback: Callback | None = None,
) -> torch.Tensor:
    """Restart sampling (Xu et al. 2023): Heun on the probability-flow ODE, with ``restarts``
    returns from noise level sigma(restart_min_t) up to sigma(restart_max_t) by fresh noise,
    each followed by ``restart_steps`` Heun steps back down.

    The main trajectory visits the respaced timesteps (Heun, 2 network calls a step, 1 on the step
    that ends at sigma = 0); a restart starts where the main trajectory first reaches
    ``restart_min_t`` or below (on a grid too coarse for that, at its last level above 0). In the
    VE state ``y = x / a`` (noise level sigma), a return is
    ``y + sqrt(sigma_max^2 - sigma_min^2) z``: the forward process's own noise, which contracts the
    errors the ODE accumulated above (their paper, Theorem 3).
    """
    opts = prepared.options
    sched = prepared.schedule
    sig = np.exp(sched.log_sigma_at(prepared.model_times.double().numpy()))
    grid = np.append(sig, 0.0)
    lo_sig = float(np.exp(sched.log_sigma_at(float(opts["restart_min_t"]))))
    hi_sig = float(np.exp(sched.log_sigma_at(float(opts["restart_max_t"]))))
    inner = np.geomspace(hi_sig, lo_sig, int(opts["restart_steps"]) + 1)
    y = x * np.sqrt(1.0 + grid[0] ** 2)  # VE state at the first noise level
    calls = 0

    def d(y, sigma):  # dy/dsigma = (y - x0) / sigma, the denoiser called at the VP state
        nonlocal calls
        a = 1.0 / np.sqrt(1.0 + sigma**2)
        t = torch.as_tensor(float(sched.time_at(sigma)), dtype=torch.float64, device=y.device)
        out = denoise(y * a, t)
        if callback is not None:
            callback(calls)
        calls += 1
        return (y - out.x0.to(y.dtype)) / sigma, out.x0.to(y.dtype)

    def heun(y, s, s_next):
        dy, x0 = d(y, s)
        if s_next == 0.0:
            return x0
        y2 = y + (s_next - s) * dy
        dy2, _ = d(y2, s_next)
        return y + (s_next - s) * 0.5 * (dy + dy2)

    # restart where the main trajectory first reaches sigma(restart_min_t) (or, on a grid too
    # coarse to have such a point, at its last noise level above 0)
    positive = [i for i in range(len(sig)) if grid[i + 1] > 0]
    at = next((i for i in positive if grid[i + 1] <= lo_sig), positive[-1] if positive else -1)
    for i in range(len(sig)):
        y = heun(y, grid[i], grid[i + 1])
        if i == at and hi_sig > grid[i + 1]:
            for _ in range(int(opts["restarts"])):
                z = _noise_like(y, generators)
                y = y + np.sqrt(hi_sig**2 - grid[i + 1] ** 2) * z
                steps = np.append(inner[:-1], grid[i + 1])
                for k in range(len(steps) - 1):
                    y = heun(y, steps[k], steps[k + 1])
    return y


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> np.ndarray:
    """``n`` noise levels from ``sigma_max`` down to ``sigma_min``, evenly spaced in
    ``sigma^(1/rho)`` (Karras et al. 2022, eq. 5); ``n = 1``: ``[sigma_max]``."""
    if n == 1:
        return np.array([sigma_max], np.float64)
    ramp = np.linspace(0.0, 1.0, n)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def consistency_times(schedule: Schedule, options: dict[str, Any], steps: int) -> np.ndarray:
    """The K evaluation times of multistep consistency sampling: the first K of K + 1 Karras
    noise levels from the schedule's largest to its smallest (the last would be data)."""
    sig = karras_sigmas(schedule.sigma_min, schedule.sigma_max, steps + 1, options["rho"])
    return schedule.time_at(sig[:steps])


def run_consistency(
    prepared: PreparedSampler,
    denoise: Denoise,
    x: torch.Tensor,
    generators: list[torch.Generator],
    callback: Callback | None = None,
) -> torch.Tensor:
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1).

    A consistency model maps a state at any noise level to the start of its ODE trajectory, so
    its x0 estimate is already a sample: one call at the largest noise level gives one. Each
    further step re-noises that sample to the next, lower level with fresh noise, ``x_t = a_t x0
    + s_t z``, and maps it back; the fresh noise restores the fine texture a one-call map loses.
    For a model that is not a consistency model this is a crude ancestral sampler.
    """
    times = _on(prepared.model_times, x.device)
    abar = prepared.schedule.abar_at(prepared.model_times.double().numpy())
    for i in range(len(times)):
        if i > 0:
            x = float(np.sqrt(abar[i])) * x + float(np.sqrt(1.0 - abar[i])) * _noise_like(
                x, generators
            )
        x = denoise(x, times[i]).x0.to(x.dtype)
        if callback is not None:
            callback(i)
    return x


def _vp_std(log_sigma: float) -> float:
    """s = sigma / sqrt(1 + sigma^2)."""
    return float(1.0 / np.sqrt(1.0 + np.exp(-2.0 * log_sigma)))


def _vp_mean(log_sigma: float) -> float:
    """a = 1 / sqrt(1 + sigma^2)."""
    return float(1.0 / np.sqrt(1.0 + np.exp(2.0 * log_sigma)))


# ---- the registry -------------------------------------------------------------------------------

_SPACING = {"timestep_spacing": "trailing"}
# use_lu_lambdas: uniform in log-SNR lambda = -2 log sigma (Lu et al. 2022, "DPM-Solver++", sec. 6)
_SIGMA_SPACINGS = {"use_karras_sigmas": False, "use_lu_lambdas": False}
SAMPLERS: dict[str, SamplerSpec] = {
    s.name: s
    for s in [
        SamplerSpec(
            "ddpm",
            "ancestral DDPM on the respaced schedule; honours a learned (range) variance "
            "(variance=run), or takes beta~ (fixed_small) or beta (fixed_large)",
            run_scheduler,
            options={**_SPACING, "variance": "run"},
            stochastic=True,
            uses_learned_variance=True,
            cls="DDPMScheduler",
            fixed={"clip_sample": False},
            ends_at_x0=True,
        ),
        SamplerSpec(
            "ddim",
            "DDIM (eta=0 deterministic, eta=1 ancestral-like; eta only at trained timesteps "
            ">= eta_min_t)",
            run_scheduler,
            options={**_SPACING, "eta": 0.0, "eta_min_t": 0},
            stochastic=True,  # with eta > 0
            cls="DDIMScheduler",
            fixed={"clip_sample": False, "set_alpha_to_one": True},
            ends_at_x0=True,
            step_options=frozenset({"eta"}),
            loop_options=frozenset({"eta_min_t"}),
        ),
        SamplerSpec(
            "dpmsolver++",
            "DPM-Solver++ multistep, orders 1-3 (data prediction)",
            run_scheduler,
            options={
                **_SPACING,
                "solver_order": 2,
                **_SIGMA_SPACINGS,
                "lower_order_final": True,
                "solver_type": "midpoint",
            },
            cls="DPMSolverMultistepScheduler",
            fixed={"algorithm_type": "dpmsolver++", "final_sigmas_type": "zero"},
        ),
        SamplerSpec(
            "dpmsolver++-sde",
            "SDE-DPM-Solver++ multistep, orders 1-2 (Lu et al. 2022, sec. 5)",
            run_scheduler,
            options={
                **_SPACING,
                "solver_order": 2,
                **_SIGMA_SPACINGS,
                "lower_order_final": True,
                "solver_type": "midpoint",
            },
            stochastic=True,
            cls="DPMSolverMultistepScheduler",
            fixed={"algorithm_type": "sde-dpmsolver++", "final_sigmas_type": "zero"},
        ),
        SamplerSpec(
            "dpmsolver++-hybrid",
            "DPM-Solver++(2M), stochastic (eta) at trained timesteps >= eta_min_t, "
            "deterministic below",
            run_dpmpp_2m,
            options={**_SPACING, **_SIGMA_SPACINGS, "eta": 1.0, "eta_min_t": 0},
            stochastic=True,
            cls="DPMSolverMultistepScheduler",  # its respaced timesteps are the time grid
            fixed={"algorithm_type": "dpmsolver++", "final_sigmas_type": "zero"},
            loop_options=frozenset({"eta", "eta_min_t"}),
        ),
        SamplerSpec(
            "restart",
            "Restart sampling: Heun ODE steps with `restarts` returns by fresh noise from "
            "restart_min_t up to restart_max_t, each followed by restart_steps Heun steps",
            run_restart,
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
            cls="DPMSolverMultistepScheduler",  # its respaced timesteps are the time grid
            fixed={"algorithm_type": "dpmsolver++", "final_sigmas_type": "zero"},
            loop_options=frozenset({"restart_min_t", "restart_max_t", "restarts", "restart_steps"}),
        ),
        SamplerSpec(
            "consistency",
            "multistep consistency sampling: x0 of a consistency-distilled student, re-noised "
            "to each next Karras level (rho) with fresh noise",
            run_consistency,
            options={"rho": 7.0},
            stochastic=True,  # from the second step on
            times=consistency_times,
        ),
        SamplerSpec(
            "dpmsolver++-singlestep",
            "DPM-Solver++ singlestep, orders 1-3 (linspace timesteps)",
            run_scheduler,
            options={"solver_order": 2, **_SIGMA_SPACINGS, "lower_order_final": True},
            cls="DPMSolverSinglestepScheduler",
            fixed={"algorithm_type": "dpmsolver++", "final_sigmas_type": "zero"},
        ),
        SamplerSpec(
            "unipc",
            "UniPC multistep predictor-corrector, orders 1-3",
            run_scheduler,
            options={**_SPACING, "solver_order": 2, **_SIGMA_SPACINGS, "solver_type": "bh2"},
            cls="UniPCMultistepScheduler",
            fixed={"final_sigmas_type": "zero"},
        ),
        SamplerSpec(
            "euler",
            "Euler on the probability-flow ODE (Karras et al. 2022)",
            run_scheduler,
            options={**_SPACING, "use_karras_sigmas": False},
            cls="EulerDiscreteScheduler",
            fixed={"final_sigmas_type": "zero"},
        ),
        SamplerSpec(
            "euler_ancestral",
            "Euler ancestral",
            run_scheduler,
            options={**_SPACING},
            stochastic=True,
            cls="EulerAncestralDiscreteScheduler",
            feed="eps",  # diffusers lacks x0 ("sample") here
        ),
        SamplerSpec(
            "heun",
            "Heun 2nd order",
            run_scheduler,
            options={**_SPACING, "use_karras_sigmas": False},
            model_calls_per_step=2,
            cls="HeunDiscreteScheduler",
            times_from_sigmas=False,
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
    if spec.times is not None:
        times = torch.from_numpy(np.asarray(spec.times(schedule, merged, int(steps)), np.float64))
        return PreparedSampler(spec, diffusion, schedule, int(steps), merged, times)
    scheduler = _respaced_scheduler(spec, diffusion, schedule, merged, int(steps))
    times = torch.as_tensor(scheduler.timesteps).double()
    return PreparedSampler(spec, diffusion, schedule, int(steps), merged, times, scheduler)


def _respaced_scheduler(spec, diffusion, schedule, merged, steps: int) -> Any:
    scheduler = _build_scheduler(spec, diffusion, schedule, merged)
    scheduler.set_timesteps(steps)
    _continuous_spacing(scheduler, spec, schedule, merged, steps)
    return scheduler


def sampling_betas(schedule: Schedule) -> np.ndarray:
    """The trained betas, with abar = 0 (zero terminal SNR) made finite
    (:attr:`Schedule.sampling_abar`): the sigma-space solvers need a finite largest noise level."""
    abar = schedule.sampling_abar
    return 1.0 - abar / np.append(1.0, abar[:-1])


def _build_scheduler(
    spec: SamplerSpec, diffusion: DiffusionConfig, schedule: Schedule, merged: dict
) -> Any:
    """The diffusers scheduler on the trained betas, fed x0 (or eps) and, for DDPM, the
    run's variance."""
    cls = getattr(diffusers, spec.cls)
    ctor = {k: v for k, v in merged.items() if k not in spec.step_options | spec.loop_options}
    if "use_lu_lambdas" in ctor and "use_lu_lambdas" not in _ctor_params(cls):
        del ctor["use_lu_lambdas"]  # applied by _continuous_spacing
    if "variance" in ctor:
        chosen = ctor.pop("variance")
        ctor["variance_type"] = diffusion.variance if chosen == "run" else chosen
    return cls(
        num_train_timesteps=diffusion.timesteps,
        trained_betas=sampling_betas(schedule).tolist(),
        prediction_type="sample" if spec.feed == "x0" else "epsilon",
        **spec.fixed,
        **ctor,
    )


def _continuous_spacing(scheduler, spec: SamplerSpec, schedule: Schedule, merged, steps) -> None:
    """Karras / log-SNR noise levels: the network time t(sigma), unrounded, as timesteps.

    As the scheduler's keys these also stay distinct (diffusers' rounded ones repeat when K is
    close to T, which breaks its index lookup). Log-SNR spacing is set here for the classes that
    lack ``use_lu_lambdas``.
    """
    if not (merged.get("use_karras_sigmas") or merged.get("use_lu_lambdas")):
        return
    if merged.get("use_lu_lambdas") and "use_lu_lambdas" not in _ctor_params(type(scheduler)):
        sig = np.exp(np.linspace(schedule.log_sigmas[-1], schedule.log_sigmas[0], steps))
        scheduler.sigmas = torch.from_numpy(np.append(sig, 0.0).astype(np.float32))
    if spec.times_from_sigmas:  # Heun's interleaved times are t(sigma) already
        sig = scheduler.sigmas.double().numpy()[: len(scheduler.timesteps)]
        scheduler.timesteps = torch.from_numpy(schedule.time_at(sig))


def _ctor_params(cls: type) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters)


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
