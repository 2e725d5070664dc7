"""Normalisation: exact round trips, constant and all-NaN samples, global statistics, persistence."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

from radardiff.data.dataset_file import DatasetFile, write_dataset
from radardiff.data.normalize import METHODS, Normalizer, valid_sample_indices
from radardiff.errors import DataError


def _stack(rng: np.random.Generator, positive: bool) -> np.ndarray:
    """(12, 2, 8, 8): varied scales and offsets, NaN holes, a constant sample, an all-NaN one."""
    scale = 10.0 ** rng.uniform(-3, 3, size=(12, 2, 1, 1))
    if positive:  # linear intensities spanning about 30 dB
        x = scale * rng.gamma(1.0, 1.0, size=(12, 2, 8, 8)) + 1e-3 * scale
    else:
        x = scale * rng.standard_normal((12, 2, 8, 8)) + rng.uniform(-1e3, 1e3, (12, 2, 1, 1))
    x[x.shape[0] // 2 :, :, rng.random((8, 8)) < 0.2] = np.nan  # holes
    x[3] = 2.5 if positive else -7.25  # constant sample
    x[4, 1] = 42.0  # one constant channel
    x[5] = np.nan  # no data at all
    x[6, 0] = np.nan
    x[6, 0, 0, 0] = 1.5  # a single valid pixel in a channel
    return x.astype(np.float32)


@pytest.fixture
def make_file(tmp_path):
    def make(positive: bool = False, kind: str = "generic", x: np.ndarray | None = None):
        x = _stack(np.random.default_rng(0), positive) if x is None else x
        labels = np.arange(len(x)) % 3
        path = write_dataset(
            tmp_path / f"d_{kind}_{positive}.h5",
            x,
            labels,
            kind=kind,
            units="u",
            class_names=["a", "b", "c"],
        )
        return DatasetFile(path), x

    return make


def _assert_roundtrip(back, x, out, method: str, to_db: bool) -> None:
    """|back - x| <= 1e-6 * max(|x|, scale) on every pixel that holds data.

    The network space is float32, so its resolution, mapped back, is about 1e-7 of the scale
    removed from the value: the spread ``hi - lo`` (min-max) or ``max(std, |x - mean|)``
    (standardisation) of the sample, or of the training set for global methods. With dB the
    check is on the dB values and, relative, on the linear ones.
    """
    x = x.astype(np.float64)
    back = back.astype(np.float64)
    mask = out.mask
    assert mask.sum() == np.isfinite(x).sum()
    if to_db:
        rel = np.abs(back - x) / np.abs(x)
        assert np.all(rel[mask] <= 1e-6), float(rel[mask].max())
        return
    a, b = out.stats[..., 0, None, None], out.stats[..., 1, None, None]
    if method == "none":
        scale = np.zeros_like(x)
    elif "standardize" in method:
        scale = np.maximum(b, np.abs(x - a))
    else:
        scale = np.broadcast_to(b - a, x.shape)
    err = np.abs(back - x) / np.maximum(np.abs(x), scale)
    assert np.all(err[mask] <= 1e-6), float(err[mask].max())


@pytest.mark.parametrize("to_db", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_inverse_of_transform_is_identity(make_file, method, to_db):
    data, x = make_file(positive=to_db)
    norm = Normalizer.fit(data, method, to_db=to_db, block=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by zero, no invalid-value warnings
        out = norm.transform(x)
        back = norm.inverse(out.images, out.stats)
    assert out.images.dtype == np.float32 and np.isfinite(out.images).all()
    assert (out.images[~out.mask] == 0).all()
    _assert_roundtrip(back, x, out, method, to_db)


@pytest.mark.parametrize(
    ("method", "lo", "hi", "middle"),
    [("minmax_pm1", -1.0, 1.0, 0.0), ("minmax_01", 0.0, 1.0, 0.5)],
)
def test_minmax_ranges_and_constant_samples(make_file, method, lo, hi, middle):
    data, x = make_file()
    out = Normalizer.fit(data, method).transform(x)
    y = np.where(out.mask, out.images, np.nan)
    varying = [0, 1, 2, 7, 8]
    np.testing.assert_allclose(np.nanmin(y[varying], axis=(2, 3)), lo, atol=1e-6)
    np.testing.assert_allclose(np.nanmax(y[varying], axis=(2, 3)), hi, atol=1e-6)
    assert (out.images[3] == middle).all() and (out.images[4, 1] == middle).all()
    assert (out.images[6, 0][out.mask[6, 0]] == middle).all()  # one pixel: zero spread


def test_standardize_moments(make_file):
    data, x = make_file()
    out = Normalizer.fit(data, "standardize").transform(x)
    y = np.where(out.mask, out.images, np.nan)[[0, 1, 2, 7]].astype(np.float64)
    np.testing.assert_allclose(np.nanmean(y, axis=(2, 3)), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.nanstd(y, axis=(2, 3)), 1.0, atol=1e-6)


def test_all_nan_samples_skipped_and_counted(make_file, caplog):
    data, _ = make_file()
    with caplog.at_level(logging.WARNING, logger="radardiff.data.normalize"):
        norm = Normalizer.fit(data, "minmax_pm1")
    assert norm.skipped_all_nan == 1
    assert "skipped 1 of 12 samples" in caplog.text
    expected = np.array([i for i in range(12) if i != 5])
    np.testing.assert_array_equal(norm.valid_indices, expected)
    np.testing.assert_array_equal(valid_sample_indices(data, block=5), expected)
    assert norm.sample_stats.shape == (11, 2, 2)
    np.testing.assert_array_equal(norm.sample_labels, expected % 3)


def test_non_positive_intensity_is_no_data_in_db(make_file):
    x = np.abs(_stack(np.random.default_rng(1), True))
    x[2] = 0.0  # no positive intensity: no data in dB
    x[7, :, :2] = -1.0
    data, _ = make_file(positive=True, x=x)
    norm = Normalizer.fit(data, "minmax_pm1", to_db=True)
    assert 2 not in norm.valid_indices and norm.skipped_all_nan == 2
    np.testing.assert_array_equal(valid_sample_indices(data, to_db=True), norm.valid_indices)
    out = norm.transform(x)
    assert not out.mask[7, :, :2].any() and not out.mask[2].any()


def test_every_sample_empty_is_an_error(tmp_path):
    import h5py

    from radardiff.data.dataset_file import DatasetFile

    path = tmp_path / "empty.h5"  # made by hand: radardiff's writer refuses to write it
    with h5py.File(path, "w") as h5:
        h5["images"] = np.full((3, 1, 4, 4), np.nan, np.float32)
        h5.attrs["kind"] = "generic"
    with pytest.raises(DataError, match="every sample is all NaN"):
        Normalizer.fit(DatasetFile(path))


def test_global_statistics_stream_exactly(make_file):
    rng = np.random.default_rng(3)
    x = (1e6 + rng.standard_normal((40, 2, 8, 8))).astype(np.float64)
    x[::7, :, :3] = np.nan
    data, _ = make_file(x=x.astype(np.float32))
    xf = x.astype(np.float32).astype(np.float64)
    g = Normalizer.fit(data, "global_standardize", block=7).global_stats
    mean = np.nanmean(np.moveaxis(xf, 1, 0).reshape(2, -1), axis=1)
    std = np.nanstd(np.moveaxis(xf, 1, 0).reshape(2, -1), axis=1)
    np.testing.assert_allclose(g[:, 0], mean, rtol=1e-12)
    np.testing.assert_allclose(g[:, 1], std, rtol=1e-9)  # E[x^2]-E[x]^2 would lose it all
    g = Normalizer.fit(data, "global_minmax", block=7).global_stats
    np.testing.assert_allclose(g[:, 0], np.nanmin(xf, axis=(0, 2, 3)))
    np.testing.assert_allclose(g[:, 1], np.nanmax(xf, axis=(0, 2, 3)))
    norm = Normalizer.fit(data, "global_minmax")
    back = norm.inverse(norm.transform(xf).images)  # global: no per-sample stats needed
    fin = np.isfinite(xf)
    assert np.abs(back[fin] - xf[fin]).max() <= 1e-6 * np.abs(xf[fin]).max()


def test_wrapped_phase_as_cos_sin(make_file):
    rng = np.random.default_rng(4)
    x = rng.uniform(-np.pi, np.pi, size=(6, 1, 8, 8)).astype(np.float32)
    x[1] = np.pi  # the boundary value
    x[2, 0, :2] = np.nan
    data, _ = make_file(kind="insar_wrapped", x=x)
    norm = Normalizer.fit(data, "minmax_pm1")
    assert norm.phase and norm.model_channels == 2
    out = norm.transform(x)
    assert out.images.shape == (6, 2, 8, 8) and out.mask.shape == (6, 2, 8, 8)
    np.testing.assert_allclose(out.images[:, 0], np.nan_to_num(np.cos(x[:, 0])), atol=1e-7)
    back = norm.inverse(out.images).astype(np.float64)
    m = out.mask[:, :1]
    diff = np.angle(np.exp(1j * (back - x)))
    assert np.abs(diff[m]).max() < 1e-6
    assert (back > -np.pi).all() and (back <= np.pi).all()
    with pytest.raises(DataError, match="to_db"):
        Normalizer.fit(data, to_db=True)


def test_save_load_round_trip(make_file, tmp_path):
    data, x = make_file()
    norm = Normalizer.fit(data, "standardize")
    norm.save(tmp_path / "n.json")
    again = Normalizer.load(tmp_path / "n.json")
    for key in ("method", "to_db", "phase", "channels", "skipped_all_nan"):
        assert getattr(again, key) == getattr(norm, key)
    for key in ("global_stats", "sample_stats", "sample_labels"):
        np.testing.assert_array_equal(getattr(again, key), getattr(norm, key))
    a, b = norm.transform(x), again.transform(x)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(norm.inverse(a.images, a.stats), again.inverse(b.images, b.stats))


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="n.json: normaliser file not found"):
        Normalizer.load(tmp_path / "n.json")
    (tmp_path / "bad.json").write_text('{"method": "minmax_pm1"}')
    with pytest.raises(DataError, match="bad.json: not a valid normaliser file"):
        Normalizer.load(tmp_path / "bad.json")
    with pytest.raises(DataError, match="unknown"):
        Normalizer(method="nope")


def test_draw_stats_per_class_and_seeded(make_file):
    data, _ = make_file()
    norm = Normalizer.fit(data, "minmax_pm1")
    labels = np.array([0, 1, 2, 1, 0, 2, 2])
    a = norm.draw_stats(7, np.random.default_rng(5), labels)
    np.testing.assert_array_equal(a, norm.draw_stats(7, np.random.default_rng(5), labels))
    for stat, lab in zip(a, labels, strict=True):
        pool = norm.sample_stats[norm.sample_labels == lab]
        assert any(np.array_equal(stat, p, equal_nan=True) for p in pool)
    # generated samples go back to physical units with drawn statistics
    y = np.random.default_rng(0).uniform(-1, 1, size=(7, 2, 4, 4))
    x = norm.inverse(y, a)
    assert (x >= a[:, :, None, None, 0] - 1e-3).all() and (x <= a[:, :, None, None, 1] + 1e-3).all()
    assert norm.draw_stats(4, np.random.default_rng(0)).shape == (4, 2, 2)


def test_inverse_needs_stats_for_per_sample_methods(make_file):
    data, x = make_file()
    norm = Normalizer.fit(data, "minmax_pm1")
    with pytest.raises(DataError, match="per-sample statistics"):
        norm.inverse(norm.transform(x).images)
    with pytest.raises(DataError, match="statistics of shape"):
        norm.transform(x, stats=np.zeros((1, 2, 2)))
