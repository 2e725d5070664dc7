"""``radardiff downstream`` as a user meets it: the commands end to end, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_cli import one_line_error, run_cli

from radardiff.data.dataset_file import DatasetFile, write_dataset


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> dict[str, Path]:
    from radardiff.data.synth import synthesize

    d = tmp_path_factory.mktemp("tiles")
    quiet = {"turb_std": 0.2, "ramp_rad": 0.0, "strat_k": 0.0}
    return {
        name: synthesize(
            "insar_noise", 48, 16, d / f"{name}.h5", seed=seed, params=quiet, pixel_spacing_m=100.0
        )  # fmt: skip
        for name, seed in (("train", 0), ("test", 1), ("gen", 2))
    }


def test_pairs_train_test(tiles, tmp_path, capsys):
    pairs = tmp_path / "det.h5"
    code, out, err = run_cli(["downstream", "pairs", tiles["train"], tiles["gen"], "--n", 96,
                              "--out", pairs, "--label", "presence", "--wrap", "--coherence",
                              "0.6,0.9", "--source", "mix", "--wavelength", "0.0562",
                              "--param", "mogi_depth_m=[200,600]"], capsys)  # fmt: skip
    assert code == 0, err
    f = DatasetFile(pairs)
    record = json.loads(f.attrs()["pairs"])
    assert f.info.n == 96 and f.info.kind == "insar_wrapped"
    assert record["params"]["geometry"] == {"mogi_depth_m": [200, 600]}
    assert record["params"]["wavelength_m"] == 0.0562 and "coherence" in f.info.extras
    code, out, err = run_cli(["downstream", "train", pairs, "--task", "detection", "--out",
                              tmp_path / "net", "--steps", 4, "--width", 4,
                              "--val-fraction", 0.25], capsys)  # fmt: skip
    assert code == 0, err
    assert "trained detection network" in out
    code, out, err = run_cli(["downstream", "test", tmp_path / "net", pairs, "--json"], capsys)
    assert code == 0, err
    assert 0 <= json.loads(out)["auc"] <= 1


def test_pairs_from_insar_noise_keeps_its_noise(tmp_path, capsys):
    out = tmp_path / "unw.h5"
    code, _, err = run_cli(["downstream", "pairs", "insar_noise", "--size", 16,
                            "--pixel-spacing", 90, "--n", 20, "--out", out, "--wrap",
                            "--label", "unwrapped"], capsys)  # fmt: skip
    assert code == 0, err
    assert DatasetFile(tmp_path / "unw.noise.h5").info.n == 20
    assert "unwrapped" in DatasetFile(out).info.extras


def test_experiment_cli(tiles, tmp_path, capsys):
    out = tmp_path / "exp"
    args = ["downstream", "experiment", "--train-real", tiles["train"], "--test-real",
            tiles["test"], "--generated", tiles["gen"], "--out", out, "--seeds", "0,1",
            "--n-train", 64, "--n-test", 32, "--n-noise", 48, "--tasks", "recovery",
            "--set", "recovery.train.steps=3", "--set", "recovery.train.width=4",
            "--set", "recovery.peak_los_m=[0.004,0.01]"]  # fmt: skip
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert "| real+generated |" in stdout
    result = json.loads((out / "downstream.json").read_text())
    assert result["config"]["pairs"]["recovery"]["peak_los_m"] == [0.004, 0.01]
    assert result["config"]["physics_params"] is not None  # fitted to --train-real
    assert DatasetFile(out / "noise_physics.h5").info.n == 48


def test_bad_input_one_line(tiles, tmp_path, capsys):
    db = write_dataset(tmp_path / "db.h5", np.zeros((4, 1, 16, 16), np.float32),
                       kind="sar_backscatter", units="dB", pixel_spacing_m=10.0)  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text('name = "x"\n')
    out = tmp_path / "p.h5"
    exp = ["downstream", "experiment", "--train-real", tiles["train"], "--out", tmp_path / "e"]
    cases = [
        (["downstream", "pairs", db, "--n", 4, "--out", out], "cannot carry"),
        (
            ["downstream", "pairs", tiles["train"], "--n", 4, "--out", out, "--label", "unwrapped"],
            "truth of wrapped inputs",
        ),  # fmt: skip
        (["downstream", "pairs", run, "--n", 4, "--out", out], "checkpoint"),
        (["downstream", "pairs", tmp_path / "nope", "--n", 4, "--out", out], "not a dataset file"),
        (
            ["downstream", "pairs", tiles["train"], "--n", 4, "--out", out, "--param", "depth=3"],
            "geometry",
        ),  # fmt: skip
        (
            ["downstream", "pairs", tiles["train"], "--n", 4, "--out", out, "--peak-los", "1"],
            "LO,HI",
        ),  # fmt: skip
        (
            ["downstream", "train", tiles["train"], "--task", "recovery", "--out", tmp_path / "n"],
            "not a pairs file",
        ),  # fmt: skip
        (
            [*exp, "--test-real", tiles["train"], "--generated", tiles["gen"]],
            "test scenes are the training scenes",
        ),  # fmt: skip
        ([*exp, "--test-real", tiles["test"]], "one of --run and --generated"),
        (
            [
                *exp,
                "--test-real",
                tiles["test"],
                "--generated",
                tiles["gen"],
                "--set",
                "recovery.nonsense=1",
            ],
            "nonsense",
        ),  # fmt: skip
    ]
    for args, match in cases:
        code, _, err = run_cli(args, capsys)
        assert code in (1, 2), (args, err)
        assert match in one_line_error(err), (args, err)
        assert not out.exists() and not (tmp_path / "n").exists()
        assert not (tmp_path / "e" / "downstream.json").exists()
