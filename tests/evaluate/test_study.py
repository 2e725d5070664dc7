"""The sampler study: one timed, evaluated row per (sampler, steps)."""

from __future__ import annotations

import csv
import json
import math

import pytest

from radardiff.config import EvalConfig
from radardiff.errors import ConfigError
from radardiff.evaluate.study import study_samplers


@pytest.fixture(scope="module")
def study(trained_run, noise_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    cfg = EvalConfig(metrics=("semivariogram", "psd", "ranges"), bootstrap=10)
    return study_samplers(
        trained_run, ["ddim", "dpmsolver++"], [2, 3], 4, noise_files[1], out, seed=0,
        batch_size=2, eval_cfg=cfg,
    )  # fmt: skip


def test_one_row_per_sampler_and_steps(study):
    got = [(r["sampler"], r["steps"]) for r in study.rows]
    assert got == [("ddim", 2), ("ddim", 3), ("dpmsolver++", 2), ("dpmsolver++", 3)]
    for r in study.rows:
        assert math.isfinite(r["wall_s"]) and r["wall_s"] > 0
        assert r["s_per_sample"] == pytest.approx(r["wall_s"] / 4)
        assert r["n"] == 4
        # one network call per step for these first/multistep solvers, counted by a hook
        assert r["nfe"] == r["steps"]
        assert math.isfinite(r["semivariogram_rel_error"]) and math.isfinite(r["psd_log_rmse"])
        assert r["histogram_w1"] is None  # not requested


def test_reference_is_training_data_against_real(study, noise_files):
    ref = study.reference
    assert ref is not None and ref["source"] == str(noise_files[0]) and ref["n"] == 4
    # real data against real data: a floor far below the tiny untrained model's error
    rows = [r["semivariogram_rel_error"] for r in study.rows]
    assert math.isfinite(ref["semivariogram_rel_error"])
    assert ref["semivariogram_rel_error"] < min(rows)
    doc = json.loads(study.json_path.read_text())
    assert doc["reference"]["semivariogram_rel_error"] == pytest.approx(
        ref["semivariogram_rel_error"]
    )


def test_json_and_csv_tables(study):
    doc = json.loads(study.json_path.read_text())
    assert doc["schema"] == "radardiff.study/1"
    assert doc["rows"] == json.loads(json.dumps(study.rows))
    assert doc["settings"]["samplers"] == ["ddim", "dpmsolver++"]
    assert doc["settings"]["steps"] == [2, 3] and doc["settings"]["n"] == 4
    with study.csv_path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["sampler"], int(r["steps"])) for r in rows] == [
        (r["sampler"], r["steps"]) for r in study.rows
    ]
    assert float(rows[0]["wall_s"]) == pytest.approx(study.rows[0]["wall_s"])


def test_same_seeds_in_every_row(study):
    """Every row samples seeds 0..n-1 of the same seed: rows differ by sampler and steps only."""
    from radardiff.data import DatasetFile

    for r in study.rows:
        with DatasetFile(r["samples"]) as f:
            assert f.extra("seeds").tolist() == [0, 1, 2, 3]
            assert f.attrs()["sampler"] == r["sampler"] and int(f.attrs()["steps"]) == r["steps"]


def test_cli_study_samplers(trained_run, noise_files, tmp_path):
    from click.testing import CliRunner

    from radardiff.cli.study import study as group

    args = ["samplers", str(trained_run), "--samplers", "ddim", "--steps", "2", "--n", "2",
            "--real", str(noise_files[1]), "--out", str(tmp_path), "--batch-size", "2"]  # fmt: skip
    res = CliRunner().invoke(group, args)
    assert res.exit_code == 0, res.output
    assert "ddim" in res.output and (tmp_path / "samplers.csv").is_file()
    assert "Example" in CliRunner().invoke(group, ["samplers", "--help"]).output


def test_bad_requests_fail_before_generating(trained_run, noise_files, tmp_path):
    with pytest.raises(ConfigError, match="unknown sampler 'nope'"):
        study_samplers(trained_run, ["nope"], [2], 4, noise_files[1], tmp_path)
    with pytest.raises(ConfigError, match="--n must be at least 2"):
        study_samplers(trained_run, ["ddim"], [2], 1, noise_files[1], tmp_path)
    assert not (tmp_path / "samplers.json").exists()


def test_sampler_variants_checkpoint_floor_and_training_length(trained_run, noise_files, tmp_path):
    """Variants carry options and clipping; the floor comes from the given file; the settings
    name the checkpoint and its training length."""
    from radardiff.data import DatasetFile
    from radardiff.evaluate.study import parse_sampler

    v = parse_sampler("ddim:eta=1.0:clip=none")
    assert (v.name, v.options, v.clip) == ("ddim", {"eta": 1.0}, "none")
    res = study_samplers(
        trained_run, ["ddim:eta=1.0:clip=none", "ddpm:variance=fixed_large"], [2], 2,
        noise_files[1], tmp_path, batch_size=2, checkpoint=2, floor=noise_files[1],
        eval_cfg=EvalConfig(metrics=("semivariogram",), bootstrap=0),
    )  # fmt: skip
    assert [r["sampler"] for r in res.rows] == [
        "ddim:eta=1.0:clip=none",
        "ddpm:variance=fixed_large",
    ]
    assert res.rows[0]["options"] == {"eta": 1.0} and res.rows[0]["clip"] == "none"
    with DatasetFile(res.rows[0]["samples"]) as f:
        assert f.attrs()["sampler"] == "ddim"
    assert res.reference["source"] == str(noise_files[1])
    st = res.settings
    assert st["checkpoint"] == "step_0000002" and st["train_steps"] == 2
    assert st["train_images"] == 8 and st["train_minutes"] > 0  # 2 steps of batch 4
    for r in res.rows:
        assert r["noise_fraction"] is not None and r["lag1_ratio"] > 0


def test_bad_sampler_variants(trained_run, noise_files, tmp_path):
    with pytest.raises(ConfigError, match="expected NAME:key=value"):
        study_samplers(trained_run, ["ddim:eta"], [2], 2, noise_files[1], tmp_path)
    with pytest.raises(ConfigError, match="clip must be one of"):
        study_samplers(trained_run, ["ddim:clip=wild"], [2], 2, noise_files[1], tmp_path)
    with pytest.raises(ConfigError, match="unknown option"):
        study_samplers(trained_run, ["ddim:order=2"], [2], 2, noise_files[1], tmp_path)


def test_compiled_study_compiles_before_the_first_row(study, trained_run, noise_files, tmp_path,
                                                       monkeypatch):  # fmt: skip
    """--compile: the network is compiled in the warm-up, for the study's batch, so no row's time
    holds a compile; calls are still counted, and the samples are the eager study's."""
    import numpy as np
    import torch

    from radardiff.accel import compiled
    from radardiff.data import DatasetFile

    graphs: list[tuple] = []

    def backend(gm, example_inputs, **kwargs):
        graphs.append(tuple(x.shape for x in example_inputs if hasattr(x, "shape")))
        return gm.forward

    torch._dynamo.reset()
    monkeypatch.setattr(compiled, "BACKEND", backend)
    at_rows = []
    cfg = EvalConfig(metrics=("semivariogram", "ranges"), bootstrap=10)
    res = study_samplers(
        trained_run, ["ddim", "dpmsolver++"], [2, 3], 4, noise_files[1], tmp_path, seed=0,
        batch_size=2, eval_cfg=cfg, compile=True, on_row=lambda r: at_rows.append(len(graphs)),
    )  # fmt: skip
    torch._dynamo.reset()
    assert graphs and at_rows == [len(graphs)] * 4  # all compiled before the first row
    assert all((2, 1, 16, 16) in g for g in graphs if any(len(s) == 4 for s in g))
    assert [r["nfe"] for r in res.rows] == [2, 3, 2, 3] and res.settings["compile"] is True
    for a, b in zip(res.rows, study.rows, strict=True):
        with DatasetFile(a["samples"]) as fa, DatasetFile(b["samples"]) as fb:
            np.testing.assert_allclose(fa.images(), fb.images(), rtol=1e-5, atol=1e-5)
