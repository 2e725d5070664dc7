"""The CLI as a user meets it: the pipeline end to end, help texts, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import run_cli, tiny_run_config, write_config  # noqa: F401  (run_cli: other tests import it from here)
from radardiff.cli.main import cli, main

VERBS = [
    "data",
    "data synth",
    "data prepare",
    "data inspect",
    "train",
    "distill",
    "sample",
    "evaluate",
    "features",
    "features train",
    "study",
    "study samplers",
    "downstream",
    "downstream pairs",
    "downstream train",
    "downstream test",
    "downstream experiment",
    "report",
    "demo",
]


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("radardiff: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_pipeline_end_to_end(tmp_path: Path, capsys):
    train_h5, val_h5 = tmp_path / "train.h5", tmp_path / "val.h5"
    assert (
        run_cli(
            ["data", "synth", "insar_noise", "--n", 24, "--size", 16, "--out", train_h5], capsys
        )[0]
        == 0
    )
    assert (
        run_cli(
            ["data", "synth", "insar_noise", "--n", 12, "--size", 16, "--out", val_h5, "--seed", 1],
            capsys,
        )[0]
        == 0
    )
    config = write_config(tmp_path / "cfg.toml", tiny_run_config(str(train_h5), str(val_h5)))
    run = tmp_path / "run"
    code, out, err = run_cli(["train", config, "--out", run, "--set", "train.steps=3"], capsys)
    assert code == 0, err
    for name in ("config.toml", "normalizer.json", "data_info.json", "stats.jsonl"):
        assert (run / name).is_file(), name
    latest = (run / "checkpoints" / "latest").read_text().strip()
    assert latest == "step_0000003"
    ckpt = run / "checkpoints" / latest
    for name in (
        "model/config.json",
        "model/diffusion_pytorch_model.safetensors",
        "ema/diffusion_pytorch_model.safetensors",
        "optimizer.pt",
        "state.json",
    ):
        assert (ckpt / name).is_file(), name
    assert json.loads((ckpt / "state.json").read_text())["step"] == 3
    samples = run / "samples" / "s.h5"
    code, out, err = run_cli(
        ["sample", run, "--n", 5, "--out", samples, "--steps", 4, "--batch-size", 2], capsys
    )
    assert code == 0, err
    with h5py.File(samples) as h5:
        assert h5["images"].shape == (5, 1, 16, 16)
        assert h5.attrs["kind"] == "insar_noise" and h5.attrs["units"] == "rad"
        np.testing.assert_array_equal(h5["seeds"][:], np.arange(5))
    code, out, err = run_cli(
        ["evaluate", "--real", val_h5, "--fake", samples, "--out", run / "eval"], capsys
    )
    assert code == 0, err
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["schema"] == "radardiff.metrics/1"
    assert metrics["semivariogram"]["real"]["mean"]
    code, out, err = run_cli(["report", run], capsys)
    assert code == 0, err
    page = (run / "report" / "index.html").read_text()
    assert "data:image/png;base64," in page and "semivariogram" in page


@pytest.mark.parametrize("verb", VERBS)
def test_every_command_has_help_with_an_example(verb: str, capsys):
    code, out, _ = run_cli([*verb.split(), "--help"], capsys)
    assert code == 0
    assert "Example" in out


def test_version(capsys):
    from radardiff import __version__

    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and __version__ in out


def test_dry_run_prints_the_resolved_config(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text("[train]\nsteps = 7\n")
    code, out, err = run_cli(
        ["train", config, "--out", tmp_path / "r", "--dry-run", "--set", "diffusion.timesteps=200"],
        capsys,
    )
    assert code == 0, err
    assert "steps = 7" in out and "timesteps = 200" in out
    assert "ema_halflife_kimg" in out  # defaults filled in
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["frobnicate"], 2, "No such command 'frobnicate'"),
        (["train", "--frob"], 2, "No such option '--frob'"),
        (["sample", "x", "--n", "abc"], 2, "'abc' is not a valid integer"),
        (["train", "missing.toml", "--out", "r"], 1, "missing.toml: config file not found"),
        (["train", "CFG", "--out", "r", "--set", "train.stepz=3"], 1, "unknown config key"),
        (["train", "CFG", "--out", "r", "--set", "train.steps=-1"], 1, "train.steps"),
        (
            ["train", "CFG", "--out", "r", "--set", "diffusion.schedule=quadratic"],
            1,
            "diffusion.schedule",
        ),
        (["train", "BADKEY", "--out", "r"], 1, "unknown config key 'model.widht'"),
        (["data", "synth", "nope", "--n", "3", "--out", "x.h5"], 2, "unknown kind 'nope'"),
        (
            ["evaluate", "--real", "nope.h5", "--fake", "nope2.h5", "--out", "e"],
            1,
            "nope.h5: dataset file not found",
        ),
        (
            ["sample", "nope_run", "--n", "2", "--out", "s.h5"],
            1,
            "nope_run: no such run directory or shipped model",
        ),
    ],
)
def test_bad_usage_gives_one_line_and_nonzero_exit(
    tmp_path, monkeypatch, capsys, args, code, needle
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "CFG").write_text("[train]\nsteps = 2\n")
    (tmp_path / "BADKEY").write_text("[model]\nwidht = 3\n")
    got, _, err = run_cli(args, capsys)
    assert got == code, err
    assert needle in one_line_error(err)


def test_python_dash_m_entry_point_and_exit_code():
    proc = subprocess.run(
        [sys.executable, "-m", "radardiff", "train", "--nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "No such option" in proc.stderr


def test_cli_registers_every_verb():
    assert {"data", "train", "sample", "evaluate", "report", "demo"} <= set(cli.commands)


def test_demo_runs_end_to_end_and_again(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", out, "--steps", 2, "--n-train", 64, "--n-samples", 4]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert (out / "report" / "index.html").is_file() and (out / "eval" / "metrics.json").is_file()
    assert "report:" in stdout
    code, _, err = run_cli(args, capsys)  # a second demo replaces the first
    assert code == 0, err
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    code, _, err = run_cli(["demo", "--out", other, "--steps", 1], capsys)
    assert code == 2 and "not a demo output" in one_line_error(err)
    assert (other / "keep.txt").is_file()


def test_quiet_silences_progress_bars(noise_files, tmp_path: Path, capsys):
    cfg = write_config(
        tmp_path / "c.toml", tiny_run_config(str(noise_files[0]), train={"steps": 2})
    )
    code, _, err = run_cli(["-q", "train", cfg, "--out", tmp_path / "q"], capsys)
    assert code == 0 and "train" not in err
    code, _, err = run_cli(["train", cfg, "--out", tmp_path / "loud"], capsys)
    assert code == 0 and "train" in err and "2/2" in err


def test_threads_option_sets_torch_threads(tmp_path, capsys):
    """--threads (or $RADARDIFF_THREADS) sets torch's CPU threads before the command runs."""
    import torch

    from radardiff.cli.main import main

    before = torch.get_num_threads()
    try:
        main(["--threads", "1", "data", "synth", "insar_noise", "--n", "2", "--size", "16",
              "--out", str(tmp_path / "a.h5")])  # fmt: skip
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit) as err:
        main(["--threads", "-1", "demo"])
    assert err.value.code == 2
    assert "Invalid value for '--threads'" in capsys.readouterr().err


def test_a_leading_double_dash_is_ignored(tmp_path):
    """`torchrun ... -m radardiff -- sample --n N`: the `--` that keeps torchrun off
    radardiff's options reaches radardiff, which runs the command after it."""
    main(["--", "data", "synth", "insar_noise", "--n", "2", "--size", "16",
          "--out", str(tmp_path / "a.h5")])  # fmt: skip
    assert (tmp_path / "a.h5").is_file()
