"""evaluate_files: schema, values on known data, comparability and sample-count errors."""

import json

import numpy as np
import pytest

from radardiff.config import EvalConfig
from radardiff.data import write_dataset
from radardiff.errors import DataError
from radardiff.evaluate.metrics import SCALAR_KEYS, SCHEMA, empty_metrics, evaluate_files

SET_KEYS = {"path", "n", "n_used", "kind", "units", "shape", "pixel_spacing_m"}
ALL = ("semivariogram", "psd", "histogram", "ranges")


def _noise(n, seed, scale=1.0, size=16, c=1):
    return np.random.default_rng(seed).normal(0, scale, size=(n, c, size, size)).astype(np.float32)


def _write(path, images, kind="insar_noise", units="rad", spacing=90.0):
    return write_dataset(path, images, kind=kind, units=units, pixel_spacing_m=spacing)


def _strict(text):
    def bad(token):
        raise AssertionError(f"non-JSON constant {token}")

    return json.loads(text, parse_constant=bad)


def _assert_schema(d):
    assert d["schema"] == SCHEMA and isinstance(d["radardiff_version"], str)
    assert set(d) >= {
        "schema",
        "radardiff_version",
        "real",
        "fake",
        "scalars",
        "semivariogram",
        "psd",
        "histogram",
        "ranges",
    }
    assert set(d["real"]) == SET_KEYS and set(d["fake"]) == SET_KEYS
    assert set(d["scalars"]) == set(SCALAR_KEYS)


def test_schema_keys_all_present_and_values(tmp_path):
    real = _write(tmp_path / "real.h5", _noise(40, 0))
    fake = _write(tmp_path / "fake.h5", _noise(30, 1, scale=2.0))
    cfg = EvalConfig(metrics=ALL, max_lag=5, bootstrap=50)
    d = evaluate_files(real, fake, cfg, tmp_path / "out")
    on_disk = _strict((tmp_path / "out" / "metrics.json").read_text())
    assert on_disk == d
    _assert_schema(d)
    assert d["real"]["shape"] == [1, 16, 16] and d["fake"]["n_used"] == 30
    sv = d["semivariogram"]
    assert set(sv) == {"lags_px", "lags_m", "ci", "real", "fake", "directional"}
    assert sv["lags_px"] == [1, 2, 3, 4, 5] and sv["lags_m"] == [90, 180, 270, 360, 450]
    assert set(sv["real"]) == {"mean", "low", "high"} and "bootstrap" in sv["ci"]
    assert set(sv["directional"]) == {"x", "y"}
    assert set(sv["directional"]["x"]) == {"real", "fake"}
    # white noise of variance 1 and 4: semivariance 1 and 4 at every lag, relative error 3
    np.testing.assert_allclose(sv["real"]["mean"], 1.0, rtol=0.1)
    np.testing.assert_allclose(sv["fake"]["mean"], 4.0, rtol=0.1)
    assert d["scalars"]["semivariogram_rel_error"] == pytest.approx(3.0, rel=0.15)
    assert all(
        lo <= m <= hi
        for lo, m, hi in zip(*(sv["real"][k] for k in ("low", "mean", "high")), strict=True)
    )
    assert d["scalars"]["psd_log_rmse"] == pytest.approx(np.log10(4), rel=0.15)
    assert d["scalars"]["std_w1"] == pytest.approx(1.0, rel=0.1)
    assert set(d["psd"]) == {"freq_cycles_per_px", "real", "fake"}
    assert set(d["histogram"]) == {"bin_edges", "real", "fake", "units"}
    assert d["histogram"]["units"] == "rad"
    assert set(d["ranges"]) == {"real_range", "fake_range", "real_std", "fake_std"}
    assert len(d["ranges"]["real_range"]) == 40
    for key in ("enl_real", "residue_density_real", "fid", "kid_mean", "precision"):
        assert d["scalars"][key] is None
    arrays = np.load(tmp_path / "out" / "arrays.npz")
    assert arrays["sv_real_gamma"].shape == (40, 1, 5)
    assert arrays["psd_fake"].shape[:2] == (30, 1)


def test_identical_sets_give_zero_distances_and_unit_precision(tmp_path):
    imgs = _noise(20, 2)
    imgs[:, :, 2:5, 3:9] = np.nan
    real = _write(tmp_path / "a.h5", imgs)
    fake = _write(tmp_path / "b.h5", imgs)
    feats = np.random.default_rng(0).normal(size=(20, 4))
    d = evaluate_files(
        real,
        fake,
        EvalConfig(metrics=ALL, bootstrap=0),
        tmp_path / "o",
        real_features=feats,
        fake_features=feats,
    )
    s = d["scalars"]
    for key in ("semivariogram_rel_error", "psd_log_rmse", "histogram_w1", "range_w1", "std_w1"):
        assert s[key] == pytest.approx(0.0, abs=1e-12), key
    assert s["fid"] == pytest.approx(0.0, abs=1e-6)
    assert s["precision"] == 1.0 and s["recall"] == 1.0
    assert s["kid_mean"] is not None and s["kid_std"] is not None
    assert "standard error" in d["semivariogram"]["ci"]


def test_unrequested_sections_are_null_and_cap_is_applied(tmp_path):
    real = _write(tmp_path / "r.h5", _noise(30, 3))
    fake = _write(tmp_path / "f.h5", _noise(30, 4))
    d = evaluate_files(real, fake, EvalConfig(metrics=("ranges",)), tmp_path / "o", max_samples=10)
    _assert_schema(d)
    assert d["semivariogram"] is None and d["psd"] is None and d["histogram"] is None
    assert d["real"]["n"] == 30 and d["real"]["n_used"] == 10
    assert d["settings"]["max_samples"] == 10
    assert d == empty_metrics() | {k: d[k] for k in d}  # same keys as the blank template
    again = evaluate_files(
        real, fake, EvalConfig(metrics=("ranges",)), tmp_path / "o2", max_samples=10
    )
    assert again["ranges"] == d["ranges"]  # seeded choice of samples


def test_speckle_and_phase_metrics(tmp_path):
    rng = np.random.default_rng(5)
    sar = rng.gamma(4, 0.25, size=(6, 1, 32, 32))
    a = _write(tmp_path / "s1.h5", 10 * np.log10(sar), kind="sar_backscatter", units="dB")
    b = _write(tmp_path / "s2.h5", 10 * np.log10(sar), kind="sar_backscatter", units="dB")
    d = evaluate_files(a, b, EvalConfig(metrics=("speckle",)), tmp_path / "o")
    assert d["scalars"]["enl_real"] == pytest.approx(4, rel=0.3)
    assert d["scalars"]["cv_fake"] == pytest.approx(0.5, rel=0.1)
    phase = rng.uniform(-np.pi, np.pi, size=(4, 1, 32, 32))
    p = _write(tmp_path / "p1.h5", phase, kind="insar_wrapped", units="rad")
    q = _write(tmp_path / "p2.h5", 0 * phase, kind="insar_wrapped", units="rad")
    d = evaluate_files(p, q, EvalConfig(metrics=("phase",)), tmp_path / "o2")
    assert d["scalars"]["residue_density_real"] == pytest.approx(1 / 3, abs=0.05)
    assert d["scalars"]["residue_density_fake"] == 0.0
    with pytest.raises(DataError, match=r"'speckle' needs SAR intensity \(kind sar_backscatter"):
        evaluate_files(p, q, EvalConfig(metrics=("speckle",)), tmp_path / "o3")


@pytest.mark.parametrize(
    ("fake_kwargs", "match"),
    [
        ({"images": _noise(4, 1, size=8)}, r"image shapes differ"),
        ({"kind": "insar_unwrapped"}, r"kinds differ"),
        ({"units": "mm"}, r"units differ"),
        ({"spacing": 30.0}, r"pixel spacings differ"),
    ],
)
def test_incomparable_sets_name_both_files(tmp_path, fake_kwargs, match):
    real = _write(tmp_path / "real.h5", _noise(4, 0))
    kwargs = {"images": _noise(4, 1)} | fake_kwargs
    fake = _write(tmp_path / "fake.h5", **kwargs)
    with pytest.raises(DataError, match=match) as err:
        evaluate_files(real, fake, EvalConfig(), tmp_path / "o")
    assert "real.h5" in str(err.value) and "fake.h5" in str(err.value)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_allow_mismatch_compares_other_kinds_and_spacings(tmp_path):
    """--allow-mismatch: an insar_unwrapped real set at 150 m against insar_noise samples at
    100 m is compared (same numbers as matching sets) and the differences are recorded; shapes
    and units are still refused."""
    imgs_r, imgs_f = _noise(6, 0), _noise(6, 1)
    real = _write(tmp_path / "real.h5", imgs_r, kind="insar_unwrapped", spacing=150.0)
    fake = _write(tmp_path / "fake.h5", imgs_f, spacing=100.0)
    with pytest.raises(DataError, match="kinds differ.*--allow-mismatch compares them anyway"):
        evaluate_files(real, fake, EvalConfig(), tmp_path / "refused")
    got = evaluate_files(real, fake, EvalConfig(), tmp_path / "o", allow_mismatch=True)
    notes = got["settings"]["mismatch_allowed"]
    assert len(notes) == 2 and "insar_unwrapped" in notes[0] and "150.0 m vs 100.0 m" in notes[1]
    assert got["semivariogram"]["lags_m"][0] == pytest.approx(150.0)
    same = evaluate_files(
        _write(tmp_path / "r2.h5", imgs_r, spacing=100.0), fake, EvalConfig(), tmp_path / "o2"
    )
    assert same["settings"]["mismatch_allowed"] == []
    assert got["scalars"]["semivariogram_rel_error"] == same["scalars"]["semivariogram_rel_error"]
    with pytest.raises(DataError, match="units differ"):
        evaluate_files(real, _write(tmp_path / "mm.h5", imgs_f, units="mm"), EvalConfig(),
                       tmp_path / "o3", allow_mismatch=True)  # fmt: skip


def test_unwrapped_phase_histogram_ignores_each_samples_reference(tmp_path):
    """Unwrapped phase has an arbitrary reference per interferogram: the same scenes with other
    constant offsets have histogram_w1 0 (centred), while for a generic kind it is the
    offsets' distance."""
    base = _noise(8, 3)
    rng = np.random.default_rng(0)
    shift_r = rng.uniform(-10, 10, (8, 1, 1, 1)).astype(np.float32)
    shift_f = rng.uniform(-10, 10, (8, 1, 1, 1)).astype(np.float32)
    cfg = EvalConfig(metrics=("histogram",))
    for kind, centred in (("insar_unwrapped", True), ("generic", False)):
        real = _write(tmp_path / f"r_{kind}.h5", base + shift_r, kind=kind)
        fake = _write(tmp_path / f"f_{kind}.h5", base + shift_f, kind=kind)
        got = evaluate_files(real, fake, cfg, tmp_path / kind)
        assert got["settings"]["histogram_centred"] is centred
        w1 = got["scalars"]["histogram_w1"]
        assert (w1 < 1e-3) if centred else (w1 > 0.5), (kind, w1)


def test_too_few_samples_says_the_minimum(tmp_path):
    real = _write(tmp_path / "real.h5", _noise(1, 0))
    fake = _write(tmp_path / "fake.h5", _noise(5, 1))
    with pytest.raises(
        DataError, match=r"real.h5: metric 'semivariogram' needs at least 2 samples"
    ):
        evaluate_files(real, fake, EvalConfig(), tmp_path / "o")


def test_multichannel_scalars_average_channels(tmp_path):
    imgs = _noise(10, 6, c=2)
    real = _write(tmp_path / "r.h5", imgs, kind="generic")  # values with a meaningful zero
    fake = _write(
        tmp_path / "f.h5",
        imgs + np.array([0.0, 2.0], dtype=np.float32)[None, :, None, None],
        kind="generic",
    )
    d = evaluate_files(
        real, fake, EvalConfig(metrics=("histogram", "semivariogram")), tmp_path / "o"
    )
    # shift of 0 on channel 0 and 2 on channel 1: mean W1 = 1; semivariograms are shift-invariant
    assert d["scalars"]["histogram_w1"] == pytest.approx(1.0, rel=1e-3)
    assert d["scalars"]["semivariogram_rel_error"] == pytest.approx(0.0, abs=1e-6)  # float32 data
    assert np.load(tmp_path / "o" / "arrays.npz")["sv_real_gamma"].shape[1] == 2


def test_max_lag_beyond_the_image_is_a_config_error(tmp_path):
    from radardiff.errors import ConfigError

    real = _write(tmp_path / "real.h5", _noise(4, 0))
    with pytest.raises(ConfigError, match=r"evaluate.max_lag=16: must be below the image side"):
        evaluate_files(real, real, EvalConfig(max_lag=16), tmp_path / "o")


def _smooth(n, seed, size=16):
    """Smooth fields (white noise, block-averaged and upsampled): tiny lag-1 semivariance."""
    coarse = np.random.default_rng(seed).normal(size=(n, 1, size // 4, size // 4))
    fine = np.kron(coarse, np.ones((4, 4)))
    k = np.ones(3) / 3  # soften the block edges along both axes
    fine = np.apply_along_axis(lambda v: np.convolve(v, k, mode="same"), 2, fine)
    fine = np.apply_along_axis(lambda v: np.convolve(v, k, mode="same"), 3, fine)
    return fine.astype(np.float32)


def test_noise_samples_are_counted_against_the_real_sets_threshold(tmp_path):
    """A fake set of smooth fields with a quarter replaced by white noise of the same variance:
    noise_fraction = 1/4 exactly, the real set's own fraction 0, the lag-1 ratio far above 1;
    the worst samples listed are the noise ones."""
    real = _write(tmp_path / "real.h5", _smooth(60, 0))
    fake_images = _smooth(40, 1)
    noisy = [3, 7, 20, 33, 35, 38, 10, 11, 12, 13]
    fake_images[noisy] = _noise(len(noisy), 2, scale=float(fake_images.std()))
    fake = _write(tmp_path / "fake.h5", fake_images)
    d = evaluate_files(real, fake, EvalConfig(metrics=("semivariogram",)), tmp_path / "o")
    s = d["scalars"]
    assert s["noise_fraction"] == pytest.approx(0.25) and s["noise_fraction_real"] == 0.0
    assert s["lag1_ratio"] > 3.0
    ns = d["noise_samples"]
    assert set(ns["worst_fake"][: len(noisy)]) == set(noisy)
    assert ns["factor"] == 3.0 and ns["percentile"] == 95.0
    # the threshold is 3 x the 95th percentile of the real lag-1 semivariances
    arrays = np.load(tmp_path / "o" / "arrays.npz")
    assert ns["threshold"] == pytest.approx(3 * np.percentile(arrays["lag1_real"][:, 0], 95))


def test_identical_sets_have_unit_lag1_ratio(tmp_path):
    x = _smooth(30, 5)
    real, fake = _write(tmp_path / "a.h5", x), _write(tmp_path / "b.h5", x)
    s = evaluate_files(real, fake, EvalConfig(metrics=("semivariogram",)), tmp_path / "o")[
        "scalars"
    ]
    assert s["lag1_ratio"] == pytest.approx(1.0) and s["noise_fraction"] == s["noise_fraction_real"]


def test_a_metrics_file_without_one_finite_metric_is_refused():
    from radardiff.errors import DataError
    from radardiff.evaluate.metrics import _refuse_unmeasured

    with pytest.raises(DataError, match="fake.h5: no metric came out as a finite number"):
        _refuse_unmeasured({"a": float("nan"), "b": None, "c": float("inf")}, "fake.h5")
    _refuse_unmeasured({"a": float("nan"), "b": 0.3}, "fake.h5")  # one is enough
    _refuse_unmeasured({"a": None}, "fake.h5")  # nothing requested that could be measured
