"""Shared fixtures: tiny datasets and a tiny trained run, made on the fly (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from radardiff.config import RunConfig, validate_config
from radardiff.config.io import config_to_dict

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_REALDATA = REPO.parent / "shared" / "realdata"


def tiny_run_config(train_path: str, val_path: str | None = None, /, **sections) -> RunConfig:
    """A model small enough to train a few steps in about a second."""
    base = {
        "name": "test",
        "data": {"train": train_path, **({"val": val_path} if val_path else {})},
        "model": {
            "image_size": 16,
            "in_channels": 1,
            "base_channels": 8,
            "channel_mult": [1, 2],
            "layers_per_block": 1,
            "attention_resolutions": [8],
            "attention_head_dim": 8,
            "norm_num_groups": 4,
        },
        "diffusion": {"timesteps": 50},
        "train": {
            "steps": 4,
            "batch_size": 4,
            "lr": 1e-3,
            "log_every": 2,
            "checkpoint_every": 2,
            "val_every": 2,
            "val_samples": 8,
            "ema_halflife_kimg": [0.01],
            "seed": 0,
        },
        "sample": {"sampler": "ddim", "steps": 5, "batch_size": 8},
    }
    for key, value in sections.items():
        base.setdefault(key, {}).update(value)
    return validate_config(base, "test")


@pytest.fixture(scope="session")
def noise_files(tmp_path_factory) -> tuple[Path, Path]:
    from radardiff.data.synth import synthesize

    d = tmp_path_factory.mktemp("data")
    return (
        synthesize("insar_noise", 32, 16, d / "train.h5", seed=0),
        synthesize("insar_noise", 16, 16, d / "val.h5", seed=1),
    )


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, noise_files) -> Path:
    from radardiff.train import train

    out = tmp_path_factory.mktemp("run") / "run"
    train(tiny_run_config(str(noise_files[0]), str(noise_files[1])), out)
    return out


def write_config(path: Path, cfg: RunConfig) -> Path:
    import tomli_w

    path.write_text(tomli_w.dumps(config_to_dict(cfg)), encoding="utf-8")
    return path


def run_cli(args: list, capsys) -> tuple[int, str, str]:
    """``radardiff ARGS`` in this process: (exit code, stdout, stderr)."""
    from radardiff.cli.main import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


class FnNetwork(torch.nn.Module):
    """A stand-in network computing ``fn(x_t, t)`` (a diffusers-like ``.sample`` output): makes
    exact or deliberately wrong denoisers for the sampler and denoiser tests."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, t, class_labels=None):
        return type("Out", (), {"sample": self.fn(x, t)})()


def fn_denoiser(fn, data_channels: int = 1, **diffusion):
    """A :class:`radardiff.diffusion.Denoiser` over :class:`FnNetwork`, unconditional, with the
    diffusion settings given (eps-prediction unless told; clip, guidance... go to
    ``with_options``)."""
    from radardiff.config.schema import DiffusionConfig, RunConfig
    from radardiff.diffusion import Denoiser

    cfg = RunConfig(diffusion=DiffusionConfig(**{"prediction": "eps", **diffusion}))
    return Denoiser(FnNetwork(fn), cfg, data_channels)


@pytest.fixture
def faults_say(request):
    """``faults_say(text)``: one figure of a fault-campaign test (a ``FAULTS`` line). The tests
    run in worker processes (``make faults`` runs its two files side by side with pytest-xdist),
    whose own output pytest does not show: each line travels with its test's report
    (``user_properties``) and :func:`pytest_terminal_summary` prints it at the end of the run."""

    def say(text: str) -> None:
        request.node.user_properties.append(("FAULTS", text.strip("\n")))

    return say


def pytest_terminal_summary(terminalreporter):
    """The fault campaign's ``FAULTS`` lines (:func:`faults_say`), from every worker."""
    lines = [
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", ())
        if name == "FAULTS"
    ]
    if lines:
        terminalreporter.section("fault campaign")
        for line in lines:
            terminalreporter.write_line(line)
