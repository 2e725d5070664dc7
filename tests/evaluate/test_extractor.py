"""The radar feature extractor: trains, separates classes, round-trips, refuses misfits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

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


# ---- InceptionV3 from a local file --------------------------------------------------------------


def _torchvision_problem() -> str | None:
    """None when torchvision's models import; else why not (absent, or a build for another torch)."""
    try:
        import torchvision.models  # noqa: F401
    except Exception as err:  # noqa: BLE001 - a broken build raises RuntimeError, not ImportError
        first = (str(err).strip().splitlines() or [""])[0]
        return f"{type(err).__name__}: {first}"
    return None


def _needs_torchvision() -> None:
    problem = _torchvision_problem()
    if problem is not None:
        pytest.skip(f"torchvision does not import ({problem}): the InceptionV3 path cannot run")


def _hide_torchvision(monkeypatch, tmp_path, broken: bool) -> None:
    """Make ``import torchvision`` fail for this test: absent (ImportError) or broken (RuntimeError,
    as a CUDA wheel of torchvision beside a CPU-only torch does)."""
    import sys

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, name)
    if broken:
        fake = tmp_path / "fake_site" / "torchvision"
        fake.mkdir(parents=True)
        (fake / "__init__.py").write_text(
            'raise RuntimeError("operator torchvision::nms does not exist")\n'
        )
        monkeypatch.syspath_prepend(str(fake.parent))
    else:
        monkeypatch.setitem(sys.modules, "torchvision", None)  # import -> ImportError


def test_inception_weights_must_be_a_local_file(tmp_path):
    # checked before torchvision is imported: the same error with or without it
    for path in (tmp_path / "missing.pth", tmp_path / "missing.safetensors"):
        with pytest.raises(DataError, match="weights file not found") as err:
            load_extractor(path)
        assert "\n" not in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("broken", [False, True], ids=["absent", "broken"])
def test_inception_without_a_working_torchvision_is_a_clear_error(tmp_path, monkeypatch, broken):
    fake = tmp_path / "inception.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1)}, fake)
    _hide_torchvision(monkeypatch, tmp_path, broken)
    with pytest.raises(RadarDiffError, match="need torchvision") as err:
        load_extractor(fake)
    msg = str(err.value)
    assert "\n" not in msg and str(fake) in msg
    assert (
        ("does not import" in msg and "RuntimeError" in msg) if broken else "not installed" in msg
    )


def test_inception_refuses_weights_that_are_not_inception_v3(tmp_path):
    _needs_torchvision()
    wrong_shape = tmp_path / "shape.pth"  # a known key with the wrong shape
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1)}, wrong_shape)
    too_few = tmp_path / "few.pth"  # right shape, but almost every key missing
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, too_few)
    unreadable = tmp_path / "junk.pt"
    unreadable.write_bytes(b"not a torch file")
    for path, what in (
        (wrong_shape, "size mismatch"),
        (too_few, "missing"),
        (unreadable, "cannot read"),
    ):
        with pytest.raises(DataError, match=what) as err:
            load_extractor(path)
        assert "\n" not in str(err.value) and str(path) in str(err.value)


@pytest.fixture(scope="module")
def inception_reference(tmp_path_factory):
    """A torchvision InceptionV3 as torchvision builds it for its pretrained weights
    (``transform_input=True``, with the aux head and fc of the Google checkpoint), seeded random
    weights with random batch-norm statistics, saved as a state dict in .pth and .safetensors."""
    _needs_torchvision()
    from safetensors.torch import save_file
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    net = inception_v3(weights=None, aux_logits=True, init_weights=True, transform_input=True)
    gen = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # so that unloaded statistics would show
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
            m.weight.data.copy_(0.8 + 0.4 * torch.rand(n, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=gen))
    net.eval()
    d = tmp_path_factory.mktemp("inception")
    state = net.state_dict()
    torch.save(state, d / "inception.pth")
    # a DataParallel-style copy, and safetensors (which needs contiguous, unshared tensors)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, d / "wrapped.pt")
    save_file(
        {k: v.contiguous().clone() for k, v in state.items()}, str(d / "inception.safetensors")
    )
    return net, d


def _reference_pool_features(net, images: np.ndarray) -> np.ndarray:
    """Preprocess as documented (per-sample and channel min-max, 3 channels, bilinear 299,
    ImageNet standardisation) and read torchvision's own avgpool output through a hook."""
    lo = np.nanmin(images, axis=(2, 3), keepdims=True)
    hi = np.nanmax(images, axis=(2, 3), keepdims=True)
    x = torch.from_numpy((images - lo) / (hi - lo)).float()
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    seen = []
    hook = net.avgpool.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        with torch.no_grad():
            net((x - mean) / std)
    finally:
        hook.remove()
    return torch.flatten(seen[0], 1).double().numpy()


def test_inception_features_are_torchvisions_pool_features(inception_reference):
    _needs_torchvision()
    from radardiff.evaluate.extractor import InceptionExtractor

    net, d = inception_reference
    rng = np.random.default_rng(3)
    images = np.concatenate([_smooth(2, rng) * 5.0 + 2.0, rng.standard_normal((1, 1, SIZE, SIZE))])
    ext = load_extractor(d / "inception.pth")
    assert isinstance(ext, InceptionExtractor) and ext.name == "inception_v3"
    f = ext.features(images)
    assert f.shape == (3, 2048) and f.dtype == np.float64 and np.all(np.isfinite(f))
    assert np.all(f.std(axis=1) > 0) and not np.allclose(f[0], f[1])  # not a degenerate network
    expect = _reference_pool_features(net, images)
    np.testing.assert_allclose(f, expect, rtol=1e-4, atol=1e-5 * np.abs(expect).max())
    # deterministic, independent of batching, and the same from every file format
    assert np.array_equal(ext.features(images), f)
    np.testing.assert_allclose(InceptionExtractor(d / "inception.pth", batch_size=1).features(images),
                               f, rtol=1e-5, atol=1e-6)  # fmt: skip
    for name in ("wrapped.pt", "inception.safetensors"):
        assert np.array_equal(load_extractor(d / name).features(images), f), name


def test_inception_features_scale_invariance_channels_and_nan(inception_reference):
    _needs_torchvision()
    _, d = inception_reference
    ext = load_extractor(d / "inception.pth")
    x = _smooth(2, np.random.default_rng(4))
    f = ext.features(x)
    # per-sample min-max: physical offset and scale do not change the features
    np.testing.assert_allclose(ext.features(3.0 * x - 7.0), f, rtol=1e-4, atol=1e-5)
    # one channel is repeated to three
    np.testing.assert_allclose(ext.features(np.repeat(x, 3, axis=1)), f, rtol=1e-5, atol=1e-6)
    y = x.copy()
    y[:, :, 0, 0] = np.nan  # no data
    assert np.all(np.isfinite(ext.features(y)))
    assert ext.features(x[:0]).shape == (0, 2048)
    with pytest.raises(DataError, match="expected images"):
        ext.features(np.zeros((2, 2, SIZE, SIZE)))


def test_inception_feeds_features_for(inception_reference, two_classes):
    _needs_torchvision()
    from types import SimpleNamespace

    from radardiff.data import DatasetFile

    _, d = inception_reference
    ext = load_extractor(d / "inception.pth")
    a = features_for(ext, two_classes["smooth_a"], max_samples=3, seed=0)
    idx = np.sort(np.random.default_rng(0).choice(48, 3, replace=False))
    with DatasetFile(two_classes["smooth_a"]) as ds:
        np.testing.assert_allclose(a, ext.features(ds.images(idx)), rtol=1e-5, atol=1e-6)
    with pytest.raises(DataError, match="1 or 3 channels"):
        ext.check_fits(SimpleNamespace(path="x.h5", channels=2))


def test_cli_features_train(two_classes, tmp_path):
    from click.testing import CliRunner

    from radardiff.cli.features import features as group

    out = tmp_path / "ext"
    res = CliRunner().invoke(group, ["train", str(two_classes["unlabelled"]), "--out", str(out),
                                     "--epochs", "1", "--max-samples", "32"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "simclr extractor" in res.output and (out / "model.safetensors").is_file()
    assert "Example" in CliRunner().invoke(group, ["train", "--help"]).output
