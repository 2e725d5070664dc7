"""Dropout on the Philox kernel: the mask a function of a seed and the element's position.

``kernels/dropout.c`` draws each element's keep-or-drop from Philox4x32-10 (Salmon et al. 2011,
"Parallel random numbers: as easy as 1, 2, 3"), a counter-based generator keyed by a 64-bit seed
(taken from torch's global generator by the layer) and counted by the element's position: the
backward pass is the same kernel on the output gradient and no mask is stored. torch's CPU
``bernoulli_`` draws far slower than a multiplication runs (docs/performance.md). The masks differ
from torch's (another generator), with the same law.
"""

from __future__ import annotations

import ctypes

import torch

from radardiff.accel.conv import dense
from radardiff.accel.library import check, library


def _dropout_threshold(p: float) -> int:
    """A generator word below this drops its element: a drop probability of threshold / 2^32,
    within 2^-33 of p."""
    return min(max(round(p * 2**32), 1), 2**32 - 1)


def dropout_mask_apply(
    x: torch.Tensor, p: float, seed: int, threads: int | None = None, lib=None
) -> torch.Tensor:
    """``x`` with each element kept and scaled by 1 / (1 - p) or zeroed, as by
    ``F.dropout(x, p)``, but the elements kept chosen by Philox4x32-10 keyed by ``seed`` (64 bits)
    over the position in ``x``'s storage order (see ``kernels/dropout.c``): a function of
    ``(seed, position)`` alone. ``x``: a dense fp32 CPU tensor (contiguous or channels-last);
    ``0 < p < 1``. The result has ``x``'s strides."""
    check("dropout", x)
    if not 0.0 < p < 1.0:
        raise ValueError(f"dropout: p must be in (0, 1), got {p}")
    if not dense(x):
        raise ValueError("dropout: the tensor must be dense (contiguous or channels-last)")
    y = torch.empty_like(x)
    (lib or library()).radardiff_dropout(
        x.data_ptr(), y.data_ptr(), x.numel(), seed & (2**64 - 1), _dropout_threshold(p),
        1.0 / (1.0 - p), threads or torch.get_num_threads(),
    )  # fmt: skip
    return y


def philox(counter: tuple[int, int, int, int], key: tuple[int, int]) -> list[list[int]]:
    """The kernel's Philox4x32-10 words of the eight counters ``(counter[0] + k, counter[1],
    counter[2], counter[3])``, k < 8, under ``key`` (for tests against the published values)."""
    out = (ctypes.c_uint32 * 32)()
    library().radardiff_philox((ctypes.c_uint32 * 4)(*counter), (ctypes.c_uint32 * 2)(*key), out)
    return [list(out[4 * k : 4 * k + 4]) for k in range(8)]


def dropout_looks_right(x: torch.Tensor, y: torch.Tensor, p: float) -> tuple[bool, str]:
    """Whether ``y`` is a dropout of ``x``: every element zero or ``x / (1 - p)`` exactly (as
    the kernel computes it), and the share kept within 6 standard deviations of ``1 - p``."""
    scaled = x * torch.tensor(1.0 / (1.0 - p), dtype=torch.float32)
    kept = y != 0
    if not bool(((~kept) | (y == scaled)).all()):
        return False, "elements neither dropped nor scaled"
    n = x.numel()
    share = float((kept | (x == 0)).double().mean())
    spread = 6.0 * (p * (1.0 - p) / n) ** 0.5 + 1.0 / n
    if abs(share - (1.0 - p)) > spread:
        return False, f"{share:.4f} of {n} elements kept, {1 - p:.4f} expected"
    return True, "agree"
