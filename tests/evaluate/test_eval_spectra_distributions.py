"""PSD, value distributions and confidence bands: analytic truths."""

import numpy as np
import pytest
from scipy.stats import norm

from radardiff.errors import DataError
from radardiff.evaluate.measures.bands import mean_band
from radardiff.evaluate.measures.distributions import histograms, sample_spread, w1
from radardiff.evaluate.measures.spectra import psd_log_rmse, radial_psd


def test_white_noise_psd_is_flat_at_the_variance():
    rng = np.random.default_rng(0)
    res = radial_psd(rng.normal(0, 3.0, size=(16, 64, 64)))
    # Periodogram normalised by pixel count: E[P(f)] = sigma^2 at every f != 0.
    np.testing.assert_allclose(res.psd.mean(0), 9.0, rtol=0.1)
    np.testing.assert_allclose(res.freq_cycles_per_px, np.arange(1, 33) / 64)


def test_sine_power_sits_at_its_frequency():
    x = np.arange(64)
    z = np.tile(np.sin(2 * np.pi * 8 * x / 64), (64, 1))
    res = radial_psd(z)
    assert res.freq_cycles_per_px[np.argmax(res.psd[0])] == pytest.approx(8 / 64)
    others = np.delete(res.psd[0], 7)
    assert np.all(others < 1e-20 * res.psd[0, 7])


def test_psd_parseval_and_distance():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2, 32, 32))
    p = np.abs(np.fft.fft2(z - z.mean(axis=(1, 2), keepdims=True))) ** 2 / (32 * 32)
    np.testing.assert_allclose(p.sum(axis=(1, 2)) / (32 * 32), z.var(axis=(1, 2)), rtol=1e-12)
    a = radial_psd(z).psd.mean(0)
    assert psd_log_rmse(a, a) == 0.0
    # Multiplying the field by 10 multiplies the PSD by 100: two decades everywhere.
    assert psd_log_rmse(a, radial_psd(10 * z).psd.mean(0)) == pytest.approx(2.0)


def test_psd_ignores_values_under_nan():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(32, 32))
    a, b = z.copy(), z + 0.0
    a[4:8, 4:8] = np.nan
    b[4:8, 4:8] = 1e6  # different garbage, then masked the same way
    b[4:8, 4:8] = np.nan
    np.testing.assert_array_equal(radial_psd(a).psd, radial_psd(b).psd)
    assert np.all(np.isfinite(radial_psd(a).psd))


def test_wasserstein_of_a_shift_is_the_shift_in_physical_units():
    rng = np.random.default_rng(3)
    v = rng.normal(size=5000)
    assert w1(v, v + 2.5) == pytest.approx(2.5)
    assert w1(np.r_[v, np.nan], v) == pytest.approx(0.0)
    with pytest.raises(DataError, match="at least 1 finite"):
        w1([np.nan], v)


def test_histograms_are_densities_on_shared_edges():
    rng = np.random.default_rng(4)
    h = histograms(rng.normal(size=4000), rng.normal(1, 1, size=4000), bins=50)
    width = np.diff(h.bin_edges)
    assert (h.real * width).sum() == pytest.approx(1.0)
    assert (h.fake * width).sum() == pytest.approx(1.0)
    assert h.bin_edges.size == 51


def test_sample_spread_with_missing_pixels():
    z = np.array([[[1.0, 5.0], [np.nan, 3.0]], [[np.nan, np.nan], [np.nan, np.nan]]])
    s = sample_spread(z)
    assert s.range[0] == 4.0 and s.std[0] == pytest.approx(np.std([1.0, 5.0, 3.0]))
    assert np.isnan(s.range[1]) and np.isnan(s.std[1])


def test_standard_error_band_formula():
    rng = np.random.default_rng(5)
    curves = rng.normal(size=(50, 3))
    band = mean_band(curves, n_boot=0)
    se = curves.std(axis=0, ddof=1) / np.sqrt(50)
    z = norm.ppf(0.975)
    np.testing.assert_allclose(band.low, curves.mean(0) - z * se)
    np.testing.assert_allclose(band.high, curves.mean(0) + z * se)
    assert "standard error" in band.method


def test_bootstrap_band_is_seeded_and_close_to_the_standard_error():
    rng = np.random.default_rng(6)
    curves = rng.normal(size=(400, 2))
    b1 = mean_band(curves, n_boot=300, rng=np.random.default_rng(9))
    b2 = mean_band(curves, n_boot=300, rng=np.random.default_rng(9))
    np.testing.assert_array_equal(b1.low, b2.low)
    se = mean_band(curves, n_boot=0)
    np.testing.assert_allclose(b1.high - b1.low, se.high - se.low, rtol=0.25)
    assert "bootstrap" in b1.method
    with pytest.raises(DataError, match="at least 2 samples"):
        mean_band(curves[:1])
