"""Sampling grids: noise levels of the trained schedule, decreasing to the data end, checked
against their definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radardiff.config.schema import DiffusionConfig
from radardiff.diffusion import Schedule
from radardiff.diffusion.grids import (
    at_noise_levels,
    grid_karras,
    grid_leading,
    grid_linspace,
    grid_logsnr,
    grid_spaced,
    grid_trailing,
    karras_sigmas,
)

LINEAR = Schedule(DiffusionConfig(timesteps=1000))
COSINE = Schedule(DiffusionConfig(timesteps=100, schedule="cosine"))
GRIDS = {
    "trailing": grid_trailing,
    "leading": grid_leading,
    "leading, visiting 0": lambda s, k: grid_leading(s, k, zero_is_data=False),
    "linspace": grid_linspace,
    "linspace, visiting 0": lambda s, k: grid_linspace(s, k, zero_is_data=False),
    "linspace, visiting 0 continuous": lambda s, k: grid_linspace(s, k, False, rounded=False),
    "karras": grid_karras,
    "log-snr": grid_logsnr,
}


def sigma_at(schedule: Schedule, t) -> np.ndarray:
    """sqrt((1 - abar) / abar) at trained timesteps t, from the betas."""
    abar = schedule.alphas_cumprod[np.asarray(t)]
    return np.sqrt((1.0 - abar) / abar)


@pytest.mark.parametrize("name", list(GRIDS))
@pytest.mark.parametrize("schedule", [LINEAR, COSINE], ids=["linear-1000", "cosine-100"])
def test_grids_decrease_to_the_data_end(name, schedule):
    """K + 1 levels, strictly decreasing, ending at 0, within the schedule's noise levels; the
    largest is sigma_max except for ``leading``, which starts below it (Lin et al.'s point), and
    a single point visiting t = 0."""
    T = schedule.T
    for steps in sorted({1, 2, 3, 7, 10, 61, T // 2, T - 1}):
        g = GRIDS[name](schedule, steps)
        assert g.dtype == np.float64 and g.ndim == 1, (name, steps)
        assert len(g) == steps + 1 and g[-1] == 0.0, (name, steps, len(g))
        assert (np.diff(g) < 0).all(), (name, steps)
        lo, hi = schedule.sigma_min * (1 - 1e-12), schedule.sigma_max * (1 + 1e-12)
        assert lo <= g[-2] and g[0] <= hi, (name, steps)
        if name.startswith("leading") or ("visiting" in name and steps == 1):
            continue  # one point visiting t = 0 is t = 0 itself (as Lin et al.'s definition)
        assert g[0] == pytest.approx(schedule.sigma_max, rel=1e-12), (name, steps)


def test_trailing_steps_down_by_T_over_K():
    """t_k = round(T - k T / K) - 1 (Lin et al. 2024, Table 2), exactly K of them for every K
    (np.arange over a float step gives K + 1 for some K, e.g. 61 of 1000, with t = -1)."""
    np.testing.assert_allclose(
        grid_trailing(LINEAR, 10)[:-1], sigma_at(LINEAR, range(999, 0, -100))
    )
    np.testing.assert_allclose(grid_trailing(LINEAR, 3)[:-1], sigma_at(LINEAR, [999, 666, 332]))
    np.testing.assert_allclose(
        grid_trailing(LINEAR, 6)[:-1], sigma_at(LINEAR, [999, 832, 666, 499, 332, 166])
    )
    for steps in range(1, 1001):
        assert len(grid_trailing(LINEAR, steps)) == steps + 1
    np.testing.assert_allclose(
        grid_trailing(LINEAR, 1000)[:-1], sigma_at(LINEAR, range(999, -1, -1))
    )


def test_leading_and_linspace_conventions():
    """zero_is_data: K + 1 points, t = 0 standing for the data end (DPM-Solver's); otherwise K
    points visiting t = 0 (Lin et al.'s Table 2)."""
    np.testing.assert_allclose(grid_leading(LINEAR, 4)[:-1], sigma_at(LINEAR, [800, 600, 400, 200]))
    np.testing.assert_allclose(
        grid_leading(LINEAR, 4, zero_is_data=False)[:-1], sigma_at(LINEAR, [750, 500, 250, 0])
    )
    t = np.round(np.linspace(0, 999, 5))[::-1][:4].astype(int)  # 999, 749, 500, 250
    np.testing.assert_allclose(grid_linspace(LINEAR, 4)[:-1], sigma_at(LINEAR, t))
    t = np.round(np.linspace(0, 999, 4))[::-1].astype(int)  # 999, 666, 333, 0
    np.testing.assert_allclose(
        grid_linspace(LINEAR, 4, zero_is_data=False)[:-1], sigma_at(LINEAR, t)
    )
    continuous = grid_linspace(LINEAR, 4, zero_is_data=False, rounded=False)
    np.testing.assert_allclose(LINEAR.time_at(continuous[:-1]), [999, 666, 333, 0], atol=1e-9)
    assert LINEAR.time_at(grid_linspace(LINEAR, 7, zero_is_data=False, rounded=False)[1]) == (
        pytest.approx(999 * 5 / 6)  # fractional, never rounded
    )
    np.testing.assert_array_equal(grid_spaced(LINEAR, 4, "leading"), grid_leading(LINEAR, 4))


@pytest.mark.parametrize("rho", [1.0, 3.0, 7.0])
def test_karras_levels_are_evenly_spaced_in_sigma_to_the_one_over_rho(rho):
    """sigma_i = (sigma_max^(1/rho) + i / (K - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho
    (Karras et al. 2022, eq. 5), over the schedule's own noise levels."""
    g = grid_karras(COSINE, 9, rho)
    root = g[:-1] ** (1.0 / rho)
    np.testing.assert_allclose(np.diff(root), np.diff(root)[0], rtol=1e-9)
    assert g[0] == pytest.approx(COSINE.sigma_max) and g[-2] == pytest.approx(COSINE.sigma_min)
    ramp = np.linspace(0, 1, 9)
    lo, hi = COSINE.sigma_min ** (1 / rho), COSINE.sigma_max ** (1 / rho)
    np.testing.assert_allclose(g[:-1], (hi + ramp * (lo - hi)) ** rho, rtol=1e-12)
    np.testing.assert_array_equal(karras_sigmas(0.1, 10.0, 1), [10.0])


def test_log_snr_levels_are_evenly_spaced():
    """Uniform in log sigma, so in log-SNR = -2 log sigma (Lu et al. 2022, sec. 6)."""
    g = grid_logsnr(LINEAR, 12)
    log_snr = -2.0 * np.log(g[:-1])
    np.testing.assert_allclose(np.diff(log_snr), np.diff(log_snr)[0], rtol=1e-9)
    assert g[0] == pytest.approx(LINEAR.sigma_max) and g[-2] == pytest.approx(LINEAR.sigma_min)


def test_zero_terminal_snr_grids_are_finite():
    """abar = 0 at the last trained timestep: the grids start at its finite stand-in."""
    s = Schedule(DiffusionConfig(timesteps=1000, zero_terminal_snr=True, prediction="v"))
    assert s.zero_terminal_snr and np.isfinite(s.sigma_max)
    for name, fn in GRIDS.items():
        g = fn(s, 10)
        assert np.isfinite(g).all() and (np.diff(g) < 0).all(), name
        assert name.startswith("leading") or g[0] == pytest.approx(s.sigma_max), name


def test_the_network_is_called_at_the_continuous_time_of_each_level():
    """at_noise_levels: the denoiser gets t(sigma) unrounded (float64, on the device of x),
    the grid's levels and any other; the callback counts the calls."""
    seen, calls = [], []
    g = grid_karras(LINEAR, 5)
    fn = at_noise_levels(lambda x, t: seen.append(t), LINEAR, g, torch.device("cpu"), calls.append)
    x = torch.zeros(2, 1, 3, 3)
    for sigma in [*g[:-1], 0.5]:  # 0.5: a level off the grid (a restart's)
        fn(x, sigma)
    assert all(t.dtype == torch.float64 and t.device == x.device for t in seen)
    got = torch.stack(seen).numpy()
    np.testing.assert_allclose(got, LINEAR.time_at(np.append(g[:-1], 0.5)), rtol=1e-12)
    assert not np.allclose(got, np.round(got))
    assert calls == [0, 1, 2, 3, 4, 5]
