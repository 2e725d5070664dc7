"""radardiff's own kernels for the networks' 3x3 and 1x1 convolutions and dropout, on AVX2 CPUs
in fp32.

The UNets here spend most of their time in 3x3 convolutions, which torch runs with oneDNN's direct
kernels: on the AVX2 EPYC this project runs on those reached 135-155 GFLOP/s forward and 50-120
for the weight gradient, with the machine's FMA peak at 186 (2 cores). oneDNN's 1x1 convolutions
(the residual blocks' shortcuts) on NCHW tensors ran at 17-26 GFLOP/s at 64 px. C kernels
replace them:

* ``kernels/conv3x3_wino.c``: the forward pass by Winograd's F(4x4, 3x3) (36 multiplications per
  4 x 4 outputs and channel pair, against 144), the tiles a block at a time: input transform,
  36 matrix products with 6 tiles x 16 output channels in registers, output transform and bias.
  The input gradient is the same kernel on the output gradient with the weight rotated and
  transposed. Outputs are within 2.3e-5 of each layer's largest value (float rounding of the
  transforms; oneDNN's within 3.1e-6, bf16 rounding is 4e-3). The weight gradient is the same
  algorithm read the other way (F(3x3, 4x4)): each 4x4 tile of the output gradient and the
  input tile under it transformed, 36 products per tile and channel pair summed over the tiles
  (a super-block of tiles at a time, each thread its own 36th parts), the sums transformed into
  the kernel: 1.1-2.5x the speed of the direct kernel it replaced (111-153 GFLOP/s) on the
  UNets' layers, within 1.4e-5 of the largest value (the direct kernel's within 4e-7).
* ``kernels/conv1x1.c``: a 1x1 convolution is one matrix product per image, its input gradient
  the product with the transposed weight: 6 x 16 register tiles, over positions in NCHW (the
  input packed in strips of 16 positions) and over output channels in channels-last (the weight
  packed in panels of 16). Its NCHW weight gradient sums 3 x 4 channel pairs over 8 positions
  per lane; in channels-last that is one matrix product by torch.
* ``kernels/dropout.c``: dropout (``nn.Dropout`` layers, while training) with its mask drawn by
  Philox4x32-10, a counter-based generator, from a seed taken from torch's global generator:
  the mask is a function of the seed and the element's position, so the backward pass runs the
  same kernel on the output gradient and no mask is stored. torch's CPU ``bernoulli_`` draws
  about 90 M elements/s on the AVX2 EPYC (the 32 px recipe's dropout took 0.84-0.89 s of a
  13-17 s training step); the kernel runs at the speed of a multiplication (0.22-0.35 s).
* ``kernels/groupnorm.c``: group normalization fused with the SiLU after it, for the residual
  blocks; see :mod:`radardiff.models.norm_kernel`, which :func:`install` also calls.

All sum in an order fixed by the shapes alone (never by the thread count, nor, for the forward
passes, by the other images of a batch), so training stays deterministic and resumes
bit-identically, and a sample does not depend on its batch.

The kernels are C with AVX2 intrinsics and no torch headers. They are compiled at first use by
the system's C compiler (``$CC``, else ``cc`` or ``gcc``) into radardiff's cache directory
(``$RADARDIFF_CACHE``, else ``$XDG_CACHE_HOME/radardiff`` or ``~/.cache/radardiff``), named by a
hash of the sources and the compiler, and loaded with ctypes; nothing is downloaded.

:func:`install` puts them under the eligible ``nn.Conv2d`` layers of a network (3x3 with padding
1 or 1x1 without, stride 1, no dilation or groups, at least 16 input and output channels): such a
layer uses them on the CPU in fp32 (no autocast), training (all three products) or without
gradients (the forward pass, a 3x3 layer's transformed weight kept until the weight changes), and
calls torch's convolution otherwise.
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
import torch.nn.functional as F
from torch import nn

from radardiff._files import temp_file_for, waiting_lock
from radardiff.errors import ConfigError
from radardiff.models import fused_attention, selfcheck

KERNELS = Path(__file__).with_name("kernels")
SOURCES = tuple(
    KERNELS / name for name in ("conv3x3_wino.c", "conv1x1.c", "dropout.c", "groupnorm.c")
)
HEADERS = (KERNELS / "common.h",)
FLAGS = ("-O3", "-mavx2", "-mfma", "-fPIC", "-shared", "-pthread", "-std=c11")
CONV_KERNELS = ("auto", "radardiff", "torch")
MIN_CHANNELS = 16
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


def _check(what: str, *tensors: torch.Tensor) -> None:
    for t in tensors:
        if t.dtype != torch.float32 or t.device.type != "cpu":
            raise TypeError(f"{what} takes fp32 CPU tensors, got {t.dtype} on {t.device.type}")


def _check_pair(what: str, x: torch.Tensor, grad_out: torch.Tensor) -> None:
    """A weight gradient's operands: fp32 CPU, 4-D, the same images and positions."""
    _check(what, x, grad_out)
    if (
        x.ndim != 4
        or grad_out.ndim != 4
        or (x.shape[0], *x.shape[2:]) != (grad_out.shape[0], *grad_out.shape[2:])
    ):
        raise ValueError(f"{what}: shapes {tuple(x.shape)} and {tuple(grad_out.shape)}")


def _strides(t: torch.Tensor):
    return (ctypes.c_long * 4)(*t.stride())


def _raise_for(rc: int, what: str) -> None:
    if rc == 1:
        raise MemoryError(f"{what}: no memory for the kernel's buffers")
    if rc != 0:
        raise RuntimeError(f"{what} failed (code {rc})")


def weight_grad(
    x: torch.Tensor,
    grad_out: torch.Tensor,
    threads: int | None = None,
    lib: ctypes.CDLL | None = None,
) -> torch.Tensor:
    """The weight gradient of ``conv2d(x, w, padding=1)`` for a 3x3 ``w``, given ``grad_out``,
    by Winograd's algorithm read the other way: each 4x4 tile of ``grad_out`` and the 6x6 tile of
    ``x`` under it transformed, 36 products per tile and channel pair (against 144) summed over
    the tiles, and the sums transformed into the 3x3 kernel.

    Both are 4-D fp32 CPU tensors of any strides, (N, Ci, H, W) and (N, Co, H, W). Returns a
    (Co, Ci, 3, 3) tensor in the channels-last layout, within about 2e-5 of its largest value
    (the transforms' float rounding) and bit-identical whatever the thread count. ``threads``
    defaults to torch's count; ``lib`` to :func:`library`.
    """
    _check_pair("weight_grad", x, grad_out)
    n, ci, h, w = x.shape
    co = grad_out.shape[1]
    out = torch.empty((co, 3, 3, ci), dtype=torch.float32)
    rc = (lib or library()).radardiff_conv3x3_wino_wgrad(
        x.data_ptr(), _strides(x), grad_out.data_ptr(), _strides(grad_out), out.data_ptr(),
        n, h, w, ci, co, threads or torch.get_num_threads(),
    )  # fmt: skip
    _raise_for(rc, "conv3x3 weight gradient")
    return out.permute(0, 3, 1, 2)


def winograd_weight(
    weight: torch.Tensor,
    transposed: bool = False,
    threads: int | None = None,
    lib: ctypes.CDLL | None = None,
) -> torch.Tensor:
    """The F(4x4, 3x3) transform of a (Co, Ci, 3, 3) fp32 weight of any strides, for
    :func:`winograd_conv`: a (36, ceil(Co / 16), Ci, 16) tensor, zero past Co.

    ``transposed`` transforms the weight of the input gradient instead, the (Ci, Co, 3, 3) weight
    rotated by 180 degrees: ``conv2d(grad_out, weight.flip(2, 3).transpose(0, 1), padding=1)`` is
    the input gradient of ``conv2d(x, weight, padding=1)``.
    """
    _check("winograd_weight", weight)
    if weight.ndim != 4 or weight.shape[2:] != (3, 3):
        raise ValueError(f"winograd_weight: a (Co, Ci, 3, 3) weight, got {tuple(weight.shape)}")
    if transposed:
        weight = weight.transpose(0, 1)
    co, ci = weight.shape[:2]
    u = torch.empty((36, -(-co // 16), ci, 16), dtype=torch.float32)
    rc = (lib or library()).radardiff_wino_weights(
        weight.data_ptr(), _strides(weight), int(transposed), co, ci, u.data_ptr(),
        threads or torch.get_num_threads(),
    )  # fmt: skip
    _raise_for(rc, "winograd_weight")
    return u


def winograd_conv(
    x: torch.Tensor,
    u: torch.Tensor,
    out_channels: int,
    bias: torch.Tensor | None = None,
    threads: int | None = None,
    lib: ctypes.CDLL | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """``conv2d(x, w, bias, padding=1)`` for ``u = winograd_weight(w)`` and a 4-D fp32 ``x`` of
    any strides; the result is channels-last where ``x`` is, else contiguous. With a
    ``residual`` of the output's shape, ``residual + conv2d(...)`` in the same pass over the
    output: bit for bit torch's sum of the two, and in the residual's layout where that is NCHW
    or channels-last, as torch's sum."""
    extra = [t for t in (bias, residual) if t is not None]
    _check("winograd_conv", x, u, *extra)
    n, ci, h, w = x.shape if x.ndim == 4 else (0, 0, 0, 0)
    if u.ndim != 4 or u.shape[0] != 36 or u.shape[2] != ci or u.shape[1] * 16 < out_channels:
        raise ValueError(
            f"winograd_conv: input {tuple(x.shape)} and transformed weight {tuple(u.shape)} "
            f"for {out_channels} output channels do not match"
        )
    if not u.is_contiguous():
        raise ValueError("winograd_conv: the transformed weight must be contiguous")
    if bias is not None:
        bias = bias.contiguous()
    layout = torch.channels_last if x.stride(1) == 1 and ci > 1 else torch.contiguous_format
    if residual is not None and _dense(residual):  # torch's sum takes the first term's layout
        layout = _layout(residual)
    y = torch.empty((n, out_channels, h, w), dtype=torch.float32, memory_format=layout)
    if residual is not None:
        if residual.shape != y.shape:
            raise ValueError(
                f"winograd_conv: residual {tuple(residual.shape)} for an output {tuple(y.shape)}"
            )
        if residual.stride() != y.stride():
            residual = torch.empty_like(y).copy_(residual)
    rc = (lib or library()).radardiff_conv3x3_wino_res(
        x.data_ptr(), _strides(x), u.data_ptr(), None if bias is None else bias.data_ptr(),
        None if residual is None else residual.data_ptr(), y.data_ptr(), _strides(y), n, h, w,
        ci, out_channels, threads or torch.get_num_threads(),
    )  # fmt: skip
    _raise_for(rc, "winograd_conv")
    return y


def conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None):
    """``conv2d(x, weight, bias, padding=1)`` by the Winograd kernel."""
    return winograd_conv(x, winograd_weight(weight), weight.shape[0], bias)


def input_grad(grad_out: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The input gradient of ``conv2d(x, weight, padding=1)`` for a 3x3 ``weight``: the forward
    convolution of ``grad_out`` with the rotated, transposed weight, by the Winograd kernel."""
    return winograd_conv(grad_out, winograd_weight(weight, transposed=True), weight.shape[1])


def _position_stride(t: torch.Tensor) -> int:
    """The stride between consecutive positions of t's H x W, 0 for a single position, -1 where
    they are not one stride apart (as the 1x1 kernel reads them)."""
    h, w = t.shape[2:]
    if h == 1:
        return 0 if w == 1 else t.stride(3)
    if w == 1:
        return t.stride(2)
    return t.stride(3) if t.stride(2) == w * t.stride(3) else -1


def _pointwise_layout(t: torch.Tensor) -> torch.memory_format | None:
    """NCHW (each channel's positions one element apart), channels-last, or None (neither)."""
    step = _position_stride(t)
    if step in (0, 1):
        return torch.contiguous_format
    return torch.channels_last if step > 0 and t.stride(1) == 1 else None


def _pointwise(x: torch.Tensor, a: torch.Tensor, bias, what: str, threads=None, lib=None):
    """``y[n] = a @ x[n] (+ bias)`` over the positions of each image, for an (M, K) ``a`` of any
    strides; y is channels-last where x is, else contiguous."""
    _check(what, x, a, *([] if bias is None else [bias]))
    if x.ndim != 4 or a.ndim != 2 or a.shape[1] != x.shape[1]:
        raise ValueError(f"{what}: input {tuple(x.shape)} and weight {tuple(a.shape)} do not match")
    n, k, h, w = x.shape
    m = a.shape[0]
    layout = _pointwise_layout(x)
    if layout is None or (layout == torch.channels_last and m == 1):
        x, layout = x.contiguous(), torch.contiguous_format
    if bias is not None:
        bias = bias.contiguous()
    y = torch.empty((n, m, h, w), dtype=torch.float32, memory_format=layout)
    rc = (lib or library()).radardiff_conv1x1(
        x.data_ptr(), _strides(x), a.data_ptr(), a.stride(0), a.stride(1),
        None if bias is None else bias.data_ptr(), y.data_ptr(), _strides(y), n, h, w, k, m,
        threads or torch.get_num_threads(),
    )  # fmt: skip
    _raise_for(rc, what)
    return y


def _pointwise_weight(weight: torch.Tensor, what: str) -> torch.Tensor:
    if weight.ndim != 4 or weight.shape[2:] != (1, 1):
        raise ValueError(f"{what}: a (Co, Ci, 1, 1) weight, got {tuple(weight.shape)}")
    return weight[:, :, 0, 0]


def conv1x1(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    threads: int | None = None,
    lib: ctypes.CDLL | None = None,
) -> torch.Tensor:
    """``conv2d(x, weight, bias)`` for a (Co, Ci, 1, 1) ``weight``: one matrix product per image
    by the 1x1 kernel (fp32 CPU tensors of any strides; the result is channels-last where ``x``
    is, else contiguous)."""
    return _pointwise(x, _pointwise_weight(weight, "conv1x1"), bias, "conv1x1", threads, lib)


def conv1x1_input_grad(grad_out: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The input gradient of ``conv2d(x, weight)`` for a (Co, Ci, 1, 1) ``weight``: the product
    with the transposed weight."""
    return _pointwise(grad_out, _pointwise_weight(weight, "conv1x1_input_grad").t(), None,
                      "conv1x1_input_grad")  # fmt: skip


def conv1x1_weight_grad(
    x: torch.Tensor,
    grad_out: torch.Tensor,
    threads: int | None = None,
    lib: ctypes.CDLL | None = None,
) -> torch.Tensor:
    """The (Co, Ci, 1, 1) weight gradient of ``conv2d(x, w)`` for a 1x1 ``w``, given ``grad_out``:
    by the kernel where both are NCHW, else one matrix product by torch (channels-last)."""
    _check_pair("conv1x1_weight_grad", x, grad_out)
    n, ci, h, w = x.shape
    co = grad_out.shape[1]
    nchw = torch.contiguous_format
    if _pointwise_layout(x) == nchw and _pointwise_layout(grad_out) == nchw:
        out = torch.empty((co, ci), dtype=torch.float32)
        rc = (lib or library()).radardiff_conv1x1_wgrad(
            x.data_ptr(), _strides(x), grad_out.data_ptr(), _strides(grad_out), out.data_ptr(),
            n, h, w, ci, co, threads or torch.get_num_threads(),
        )  # fmt: skip
        _raise_for(rc, "conv1x1 weight gradient")
    else:  # positions by channels: views where both are channels-last
        out = grad_out.permute(0, 2, 3, 1).reshape(-1, co).t() @ x.permute(0, 2, 3, 1).reshape(
            -1, ci
        )
    return out.view(co, ci, 1, 1)


def _name(weight: torch.Tensor) -> str:
    return "conv1x1" if weight.shape[-1] == 1 else "conv3x3"


def _checked_conv(x, weight, bias, residual, kernel):
    """``kernel()``, the layer's convolution (plus ``residual``) on the kernels, checked against
    torch's on this signature at its first use in the process (:mod:`selfcheck`)."""
    key = selfcheck.signature(_name(weight), (x, weight, bias, residual))

    def reference():
        y = F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2)
        return y if residual is None else residual + y

    return selfcheck.checked(key, kernel, reference)


class _KernelConv(torch.autograd.Function):
    """An eligible layer's convolution computed by radardiff's kernels, forward and backward:
    ``conv2d(x, w, b)`` for a 1x1 ``w``, ``conv2d(x, w, b, padding=1)`` for a 3x3 ``w`` given
    ``u = winograd_weight(w)``; with a ``residual`` (3x3 only), ``residual`` plus that. Each of
    the three products is checked against torch's at its first use on a signature."""

    @staticmethod
    def forward(ctx, x, weight, bias, u, residual=None):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        if u is None:
            return _checked_conv(x, weight, bias, None, lambda: conv1x1(x, weight, bias))
        return _checked_conv(
            x, weight, bias, residual,
            lambda: winograd_conv(x, u, weight.shape[0], bias, residual=residual),
        )  # fmt: skip

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        pointwise = weight.shape[-1] == 1
        pad, name = weight.shape[-1] // 2, _name(weight)
        grad_x = grad_w = None
        if need_x:
            grad_x = selfcheck.checked(
                selfcheck.signature(f"{name} input gradient", (grad_out, weight)),
                lambda: (conv1x1_input_grad if pointwise else input_grad)(grad_out, weight),
                lambda: torch.nn.grad.conv2d_input(x.shape, weight, grad_out, padding=pad),
            )
        if need_w:
            grad_w = selfcheck.checked(
                selfcheck.signature(f"{name} weight gradient", (x, grad_out)),
                lambda: (conv1x1_weight_grad if pointwise else weight_grad)(x, grad_out),
                lambda: torch.nn.grad.conv2d_weight(x, weight.shape, grad_out, padding=pad),
            )
            if pointwise:  # in the weight's strides (its size-1 dimensions' too)
                grad_w = torch.empty_like(weight).copy_(grad_w)
            else:
                grad_w = grad_w.contiguous(memory_format=_layout(weight))
        # the bias gradient by itself: asking oneDNN's backward-data primitive for it too made
        # oneDNN compute the weight gradient as well, 2.4x the time
        grad_b = grad_out.sum((0, 2, 3)) if ctx.has_bias and need_b else None
        if len(ctx.needs_input_grad) == 4:  # called without a residual
            return grad_x, grad_w, grad_b, None
        return grad_x, grad_w, grad_b, None, grad_out if ctx.needs_input_grad[4] else None


def _layout(t: torch.Tensor) -> torch.memory_format:
    if t.is_contiguous():
        return torch.contiguous_format
    return torch.channels_last


def eligible(module: nn.Module) -> bool:
    """A layer the kernels compute: a plain ``nn.Conv2d`` (no dilation, no groups, zero padding)
    that is 3x3 with stride 1 and padding 1, or 1x1 with stride 1 and no padding, with at least
    16 input and output channels (narrower layers leave most of the kernels' 16 lanes empty)."""
    return (
        type(module) is nn.Conv2d
        and (module.kernel_size, module.padding) in (((3, 3), (1, 1)), ((1, 1), (0, 0)))
        and module.stride == (1, 1)
        and module.dilation == (1, 1)
        and module.groups == 1
        and module.padding_mode == "zeros"
        and min(module.in_channels, module.out_channels) >= MIN_CHANNELS
    )


def _transformed(module: nn.Conv2d, weight: torch.Tensor) -> torch.Tensor:
    """The transformed weight for a pass without gradients, kept on the module with a copy of the
    weight it came from, and redone when the weight differs from that copy. (A version counter
    would not do: torch's fused AdamW changes parameters in place without bumping theirs.)"""
    cached = getattr(module, "_radardiff_winograd", None)
    if cached is not None and cached[0].shape == weight.shape and torch.equal(cached[0], weight):
        return cached[1]
    with torch.inference_mode(False), torch.no_grad():
        source = weight.detach().clone()
        cached = (source, winograd_weight(source))
    module._radardiff_winograd = cached
    return cached[1]


def _computes(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether the kernels take this call of an eligible layer (else torch's convolution)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and (bias is None or bias.dtype == torch.float32)
        and not torch.is_autocast_enabled("cpu")
        and x.ndim == 4
    )


def conv_residual(module: nn.Conv2d, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """``residual + module(x)``: for a 3x3 layer :func:`install` put on the kernels, the sum is
    made in the convolution's output transform (one pass over the output fewer, bit for bit the
    same); otherwise by torch."""
    weight, bias = module.weight, module.bias
    if (
        getattr(vars(module).get("_conv_forward"), "func", None) is _forward
        and not (module._forward_hooks or module._forward_pre_hooks)
        and module.kernel_size == (3, 3)
        and _computes(x, weight, bias)
        and residual.device.type == "cpu"
        and residual.dtype == torch.float32
        and residual.shape == (x.shape[0], module.out_channels, *x.shape[2:])
    ):
        if not torch.is_grad_enabled():
            u = _transformed(module, weight)
            return _checked_conv(
                x, weight, bias, residual,
                lambda: winograd_conv(x, u, weight.shape[0], bias, residual=residual),
            )  # fmt: skip
        if weight.requires_grad:
            u = winograd_weight(weight.detach())
            return _KernelConv.apply(x, weight, bias, u, residual)
    return residual + module(x)


def _forward(module: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias):
    if _computes(x, weight, bias):
        pointwise = module.kernel_size == (1, 1)
        if not torch.is_grad_enabled():
            if pointwise:
                return _checked_conv(x, weight, bias, None, lambda: conv1x1(x, weight, bias))
            u = _transformed(module, weight)
            return _checked_conv(
                x, weight, bias, None, lambda: winograd_conv(x, u, weight.shape[0], bias)
            )
        if weight.requires_grad:
            u = None if pointwise else winograd_weight(weight.detach())
            return _KernelConv.apply(x, weight, bias, u)
    return nn.Conv2d._conv_forward(module, x, weight, bias)


def _dense(x: torch.Tensor) -> bool:
    """Contiguous or channels-last: the storage holds each element once, with no gaps."""
    return x.is_contiguous() or (x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last))


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
    _check("dropout", x)
    if not 0.0 < p < 1.0:
        raise ValueError(f"dropout: p must be in (0, 1), got {p}")
    if not _dense(x):
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


class _KernelDropout(torch.autograd.Function):
    """Dropout whose mask is Philox's of a seed drawn from torch's global generator: the backward
    pass is the same kernel on the output gradient, so no mask is stored."""

    @staticmethod
    def forward(ctx, x, p):  # type: ignore[override]
        seed = int(torch.empty((), dtype=torch.int64).random_())
        ctx.seed, ctx.p, ctx.shape, ctx.strides = seed, p, x.shape, x.stride()
        return dropout_mask_apply(x, p, seed)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        if grad_out.stride() != ctx.strides:  # the mask is over the input's storage order
            grad_out = torch.empty_strided(ctx.shape, ctx.strides).copy_(grad_out)
        return dropout_mask_apply(grad_out, ctx.p, ctx.seed), None


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


_CHECK_SEED = 0x5EED_D20B


def _dropout_trusted(x: torch.Tensor, p: float) -> bool:
    """The dropout kernel's verdict on this signature, checked at its first use: a mask drawn
    without gradients and held to :func:`dropout_looks_right` (its masks are not torch's, so
    the check is of their form and law, not of equality)."""
    key = selfcheck.signature("dropout", (x,), p)
    verdict = selfcheck.verdict(key)
    if verdict is None:
        with torch.no_grad():
            # a fixed seed: the check must not draw from torch's generator, or a resumed run
            # would draw other masks than an unbroken one
            y = dropout_mask_apply(x.detach(), p, _CHECK_SEED)
        verdict, detail = dropout_looks_right(x.detach(), y, p)
        selfcheck.record(key, verdict, detail)
    return verdict


def _dropout_forward(module: nn.Dropout, x: torch.Tensor) -> torch.Tensor:
    if (
        module.training
        and 0.0 < module.p < 1.0
        and not module.inplace
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.numel() > 0
        and _dense(x)
        and _dropout_trusted(x, module.p)
    ):
        return _KernelDropout.apply(x, module.p)
    return nn.Dropout.forward(module, x)


def install(network: nn.Module) -> int:
    """Route the eligible convolutions to the kernels, the dropout layers (``nn.Dropout``,
    p > 0) to the Philox kernel, and the residual blocks' group norms and SiLUs (and the other
    group norms) to the fused kernel of :mod:`radardiff.models.norm_kernel`, and the attention
    layers' query, key and value projections to one product
    (:mod:`radardiff.models.fused_attention`); returns how many convolutions.

    The layers keep their parameters and state dict; only their ``_conv_forward`` (a dropout
    layer's, a residual block's or a group norm's ``forward``, an attention layer's processor)
    changes.
    Call :func:`available` first: the kernels are compiled at the first call otherwise.
    """
    from radardiff.models import norm_kernel  # it imports this module

    norm_kernel.install(network)
    fused_attention.install(network)
    count = 0
    for module in network.modules():
        if eligible(module):
            module._conv_forward = functools.partial(_forward, module)  # type: ignore[method-assign]
            count += 1
        elif type(module) is nn.Dropout and module.p > 0:
            module.forward = functools.partial(_dropout_forward, module)  # type: ignore[method-assign]
    return count


def forget(network: nn.Module) -> None:
    """Drop the transformed weights kept for passes without gradients (about 3x the weights'
    memory); the next such pass transforms them again."""
    for module in network.modules():
        vars(module).pop("_radardiff_winograd", None)


def uninstall(network: nn.Module) -> None:
    """Undo :func:`install` (and drop the transformed weights kept)."""
    from radardiff.models import norm_kernel

    norm_kernel.uninstall(network)
    fused_attention.uninstall(network)
    forget(network)
    for module in network.modules():
        vars(module).pop("_conv_forward", None)
        if type(module) is nn.Dropout:
            vars(module).pop("forward", None)


def choose(
    requested: str,
    device: torch.device | str,
    fp32: bool,
    compiled: bool,
    option: str = "train.conv_kernels",
) -> tuple[bool, str]:
    """Whether to use the kernels, and why, from ``requested`` (auto, radardiff, torch).

    ``auto`` takes them on a CPU that computes in fp32 without torch.compile, where they compile
    and load; an explicit ``radardiff`` that cannot run there is refused in one line.
    """
    if requested not in CONV_KERNELS:
        raise ConfigError(f"{option}: one of {', '.join(CONV_KERNELS)}, got '{requested}'")
    if requested == "torch":
        return False, f"{option} = torch"
    device = torch.device(device)
    blocker = None
    if device.type != "cpu":
        blocker = f"they are CPU kernels and this runs on {device.type}"
    elif not fp32:
        blocker = "autocast is on (the kernels are fp32)"
    elif compiled:
        blocker = "torch.compile is on"
    else:
        ok, why = available()
        if not ok:
            blocker = why
    if blocker is None:
        return True, f"{option} = {requested}"
    if requested == "radardiff":
        raise ConfigError(f"{option} = radardiff cannot run: {blocker}; use auto or torch")
    return False, f"{option} = auto; {blocker}"


def installed_dropouts(network: nn.Module) -> int:
    """How many dropout layers of ``network`` :func:`install` put on the Philox kernel."""
    return sum(type(m) is nn.Dropout and "forward" in vars(m) for m in network.modules())


def describe(
    used: bool, count: int, why: str, dropouts: int = 0, blocks: int = 0, attentions: int = 0
) -> str:
    """The log line of the choice (``dropouts``: how many dropout layers run on the kernel,
    ``blocks``: how many residual blocks have their group norms and SiLUs fused,
    ``attentions``: how many attention layers project q, k, v in one product)."""
    if used:
        drop = f"; dropout: Philox4x32-10 masks, {dropouts} layers" if dropouts else ""
        norms = f"; group norm + SiLU fused, {blocks} residual blocks" if blocks else ""
        qkv = f"; attention: q, k, v in one product, {attentions} layers" if attentions else ""
        return (
            f"convolutions: radardiff's AVX2 kernels (3x3: Winograd F(4x4, 3x3), forward and "
            f"both gradients; 1x1: matrix products), {count} layers{drop}{norms}{qkv} ({why})"
        )
    return f"convolutions: torch's ({why})"
