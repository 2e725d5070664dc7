"""The precision choice: ``auto`` follows what the device computes fast; an explicit bf16 on a CPU
where it is slow is kept and warned about once."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from conftest import tiny_run_config
from radardiff import _hardware
from radardiff._hardware import bf16_fast, describe_cpu, resolve_precision


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Set whether this CPU counts as computing bf16 fast."""

    def set_fast(fast: bool) -> None:
        monkeypatch.setattr(_hardware, "cpu_bf16_fast", lambda: fast)
        monkeypatch.setattr(_hardware, "_warned", set())

    return set_fast


@pytest.mark.parametrize(("fast", "expected"), [(True, "bf16"), (False, "no")])
def test_auto_follows_the_cpu(cpu_bf16, fast, expected):
    cpu_bf16(fast)
    assert bf16_fast("cpu") is fast
    assert resolve_precision("auto", "cpu", "--precision") == expected


def test_explicit_choices_are_kept(cpu_bf16):
    cpu_bf16(False)
    for p in ("no", "bf16", "fp16"):
        assert resolve_precision(p, torch.device("cpu"), "--precision") == p


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="--precision: one of no, bf16, fp16, auto, got 'fp8'"):
        resolve_precision("fp8", "cpu", "--precision")


def test_slow_bf16_is_warned_once_per_option(cpu_bf16, caplog):
    cpu_bf16(False)
    with caplog.at_level(logging.WARNING, logger="radardiff"):
        for _ in range(3):
            resolve_precision("bf16", "cpu", "train.mixed_precision")
        resolve_precision("bf16", "cpu", "--precision")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("train.mixed_precision=bf16 on a CPU without AVX-512 bf16 kernels")
    assert "\n" not in lines[0]


def test_fast_bf16_is_not_warned(cpu_bf16, caplog):
    cpu_bf16(True)
    with caplog.at_level(logging.WARNING, logger="radardiff"):
        assert resolve_precision("bf16", "cpu", "--precision") == "bf16"
    assert not caplog.records


def test_other_devices():
    assert bf16_fast("meta") is False
    if not torch.cuda.is_available():
        assert bf16_fast("cuda") is False
    assert describe_cpu().startswith(torch.backends.cpu.get_cpu_capability())


@pytest.mark.parametrize("fast", [True, False])
def test_trainer_resolves_auto(cpu_bf16, noise_files, tmp_path, fast):
    from radardiff.train.loop import Trainer

    cpu_bf16(fast)
    cfg = tiny_run_config(str(noise_files[0]), train={"mixed_precision": "auto"})
    trainer = Trainer(cfg, tmp_path / "run")
    try:
        assert trainer.precision == ("bf16" if fast else "no")
        assert trainer.acc.mixed_precision == trainer.precision
    finally:
        trainer.release()


def test_sampling_auto_on_a_slow_cpu_is_fp32(cpu_bf16, trained_run, tmp_path):
    """auto resolves before the request is signed: the same samples as fp32, and a file made
    with 'no' is reused by an 'auto' request (same signature)."""
    from radardiff.data.dataset_file import DatasetFile
    from radardiff.sample import SampleOptions, generate, load_run

    cpu_bf16(False)
    run = load_run(trained_run)
    base = {"n": 3, "sampler": "ddim", "steps": 3, "batch_size": 3}
    generate(run, SampleOptions(**base, mixed_precision="no"), tmp_path / "a.h5")
    generate(run, SampleOptions(**base, mixed_precision="auto"), tmp_path / "b.h5")
    with DatasetFile(tmp_path / "a.h5") as a, DatasetFile(tmp_path / "b.h5") as b:
        np.testing.assert_array_equal(a.images(), b.images())
        assert a.attrs()["request"] == b.attrs()["request"]
