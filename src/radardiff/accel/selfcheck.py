"""radardiff's kernels check themselves against torch, on the network's own shapes, at first use.

A kernel bug must never become a written file. The unit tests check the kernels on the shapes
they name; a network brings others (a batch of one image, a thread count, a layout), and one of
them once gave a group norm 4-9 away from torch's, so that ``sample --n 1`` wrote all-NaN images
and exited 0. So the first time a process calls a kernel on a *signature* (the operation, every
operand's shape and strides, the thread count), it also computes torch's result of the same call
and compares the two: the kernel's result is used, then and for every later call of that
signature, only where they agree within :data:`TOLERANCE` of the largest value of torch's (the
kernels' float rounding is 1e-6 to 3e-5 of it; a bug is of the order of the values). Where they
disagree, torch's result is used for that signature for the rest of the process, and one warning
says so.

The check costs one torch call per signature and process: a training run has a few dozen
signatures, a sampling run a few more for a short last batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

log = logging.getLogger(__name__)

TOLERANCE = 1e-3
T = TypeVar("T")

_verdicts: dict[tuple, bool] = {}
_warned: set[str] = set()
checks_run = 0  # how many signatures were checked in this process (tests, log lines)


def signature(op: str, tensors: Sequence[torch.Tensor | None], *extra) -> tuple:
    """What decides a kernel's path through its code: the operation, the operands' shapes and
    strides, the thread count and ``extra`` settings."""
    shapes = tuple(None if t is None else (tuple(t.shape), t.stride()) for t in tensors)
    return (op, torch.get_num_threads(), extra, shapes)


def _as_tuple(v) -> tuple:
    return v if isinstance(v, tuple) else (v,)


def disagreement(result, reference) -> tuple[bool | None, str]:
    """Whether ``result`` (a tensor or a tuple of tensors, None entries skipped) agrees with
    ``reference``: True, False, or None where the reference itself is not finite (an input that
    holds NaN or inf decides nothing); and a phrase for the log."""
    for out, ref in zip(_as_tuple(result), _as_tuple(reference), strict=True):
        if out is None and ref is None:
            continue
        if out is None or ref is None or out.shape != ref.shape:
            return False, "the results differ in shape"
        ref64 = ref.detach().double()
        if not bool(torch.isfinite(ref64).all()):
            return None, "torch's result is not finite"
        diff = (out.detach().double() - ref64).abs()
        largest = float(ref64.abs().max()) if ref64.numel() else 0.0
        worst = float(diff.max()) if diff.numel() else 0.0
        if not (worst <= TOLERANCE * max(largest, 1e-30)):  # NaN in the result fails too
            return False, f"largest difference {worst:.3g} against values up to {largest:.3g}"
    return True, "agree"


def checked(key: tuple, kernel: Callable[[], T], reference: Callable[[], T]) -> T:
    """``kernel()`` where it has agreed with ``reference()`` on this signature ``key``
    (:func:`signature`), checked at the first call; ``reference()`` where it has not."""
    global checks_run
    verdict = _verdicts.get(key)
    if verdict is not None:
        return kernel() if verdict else reference()
    result, ref = kernel(), reference()
    ok, detail = disagreement(result, ref)
    if ok is None:
        return ref
    _verdicts[key] = ok
    checks_run += 1
    if not ok:
        op = key[0]
        if op not in _warned:
            _warned.add(op)
            log.warning(
                "radardiff's %s kernel disagreed with torch on %s (threads: %d): %s; torch's %s is "
                "used for it from now on in this process (the output is right; please report "
                "this)",
                op, _shapes(key), key[1], detail, op,
            )  # fmt: skip
        return ref
    return result


def verdict(key: tuple) -> bool | None:
    """The recorded verdict of a signature (None: not checked yet)."""
    return _verdicts.get(key)


def record(key: tuple, ok: bool, detail: str = "") -> None:
    """Record a verdict found by a caller's own check (dropout's, whose masks are not torch's)."""
    global checks_run
    _verdicts[key] = ok
    checks_run += 1
    if not ok and key[0] not in _warned:
        _warned.add(key[0])
        log.warning(
            "radardiff's %s kernel failed its check on %s (threads: %d): %s; torch's %s is used "
            "for it from now on in this process (please report this)",
            key[0], _shapes(key), key[1], detail, key[0],
        )  # fmt: skip


def forget() -> None:
    """Forget every verdict (tests)."""
    global checks_run
    _verdicts.clear()
    _warned.clear()
    checks_run = 0


def _shapes(key: tuple) -> str:
    return ", ".join("-" if s is None else "x".join(map(str, s[0])) for s in key[3])
