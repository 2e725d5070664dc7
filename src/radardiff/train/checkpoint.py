"""Atomic checkpoints in the run directory.

A checkpoint is written under a temporary name and renamed when complete; ``latest`` moves last.
Weights are diffusers model directories (safetensors); optimizer state is a plain tensor state
dict read back with ``weights_only=True``; everything else is JSON.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DModel

from radardiff import _stop
from radardiff.config import RunConfig, RunDir, atomic_write_text
from radardiff.errors import DiskFullError, RunDirError, is_disk_full
from radardiff.models.run import load_verified, verify_file, write_manifest


def ema_dirname(i: int, halflife_kimg: float) -> str:
    return "ema" if i == 0 else f"ema_{halflife_kimg:g}kimg"


@dataclass
class CheckpointState:
    step: int
    images_seen: int
    timestep_sampler: dict[str, Any]
    best_val: float | None = None
    best_step: int | None = None
    val_loss: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # state of a subclass's objective


def save_checkpoint(
    run: RunDir,
    cfg: RunConfig,
    state: CheckpointState,
    model: UNet2DModel,
    emas: list[torch.nn.Module],
    halflives_kimg: tuple[float, ...],
    optimizer: torch.optim.Optimizer,
    keep_last: int,
    extras: dict[str, torch.nn.Module] | None = None,
) -> Path:
    final = run.checkpoint(state.step)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        model.save_pretrained(tmp / "model", safe_serialization=True)
        for i, (ema, hl) in enumerate(zip(emas, halflives_kimg, strict=True)):
            ema.save_pretrained(tmp / ema_dirname(i, hl), safe_serialization=True)
        for name, extra in (extras or {}).items():
            extra.save_pretrained(tmp / name, safe_serialization=True)
        torch.save({"optimizer": optimizer.state_dict()}, tmp / "optimizer.pt")
        write_manifest(tmp, cfg)  # every file's SHA-256, checked when loaded
        (tmp / "state.json").write_text(json.dumps(state.__dict__), encoding="utf-8")
        _stop.check()
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)  # never a half-written checkpoint
        if isinstance(err, Exception) and is_disk_full(err):
            raise DiskFullError(
                f"{final}: disk full while writing the checkpoint; the last complete one is kept"
            ) from None
        raise
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    atomic_write_text(run.latest_file, final.name + "\n")
    if state.best_step == state.step:
        atomic_write_text(run.checkpoints / "best", final.name + "\n")
    _prune(run, keep_last)
    return final


def _prune(run: RunDir, keep_last: int) -> None:
    names = sorted(p.name for p in run.checkpoints.glob("step_*") if p.is_dir())
    protect = set()
    best = run.checkpoints / "best"
    if best.is_file():
        protect.add(best.read_text(encoding="utf-8").strip())
    for name in names[:-keep_last]:
        if name not in protect:
            shutil.rmtree(run.checkpoints / name, ignore_errors=True)


def read_state(ckpt: Path) -> CheckpointState:
    try:
        return CheckpointState(**json.loads((ckpt / "state.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as err:
        raise RunDirError(f"{ckpt / 'state.json'}: unreadable checkpoint state ({err})") from None


def load_weights(target: torch.nn.Module, model_dir: Path) -> None:
    """Copy weights from a diffusers model directory into ``target`` (shapes must match), after
    the folder's files are checked against the checkpoint's manifest."""
    target.load_state_dict(load_verified(model_dir).state_dict(), strict=True)


def load_optimizer(optimizer: torch.optim.Optimizer, ckpt: Path) -> None:
    verify_file(ckpt / "optimizer.pt")
    try:
        blob = torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as err:
        raise RunDirError(f"{ckpt / 'optimizer.pt'}: unreadable optimizer state ({err})") from None
    optimizer.load_state_dict(blob["optimizer"])
