"""TensorBoard logging: the stats.jsonl rows as scalars, purged past the checkpoint on resume."""

from __future__ import annotations

import json

import pytest

from conftest import tiny_run_config

pytest.importorskip(
    "tensorboard", reason="tensorboard is not installed (pip install tensorboard): not checked"
)


def scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {k: [(e.step, e.value) for e in acc.Scalars(k)] for k in acc.Tags()["scalars"]}


def test_tensorboard_mirrors_stats_jsonl_and_resume_purges(noise_files, tmp_path):
    from radardiff.train import train

    out = tmp_path / "run"
    cfg = tiny_run_config(str(noise_files[0]), str(noise_files[1]), train={"steps": 4})
    train(cfg, out)
    rows = [json.loads(ln) for ln in (out / "stats.jsonl").read_text().splitlines()]
    got = scalars(out / "tensorboard")
    train_rows = [r for r in rows if "loss" in r]
    assert [s for s, _ in got["train/loss"]] == [r["step"] for r in train_rows] == [2, 4]
    assert [v for _, v in got["train/loss"]] == pytest.approx([r["loss"] for r in train_rows])
    assert [v for _, v in got["val/val_loss"]] == pytest.approx(
        [r["val_loss"] for r in rows if "val_loss" in r]
    )
    assert "train/img_per_s" in got and "train/loss_q0" in got
    # resume to step 6 from the step-4 checkpoint: each step is logged once
    train(
        tiny_run_config(str(noise_files[0]), str(noise_files[1]), train={"steps": 6}),
        out,
        resume=True,
    )
    assert [s for s, _ in scalars(out / "tensorboard")["train/loss"]] == [2, 4, 6]


def test_tensorboard_can_be_switched_off(noise_files, tmp_path):
    from radardiff.train import train

    cfg = tiny_run_config(str(noise_files[0]), train={"steps": 2, "tensorboard": False})
    train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "tensorboard").exists()
