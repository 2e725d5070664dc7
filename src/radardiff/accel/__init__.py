"""Acceleration: one optional unit that makes a network faster without changing what it computes.

It owns everything radardiff does beyond torch's own eager execution: the C kernels for the
networks' 3x3 and 1x1 convolutions, group norms with their SiLU and dropout (``kernels/``, built
and verified by :mod:`.library`, called through torch custom operators, :mod:`.ops`, that check
themselves against torch, :mod:`.selfcheck`), the layers that use them (:mod:`.modules`), the
attention layers' fused projections (:mod:`.attention`), torch.compile wrappers
(:mod:`.compiled`), glibc's malloc tuning (:mod:`.malloc`), and the choice among them with its log
line (:mod:`.policy`).

Nothing else in radardiff imports this package except its one boundary,
:mod:`radardiff.models.network` (``prepare_network``), which falls back to torch's kernels when
the package is missing: deleting this folder leaves a working project.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from radardiff.accel.library import available
from radardiff.accel.malloc import tune_malloc

if TYPE_CHECKING:
    import torch
    from torch import nn


def __getattr__(name: str):
    # the layers and compile wrappers import diffusers and torch's compiler stack (seconds):
    # loaded when a network is first prepared, not when the package is imported
    if name in ("compiled", "modules", "policy"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Acceleration",
    "available",
    "compile_for_sampling",
    "compile_for_training",
    "follow",
    "prepare",
    "release",
    "tune_process",
]


@dataclass(frozen=True)
class Acceleration:
    """What :func:`prepare` did to a network."""

    kernels: bool  # radardiff's kernels installed
    line: str  # the log line: what runs on the kernels, and why
    compile_mode: str | None = None  # torch.compile's mode where the network will be compiled
    cuda_graphs: bool = False  # whether that mode replays CUDA graphs


def prepare(
    network: nn.Module,
    device: torch.device,
    *,
    kernels: str,
    option: str,
    precision: str,
    compile: bool,
    compile_mode: str = "auto",
    training: bool = False,
    grad_accum: int = 1,
    processes: int = 1,
) -> Acceleration:
    """Put ``network`` on radardiff's kernels where ``kernels`` (auto, radardiff, torch; named
    ``option`` in messages) and the device allow, or take it off them; decide torch.compile's
    mode when ``compile`` is asked (the compiling itself is :func:`compile_for_training` or
    :func:`compile_for_sampling`, once the caller has wrapped the network)."""
    from radardiff.accel import compiled, modules, policy

    use, why = policy.choose(kernels, device, precision == "no", compile, option)
    if use:
        modules.install(network)
    else:  # a network an earlier request of this process put on them
        modules.uninstall(network)
    line = policy.describe(use, modules.installed(network), why)
    mode, cuda_graphs = None, False
    if compile:
        if training:
            mode, how = policy.training_compile_mode(compile_mode, device, grad_accum, processes)
            line += f"; torch.compile: mode {mode} ({how}), at the first step"
        else:
            mode = compiled.resolve_mode(None, device)
        cuda_graphs = compiled.uses_cuda_graphs(mode, device)
    return Acceleration(kernels=use, line=line, compile_mode=mode, cuda_graphs=cuda_graphs)


def follow(network: nn.Module, leader: Acceleration) -> None:
    """Put another network that runs beside a prepared one (its EMA copies, a distillation
    teacher) on the kernels where the prepared one is; such networks run without gradients."""
    from radardiff.accel import modules

    if leader.kernels:
        modules.install(network)


def release(network: nn.Module) -> None:
    """Drop what the kernels keep for a network between calls (its transformed weights), when
    the network's weights are about to change."""
    from radardiff.accel import modules

    modules.forget(network)


def compile_for_training(module: nn.Module, device: torch.device, mode: str) -> nn.Module:
    """``module`` (the network, or its DDP wrapper) compiled by torch.compile for training."""
    from radardiff.accel import compiled

    return compiled.compiled_for_training(module, device, mode)


def compile_for_sampling(network: nn.Module, cache: dict) -> nn.Module:
    """``network`` compiled for a sampling loop's fixed batch, made once per network and kept in
    ``cache`` (a loaded run's)."""
    from radardiff.accel import compiled

    return compiled.compiled_network(network, cache)


def tune_process() -> bool:
    """Process-wide settings that speed training and sampling up (glibc's malloc thresholds)."""
    return tune_malloc()
