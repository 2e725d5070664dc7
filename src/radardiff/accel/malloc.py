"""glibc malloc tuning for training and sampling on the CPU.

glibc returns freed memory to the OS eagerly (trim and mmap thresholds); a UNet step frees and
re-allocates the same large activation buffers every step, so the process keeps paying for page
faults. Raising both thresholds keeps those pages in the heap (see benchmarks/bench_train.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_MMAP_MAX = 32 * 1024 * 1024  # glibc's upper bound for M_MMAP_THRESHOLD on 64-bit systems


def tune_malloc(trim_threshold: int = 1 << 30, mmap_threshold: int = _MMAP_MAX) -> bool:
    """Raise glibc's trim and mmap thresholds; returns False where glibc is not in use."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok_trim = libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(trim_threshold))
        ok_mmap = libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(mmap_threshold))
    except (OSError, AttributeError):
        return False
    return bool(ok_trim and ok_mmap)
