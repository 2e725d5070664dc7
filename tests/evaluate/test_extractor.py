"""The radar feature extractor: trains, separates classes, round-trips, refuses misfits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from radardiff.config import EvalConfig
from radardiff.data.dataset_file import write_dataset
from radardiff.errors import DataError, RadarDiffError
from radardiff.evaluate import fid
from radardiff.evaluate.extractor import (
    RadarFeatureExtractor,
    augment,
    features_for,
    load_extractor,
    nt_xent,
    train_extractor,
)
from radardiff.evaluate.metrics import evaluate_files

SIZE = 16
FAST = {"widths": (8, 16), "batch_size": 32, "lr": 3e-3}


def _smooth(n: int, rng: np.random.Generator, sigma: float = 3.0) -> np.ndarray:
    """Gaussian-filtered white noise (correlation length ~sigma px), by FFT."""
    f = np.fft.fftfreq(SIZE)
    k2 = f[:, None] ** 2 + f[None, :] ** 2
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * k2)
    noise = rng.standard_normal((n, 1, SIZE, SIZE))
    return np.fft.ifft2(np.fft.fft2(noise) * kernel).real


@pytest.fixture(scope="module")
def two_classes(tmp_path_factory):
    """Class 0: smooth fields; class 1: white noise (in radians)."""
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("extractor")
    n = 64
    images = np.concatenate([_smooth(n, rng), rng.standard_normal((n, 1, SIZE, SIZE))])
    labels = np.repeat([0, 1], n)
    common = {"kind": "insar_noise", "units": "rad"}
    return {
        "labelled": write_dataset(
            d / "lab.h5", images, labels, class_names=["smooth", "white"], **common
        ),
        "unlabelled": write_dataset(d / "unl.h5", images, **common),
        "smooth_a": write_dataset(d / "sa.h5", _smooth(48, rng), **common),
        "smooth_b": write_dataset(d / "sb.h5", _smooth(48, rng), **common),
        "white": write_dataset(d / "w.h5", rng.standard_normal((48, 1, SIZE, SIZE)), **common),
        "wrong_size": write_dataset(d / "big.h5", _smooth(4, rng)[:, :, :8, :8], **common),
        "wrong_kind": write_dataset(d / "k.h5", _smooth(4, rng), kind="generic", units="rad"),
        "dir": d,
    }


@pytest.fixture(scope="module")
def simclr(two_classes):
    return train_extractor(
        two_classes["unlabelled"], two_classes["dir"] / "simclr", epochs=4, seed=0, **FAST
    )


def _separation(path, files) -> tuple[float, float]:
    ext = load_extractor(path)
    a, b, w = (features_for(ext, files[k]) for k in ("smooth_a", "smooth_b", "white"))
    return fid(a, b), fid(a, w)


def test_simclr_separates_classes_without_labels(simclr, two_classes):
    assert simclr.mode == "simclr"
    assert all(np.isfinite(simclr.losses))
    within, between = _separation(simclr.path, two_classes)
    assert between > 10 * within, (within, between)


def test_classifier_separates_classes(two_classes):
    r = train_extractor(
        two_classes["labelled"], two_classes["dir"] / "clf", epochs=3, seed=0, **FAST
    )
    assert r.mode == "classifier"
    assert r.train_accuracy is not None and r.train_accuracy > 0.9
    within, between = _separation(r.path, two_classes)
    assert between > 10 * within, (within, between)


def test_saved_extractor_round_trips_and_is_seeded(simclr, two_classes, tmp_path):
    ext = load_extractor(simclr.path)
    x = np.asarray(features_for(ext, two_classes["white"]))
    assert x.shape == (48, 16) and x.dtype == np.float64
    assert np.array_equal(x, features_for(simclr.path, two_classes["white"]))
    again = train_extractor(two_classes["unlabelled"], tmp_path / "again", epochs=4, seed=0, **FAST)
    np.testing.assert_allclose(
        features_for(again.path, two_classes["white"]), x, rtol=1e-5, atol=1e-6
    )
    doc = json.loads((simclr.path / "extractor.json").read_text())
    assert doc["format"] == "radardiff.extractor/1"
    assert doc["normalizer"]["sample_stats"] is None  # small file: no training statistics
    assert doc["config"]["height"] == SIZE and doc["config"]["data_channels"] == 1


def test_features_ignore_nan_pixels_outside_their_mask(simclr, two_classes):
    ext = RadarFeatureExtractor.load(simclr.path)
    from radardiff.data import DatasetFile

    with DatasetFile(two_classes["white"]) as ds:
        x = ds.images(np.arange(4))
    y = x.copy()
    y[:, :, 0, 0] = np.nan  # no data -> filled like the training normaliser does
    f = ext.features(y)
    assert np.all(np.isfinite(f))


def test_misfitting_data_is_refused_in_one_line(simclr, two_classes):
    for key, what in (("wrong_size", "8x8 images"), ("wrong_kind", "kind 'generic'")):
        with pytest.raises(DataError, match=what) as err:
            features_for(simclr.path, two_classes[key])
        msg = str(err.value)
        assert "\n" not in msg and str(two_classes[key]) in msg and "does not fit" in msg


def test_broken_extractor_folder_is_refused(simclr, tmp_path):
    with pytest.raises(DataError, match="not a radardiff feature extractor"):
        load_extractor(tmp_path)
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(simclr.path, bad)
    cfg = json.loads((bad / "extractor.json").read_text())
    cfg["config"]["widths"] = [4, 8]
    (bad / "extractor.json").write_text(json.dumps(cfg))
    with pytest.raises(DataError, match="weights do not fit") as err:
        load_extractor(bad)
    assert "\n" not in str(err.value)


def test_evaluate_files_fills_feature_metrics(simclr, two_classes, tmp_path):
    cfg = EvalConfig(metrics=("ranges",), bootstrap=0)
    same = evaluate_files(
        two_classes["smooth_a"], two_classes["smooth_a"], cfg, tmp_path / "s", extractor=simclr.path
    )
    s = same["scalars"]
    assert s["fid"] == pytest.approx(0.0, abs=1e-6)
    assert s["precision"] == 1.0 and s["recall"] == 1.0
    assert same["settings"]["feature_extractor"].startswith("radardiff-simclr")
    diff = evaluate_files(
        two_classes["smooth_a"], two_classes["white"], cfg, tmp_path / "d", extractor=simclr.path
    )
    assert diff["scalars"]["fid"] > 1.0 and diff["scalars"]["precision"] < 0.5
    with pytest.raises(DataError, match="does not fit"):
        evaluate_files(
            two_classes["wrong_kind"],
            two_classes["wrong_kind"],
            cfg,
            tmp_path / "k",
            extractor=simclr.path,
        )


def test_nt_xent_prefers_matching_views():
    z = torch.eye(4)
    assert float(nt_xent(z, z, 0.1)) < float(nt_xent(z, z.roll(1, 0), 0.1))


def test_augment_is_seeded_and_keeps_crop_size():
    x = torch.randn(6, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    a = augment(x, torch.Generator().manual_seed(1), crop=12)
    b = augment(x, torch.Generator().manual_seed(1), crop=12)
    assert a.shape == (6, 2, 12, 12) and torch.equal(a, b)


def test_train_refuses_bad_options(two_classes, tmp_path):
    with pytest.raises(RadarDiffError, match="--epochs"):
        train_extractor(two_classes["unlabelled"], tmp_path / "x", epochs=0)
    with pytest.raises(DataError, match="at least 2 classes"):
        train_extractor(two_classes["unlabelled"], tmp_path / "x", mode="classifier")


def test_inception_needs_a_local_file_and_torchvision(tmp_path):
    with pytest.raises(DataError, match="weights file not found"):
        load_extractor(tmp_path / "missing.pth")
    fake = tmp_path / "inception.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1)}, fake)
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(RadarDiffError, match="need torchvision") as err:
            load_extractor(fake)
        assert "\n" not in str(err.value)
        pytest.skip("torchvision is not installed: InceptionV3 features cannot be checked")
    with pytest.raises(DataError, match="not torchvision InceptionV3 weights"):
        load_extractor(fake)


def test_cli_features_train(two_classes, tmp_path):
    from click.testing import CliRunner

    from radardiff.cli.features import features as group

    out = tmp_path / "ext"
    res = CliRunner().invoke(group, ["train", str(two_classes["unlabelled"]), "--out", str(out),
                                     "--epochs", "1", "--max-samples", "32"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "simclr extractor" in res.output and (out / "model.safetensors").is_file()
    assert "Example" in CliRunner().invoke(group, ["train", "--help"]).output
