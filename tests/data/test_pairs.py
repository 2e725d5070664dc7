"""Labelled pairs: noise + elastic signal in physical units, exact labels, bad input refused."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from radardiff.data.dataset_file import DatasetFile, write_dataset
from radardiff.data.pairs import (
    NoiseSource,
    PairParams,
    dihedral,
    draw_signals,
    units_factor,
    valid_mean,
    write_pairs,
)
from radardiff.errors import DataError

SPACING = 80.0


def _noise(path: Path, images: np.ndarray, units="rad", kind="insar_unwrapped", spacing=SPACING):
    return write_dataset(path, images.astype(np.float32), kind=kind, units=units,
                         pixel_spacing_m=spacing)  # fmt: skip


@pytest.fixture
def zero_noise(tmp_path) -> Path:
    return _noise(tmp_path / "zero.h5", np.zeros((20, 1, 16, 16)))


@pytest.fixture
def rough_noise(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 1, 16, 16))
    x[::3, 0, :4, :4] = np.nan  # a third of the tiles have a hole
    return _noise(tmp_path / "rough.h5", x)


def _pairs(path, noise, n=40, seed=0, masks=None, **params):
    src = NoiseSource([DatasetFile(p) for p in (noise if isinstance(noise, list) else [noise])])
    write_pairs(src, n, path, seed, PairParams(**params), masks)
    return DatasetFile(path)


def test_units_factor():
    assert units_factor("rad", 0.0555) == pytest.approx(-4 * math.pi / 0.0555)
    assert units_factor("mm", 0.0555) == pytest.approx(1000.0)
    assert units_factor("m", 0.0555) == 1.0
    with pytest.raises(DataError, match="units 'dB'"):
        units_factor("dB", 0.0555)


def test_signals_peak_is_the_drawn_amplitude_and_absent_is_zero():
    rng = np.random.default_rng(1)
    p = PairParams(source="mix", present=0.5, peak_los_m=(0.004, 0.03))
    s = draw_signals(200, 16, SPACING, rng, p)
    has = s.source >= 0
    assert 60 < has.sum() < 140
    peak = np.abs(s.los_m).reshape(200, -1).max(axis=1)
    np.testing.assert_allclose(peak[has], s.peak_m[has], rtol=1e-5)
    assert (s.peak_m[has] >= 0.004 - 1e-9).all() and (s.peak_m[has] <= 0.03 + 1e-9).all()
    assert np.all(s.los_m[~has] == 0) and np.all(s.peak_m[~has] == 0)
    assert set(np.unique(s.source[has])) == {0, 1}


def test_mogi_signal_is_the_analytic_field_up_to_its_amplitude():
    """Seen from straight above, a Mogi pair's signal is the closed-form uplift
    ``c d / (r**2 + d**2)**1.5`` of one source (fitted: centre, depth, scale): the signal's shape
    is the physics, only its amplitude is drawn."""
    from scipy.optimize import least_squares

    rng = np.random.default_rng(3)
    vertical = {"incidence_deg": (1e-6, 1e-6), "heading_jitter": 0.0}
    p = PairParams(source="mogi", geometry=vertical)
    los = draw_signals(1, 16, SPACING, rng, p).los_m[0].astype(np.float64)
    c = (np.arange(16) - 7.5) * SPACING
    y, x = np.unravel_index(np.abs(los).argmax(), los.shape)

    def resid(q):
        x0, y0, d, a = q
        r2 = (c[None, :] - x0) ** 2 + (c[:, None] - y0) ** 2
        return (a * d / (r2 + d * d) ** 1.5 - los).ravel()

    q0 = [c[x], c[y], 400.0, los[y, x] * 400.0**2]
    fit = least_squares(resid, q0)
    assert np.abs(fit.fun).max() < 1e-4 * np.abs(los).max()
    assert 99 < fit.x[2] < 501  # the default depths 1-5 km scaled from 12.8 km to 1.28 km


def test_zero_noise_input_is_the_label_and_radians_follow_the_wavelength(zero_noise, tmp_path):
    f = _pairs(tmp_path / "p.h5", zero_noise, wavelength_m=0.05)
    x, d = f.images(), f.extra("deformation")
    np.testing.assert_allclose(x, d, atol=1e-5)
    np.testing.assert_allclose(x.reshape(len(x), -1).mean(axis=1), 0, atol=1e-5)
    # the signal's range in radians is its range in metres times 4 pi / lambda
    rad_range = np.ptp(d.reshape(len(d), -1), axis=1)
    f_mm = _noise(tmp_path / "mm.h5", np.zeros((20, 1, 16, 16)), units="mm")
    g = _pairs(tmp_path / "pmm.h5", f_mm, wavelength_m=0.05)
    mm_range = np.ptp(g.extra("deformation").reshape(len(d), -1), axis=1)
    np.testing.assert_allclose(rad_range, mm_range / 1000 * 4 * math.pi / 0.05, rtol=1e-4)
    assert f.attrs()["units"] == "rad" and g.attrs()["units"] == "mm"


def test_noise_plus_signal_and_holes(rough_noise, tmp_path):
    f = _pairs(tmp_path / "p.h5", rough_noise, n=60, augment=False)
    x, d = f.images(), f.extra("deformation")
    valid = np.isfinite(x)
    assert (~valid).any() and np.isfinite(d).all()  # labels are complete, inputs keep holes
    # input - label = the noise tile, referenced to its valid mean: check against the file
    resid = np.where(valid, x - d, np.nan)[:, 0]
    noise = DatasetFile(rough_noise).images()[:, 0].astype(np.float64)
    centred = noise - np.nanmean(noise, axis=(1, 2), keepdims=True)
    for r in resid[:10]:
        assert any(np.allclose(r, c, atol=1e-4, equal_nan=True) for c in centred)
    np.testing.assert_allclose(valid_mean(d[:, 0], valid[:, 0]).ravel(), 0, atol=1e-5)


def test_each_noise_tile_once_before_reuse_and_equal_shares(tmp_path):
    a = _noise(tmp_path / "a.h5", np.arange(10.0)[:, None, None, None] * np.ones((10, 1, 8, 8)))
    b = _noise(tmp_path / "b.h5", 100 + np.arange(5.0)[:, None, None, None] * np.ones((5, 1, 8, 8)))
    one = NoiseSource([DatasetFile(a)]).tiles(0, np.arange(10))[:, 0, 0]
    assert sorted(one) == list(range(10))
    two = NoiseSource([DatasetFile(a), DatasetFile(b)]).tiles(0, np.arange(20))[:, 0, 0]
    assert sorted(two[0::2]) == list(range(10))
    assert sorted(two[1::2]) == sorted(100 + i % 5 for i in range(10))  # each of b twice


def test_pairs_are_seeded_and_prefix_stable(rough_noise, tmp_path):
    f1 = _pairs(tmp_path / "1.h5", rough_noise, n=300, seed=4, label="presence", wrap=True)
    f2 = _pairs(tmp_path / "2.h5", rough_noise, n=256, seed=4, label="presence", wrap=True)
    f3 = _pairs(tmp_path / "3.h5", rough_noise, n=256, seed=5, label="presence", wrap=True)
    np.testing.assert_array_equal(f1.images(slice(0, 256)), f2.images())
    np.testing.assert_array_equal(f1.labels(slice(0, 256)), f2.labels())
    assert not np.array_equal(f2.extra("deformation"), f3.extra("deformation"))


def test_presence_labels_follow_the_threshold(zero_noise, tmp_path):
    f = _pairs(tmp_path / "p.h5", zero_noise, n=300, label="presence", wrap=True,
               peak_los_m=(0.002, 0.05), threshold_m=0.01)  # fmt: skip
    peak, lab = f.extra("peak_los_m"), f.labels()
    np.testing.assert_array_equal(lab, (peak >= 0.01).astype(np.int64))
    assert 0 < lab.mean() < 0.5 and (peak == 0).mean() > 0.3  # half without a source
    assert f.info.class_names == ["absent", "present"] and f.info.kind == "insar_wrapped"


def test_wrapped_input_is_congruent_with_its_unwrapped_label(rough_noise, tmp_path):
    f = _pairs(tmp_path / "p.h5", rough_noise, n=50, wrap=True, label="unwrapped")
    x, u = f.images(), f.extra("unwrapped")
    ok = np.isfinite(x)
    assert np.abs(x[ok]).max() <= math.pi
    np.testing.assert_allclose(np.angle(np.exp(1j * (u[ok] - x[ok]))), 0, atol=1e-4)


def test_coherence_noise_grows_as_coherence_falls(zero_noise, tmp_path):
    def spread(c):
        f = _pairs(tmp_path / f"c{c}.h5", zero_noise, n=40, wrap=True, coherence=(c, c),
                   coherence_std=0.0, present=0.0)  # fmt: skip
        assert np.allclose(f.extra("coherence"), c)
        return np.std(f.images())

    assert spread(0.95) < 0.5 * spread(0.5)


def test_masks_go_to_clean_tiles_of_other_files_only(zero_noise, rough_noise, tmp_path):
    f = _pairs(tmp_path / "p.h5", zero_noise, n=40, masks=DatasetFile(rough_noise))
    holes = ~np.isfinite(f.images()).reshape(40, -1)
    assert 0 < holes.any(axis=1).mean() < 1 and holes.sum(axis=1).max() == 16
    # the mask file's own tiles keep exactly their holes, clean ones included
    g = _pairs(tmp_path / "q.h5", rough_noise, n=30, masks=DatasetFile(rough_noise), augment=False)
    own = ~np.isfinite(DatasetFile(rough_noise).images()).reshape(30, -1)
    got = ~np.isfinite(g.images()).reshape(30, -1)
    assert sorted(got.sum(axis=1)) == sorted(own.sum(axis=1))
    # mixed with a clean file: only the clean file's tiles get holes
    m = _pairs(tmp_path / "m.h5", [rough_noise, zero_noise], n=60, masks=DatasetFile(rough_noise))
    per = (~np.isfinite(m.images())).reshape(60, -1).any(axis=1)
    assert per[0::2].mean() == pytest.approx(own.any(axis=1).mean()) and per[1::2].any()


def test_dihedral_is_the_eight_symmetries():
    x = np.arange(9.0).reshape(1, 3, 3)
    outs = {dihedral(x, np.array([k]))[0].tobytes() for k in range(8)}
    assert len(outs) == 8


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"label": "unwrapped"}, "truth of wrapped inputs"),
        ({"coherence": (0.5, 0.9)}, "before wrapping"),
        ({"peak_los_m": (0.05, 0.01)}, "increasing pair"),
        ({"present": 1.5}, "fraction"),
        ({"label": "segmentation"}, "label"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(DataError, match=match):
        PairParams(**kwargs)


def test_bad_noise_is_refused_before_writing(tmp_path, zero_noise):
    wrapped = _noise(tmp_path / "w.h5", np.zeros((4, 1, 16, 16)), kind="insar_wrapped")
    db = _noise(tmp_path / "db.h5", np.zeros((4, 1, 16, 16)), units="dB")
    other = _noise(tmp_path / "o.h5", np.zeros((4, 1, 16, 16)), spacing=200.0)
    nospace = _noise(tmp_path / "n.h5", np.zeros((4, 1, 16, 16)), spacing=None)
    small = _noise(tmp_path / "s.h5", np.zeros((4, 1, 8, 8)))
    rect = _noise(tmp_path / "r.h5", np.zeros((4, 1, 16, 8)))
    out = tmp_path / "out.h5"
    cases = [
        (lambda: _pairs(out, wrapped), "wrapped noise makes wrapped inputs only"),
        (lambda: _pairs(out, wrapped, wrap=True, label="unwrapped"), "no unwrapped truth"),
        (lambda: _pairs(out, db), "cannot carry"),
        (lambda: _pairs(out, [zero_noise, other]), "differs from 80 m"),
        (lambda: _pairs(out, nospace), "no pixel spacing"),
        (lambda: _pairs(out, [zero_noise, small]), "differ from"),
        (lambda: _pairs(out, rect), "one square channel"),
        (lambda: _pairs(out, zero_noise, masks=DatasetFile(small)), "mask tiles"),
        (
            lambda: _pairs(
                out, _noise(tmp_path / "m.h5", np.zeros((4, 1, 16, 16)), units="mm"), wrap=True
            ),
            "cannot be wrapped",
        ),  # fmt: skip
    ]
    for make, match in cases:
        with pytest.raises(DataError, match=match):
            make()
        assert not out.exists() and not list(tmp_path.glob(".out.h5*"))


def test_all_nan_noise_tile_is_refused(tmp_path):
    x = np.zeros((3, 1, 16, 16))
    x[1] = np.nan
    bad = _noise(tmp_path / "nan.h5", x)
    with pytest.raises(DataError, match="tile 1 has no valid pixel"):
        _pairs(tmp_path / "p.h5", bad, n=3)
    assert not (tmp_path / "p.h5").exists()
