"""Which acceleration a network gets, and the log line that says so.

:func:`choose` decides whether radardiff's kernels run (``auto``: on a CPU computing fp32
without torch.compile, where they compile and load; ``radardiff``: insist, refused in one line
where they cannot run; ``torch``: never). :func:`training_compile_mode` decides torch.compile's
mode for training. :func:`describe` is the line ``train`` and ``sample`` log.
"""

from __future__ import annotations

import torch

from radardiff.accel.compiled import resolve_mode, uses_cuda_graphs
from radardiff.accel.library import available
from radardiff.accel.modules import Installed
from radardiff.errors import ConfigError

CONV_KERNELS = ("auto", "radardiff", "torch")


def _blocker(device: torch.device, fp32: bool, compiled: bool) -> str | None:
    if device.type != "cpu":
        return f"they are CPU kernels and this runs on {device.type}"
    if not fp32:
        return "autocast is on (the kernels are fp32)"
    if compiled:
        return "torch.compile is on"
    ok, why = available()
    return None if ok else why


def choose(
    requested: str,
    device: torch.device | str,
    fp32: bool,
    compiled: bool,
    option: str = "train.conv_kernels",
) -> tuple[bool, str]:
    """Whether to use the kernels, and why, from ``requested`` (auto, radardiff, torch)."""
    if requested not in CONV_KERNELS:
        raise ConfigError(f"{option}: one of {', '.join(CONV_KERNELS)}, got '{requested}'")
    if requested == "torch":
        return False, f"{option} = torch"
    blocker = _blocker(torch.device(device), fp32, compiled)
    if blocker is None:
        return True, f"{option} = {requested}"
    if requested == "radardiff":
        raise ConfigError(f"{option} = radardiff cannot run: {blocker}; use auto or torch")
    return False, f"{option} = auto; {blocker}"


def describe(used: bool, what: Installed, why: str) -> str:
    """The log line of the choice: what runs on the kernels, and why (or why not)."""
    if not used:
        return f"convolutions: torch's ({why})"
    parts = [
        f"; dropout: Philox4x32-10 masks, {what.dropouts} layers" if what.dropouts else "",
        f"; group norm + SiLU fused, {what.blocks} residual blocks" if what.blocks else "",
        f"; attention: q, k, v in one product, {what.attentions} layers" if what.attentions else "",
        f"; {what.diffusers_note}" if what.diffusers_note else "",
    ]
    return (
        f"convolutions: radardiff's AVX2 kernels (3x3: Winograd F(4x4, 3x3), forward and both "
        f"gradients; 1x1: matrix products), {what.convolutions} layers{''.join(parts)}; each "
        f"checked against torch at its first call ({why})"
    )


def training_compile_mode(
    requested: str, device: torch.device, grad_accum: int, processes: int
) -> tuple[str, str]:
    """torch.compile's mode for training, and why, from ``train.compile_mode``.

    ``auto`` takes CUDA graphs (``reduce-overhead``) on a GPU for one process that steps after
    every micro-batch, where a small network's step is bound by kernel launches; with gradient
    accumulation (the graphs' memory of one micro-batch's gradients would be reused by the next
    replay) or several processes (DDP's gradient hooks) it takes inductor's default. An explicit
    CUDA-graph mode with gradient accumulation is refused."""
    mode = resolve_mode(requested, device)
    if not uses_cuda_graphs(mode, device):
        return mode, f"train.compile_mode = {requested}"
    if requested == "auto" and (grad_accum > 1 or processes > 1):
        why = "gradient accumulation" if grad_accum > 1 else f"{processes} processes"
        return "default", f"train.compile_mode = auto; no CUDA graphs with {why}"
    if grad_accum > 1:
        raise ConfigError(
            f"train.compile_mode = {requested}: CUDA graphs with train.grad_accum = {grad_accum} "
            "are not supported; use default or max-autotune-no-cudagraphs"
        )
    return mode, f"train.compile_mode = {requested}"
