"""SAR statistics and memorisation against analytic truths: L-look Gamma speckle gives ENL L and
log-cumulants (psi'(L), psi''(L)); a K-distributed field its known (k2, k3); edges are left out
of the homogeneous windows; correlated speckle its autocorrelation; copies a memorisation ratio
near 0, fresh samples near 1."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import uniform_filter

from radardiff.evaluate.measures import sar
from radardiff.evaluate.measures.memorisation import memorisation, nearest_distances, standardised


def _gamma(looks: float, shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).gamma(looks, 1.0 / looks, size=shape)


@pytest.mark.parametrize("looks", [1, 4])
def test_gamma_speckle_gives_its_looks_and_the_gamma_log_cumulants(looks):
    s = sar.sar_stats(_gamma(looks, (24, 64, 64), seed=looks))
    assert s.windows.min() >= 15 and s.tested[0] == 16  # 16 windows of 16 x 16, nearly all kept
    assert np.median(s.enl) == pytest.approx(looks, rel=0.04)
    assert np.median(s.cv) == pytest.approx(looks**-0.5, rel=0.03)
    k2, k3 = sar.gamma_log_cumulants(looks)
    # the means over 24 images of 4096 pixels: Monte-Carlo errors well below these tolerances
    assert s.k2.mean() == pytest.approx(k2, rel=0.02)
    assert s.k3.mean() == pytest.approx(k3, rel=0.08)
    for acf in (s.acf_x, s.acf_y):  # independent pixels: 0 at every lag, within the scatter
        assert np.abs(np.median(acf, axis=0)).max() < 0.02


def test_a_k_distributed_field_sits_off_the_gamma_curve_at_its_log_cumulants():
    rng = np.random.default_rng(3)
    looks, nu = 2.0, 3.0
    texture = rng.gamma(nu, 1.0 / nu, size=(24, 64, 64))
    s = sar.sar_stats(texture * _gamma(looks, (24, 64, 64), seed=4))
    k2, k3 = sar.k_log_cumulants(looks, nu)
    assert s.k2.mean() == pytest.approx(k2, rel=0.02)
    assert s.k3.mean() == pytest.approx(k3, rel=0.08)
    assert s.k2.mean() > sar.gamma_log_cumulants(looks)[0] + 0.3  # texture raises k2


def test_windows_across_an_edge_are_not_homogeneous():
    x = _gamma(4, (16, 64, 64), seed=5)
    x[:, :, 40:] *= 6.0  # an edge through the third column of windows
    s = sar.sar_stats(x)
    assert s.windows.mean() == pytest.approx(12, abs=0.3)  # the 4 straddling windows go
    assert np.median(s.enl) == pytest.approx(4, rel=0.05)  # a naive window ENL would drop


def test_correlated_speckle_gives_its_autocorrelation():
    """A complex Gaussian field averaged over 2 x 2 pixels: its intensity is single-look with
    correlation |rho_z|^2 = 1/4 at lag 1 and 0 beyond."""
    rng = np.random.default_rng(6)
    z = rng.standard_normal((16, 128, 128)) + 1j * rng.standard_normal((16, 128, 128))
    smooth = uniform_filter(z.real, (1, 2, 2)) + 1j * uniform_filter(z.imag, (1, 2, 2))
    s = sar.sar_stats(np.abs(smooth) ** 2)
    assert np.median(s.acf_x[:, 0]) == pytest.approx(0.25, abs=0.03)
    assert np.median(s.acf_y[:, 0]) == pytest.approx(0.25, abs=0.03)
    assert np.abs(np.median(s.acf_x[:, 1:], axis=0)).max() < 0.03
    assert np.median(s.enl) == pytest.approx(1.0, rel=0.1)


def test_a_bright_point_target_and_its_contrast():
    x = np.ones((2, 16, 16))
    x[0, 5, 7] = 1000.0  # 30 dB over a flat background
    peak, contrast = sar.bright_targets(x)
    assert peak[0] == pytest.approx(30.0) and contrast[0] == pytest.approx(30.0)
    assert peak[1] == pytest.approx(0.0) and contrast[1] == pytest.approx(0.0)


def test_too_few_homogeneous_windows_is_not_measurable():
    # every 16 x 16 window holds four 8 x 8 blocks of 1, 10, 100 and 1000: no homogeneous one
    levels = np.array([[1.0, 10.0], [100.0, 1000.0]])
    blocks = np.kron(np.tile(levels, (4, 4)), np.ones((8, 8)))
    s = sar.sar_stats(blocks[None] * _gamma(16, (1, 64, 64)))
    assert s.windows[0] < sar.MIN_WINDOWS and np.isnan(s.enl[0]) and np.isnan(s.acf_x[0]).all()


def test_the_polarisation_ratio():
    vh = _gamma(4, (3, 8, 8))
    r = sar.polarisation_ratio_db(4.0 * vh, vh)
    assert r.shape == (192,) and np.allclose(r, 10 * np.log10(4.0))


def test_nearest_distances_and_standardisation():
    rng = np.random.default_rng(7)
    ref = rng.standard_normal((50, 12))
    q = ref[[3, 9]] + 1e-3
    np.testing.assert_allclose(nearest_distances(q, ref), np.sqrt(12) * 1e-3, rtol=1e-6)
    img = rng.standard_normal((2, 1, 4, 4)) * 5 + 3
    img[0, 0, 0, 0] = np.nan
    z = standardised(img)
    assert z[0, 0] == 0 and abs(z[1].mean()) < 1e-12 and z[1].std() == pytest.approx(1.0)


def test_copies_give_a_memorisation_ratio_near_zero_fresh_samples_near_one():
    rng = np.random.default_rng(8)
    pool = uniform_filter(rng.standard_normal((700, 1, 16, 16)), (1, 1, 3, 3))
    train, heldout, fresh = pool[:500], pool[500:600], pool[600:700]
    copies = train[rng.choice(500, 100)] + 1e-3 * rng.standard_normal((100, 1, 16, 16))
    assert memorisation(copies, train, heldout).ratio < 0.05
    assert memorisation(copies, train, heldout).near_copy_fraction == 1.0
    fair = memorisation(fresh, train, heldout)
    assert 0.9 < fair.ratio < 1.1 and fair.near_copy_fraction < 0.15
