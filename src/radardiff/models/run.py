"""Load a trained run: config, normaliser, data description and a network of one checkpoint.

Everything that reads a run (sampling, evaluation, distillation, resumed training) loads it here,
below the training and sampling layers: sampling never imports the training loop.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import UNet2DModel

from radardiff.config import RunConfig, RunDir, load_config
from radardiff.data.normalize import Normalizer
from radardiff.errors import RunDirError

WEIGHTS = ("ema", "model")


@dataclass
class LoadedRun:
    cfg: RunConfig
    run: RunDir
    checkpoint: Path
    normalizer: Normalizer
    data_info: dict
    model: UNet2DModel
    weights: str = "ema"
    weights_id: str = ""  # hash of the weights' files: what samples depend on
    # compiled networks (radardiff.models.compiled) by (id(network), mode), kept as long as the run
    compiled: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def identity(self) -> str:
        """The run, checkpoint and weights that samples come from (resumed parts of a request
        are reused only under the same identity)."""
        root = self.run.root.resolve()
        return f"{root}|{self.checkpoint.name}|{self.weights}|{self.weights_id}"

    @property
    def data_channels(self) -> int:
        return self.normalizer.model_channels

    @property
    def num_classes(self) -> int:
        return self.cfg.model.num_classes

    @property
    def learned_variance(self) -> bool:
        return self.cfg.diffusion.variance == "learned_range"


def weights_hash(model_dir: Path) -> str:
    """SHA-256 (first 16 hex digits) of a model directory's weight and config files."""
    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).glob("*")):
        if path.suffix in (".safetensors", ".json", ".bin") and path.is_file():
            digest.update(path.name.encode())
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def load_model(model_dir: Path) -> UNet2DModel:
    """A diffusers model directory (safetensors), with one clear line when it cannot be read."""
    try:
        return UNet2DModel.from_pretrained(model_dir)
    except (OSError, ValueError) as err:
        raise RunDirError(f"{model_dir}: cannot load model ({err})") from None


def load_run(
    run_dir: str | Path,
    weights: str = "ema",
    device: str | torch.device = "cpu",
    checkpoint: int | str | None = None,
) -> LoadedRun:
    """Everything sampling needs, read from the run directory alone.

    ``checkpoint``: a step number or a checkpoint name (``step_0004000``) of the run; default
    the newest complete one (``checkpoints/latest``).
    """
    run = RunDir(run_dir)
    if weights not in WEIGHTS:
        raise RunDirError(f"weights must be 'ema' or 'model', got '{weights}'")
    ckpt = run.require_checkpoint() if checkpoint is None else run.named_checkpoint(checkpoint)
    cfg = load_config(run.config)
    norm = Normalizer.load(run.normalizer)
    try:
        info = json.loads(run.data_info.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RunDirError(f"{run.data_info}: missing or unreadable ({err})") from None
    model = load_model(ckpt / weights).to(device).eval()
    return LoadedRun(
        cfg=cfg, run=run, checkpoint=ckpt, normalizer=norm, data_info=info, model=model,
        weights=weights, weights_id=weights_hash(ckpt / weights),
    )  # fmt: skip
