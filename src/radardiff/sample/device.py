"""Device choice for sampling: the process's GPU under torchrun/accelerate, else CUDA, else CPU."""

from __future__ import annotations

import os

import torch


def pick_device() -> torch.device:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        return PartialState(cpu=not torch.cuda.is_available()).device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
