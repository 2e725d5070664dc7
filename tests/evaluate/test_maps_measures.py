"""Map measures against exact planes and the analytic truths of the map-aware generators."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from radardiff.data.synth import LAND_COVER, build_params, insar_noise_dem, sar_map
from radardiff.evaluate.measures.maps import elevation_regression, per_label_sar_stats
from radardiff.evaluate.measures.sar import gamma_log_cumulants, k_log_cumulants

# ---- phase on elevation ---------------------------------------------------------------------


def test_exact_plane_gives_exact_slope():
    rng = np.random.default_rng(0)
    h = rng.uniform(0, 2000, size=(3, 16, 16))
    fit = elevation_regression(0.002 * h + np.array([1.5, -2.0, 0.0])[:, None, None], h)
    np.testing.assert_allclose(fit.slope, 0.002, rtol=1e-12)
    np.testing.assert_allclose(fit.intercept, [1.5, -2.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(fit.r2, 1.0, atol=1e-12)
    assert (fit.n_valid == 256).all()


def test_ramp_is_fitted_jointly_and_masks_are_honoured():
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:16, 0:16] - 7.5
    h = 100.0 * x + rng.normal(0, 50, size=(2, 16, 16))  # terrain rising to the east
    phi = -0.001 * h + 0.2 * x - 0.1 * y + 3.0
    phi[0, :2] = np.nan  # no data
    valid = np.ones((2, 16, 16), bool)
    valid[1, :, :4] = False
    with_ramp = elevation_regression(phi, h, valid, ramp=True)
    np.testing.assert_allclose(with_ramp.slope, -0.001, rtol=1e-9)
    np.testing.assert_allclose(with_ramp.intercept, 3.0, atol=1e-8)
    assert list(with_ramp.n_valid) == [224, 192]
    assert (np.abs(elevation_regression(phi, h, valid).slope + 0.001) > 1e-4).all()  # the ramp


def test_flat_or_empty_scenes_are_not_measured():
    h = np.stack([np.full((8, 8), 300.0), np.random.default_rng(2).uniform(0, 500, (8, 8))])
    phi = np.ones((2, 8, 8))
    phi[1, :, 1:] = np.nan  # 8 valid pixels
    fit = elevation_regression(phi, h)
    assert np.isnan(fit.slope).all() and np.isnan(fit.r2).all()
    shared = elevation_regression(np.ones((2, 8, 8)), h[1])  # one DEM for every image
    assert (shared.slope == 0).all() and (shared.n_valid == 64).all()


def test_regression_recovers_the_generators_coefficient():
    """Moderate turbulence over real relief: the slope estimates the stored per-scene k."""
    p = build_params(
        "insar_noise_dem",
        {"atmosphere.turb_std": 0.2, "atmosphere.turb_std_spread": 0.3, "relief_m": [500, 2000]},
    )
    s = insar_noise_dem(64, 32, seed=3, params=p)
    k = s.strat_rad_per_m.astype(np.float64)
    fit = elevation_regression(s.images[:, 0], s.dem[:, 0], ramp=True)
    err = np.abs(fit.slope - k)
    assert np.isfinite(fit.slope).all()
    assert np.corrcoef(fit.slope, k)[0, 1] > 0.9
    assert np.median(err) < 0.25 * p.strat_std_rad_per_m
    assert abs(np.mean(fit.slope) - p.strat_rad_per_m) < 0.5 * p.strat_std_rad_per_m


# ---- backscatter per label ------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenes():
    """L = 4, a fixed land texture nu = 6: the truths are single numbers."""
    p = build_params("sar_map", {"looks": 4, "land_texture": [6.0, 6.0], "water_texture": 0.0})
    s = sar_map(48, 64, seed=5, params=p)
    return s, per_label_sar_stats(s.images[:, 0], s.land_cover[:, 0], LAND_COVER)


def test_water_is_gamma_speckle(scenes):
    s, st = scenes
    w = st["water"]
    k2, k3 = gamma_log_cumulants(4)
    assert w.reason is None and w.samples >= 40
    assert abs(w.enl - 4.0) < 0.4
    assert abs(w.k2 - k2) < 0.1 * k2 and abs(w.k3 - k3) < 0.25 * abs(k3)
    assert -23 < w.db_mean < w.mean_db < -17
    np.testing.assert_allclose(w.sample_mean_db, s.water_db, atol=0.5)
    # one level: the mean of dB sits below the dB of the mean by 10 log10(e) (log L - psi(L))
    one = per_label_sar_stats(s.images[:8, 0] / 10 ** (s.water_db[:8, None, None] / 10),
                              s.land_cover[:8, 0], LAND_COVER)["water"]  # fmt: skip
    bias = 10 / np.log(10) * (special.digamma(4) - np.log(4))
    assert abs(one.mean_db) < 0.2 and abs(one.db_mean - one.mean_db - bias) < 0.1


def test_land_is_k_distributed(scenes):
    s, st = scenes
    land = st["land"]
    k2, k3 = k_log_cumulants(4, 6)
    enl = 1 / ((1 + 1 / 4) * (1 + 1 / 6) - 1)
    assert land.reason is None and land.enl < 3.0
    assert abs(land.enl - enl) < 0.15 * enl
    assert abs(land.k2 - k2) < 0.1 * k2 and abs(land.k3 - k3) < 0.3 * abs(k3)
    np.testing.assert_allclose(s.land_texture, 6.0)
    # per scene: the measured level follows the drawn one
    ok = np.isfinite(land.sample_mean_db)
    assert np.abs(land.sample_mean_db[ok] - s.land_db[ok]).max() < 1.5


def test_ships_are_bright_and_small_classes_are_not_measured(scenes):
    s, st = scenes
    assert st["ship"].mean_db - st["water"].mean_db > 10
    one = per_label_sar_stats(s.images[0, 0], s.land_cover[0, 0], LAND_COVER, min_pixels=10**6)
    assert all(np.isnan(v.enl) and "fewer than" in v.reason for v in one.values())
    assert list(one) == list(LAND_COVER)
