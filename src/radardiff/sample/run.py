"""Load a trained run: config, normaliser, data description and the EMA network."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import UNet2DModel

from radardiff.config import RunConfig, RunDir, load_config
from radardiff.data.normalize import Normalizer
from radardiff.errors import RunDirError
from radardiff.train.checkpoint import load_model


@dataclass
class LoadedRun:
    cfg: RunConfig
    run: RunDir
    checkpoint: Path
    normalizer: Normalizer
    data_info: dict
    model: UNet2DModel

    @property
    def data_channels(self) -> int:
        return self.normalizer.model_channels

    @property
    def num_classes(self) -> int:
        return self.cfg.model.num_classes

    @property
    def learned_variance(self) -> bool:
        return self.cfg.diffusion.variance == "learned_range"


def load_run(
    run_dir: str | Path, weights: str = "ema", device: str | torch.device = "cpu"
) -> LoadedRun:
    """Everything sampling needs, read from the run directory alone."""
    run = RunDir(run_dir)
    ckpt = run.require_checkpoint()
    cfg = load_config(run.config)
    norm = Normalizer.load(run.normalizer)
    try:
        info = json.loads(run.data_info.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RunDirError(f"{run.data_info}: missing or unreadable ({err})") from None
    if weights not in ("ema", "model"):
        raise RunDirError(f"weights must be 'ema' or 'model', got '{weights}'")
    model = load_model(ckpt / weights).to(device).eval()
    return LoadedRun(
        cfg=cfg, run=run, checkpoint=ckpt, normalizer=norm, data_info=info, model=model
    )
