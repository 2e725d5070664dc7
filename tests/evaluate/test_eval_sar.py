"""The SAR and memorisation metrics of ``evaluate``: the sar section and scalars of metrics.json,
per class, dB read as such, refusals in one line; memorisation against the training data."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from radardiff.config import EvalConfig
from radardiff.data.dataset_file import write_dataset
from radardiff.data.synth import synthesize
from radardiff.errors import ConfigError, DataError
from radardiff.evaluate import evaluate_files

SAR = EvalConfig(metrics=("sar",), bootstrap=0)


@pytest.fixture(scope="module")
def sar_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("sar")
    return tuple(
        synthesize("sar", 60, 32, d / f"{name}.h5", seed=seed, params={"looks": 4})
        for name, seed in (("train", 0), ("real", 1), ("fake", 2))
    )


def test_sar_metrics_of_two_sets_of_one_distribution(sar_files, tmp_path):
    _, real, fake = sar_files
    result = evaluate_files(real, fake, SAR, tmp_path / "e")
    s, sec = result["scalars"], result["sar"]
    assert s["sar_enl_ratio"] == pytest.approx(1.0, abs=0.15)
    assert s["sar_k2_w1"] < 0.2 and s["sar_db_w1"] < 1.0 and s["sar_acf1_error"] < 0.05
    assert s["sar_pol_ratio_w1"] is None  # one channel
    assert 1.5 < sec["real"]["enl"][0] < 4.4  # 4-look speckle; the classes' texture lowers it
    assert set(sec["real"]["db_quantiles"]) == {"1", "5", "50", "95", "99"}
    assert len(sec["by_class"]) == 10 and all(v["fake"] for v in sec["by_class"].values())
    arrays = np.load(tmp_path / "e" / "arrays.npz")
    assert arrays["sar_k2_real"].shape == (60, 1) and arrays["sar_acf_x_fake"].shape == (60, 1, 3)
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["sar"]["by_class"]


def test_sar_in_db_and_two_channels(tmp_path):
    rng = np.random.default_rng(0)
    vh = rng.gamma(4, 1 / 4, size=(12, 2, 32, 32))
    vh[:, 0] *= 8.0  # VV 9 dB over VH
    db = 10 * np.log10(vh)
    for name in ("real", "fake"):
        write_dataset(tmp_path / f"{name}.h5", db, kind="sar_backscatter", units="dB")
    result = evaluate_files(tmp_path / "real.h5", tmp_path / "fake.h5", SAR, tmp_path / "e")
    assert result["sar"]["real"]["pol_ratio_db_median"] == pytest.approx(9.03, abs=0.3)
    assert result["scalars"]["sar_pol_ratio_w1"] == pytest.approx(0.0)
    assert result["sar"]["real"]["enl"][0] == pytest.approx(4, rel=0.1)  # read as intensity


def test_db_said_to_be_linear_is_read_as_db_with_one_line(tmp_path, caplog):
    rng = np.random.default_rng(1)
    db = 10 * np.log10(rng.gamma(4, 1 / 4, size=(8, 1, 32, 32)) * 0.05)  # mostly negative
    for name in ("real", "fake"):
        write_dataset(tmp_path / f"{name}.h5", db, kind="sar_backscatter", units="linear")
    with caplog.at_level(logging.WARNING, logger="radardiff"):
        result = evaluate_files(tmp_path / "real.h5", tmp_path / "fake.h5", SAR, tmp_path / "e")
    assert caplog.text.count("read as dB for the SAR metrics") == 2
    assert result["sar"]["real"]["enl"][0] == pytest.approx(4, rel=0.1)


def test_sar_metrics_refuse_phase(noise_files, tmp_path):
    with pytest.raises(DataError, match=r"metric 'sar' needs SAR intensity .* got kind 'insar_"):
        evaluate_files(noise_files[0], noise_files[1], SAR, tmp_path / "e")


def test_an_image_without_homogeneous_windows_is_not_measurable(tmp_path):
    rng = np.random.default_rng(2)
    levels = np.kron(np.tile([[1.0, 10.0], [100.0, 1000.0]], (2, 2)), np.ones((8, 8)))
    x = (levels * rng.gamma(16, 1 / 16, size=(4, 1, 32, 32))).astype(np.float32)
    for name in ("real", "fake"):
        write_dataset(tmp_path / f"{name}.h5", x, kind="sar_backscatter", units="linear")
    result = evaluate_files(tmp_path / "real.h5", tmp_path / "fake.h5", SAR, tmp_path / "e")
    assert result["sar"]["real"]["enl"] == [None] and result["sar"]["real"]["enl_measurable"] == [0]
    assert result["scalars"]["sar_enl_ratio"] is None  # not a number: not measurable


def test_a_class_without_generated_samples_is_said_once(sar_files, tmp_path, caplog):
    _, real, fake = sar_files
    from radardiff.data import DatasetFile

    with DatasetFile(fake) as f:
        keep = f.labels() != 3
        images, labels = f.images()[keep], f.labels()[keep]
        names = f.info.class_names
    write_dataset(tmp_path / "f.h5", images, labels, kind="sar_backscatter", units=f.info.units,
                  class_names=names)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="radardiff"):
        result = evaluate_files(real, tmp_path / "f.h5", SAR, tmp_path / "e")
    assert caplog.text.count("has no generated samples") == 1
    assert result["sar"]["by_class"][names[3]]["fake"] is None


def test_memorisation_of_copies_and_of_fresh_samples(sar_files, tmp_path):
    train, real, fake = sar_files
    cfg = EvalConfig(metrics=("memorisation",), bootstrap=0)
    fresh = evaluate_files(real, fake, cfg, tmp_path / "fresh", train=train)
    assert 0.8 < fresh["scalars"]["memorisation_ratio"] < 1.25
    from radardiff.data import DatasetFile

    with DatasetFile(train) as t:
        copies = t.images()[:40] * np.float32(1.0001)  # the training images, scaled: same pattern
        units = t.info.units
    write_dataset(tmp_path / "copies.h5", copies, kind="sar_backscatter", units=units)
    copied = evaluate_files(real, tmp_path / "copies.h5", cfg, tmp_path / "copied", train=train)
    assert copied["scalars"]["memorisation_ratio"] < 0.01
    assert copied["scalars"]["near_copy_fraction"] == 1.0
    assert copied["memorisation"]["n_fake"] == 40 and copied["memorisation"]["n_train"] == 60


def test_memorisation_refusals(sar_files, tmp_path):
    train, real, fake = sar_files
    cfg = EvalConfig(metrics=("memorisation",), bootstrap=0)
    with pytest.raises(ConfigError, match="needs the training data"):
        evaluate_files(real, fake, cfg, tmp_path / "a")
    with pytest.raises(DataError, match="needs --real images the model did not see"):
        evaluate_files(train, fake, cfg, tmp_path / "b", train=train)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_train_option_adds_memorisation(sar_files, tmp_path):
    from radardiff.cli.main import main

    train, real, fake = sar_files
    out = tmp_path / "cli"
    args = ["evaluate", "--real", str(real), "--fake", str(fake), "--out", str(out),
            "--metrics", "sar", "--train", str(train)]  # fmt: skip
    main(args)
    result = json.loads((out / "metrics.json").read_text())
    assert result["settings"]["metrics"] == ["sar", "memorisation"]
    assert result["scalars"]["memorisation_ratio"] is not None


def test_the_report_shows_the_sar_table_and_texture_diagram(sar_files, tmp_path):
    """A run whose eval holds the SAR metrics: the report has their table and the texture
    diagram; a run without them has no SAR section."""
    import shutil

    from conftest import tiny_run_config
    from radardiff.report import write_report
    from radardiff.train import train as train_run

    train, real, fake = sar_files
    cfg = tiny_run_config(str(train), model={"num_classes": 10}, train={"steps": 1})
    run = tmp_path / "run"
    train_run(
        cfg.model_copy(update={"model": cfg.model.model_copy(update={"image_size": 32})}), run
    )
    page = write_report(run).read_text()
    assert "SAR statistics" not in page
    evaluate_files(real, fake, SAR, run / "eval")
    shutil.copy(fake, run / "samples.h5")
    page = write_report(run, samples=run / "samples.h5").read_text()
    assert "<h2>SAR statistics</h2>" in page and "log-cumulant k2" in page
    assert 'alt="texture diagram"' in page
