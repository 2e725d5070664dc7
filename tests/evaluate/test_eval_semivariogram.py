"""Semivariogram: analytic truths, agreement with pair-based estimators, NaN handling."""

import numpy as np
import pytest

from radardiff.errors import DataError
from radardiff.evaluate.measures.semivariogram import (
    bin_edges_px,
    semivariogram,
    semivariogram_rel_error,
)


def _brute_force(z: np.ndarray, max_lag: int):
    """Pair-by-pair Matheron estimator with the module's distance bins (reference)."""
    yy, xx = np.nonzero(np.isfinite(z))
    v = z[yy, xx]
    d = np.hypot(yy[:, None] - yy[None, :], xx[:, None] - xx[None, :])
    sq = (v[:, None] - v[None, :]) ** 2
    iu = np.triu_indices(v.size, 1)
    d, sq = d[iu], sq[iu]
    k = np.digitize(d, bin_edges_px(max_lag))  # k = 0 <-> lag 1
    gamma = np.array([sq[k == j].mean() / 2 for j in range(max_lag)])
    return gamma, np.array([(k == j).sum() for j in range(max_lag)])


def test_white_noise_semivariance_is_the_variance_at_every_lag():
    rng = np.random.default_rng(0)
    z = rng.normal(3.0, 2.0, size=(4, 128, 128))
    res = semivariogram(z, max_lag=20)
    gamma = res.gamma.mean(axis=0)
    # E[gamma(h)] = sigma^2 = 4 exactly; sampling error with ~4*16000 pairs per lag is < 1 %.
    np.testing.assert_allclose(gamma, 4.0, rtol=0.03)
    np.testing.assert_allclose(res.gamma_x.mean(0), 4.0, rtol=0.03)
    np.testing.assert_allclose(res.gamma_y.mean(0), 4.0, rtol=0.03)


def test_field_constant_along_an_axis_has_zero_semivariance_along_it():
    rng = np.random.default_rng(1)
    profile = rng.normal(size=32).cumsum()
    rows = np.repeat(profile[:, None], 24, axis=1)  # varies along y only
    res = semivariogram(rows, max_lag=10)
    np.testing.assert_allclose(res.gamma_x, 0.0, atol=1e-10)
    assert np.all(res.gamma_y > 0.1)
    res_t = semivariogram(rows.T, max_lag=10)
    np.testing.assert_allclose(res_t.gamma_y, 0.0, atol=1e-10)
    np.testing.assert_allclose(res_t.gamma_x, res.gamma_y, rtol=1e-10)


def test_linear_ramp_directional_semivariance_is_quadratic():
    # z = a x: z(x + k) - z(x) = a k, so gamma_x(k) = a^2 k^2 / 2 exactly.
    a = 0.7
    z = a * np.tile(np.arange(40.0), (30, 1))
    res = semivariogram(z, max_lag=12)
    np.testing.assert_allclose(res.gamma_x[0], a**2 * res.lags_px**2 / 2, rtol=1e-9)


def test_matches_brute_force_pairs_with_missing_pixels():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(18, 15)).cumsum(axis=1) - 40.0  # far from zero: checks cancellation
    z[rng.random(z.shape) < 0.2] = np.nan
    res = semivariogram(z, max_lag=7)
    gamma, counts = _brute_force(z, 7)
    np.testing.assert_allclose(res.gamma[0], gamma, rtol=1e-9)
    np.testing.assert_array_equal(res.npairs[0], counts)


def test_agrees_with_scikit_gstat_to_1e6():
    skg = pytest.importorskip("skgstat", reason="scikit-gstat is the pair-based reference")
    rng = np.random.default_rng(3)
    for trial in range(3):
        z = rng.normal(size=(24, 20)).cumsum(axis=0) + 10.0 * trial
        z[rng.random(z.shape) < 0.1 * trial] = np.nan
        max_lag = 9
        res = semivariogram(z, max_lag=max_lag)
        yy, xx = np.nonzero(np.isfinite(z))
        ref = skg.Variogram(
            np.c_[yy, xx].astype(float),
            z[yy, xx],
            bin_func=bin_edges_px(max_lag),
            estimator="matheron",
            fit_method=None,
        )
        np.testing.assert_allclose(res.gamma[0], ref.experimental, rtol=1e-6)
        np.testing.assert_array_equal(res.npairs[0], ref.bin_count)


def test_nan_pixels_change_nothing_outside_their_mask():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(2, 20, 20))
    hole = np.zeros_like(z, dtype=bool)
    hole[:, 5:9, 3:12] = True
    a, b = z.copy(), z.copy()
    a[hole] = np.nan
    b[hole] = 1e6 * rng.normal(size=hole.sum())  # garbage under an explicit mask
    ra = semivariogram(a, max_lag=6)
    rb = semivariogram(b, max_lag=6, mask=~hole)
    for key in ("gamma", "gamma_x", "gamma_y", "npairs"):
        np.testing.assert_allclose(getattr(ra, key), getattr(rb, key), rtol=1e-9)
    # one image's hole does not touch its neighbour in the batch
    full = semivariogram(z[1:], max_lag=6)
    mixed = semivariogram(np.stack([a[0], z[1]]), max_lag=6)
    np.testing.assert_allclose(mixed.gamma[1], full.gamma[0], rtol=1e-12)


def test_physical_units_and_optional_standardisation():
    rng = np.random.default_rng(5)
    z = rng.normal(size=(3, 16, 16)).cumsum(axis=2)
    base = semivariogram(z, max_lag=5)
    np.testing.assert_allclose(semivariogram(3 * z, max_lag=5).gamma, 9 * base.gamma, rtol=1e-9)
    np.testing.assert_allclose(
        semivariogram(3 * z + 7, max_lag=5, standardize=True).gamma,
        semivariogram(z, max_lag=5, standardize=True).gamma,
        rtol=1e-9,
    )
    np.testing.assert_allclose(base.lags_m(30.0), 30.0 * np.arange(1, 6))
    assert base.lags_m(None) is None


def test_empty_bins_are_nan_and_bad_lag_raises():
    z = np.full((8, 8), np.nan)
    z[0, 0] = 1.0
    assert np.all(np.isnan(semivariogram(z, max_lag=3).gamma))
    with pytest.raises(DataError, match="max_lag"):
        semivariogram(np.zeros((8, 8)), max_lag=8)


def test_relative_error():
    assert semivariogram_rel_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert semivariogram_rel_error([1.0, 2.0, np.nan], [1.5, 1.0, 3.0]) == pytest.approx(0.5)
