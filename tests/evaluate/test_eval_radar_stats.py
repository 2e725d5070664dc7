"""Speckle and wrapped-phase statistics: analytic truths."""

import numpy as np
import pytest

from radardiff.errors import DataError
from radardiff.evaluate.measures.radar_stats import (
    coefficient_of_variation,
    enl,
    phase_stats,
    residues,
    speckle_stats,
    to_linear_intensity,
    wrap,
)


def _speckle(looks: int, shape, seed: int, mean: float = 0.2) -> np.ndarray:
    # L-look intensity of a homogeneous area: Gamma(shape=L, scale=mean/L).
    return np.random.default_rng(seed).gamma(looks, mean / looks, size=shape)


@pytest.mark.parametrize("looks", [1, 4])
def test_enl_and_cv_of_gamma_speckle(looks):
    img = _speckle(looks, (256, 256), seed=looks)
    assert enl(img) == pytest.approx(looks, rel=0.05)
    assert coefficient_of_variation(img) == pytest.approx(1 / np.sqrt(looks), rel=0.03)
    stats = speckle_stats(img[None], block=16)
    # The windowed ENL has a small-sample bias (sample variance in the denominator); loose tol.
    assert stats.enl[0] == pytest.approx(looks, rel=0.15)
    assert stats.cv[0] == pytest.approx(1 / np.sqrt(looks), rel=0.03)


def test_db_data_are_converted_to_linear_intensity():
    img = _speckle(4, (64, 64), seed=0)
    db = 10 * np.log10(img)
    np.testing.assert_allclose(to_linear_intensity(db, "dB"), img, rtol=1e-12)
    np.testing.assert_array_equal(to_linear_intensity(img, "linear"), img)


def test_enl_needs_two_pixels():
    with pytest.raises(DataError, match="at least 2"):
        enl(np.array([1.0, np.nan]))


def test_wrap_range():
    w = wrap(np.linspace(-20, 20, 1001))
    assert w.min() > -np.pi - 1e-12 and w.max() <= np.pi + 1e-12
    assert wrap(np.array([2 * np.pi + 0.5]))[0] == pytest.approx(0.5)


def test_vortex_has_exactly_one_residue_and_a_ramp_none():
    y, x = np.mgrid[0:32, 0:32]
    vortex = np.arctan2(y - 15.5, x - 15.5)  # +1 charge centred between four pixels
    q = residues(vortex)
    assert np.abs(q).sum() == 1 and q[15, 15] != 0
    st = phase_stats(wrap(vortex)[None])
    assert st.residue_density[0] == pytest.approx(1 / (31 * 31))
    ramp = wrap(0.9 * x + 0.4 * y)  # wrapped, but unwrappable: no residue
    st = phase_stats(ramp[None])
    assert st.residue_density[0] == 0.0
    assert st.grad_mean_abs_x[0] == pytest.approx(0.9)
    assert st.grad_mean_abs_y[0] == pytest.approx(0.4)
    assert st.grad_std_x[0] == pytest.approx(0.0, abs=1e-9)


def test_noise_phase_residue_density_and_nan_loops():
    rng = np.random.default_rng(0)
    phase = rng.uniform(-np.pi, np.pi, size=(1, 128, 128))
    # For independent uniform phases the residue density is 1/3 (each loop sum is 2*pi*q).
    assert phase_stats(phase).residue_density[0] == pytest.approx(1 / 3, abs=0.02)
    phase[0, 10, 10] = np.nan  # removes the four loops that touch the pixel
    q = residues(phase[0])
    assert np.isnan(q).sum() == 4
