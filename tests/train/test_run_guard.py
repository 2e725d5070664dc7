"""A run directory is one process's at a time, is left clean by failed or killed starts, and
refuses data and architectures that would only fail at step 1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import tiny_run_config
from radardiff.config import RunDir
from radardiff.data.dataset_file import write_dataset
from radardiff.errors import ConfigError, RunDirError
from radardiff.train import Trainer, train


def test_a_second_trainer_is_refused_naming_the_holder(tmp_path, noise_files):
    cfg = tiny_run_config(str(noise_files[0]), train={"steps": 2})
    first = Trainer(cfg, tmp_path / "run")
    with pytest.raises(RunDirError, match=rf"in use by process {os.getpid()} on "):
        Trainer(cfg, tmp_path / "run", resume=True)
    first.run()  # releases the run at its end
    second = Trainer(cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 3})}),
                     tmp_path / "run", resume=True)  # fmt: skip
    assert second.run().steps == 3


def test_a_dead_holders_lock_is_taken_over(tmp_path, noise_files, caplog):
    run = tmp_path / "run"
    code = (
        "import sys, time; from radardiff.config import RunDir; "
        f"lock = RunDir({str(run)!r}).lock(); print('locked', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(RunDirError, match=f"in use by process {proc.pid}"):
        RunDir(run).lock()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cfg = tiny_run_config(str(noise_files[0]), train={"steps": 1})
    with caplog.at_level("WARNING"):
        train(cfg, run)
    assert f"process {proc.pid}" in caplog.text and "taken over" in caplog.text


def test_resume_without_a_checkpoint_starts_the_log_over(tmp_path, noise_files):
    """Killed before its first checkpoint: the resumed run's stats.jsonl has each step once."""
    cfg = tiny_run_config(str(noise_files[0]), train={"steps": 4, "checkpoint_every": 100})
    run = tmp_path / "run"
    (run).mkdir()
    train(cfg, run)
    for ckpt in (run / "checkpoints").glob("step_*"):  # as if killed before any checkpoint
        import shutil

        shutil.rmtree(ckpt)
    (run / "checkpoints" / "latest").unlink()
    train(cfg, run, resume=True)
    steps = [json.loads(x)["step"] for x in (run / "stats.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) == [2, 4]


def test_unfinished_checkpoint_folders_are_removed_with_a_notice(tmp_path, noise_files, caplog):
    cfg = tiny_run_config(str(noise_files[0]), train={"steps": 2})
    run = tmp_path / "run"
    train(cfg, run)
    stale = run / "checkpoints" / ".step_0000003.tmp"
    (stale / "model").mkdir(parents=True)
    longer = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 4})})
    with caplog.at_level("WARNING"):
        train(longer, run, resume=True)
    assert not stale.exists() and "unfinished checkpoint" in caplog.text


def test_a_failed_start_leaves_no_run_behind(tmp_path):
    bad = tmp_path / "bad.h5"
    write_dataset(bad, np.zeros((4, 1, 32, 32)), kind="generic", units="")
    with pytest.raises(ConfigError, match="32x32"):
        train(tiny_run_config(str(bad)), tmp_path / "new")
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError):
        train(tiny_run_config(str(bad)), tmp_path / "mine")
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


def test_labels_outside_the_classes_are_refused(tmp_path):
    data = tmp_path / "l.h5"
    write_dataset(data, np.random.default_rng(0).normal(size=(6, 1, 16, 16)),
                  np.array([0, 1, 2, 3, 1, 0]), kind="generic", units="",
                  class_names=["a", "b", "c", "d"])  # fmt: skip
    cfg = tiny_run_config(str(data), model={"num_classes": 3})
    with pytest.raises(ConfigError, match=r"l.h5: holds label 3, outside 0..2"):
        train(cfg, tmp_path / "run")


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"base_channels": 8, "channel_mult": [1], "attention_head_dim": 32}, "zero heads"),
        ({"base_channels": 12, "norm_num_groups": 8}, "not divisible by norm_num_groups 8"),
    ],
)
def test_architectures_that_cannot_be_built_are_refused_at_load(model, message):
    with pytest.raises(ConfigError, match=message) as err:
        tiny_run_config("x", model=model)
    assert "\n" not in str(err.value)


def test_infinite_pixels_are_no_data(tmp_path, noise_files):
    """+-Inf in a dataset file are no data: finite normaliser statistics, finite training."""
    from radardiff.data import DatasetFile

    path = tmp_path / "inf.h5"
    with DatasetFile(noise_files[0]) as f:
        x = f.images()
    x[0, 0, 3, 3], x[1, 0, 0, :4] = np.inf, -np.inf
    write_dataset(path, x, kind="insar_noise", units="rad")
    with h5py.File(path, "r") as h5:  # stored as given
        assert np.isinf(h5["images"][0, 0, 3, 3])
    with DatasetFile(path) as f:
        assert np.isnan(f.images(np.arange(2))[0, 0, 3, 3])
    train(tiny_run_config(str(path), train={"steps": 2}), tmp_path / "run")
    norm = json.loads((tmp_path / "run" / "normalizer.json").read_text())
    assert "Infinity" not in json.dumps(norm)


def test_disk_full_during_a_checkpoint_names_it_and_keeps_the_last(
    tmp_path, noise_files, monkeypatch
):
    from radardiff.errors import DiskFullError
    from radardiff.train import checkpoint

    cfg = tiny_run_config(str(noise_files[0]), train={"steps": 2, "checkpoint_every": 2})
    train(cfg, tmp_path / "run")

    def full(*args, **kwargs):  # what torch.save says when the disk fills
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 576 vs 490")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    longer = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 4})})
    with pytest.raises(
        DiskFullError, match=r"step_0000004: disk full while writing the checkpoint"
    ):
        train(longer, tmp_path / "run", resume=True)
    ckpts = tmp_path / "run" / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step_0000002"
    assert not list(ckpts.glob(".*.tmp"))


def test_sigterm_stops_training_cleanly_with_143(tmp_path, noise_files):
    """What schedulers and `timeout` send: one line, exit 143, the run released and resumable."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "radardiff", "train", "--out", str(run),
           "--set", f"data.train={noise_files[0]}", "--set", "model.image_size=16",
           "--set", "train.steps=100000", "--set", "train.checkpoint_every=3",
           str(Path(__file__).resolve().parents[2] / "configs" / "tiny.toml")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "checkpoints" / "latest").is_file() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert err.strip().splitlines()[-1].endswith("radardiff: error: terminated (SIGTERM)")
    assert "Traceback" not in err
    assert (run / ".lock").read_text() == ""  # released
    RunDir(run).lock().release()  # and free to take
