"""What a training run writes as it goes: stats.jsonl rows, TensorBoard scalars, and the
device-side bookkeeping that feeds them without stalling a GPU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch


def truncate_stats(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from."""
    if not path.is_file():
        return
    keep = [
        ln
        for ln in path.read_text(encoding="utf-8").splitlines()
        if ln.strip() and json.loads(ln).get("step", 0) <= step
    ]
    path.write_text("".join(k + "\n" for k in keep), encoding="utf-8")


class TensorBoardLog:
    """The stats.jsonl rows as TensorBoard scalars (``RUN/tensorboard``), when installed."""

    def __init__(self, writer) -> None:
        self.writer = writer

    @classmethod
    def open(cls, logdir: Path, step: int, resume: bool = False) -> TensorBoardLog | None:
        """A writer, or None without the tensorboard package. On resume, events logged after
        ``step`` (the checkpoint resumed from; all of them without one) are purged, as
        stats.jsonl is truncated."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        # SummaryWriter purges events at steps >= purge_step; the checkpoint's own step stays
        purge = step + 1 if step else (0 if resume else None)
        return cls(SummaryWriter(str(logdir), purge_step=purge))

    def log(self, row: dict) -> None:
        step = int(row["step"])
        for key, value in row.items():
            if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                group = "val" if key.startswith("val_") else "train"
                self.writer.add_scalar(f"{group}/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class FiniteWatch:
    """Remembers, on the device, the first step whose loss or gradient norm was not finite.

    Checking a GPU value on the host waits for all queued work; the loop asks only when it logs
    or checkpoints (every step on the CPU), so the GPU never idles between steps. A bad step
    stops training with its own number at the next check, before any checkpoint is written.
    """

    def __init__(self, device: torch.device) -> None:
        self.steps = torch.full((2,), -1, dtype=torch.long, device=device)
        self.values = torch.zeros(2, dtype=torch.float32, device=device)

    def _see(self, k: int, value: torch.Tensor, step: int) -> None:
        value = value.detach().float().reshape(()).to(self.steps.device)
        new = ~torch.isfinite(value) & (self.steps[k] < 0)
        self.steps[k] = torch.where(new, step, self.steps[k])
        self.values[k] = torch.where(new, value, self.values[k])

    def loss(self, value: torch.Tensor, step: int) -> None:
        self._see(0, value, step)

    def grad(self, value: torch.Tensor, step: int) -> None:
        self._see(1, value, step)

    def first_bad(self) -> tuple[int, str] | None:
        steps, values = self.steps.tolist(), self.values.tolist()
        found = [(s, k) for k, s in enumerate(steps) if s >= 0]
        if not found:
            return None
        step, k = min(found)
        return step, f"{('loss', 'gradient norm')[k]} is {values[k]}"


class LogWindow:
    """Accumulates per-sample losses between two log lines, split by timestep quartile.

    Values stay where they were computed (on the GPU) until :meth:`flush`.
    """

    def __init__(self) -> None:
        self.t: list[torch.Tensor] = []
        self.loss: list[torch.Tensor] = []
        self.grad_norm: torch.Tensor | float | None = None
        self.T = 1

    def add(self, t: torch.Tensor, loss: torch.Tensor, T: int) -> None:
        self.t.append(t.detach())
        self.loss.append(loss.detach())
        self.T = T

    def flush(self, step: int, lr: float, images_seen: int, elapsed: float) -> dict:
        t = torch.cat(self.t).cpu().numpy()
        loss = torch.cat(self.loss).cpu().numpy()
        q = np.minimum(t * 4 // self.T, 3)
        row = {
            "step": step,
            "loss": float(loss.mean()),
            "lr": lr,
            "images_seen": images_seen,
            "img_per_s": float(t.size / max(elapsed, 1e-9)),
        }
        for i in range(4):
            sel = loss[q == i]
            row[f"loss_q{i}"] = float(sel.mean()) if sel.size else None
        if self.grad_norm is not None:
            row["grad_norm"] = float(self.grad_norm)
        self.t, self.loss = [], []
        return row


def append_row(path: Path, row: dict, tb: TensorBoardLog | None = None) -> None:
    """One stats.jsonl row (and its TensorBoard scalars)."""
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
    if tb is not None:
        tb.log(row)
