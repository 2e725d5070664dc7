"""Schedules against the formulas of Ho et al. 2020 and Nichol and Dhariwal 2021; respacing."""

import math

import numpy as np
import pytest

from radardiff.config.schema import DiffusionConfig
from radardiff.diffusion.schedule import Schedule, make_betas, spaced_timesteps
from radardiff.errors import ConfigError


@pytest.mark.parametrize("T", [100, 250, 1000, 2000, 4000])
def test_linear_schedule_scaled_by_1000_over_T(T):
    betas = make_betas("linear", T)
    scale = 1000 / T
    assert betas.shape == (T,)
    assert betas[0] == pytest.approx(1e-4 * scale, rel=1e-12)
    assert betas[-1] == pytest.approx(0.02 * scale, rel=1e-12)
    for i in (1, T // 3, T - 2):
        hand = scale * (1e-4 + (0.02 - 1e-4) * i / (T - 1))
        assert betas[i] == pytest.approx(hand, rel=1e-12)


def test_linear_schedules_of_different_T_describe_the_same_process():
    # sum of betas up to the fraction tau is ~1000 (1e-4 tau + (0.02 - 1e-4) tau^2 / 2) for any T
    for tau in (0.1, 0.5, 0.9):
        ref = math.exp(-1000 * (1e-4 * tau + (0.02 - 1e-4) * tau**2 / 2))
        for T in (1000, 4000):
            abar = np.cumprod(1 - make_betas("linear", T))[round(tau * T) - 1]
            assert abar == pytest.approx(ref, rel=0.05)


def test_linear_schedule_with_too_few_steps_is_refused():
    with pytest.raises(ConfigError, match="timesteps = 20"):
        make_betas("linear", 20)
    with pytest.raises(ConfigError, match="schedule = 'quadratic'"):
        make_betas("quadratic", 100)


@pytest.mark.parametrize("T", [50, 1000, 4000])
def test_cosine_schedule_matches_nichol_dhariwal_eq17(T):
    betas = make_betas("cosine", T)
    abar = np.cumprod(1 - betas)

    def f(t):
        return math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2

    clipped = betas >= 0.999
    assert clipped.sum() <= 1 and (clipped.sum() == 0 or clipped[-1])
    for t in range(T - 1):  # abar_t = f(t+1) / f(0) wherever no beta was clipped before
        assert abar[t] == pytest.approx(f(t + 1) / f(0), rel=1e-9, abs=1e-15)
    assert betas[-1] == pytest.approx(min(1 - f(T) / f(T - 1), 0.999), rel=1e-12)
    assert betas.max() <= 0.999


def test_posterior_matches_gaussian_conditioning():
    """q(x_{t-1} | x_t, x_0) from the joint Gaussian of (x_{t-1}, x_t) given x_0."""
    s = Schedule(DiffusionConfig(timesteps=100, schedule="cosine"))
    for t in (1, 7, 50, 99):
        abar_prev, alpha, abar = s.alphas_cumprod[t - 1], 1 - s.betas[t], s.alphas_cumprod[t]
        var_prev = 1 - abar_prev  # x_{t-1} = sqrt(abar_prev) x0 + sqrt(var_prev) z
        cov = math.sqrt(alpha) * var_prev  # Cov(x_{t-1}, x_t | x0)
        var_t = 1 - abar
        # E[x_{t-1} | x_t, x0] = sqrt(abar_prev) x0 + cov / var_t (x_t - sqrt(abar) x0)
        coef_x0 = math.sqrt(abar_prev) - cov / var_t * math.sqrt(abar)
        coef_xt = cov / var_t
        assert s.posterior_mean_coef1[t] == pytest.approx(coef_x0, rel=1e-10)
        assert s.posterior_mean_coef2[t] == pytest.approx(coef_xt, rel=1e-10)
        assert s.posterior_variance[t] == pytest.approx(var_prev - cov**2 / var_t, rel=1e-9)
    assert s.posterior_variance[0] == 0.0
    assert s.posterior_log_variance_clipped[0] == pytest.approx(math.log(s.posterior_variance[1]))
    assert s.large_variance[0] == s.posterior_variance[1]
    np.testing.assert_array_equal(s.large_variance[1:], s.betas[1:])


def test_respace_keeps_trained_alphas_cumprod():
    s = Schedule(DiffusionConfig(timesteps=1000, schedule="linear"))
    keep = spaced_timesteps(1000, 50)
    r = s.respace(keep)
    assert len(keep) == 50 and keep[0] == 0 and keep[-1] == 999
    np.testing.assert_allclose(r.alphas_cumprod, s.alphas_cumprod[keep], rtol=1e-12)
    prev = np.append(1.0, s.alphas_cumprod[keep[:-1]])
    np.testing.assert_allclose(r.betas, 1 - s.alphas_cumprod[keep] / prev, rtol=1e-12)
    np.testing.assert_array_equal(r.timestep_map, keep)
    # a respaced schedule is not a new, shorter linear schedule
    assert not np.allclose(r.betas, make_betas("linear", 50))
    # respacing a respaced schedule maps back to trained timesteps
    np.testing.assert_array_equal(r.respace([0, 10, 49]).timestep_map, keep[[0, 10, 49]])


def test_respace_with_every_step_is_the_identity():
    s = Schedule(DiffusionConfig(timesteps=200, schedule="cosine"))
    r = s.respace(np.arange(200))
    np.testing.assert_allclose(r.betas, s.betas, rtol=1e-9)
    np.testing.assert_allclose(r.posterior_variance, s.posterior_variance, rtol=1e-8)


def test_respace_bad_input():
    s = Schedule(DiffusionConfig(timesteps=100))
    with pytest.raises(ConfigError):
        s.respace([5, 3])
    with pytest.raises(ConfigError):
        s.respace([0, 100])
    with pytest.raises(ConfigError):
        spaced_timesteps(100, 101)


@pytest.mark.parametrize(("T", "K"), [(10, 10), (10, 9), (1000, 999), (4000, 7), (5, 1)])
def test_spaced_timesteps_are_distinct_and_span_the_schedule(T, K):
    ts = spaced_timesteps(T, K)
    assert len(ts) == K and len(np.unique(ts)) == K and (np.diff(ts) > 0).all()
    assert ts[-1] == T - 1 and (K == 1 or ts[0] == 0)


def test_signal_noise_is_the_one_place_of_the_coefficients():
    """(sqrt(abar), sqrt(1 - abar)) for tensors, arrays and floats alike; a^2 + s^2 = 1."""
    import math

    import numpy as np
    import torch

    from radardiff.diffusion import signal_noise

    abar = np.array([1.0, 0.75, 0.25, 0.0])
    a, s = signal_noise(abar)
    np.testing.assert_array_equal(a, np.sqrt(abar))
    np.testing.assert_allclose(a**2 + s**2, 1.0, rtol=0, atol=1e-15)
    ta, ts = signal_noise(torch.tensor(abar, dtype=torch.float32))
    assert ta.dtype == torch.float32 and torch.equal(ta, torch.tensor(abar).float().sqrt())
    assert signal_noise(0.36) == (0.6, 0.8)
    assert signal_noise(1.0 + 1e-16) == (math.sqrt(1.0 + 1e-16), 0.0)  # rounding above 1: no NaN
    assert float(signal_noise(torch.tensor(1.0000001))[1]) == 0.0
