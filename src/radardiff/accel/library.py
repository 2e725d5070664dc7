"""The C kernels as a library: compiled at first use, cached, verified before it is loaded.

The kernels (``kernels/*.c``) are C with AVX2 intrinsics and no torch headers. They are compiled
at first use by the system's C compiler (``$CC``, else ``cc`` or ``gcc``) into radardiff's cache
directory (``$RADARDIFF_CACHE``, else ``$XDG_CACHE_HOME/radardiff`` or ``~/.cache/radardiff``),
named by a hash of the sources, the compiler and its flags, and loaded with ctypes; nothing is
downloaded. A marker with the library's SHA-256, written after the library, is checked before
anything is loaded (a truncated or replaced library is rebuilt, never loaded); one process
builds while the others wait on the cache's lock file; the outcome, library or failure, is kept
for the process.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from radardiff._files import temp_file_for, waiting_lock

KERNELS = Path(__file__).with_name("kernels")
SOURCES = tuple(
    KERNELS / name for name in ("conv3x3_wino.c", "conv1x1.c", "dropout.c", "groupnorm.c")
)
HEADERS = (KERNELS / "common.h",)
FLAGS = ("-O3", "-mavx2", "-mfma", "-fPIC", "-shared", "-pthread", "-std=c11")
log = logging.getLogger(__name__)


class KernelUnavailable(RuntimeError):
    """The kernel cannot run here; the message says why, in one line."""


def cache_dir() -> Path:
    """Where compiled kernels are kept."""
    if os.environ.get("RADARDIFF_CACHE"):
        return Path(os.environ["RADARDIFF_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "radardiff"


def c_compiler() -> str | None:
    """The C compiler to build the kernel with: ``$CC``, else ``cc`` or ``gcc`` on the PATH."""
    for name in [os.environ.get("CC"), "cc", "gcc"]:
        path = shutil.which(name) if name else None
        if path:
            return path
    return None


def cpu_supported() -> bool:
    """True on an x86 CPU that torch dispatches to with AVX2 (which implies FMA) or AVX-512."""
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def _compiler_id(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()[0] if out.stdout else cc
    except (OSError, subprocess.SubprocessError):
        return cc


def _build(cc: str, flags: tuple[str, ...], target: Path) -> str | None:
    """Compiles the kernels into ``target``, then writes its marker (:func:`_marker`): the
    library's SHA-256, last, so that a library without a matching marker is never loaded.
    Returns the compiler's first error line (or why its output is unusable), or None."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
    except OSError as err:
        raise KernelUnavailable(f"cannot write to the cache {target.parent}: {err}") from None
    try:
        out = subprocess.run(
            [cc, *flags, *map(str, SOURCES), "-o", tmp], capture_output=True, text=True, timeout=300
        )
        if out.returncode != 0:
            return (out.stderr.strip().splitlines() or ["no message"])[0]
        with open(tmp, "rb") as fh:
            built = fh.read()
        if not built.startswith(b"\x7fELF"):
            what = "an empty file" if not built else "a file that is not a shared library"
            return f"it wrote {what} (exit status 0)"
        os.replace(tmp, target)  # atomic: a concurrent reader sees one whole file
        marker = {"sha256": hashlib.sha256(built).hexdigest(), "size": len(built),
                  "compiler": cc, "flags": list(flags)}  # fmt: skip
        fd, mtmp = temp_file_for(_marker(target))
        with os.fdopen(fd, "w") as fh:
            json.dump(marker, fh)
        os.replace(mtmp, _marker(target))
        return None
    except (OSError, subprocess.SubprocessError) as err:
        return str(err)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _marker(target: Path) -> Path:
    """The record of a built library: its SHA-256 and size, written after the library."""
    return target.with_suffix(".json")


def _load_verified(target: Path) -> ctypes.CDLL | None:
    """The cached library ``target`` where its bytes match its marker, else None (never built,
    half built, truncated, damaged or replaced: loading such a file can kill the process with
    SIGBUS, or load someone else's code)."""
    try:
        record = json.loads(_marker(target).read_text(encoding="utf-8"))
        data = target.read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or hashlib.sha256(data).hexdigest() != record.get("sha256"):
        log.info("%s: does not match its marker (damaged or half written); rebuilt", target)
        return None
    try:
        return _declare(ctypes.CDLL(str(target)))
    except (OSError, AttributeError) as err:
        log.info("%s: cannot be loaded (%s); rebuilt", target, err)
        return None


# how long a process waits for another one that is building the kernels into the same cache
BUILD_WAIT_S = 900.0


def _cached_or_built(cc: str, flags: tuple[str, ...], target: Path) -> ctypes.CDLL | str:
    """The verified library ``target``, built here if need be (one process builds while the
    others wait on the cache's lock file, then load what it built); a string says why not."""
    lib = _load_verified(target)
    if lib is not None:
        return lib

    def busy(holder: str) -> KernelUnavailable:
        return KernelUnavailable(
            f"{holder} has been building the kernels into {target.parent} for {BUILD_WAIT_S:.0f} s"
        )

    try:
        with waiting_lock(target.with_suffix(".lock"), BUILD_WAIT_S, busy):
            lib = _load_verified(target)  # built by the process we waited for
            if lib is not None:
                return lib
            error = _build(cc, flags, target)
            if error is not None:
                return error
            return _load_verified(target) or "the library it built does not load"
    except OSError as err:
        raise KernelUnavailable(f"cannot write to the cache {target.parent}: {err}") from None


@functools.cache
def _library() -> ctypes.CDLL | KernelUnavailable:
    """The kernels, or why they cannot run: either is kept for the process (a failed build is
    not tried again at every call)."""
    try:
        return _load_library()
    except KernelUnavailable as err:
        return err


def library() -> ctypes.CDLL:
    """The compiled kernels, built on first use; :class:`KernelUnavailable` where they cannot be.

    It is built with OpenMP where the compiler has it: loaded after torch, it then shares the
    OpenMP runtime torch loaded (the same ``libgomp.so.1``), so it runs on torch's threads. With
    threads of its own it ran up to 2x slower inside a training step on 2 cores, where torch's
    idle threads spin for a while after each of torch's parallel regions. Without OpenMP it uses
    POSIX threads. The cache is verified before anything is loaded (:func:`_load_verified`);
    the outcome, library or failure, is kept for the process.
    """
    got = _library()
    if isinstance(got, KernelUnavailable):
        raise KernelUnavailable(str(got))
    return got


library.cache_clear = _library.cache_clear  # type: ignore[attr-defined]


def _load_library() -> ctypes.CDLL:
    if not cpu_supported():
        raise KernelUnavailable(
            f"the CPU has no AVX2 (torch dispatches to {torch.backends.cpu.get_cpu_capability()})"
        )
    cc = c_compiler()
    if cc is None:
        raise KernelUnavailable("no C compiler found ($CC, cc or gcc)")
    source = b"".join(path.read_bytes() for path in SOURCES + HEADERS)
    compiler = _compiler_id(cc).encode()
    first_error = None
    for flags in (FLAGS + ("-fopenmp",), FLAGS):
        key = hashlib.sha256(source + compiler + " ".join(flags).encode()).hexdigest()[:16]
        got = _cached_or_built(cc, flags, cache_dir() / f"conv-{key}.so")
        if not isinstance(got, str):
            return got
        first_error = first_error or got
    names = ", ".join(path.name for path in SOURCES)
    raise KernelUnavailable(f"{cc} could not compile {names}: {first_error}")


def available() -> tuple[bool, str]:
    """Whether the kernels run here, and if not, why (one phrase)."""
    try:
        library()
    except KernelUnavailable as err:
        return False, str(err)
    return True, "AVX2 kernels"


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    ptr, num = ctypes.c_void_p, ctypes.c_int
    for name, argtypes in (
        ("radardiff_wino_weights", [ptr, ptr, num, num, num, ptr, num]),
        ("radardiff_conv3x3_wino", [ptr] * 6 + [num] * 6),
        ("radardiff_conv3x3_wino_res", [ptr] * 7 + [num] * 6),
        ("radardiff_conv3x3_wino_wgrad", [ptr] * 5 + [num] * 6),
        ("radardiff_conv1x1", [ptr] * 3 + [ctypes.c_long] * 2 + [ptr] * 3 + [num] * 6),
        ("radardiff_conv1x1_wgrad", [ptr] * 5 + [num] * 6),
        (
            "radardiff_dropout",
            [ptr, ptr, ctypes.c_long, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_float, num],
        ),
        ("radardiff_philox", [ptr] * 3),
        ("radardiff_gn_forward", [ptr] * 6 + [num] * 4 + [ctypes.c_float] + [num] * 3),
        ("radardiff_gn_backward", [ptr] * 9 + [num] * 7),
    ):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = ctypes.c_int, argtypes
    return lib


def check(what: str, *tensors: torch.Tensor) -> None:
    """The kernels take fp32 CPU tensors only."""
    for t in tensors:
        if t.dtype != torch.float32 or t.device.type != "cpu":
            raise TypeError(f"{what} takes fp32 CPU tensors, got {t.dtype} on {t.device.type}")


def check_pair(what: str, x: torch.Tensor, grad_out: torch.Tensor) -> None:
    """A weight gradient's operands: fp32 CPU, 4-D, the same images and positions."""
    check(what, x, grad_out)
    if (
        x.ndim != 4
        or grad_out.ndim != 4
        or (x.shape[0], *x.shape[2:]) != (grad_out.shape[0], *grad_out.shape[2:])
    ):
        raise ValueError(f"{what}: shapes {tuple(x.shape)} and {tuple(grad_out.shape)}")


def strides(t: torch.Tensor):
    """A 4-D tensor's strides as the C kernels take them."""
    return (ctypes.c_long * 4)(*t.stride())


def raise_for(rc: int, what: str) -> None:
    """The C kernels' return codes: 0 done, 1 no memory for their buffers, 2 a bad size."""
    if rc == 1:
        raise MemoryError(f"{what}: no memory for the kernel's buffers")
    if rc != 0:
        raise RuntimeError(f"{what} failed (code {rc})")
