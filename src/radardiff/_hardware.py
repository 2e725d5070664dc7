"""What the device computes fast: the precision choice behind ``mixed_precision = "auto"``.

bf16 autocast pays only where the hardware has bf16 arithmetic. On a CPU, oneDNN runs bf16
convolutions with AVX-512 (native with AVX512-BF16 or AMX, emulated on other AVX-512 cores); on a
CPU without AVX-512 it falls back to reference code, tens of times slower than fp32, while with
AVX512-BF16 bf16 trains faster than fp32 (measurements: docs/performance.md). So ``auto`` takes
bf16 where it is fast (such a CPU, a GPU with bf16) and fp32 elsewhere, and an explicit ``bf16``
on a CPU without it is warned about once per process.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

log = logging.getLogger("radardiff")

PRECISIONS = ("no", "bf16", "fp16", "auto")
_warned: set[str] = set()


@functools.cache
def cpu_bf16_fast() -> bool:
    """True where oneDNN has its AVX-512 bf16 kernels on this CPU (native or emulated)."""
    import torch  # imported where used: the CLI's start does not need it

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without oneDNN: bf16 runs on the slow path
        return False


def bf16_fast(device: torch.device | str) -> bool:
    """Whether bf16 autocast is a speed-up on ``device`` (CUDA: the GPU supports bf16)."""
    import torch  # imported where used: the CLI's start does not need it

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_bf16_fast()
    return False


def describe_cpu() -> str:
    """One phrase for logs and benchmarks: the ISA torch dispatches to, and bf16's status."""
    import torch  # imported where used: the CLI's start does not need it

    isa = torch.backends.cpu.get_cpu_capability()
    return f"{isa}, bf16 {'fast' if cpu_bf16_fast() else 'slow (no AVX-512 bf16 kernels)'}"


def resolve_precision(requested: str, device: torch.device | str, option: str) -> str:
    """The autocast precision to use on ``device``: ``no``, ``bf16`` or ``fp16``.

    ``auto`` becomes ``bf16`` where :func:`bf16_fast` says so, else ``no`` (fp32). An explicit
    ``bf16`` on a CPU where it is slow is kept (the numbers are right, only slow) and logged as a
    warning naming ``option``; ``fp16`` is for GPUs and is left to the caller to refuse.
    """
    import torch

    if requested not in PRECISIONS:
        raise ValueError(f"{option}: one of {', '.join(PRECISIONS)}, got '{requested}'")
    device = torch.device(device)
    if requested == "auto":
        return "bf16" if bf16_fast(device) else "no"
    if (
        requested == "bf16"
        and device.type == "cpu"
        and not cpu_bf16_fast()
        and option not in _warned
    ):
        _warned.add(option)
        log.warning(
            "%s=bf16 on a CPU without AVX-512 bf16 kernels (%s): bf16 runs there on oneDNN's "
            "slow path (a 3x3 convolution measured 64x slower than fp32 on an AVX2 EPYC); "
            "use 'no' or 'auto'",
            option,
            torch.backends.cpu.get_cpu_capability(),
        )
    return requested
