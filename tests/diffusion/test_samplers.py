"""The sampler registry: every sampler on the trained schedule, checked against exact answers.

The toy dataset is x0 ~ N(MU, S^2) independently per pixel. Under ``x_t = a x0 + b eps`` with
``a = sqrt(abar_t)``, ``b = sqrt(1 - abar_t)``, the exact (Bayes-optimal) denoiser is

    E[x0 | x_t]  = MU + a S^2 (x_t - a MU) / (a^2 S^2 + b^2)
    E[eps | x_t] = b (x_t - a MU) / (a^2 S^2 + b^2)
    E[v | x_t]   = a E[eps | x_t] - b E[x0 | x_t]

so a correct sampler on the run's schedule must return samples with mean MU and variance S^2, up
to its discretisation error. Measured here (125 samples of 16x16 = 32,000 iid pixels, seeds 0..124,
T=1000 linear, eps-prediction; relative variance error; the mean is off by ~-0.006 for every
sampler, the Monte-Carlo error of these x_T):

    ddpm 1000 steps -1.9 %        euler_ancestral 500 -2.4 %     ddim 200 / euler 200 -2.5 %
    dpmsolver++ 25 -3.9 %         unipc 25 -3.8 %                 heun 25 -4.9 %
    dpmsolver++-singlestep 50 -4.6 %     dpmsolver++ Karras 50 +1.8 %    dpmsolver++ log-SNR 25 +2.3 %
    dpmsolver++ order 1 (= DDIM) 200 -2.5 %
    (at 50 steps: ddpm -21 %, ddim -10.5 %, dpmsolver++ +0.9 %, unipc +0.2 %: the first-order
    samplers shrink the variance, error ~ 1/K)

Tolerances: |mean - MU| < 0.015 (~5 standard errors), |var / S^2 - 1| < 0.065.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import fn_denoiser
from radardiff.config.schema import DiffusionConfig
from radardiff.diffusion import GaussianDiffusion, Schedule, make_betas
from radardiff.diffusion.samplers import SAMPLERS, describe_samplers, initial_noise, make_sampler
from radardiff.errors import ConfigError, RadarDiffError

MU, S = 0.3, 0.5
N_SAMPLES, SIZE = 125, 16
MEAN_TOL, VAR_TOL = 0.015, 0.065


def exact_model_fn(cfg: DiffusionConfig, mu: float = MU, s: float = S):
    """The exact denoiser of N(mu, s^2) in the parameterisation of ``cfg``, for any (fractional)
    trained timestep t: abar(t) from the schedule's log-sigma interpolation, as the samplers use."""
    schedule = Schedule(cfg)

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = float(schedule.abar_at(float(torch.as_tensor(t).reshape(-1)[0])))
        a, b = ab**0.5, (1.0 - ab) ** 0.5
        d = x - a * mu
        den = a * a * s * s + b * b
        eps, x0 = b * d / den, mu + a * s * s * d / den
        return {"eps": eps, "x0": x0, "v": a * eps - b * x0}[cfg.prediction]

    return fn


def exact_consistency_fn(cfg: DiffusionConfig, mu: float = MU, s: float = S):
    """The exact consistency function of N(mu, s^2) (the end of the probability-flow ODE
    trajectory through x_t), in the parameterisation of ``cfg``.

    In the VE view ``y = x_t / a`` at noise level sigma the ideal denoiser is ``mu + s^2 (y - mu)
    / (s^2 + sigma^2)``, so ``dy/dsigma = (y - D) / sigma`` keeps ``(y - mu) / sqrt(s^2 +
    sigma^2)`` constant: the trajectory ends at ``mu + (y - mu) s / sqrt(s^2 + sigma^2)``.
    """
    schedule = Schedule(cfg)

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = float(schedule.abar_at(float(torch.as_tensor(t).reshape(-1)[0])))
        a, b = ab**0.5, (1.0 - ab) ** 0.5
        x0 = mu + (x / a - mu) * s / (s * s + b * b / (a * a)) ** 0.5
        eps = (x - a * x0) / b
        return {"eps": eps, "x0": x0, "v": a * eps - b * x0}[cfg.prediction]

    return fn


def gaussian_samples(name, steps, options=None, **diffusion) -> torch.Tensor:
    """Samples of N(MU, S^2) by sampler ``name`` over its exact network: the ideal denoiser, or
    for the consistency sampler the exact consistency function."""
    diffusion = {"prediction": "eps", **diffusion}
    exact = exact_consistency_fn if name == "consistency" else exact_model_fn
    den = fn_denoiser(exact(DiffusionConfig(**diffusion)), **diffusion)
    prepared = make_sampler(name, den.cfg.diffusion, steps, options)
    gens = [torch.Generator().manual_seed(i) for i in range(N_SAMPLES)]
    x = initial_noise(gens, (1, SIZE, SIZE)).double()
    return prepared.run(den.bind(), x, gens)


def assert_matches_gaussian(y: torch.Tensor, var_tol: float = VAR_TOL) -> None:
    mean, var = float(y.mean()), float(y.var())
    assert abs(mean - MU) < MEAN_TOL, f"mean {mean:.4f} vs {MU}"
    assert abs(var / S**2 - 1) < var_tol, f"variance {var:.4f} vs {S**2}"


# name -> steps at which the Gaussian moments are within tolerance (see module doc)
CONTRACT_STEPS = {
    "ddpm": 1000,
    "ddim": 200,
    "dpmsolver++": 25,
    "dpmsolver++-sde": 200,
    "dpmsolver++-hybrid": 200,
    "restart": 25,
    "dpmsolver++-singlestep": 50,
    "unipc": 25,
    "euler": 200,
    "euler_ancestral": 500,
    "heun": 25,
    "consistency": 4,  # exact at any step count over an exact consistency function
}


class TinyNet(torch.nn.Module):
    """A deterministic, per-sample (no batch coupling) stand-in network."""

    def __init__(self, channels: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, t):
        return torch.tanh(self.conv(x)) * 0.5 + 0.01 * x * torch.cos(t.view(-1, 1, 1, 1) / 100.0)


def test_every_sampler_is_in_the_contract():
    assert set(CONTRACT_STEPS) == set(SAMPLERS)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_sampler_contract(name):
    """Shape, reproducibility, batch independence, and the exact Gaussian moments."""
    cfg = DiffusionConfig(timesteps=1000)
    net = TinyNet()

    den = fn_denoiser(net, data_channels=2, timesteps=1000)

    def sample(seeds, steps=6):
        prepared = make_sampler(name, cfg, steps)
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        x = initial_noise(gens, (2, 5, 5))
        return prepared.run(den.bind(), x, gens)

    a = sample([10, 11, 12])
    assert a.shape == (3, 2, 5, 5) and torch.isfinite(a).all()
    assert torch.equal(sample([10, 11, 12]), a)  # same seeds, same samples
    for k, seed in enumerate([10, 11, 12]):  # sample i does not depend on its batch
        torch.testing.assert_close(sample([seed])[0], a[k], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a[0], a[1])

    assert_matches_gaussian(gaussian_samples(name, CONTRACT_STEPS[name], timesteps=1000))


@pytest.mark.parametrize(
    ("name", "steps", "options", "diffusion"),
    [
        ("dpmsolver++", 25, {"solver_order": 3}, {}),
        ("dpmsolver++", 200, {"solver_order": 1}, {}),
        ("dpmsolver++", 50, {"use_karras_sigmas": True}, {}),
        ("dpmsolver++", 25, {"use_lu_lambdas": True}, {}),
        ("dpmsolver++", 25, {"timestep_spacing": "linspace", "solver_type": "heun"}, {}),
        ("dpmsolver++-singlestep", 50, {"use_karras_sigmas": True}, {}),
        ("dpmsolver++-singlestep", 50, {"use_lu_lambdas": True}, {}),
        ("dpmsolver++-singlestep", 48, {"solver_order": 3}, {}),
        ("unipc", 25, {"use_karras_sigmas": True, "solver_order": 3}, {}),
        ("unipc", 25, {"use_lu_lambdas": True}, {}),
        ("heun", 25, {"use_karras_sigmas": True}, {}),
        ("euler", 200, {"use_karras_sigmas": True}, {}),
        ("ddim", 200, {"eta": 1.0}, {"schedule": "cosine"}),
        ("ddim", 200, {}, {"schedule": "cosine"}),
        ("dpmsolver++", 25, {}, {"schedule": "cosine"}),
        ("dpmsolver++", 25, {}, {"prediction": "v"}),
        ("dpmsolver++", 25, {}, {"prediction": "x0"}),
        ("unipc", 25, {}, {"prediction": "v", "schedule": "cosine"}),
        ("ddpm", 500, {}, {"prediction": "v", "schedule": "cosine"}),
    ],
)
def test_gaussian_moments_options(name, steps, options, diffusion):
    assert_matches_gaussian(gaussian_samples(name, steps, options, timesteps=1000, **diffusion))


def test_higher_order_converges():
    """Deterministic DPM-Solver++: the variance error shrinks as the steps grow."""
    errs = [
        abs(float(gaussian_samples("dpmsolver++", k, timesteps=1000).var()) / S**2 - 1)
        for k in (10, 25, 100)
    ]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.02


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_grids_are_noise_levels_of_the_trained_schedule(name):
    """Every grid's levels are the run's noise levels at its trained (or continuous) timesteps,
    never a fresh schedule's (cosine, T=500 here), and end at the data (sigma = 0)."""
    cfg = DiffusionConfig(timesteps=500, schedule="cosine")
    p = make_sampler(name, cfg, 20)
    abar = np.cumprod(1.0 - make_betas("cosine", 500))
    sigma = np.sqrt((1.0 - abar) / abar)
    t = p.model_times.numpy()
    assert len(p.sigmas) == 21 and p.sigmas[-1] == 0.0 and (np.diff(p.sigmas) < 0).all()
    want = np.exp(np.interp(t, np.arange(500), np.log(sigma)))
    np.testing.assert_allclose(p.sigmas[:-1], want, rtol=1e-9)


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpmsolver++", "unipc", "euler"])
def test_respaced_timesteps_are_trained_ones(name):
    prepared = make_sampler(name, DiffusionConfig(timesteps=1000), 10)
    ts = prepared.model_times.numpy()
    # trailing spacing; the network time of a noise level is its trained timestep to float
    # precision (sigma is the grid's coordinate, t(sigma) interpolates log sigma)
    np.testing.assert_allclose(ts, np.arange(999, 0, -100), rtol=0, atol=1e-9)
    assert len(prepared.sigmas) == 11


def test_karras_model_times_are_continuous():
    """With Karras sigmas the network sees t(sigma) exactly, not diffusers' rounded timestep."""
    cfg = DiffusionConfig(timesteps=1000)
    schedule = Schedule(cfg)
    for name in ("dpmsolver++", "unipc", "dpmsolver++-singlestep", "euler", "heun", "restart"):
        p = make_sampler(name, cfg, 12, {"use_karras_sigmas": True})
        sig = p.sigmas[:12]
        np.testing.assert_allclose(p.model_times.double().numpy(), schedule.time_at(sig))
        assert not np.allclose(p.model_times.numpy(), np.round(p.model_times.numpy()))


def test_lu_lambdas_are_uniform_in_log_snr():
    for name in ("dpmsolver++", "dpmsolver++-singlestep", "unipc"):
        p = make_sampler(name, DiffusionConfig(timesteps=1000), 15, {"use_lu_lambdas": True})
        log_sig = np.log(p.sigmas[:15])
        np.testing.assert_allclose(np.diff(log_sig), np.diff(log_sig)[0], rtol=1e-9)


@pytest.mark.parametrize("variance", ["learned_range", "fixed_large", "fixed_small"])
def test_ddpm_step_matches_hand_computation(variance):
    """One respaced DDPM step equals the improved-diffusion posterior on the respaced schedule:
    mean mu~'_k(x_t, x0_hat), log variance frac log beta'_k + (1 - frac) log beta~'_k for the
    learned range, where beta'_k = 1 - abar_{t_k} / abar_{t_{k-1}}; no noise at the last step."""
    cfg = DiffusionConfig(timesteps=1000, variance=variance, prediction="eps")
    steps = 10
    prepared = make_sampler("ddpm", cfg, steps)
    ts = np.round(prepared.model_times.numpy()[::-1]).astype(int)  # increasing, trained
    hand = GaussianDiffusion(cfg).respace(ts)
    c, learned = 2, variance == "learned_range"
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, c, 4, 4, generator=g, dtype=torch.float64)
    x_in = x.clone()
    outs = []
    for _ in range(steps):
        out = torch.randn(2, c * (2 if learned else 1), 4, 4, generator=g, dtype=torch.float64)
        if learned:
            out[:, c:] = torch.tanh(out[:, c:])
        outs.append(out)
    gens = [torch.Generator().manual_seed(s) for s in (5, 6)]
    ref_gens = [torch.Generator().manual_seed(s) for s in (5, 6)]
    calls = iter(outs)
    den = fn_denoiser(lambda xt, t: next(calls), data_channels=c, timesteps=1000, variance=variance)
    y = prepared.run(den.bind(), x_in, gens)
    for k in range(steps - 1, -1, -1):  # respaced index k = steps-1 .. 0
        out = outs[steps - 1 - k]
        kt = torch.full((2,), k, dtype=torch.long)
        post = hand.p_mean_variance(out, x, kt)
        z = torch.cat(
            [torch.randn((1, c, 4, 4), generator=gg, dtype=torch.float64) for gg in ref_gens]
        )
        x = post.mean + (torch.exp(0.5 * post.log_variance) * z if k > 0 else 0.0)
    torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nope", 10, None), "unknown sampler 'nope'"),
        (("ddim", 10, {"bogus": 1}), "unknown option(s) bogus"),
        (("ddim", 1001, None), "--steps 1001 is out of range"),
        (("ddim", 0, None), "--steps 0 is out of range"),
        (("ddim", 10, {"eta": 2.0}), "eta must be in [0, 1]"),
        (("dpmsolver++", 10, {"solver_order": 4}), "solver_order must be one of 1, 2, 3"),
        (("ddpm", 10, {"timestep_spacing": "odd"}), "timestep_spacing must be one of"),
        (("unipc", 10, {"use_karras_sigmas": "yes"}), "use_karras_sigmas must be true or false"),
        (("dpmsolver++", 10, {"use_karras_sigmas": True, "use_lu_lambdas": True}), "exclude"),
    ],
)
def test_bad_sampler_input(args, message):
    with pytest.raises(ConfigError) as err:
        make_sampler(args[0], DiffusionConfig(timesteps=1000), args[1], args[2])
    assert message in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, RadarDiffError)


def test_a_sampler_that_cannot_serve_the_run_is_refused_naming_both():
    """Capabilities are flags on the spec: a sampler limited to eps-prediction refuses an
    x0-prediction run, in one line naming the sampler and the run's parameterisation."""
    from dataclasses import replace

    from radardiff.diffusion import check_serves

    narrow = replace(SAMPLERS["ddim"], name="eps-only", predictions=("eps",))
    with pytest.raises(ConfigError, match="'eps-only' does not support x0-prediction") as err:
        check_serves(narrow, DiffusionConfig(prediction="x0"))
    assert "\n" not in str(err.value)


def test_euler_ancestral_serves_x0_prediction_through_the_denoiser():
    """Every solver takes x0 and eps from the denoiser, whatever the network predicts."""
    assert_matches_gaussian(gaussian_samples("euler_ancestral", 500, prediction="x0"))


def test_describe_samplers_lists_every_sampler_and_option():
    lines = describe_samplers()
    assert len(lines) == len(SAMPLERS)
    for line, (name, spec) in zip(lines, SAMPLERS.items(), strict=True):
        assert line.startswith(name)
        for opt in spec.options:
            assert opt in line


@pytest.mark.parametrize(("reference", "eta"), [("dpmsolver++", 0.0), ("dpmsolver++-sde", 1.0)])
def test_hybrid_solver_is_dpm_solver_at_its_ends(reference, eta):
    """The hybrid DPM-Solver++(2M) equals the ODE solver at eta = 0 and the SDE solver at
    eta = 1 (same per-sample noise draws)."""
    den = fn_denoiser(TinyNet(), data_channels=2, timesteps=1000, prediction="v")
    ys = []
    for name, opts in ((reference, {}), ("dpmsolver++-hybrid", {"eta": eta})):
        p = make_sampler(name, den.cfg.diffusion, 12, opts)
        gens = [torch.Generator().manual_seed(s) for s in (4, 5)]
        ys.append(p.run(den.bind(), initial_noise(gens, (2, 5, 5)), gens))
    torch.testing.assert_close(ys[1], ys[0], atol=1e-5, rtol=1e-5)


def test_hybrid_solver_is_deterministic_below_eta_min_t():
    """With eta_min_t above every step, no noise is drawn: the ODE solver; with a window, the
    samples depend on the step noise only through the steps above it."""
    den = fn_denoiser(TinyNet(), data_channels=2, timesteps=1000)

    def run(opts, seeds=(1, 2)):
        p = make_sampler("dpmsolver++-hybrid", den.cfg.diffusion, 10, opts)
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        return p.run(den.bind(), initial_noise(gens, (2, 5, 5)), gens)

    ode = run({"eta": 0.0})
    torch.testing.assert_close(run({"eta": 1.0, "eta_min_t": 1000}), ode)
    mixed = run({"eta": 1.0, "eta_min_t": 500})
    assert not torch.allclose(mixed, ode) and not torch.allclose(mixed, run({"eta": 1.0}))


def test_hybrid_solver_gaussian_moments_in_between():
    assert_matches_gaussian(
        gaussian_samples("dpmsolver++-hybrid", 100, {"eta": 1.0, "eta_min_t": 400}, timesteps=1000)
    )


def test_restart_sampler_network_calls_and_window():
    """Heun: 2 calls a step, 1 on the last (to sigma 0); each restart adds restart_steps Heun
    steps; without restarts it is the deterministic Heun ODE solver."""
    calls = []
    den = fn_denoiser(lambda x, t: (calls.append(float(t[0])), 0.1 * x)[1], timesteps=1000)
    gens = [torch.Generator().manual_seed(0)]
    for opts, want in (({"restarts": 0}, 19), ({}, 25), ({"restarts": 2, "restart_steps": 2}, 27)):
        calls.clear()
        p = make_sampler("restart", den.cfg.diffusion, 10, opts)
        p.run(den.bind(), initial_noise(gens, (1, 3, 3)), gens)
        assert len(calls) == want, (opts, len(calls))
    # the restart goes back up to restart_max_t: a call at t ~ 400 after the main pass passed it
    p = make_sampler("restart", den.cfg.diffusion, 10, {"restart_min_t": 150, "restart_max_t": 400})
    calls.clear()
    p.run(den.bind(), initial_noise(gens, (1, 3, 3)), gens)
    first_low = next(i for i, t in enumerate(calls) if t <= 150)
    assert max(calls[first_low:]) == pytest.approx(400, abs=1)
    with pytest.raises(ConfigError, match="restart_min_t .* must be below"):
        make_sampler("restart", den.cfg.diffusion, 10, {"restart_min_t": 500})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"eta_min_t": "high"}, "eta_min_t must be a whole number >= 0"),
        ({"eta_min_t": 1.5}, "eta_min_t must be a whole number"),
    ],
)
def test_bad_window_options(options, message):
    with pytest.raises(ConfigError, match=message):
        make_sampler("dpmsolver++-hybrid", DiffusionConfig(), 10, options)


def test_bad_restart_options():
    for opts, message in (
        ({"restarts": -1}, "restarts must be a whole number >= 0"),
        ({"restart_steps": 0}, "restart_steps must be a whole number >= 1"),
    ):
        with pytest.raises(ConfigError, match=message):
            make_sampler("restart", DiffusionConfig(), 10, opts)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_consistency_sampler_is_exact_over_a_consistency_function(steps):
    """Multistep consistency sampling of an exact consistency function gives the data law at
    every step count (re-noising an exact sample to a lower level and mapping it back is
    exact); over the ideal denoiser instead (not a consistency model) one call gives the
    posterior mean at the largest noise level: almost no variance."""
    y = gaussian_samples("consistency", steps, timesteps=1000, prediction="v")
    assert_matches_gaussian(y)
    den = fn_denoiser(exact_model_fn(DiffusionConfig(prediction="v")), prediction="v")
    prepared = make_sampler("consistency", den.cfg.diffusion, 1)
    gens = [torch.Generator().manual_seed(i) for i in range(8)]
    mean_only = prepared.run(den.bind(), initial_noise(gens, (1, 8, 8)).double(), gens)
    assert float(mean_only.var()) < 0.01 * S**2


def test_consistency_sampler_times_are_karras_levels():
    from radardiff.diffusion.samplers import karras_sigmas

    cfg = DiffusionConfig(timesteps=1000)
    sched = Schedule(cfg)
    times = make_sampler("consistency", cfg, 3).model_times.numpy()
    assert times[0] == pytest.approx(999.0)  # the first call at the largest noise level
    want = karras_sigmas(sched.sigma_min, sched.sigma_max, 4)[:3]
    np.testing.assert_allclose(np.exp(sched.log_sigma_at(times)), want, rtol=1e-9)
    # sigma^(1/rho) evenly spaced, rho = 7, ending at sigma_min
    full = karras_sigmas(0.01, 100.0, 5)
    np.testing.assert_allclose(np.diff(full ** (1 / 7)), np.diff(full ** (1 / 7))[0])
    assert full[0] == pytest.approx(100.0) and full[-1] == pytest.approx(0.01)
    with pytest.raises(ConfigError, match="rho must be positive"):
        make_sampler("consistency", cfg, 2, {"rho": 0})
