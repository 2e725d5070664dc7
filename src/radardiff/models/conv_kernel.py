"""radardiff's own weight gradient for the networks' 3x3 convolutions, on AVX2 CPUs in fp32.

A training step of the UNets here spends most of its time in oneDNN's convolutions, and of those
the weight gradient is the slowest: on the AVX2 EPYC this project runs on it reached 50-120
GFLOP/s against 135-155 for the forward pass, with the machine's FMA peak at 186 (2 cores). The
C kernel in ``kernels/conv3x3_wgrad.c`` computes it as a matrix product over every position: the
output gradient packed in panels of 6 output channels, the zero-bordered input in panels of 16
input channels, nine 6 x 16 tiles in registers per pair of panels, a few image rows at a time.
Its sums run in an order fixed by the shapes alone (never by the thread count), so training with
it stays deterministic and resumes bit-identically.

The kernel is C with AVX2 intrinsics and no torch headers. It is compiled at first use by the
system's C compiler (``$CC``, else ``cc`` or ``gcc``) into radardiff's cache directory
(``$RADARDIFF_CACHE``, else ``$XDG_CACHE_HOME/radardiff`` or ``~/.cache/radardiff``), named by a
hash of the source and the compiler, and loaded with ctypes; nothing is downloaded. The forward
pass and the input gradient stay oneDNN's.

:func:`install` puts it under the eligible ``nn.Conv2d`` layers of a network (3x3, stride 1,
zero padding 1, no dilation or groups, at least 16 input channels); such a layer uses it only
while it trains on the CPU in fp32 (no autocast), and calls oneDNN's convolution otherwise.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from radardiff.errors import ConfigError

SOURCE = Path(__file__).with_name("kernels") / "conv3x3_wgrad.c"
FLAGS = ("-O3", "-mavx2", "-mfma", "-fPIC", "-shared", "-pthread", "-std=c11")
CONV_WEIGHT_GRADS = ("auto", "radardiff", "torch")
MIN_IN_CHANNELS = 16


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
    """Compiles the kernel into ``target`` (atomically); the compiler's first error line, or None."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
    except OSError as err:
        raise KernelUnavailable(f"cannot write to the cache {target.parent}: {err}") from None
    try:
        out = subprocess.run(
            [cc, *flags, str(SOURCE), "-o", tmp], capture_output=True, text=True, timeout=300
        )
        if out.returncode != 0:
            return (out.stderr.strip().splitlines() or ["no message"])[0]
        os.replace(tmp, target)  # atomic: a concurrent build leaves one whole file
        return None
    except (OSError, subprocess.SubprocessError) as err:
        return str(err)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.cache
def library() -> ctypes.CDLL:
    """The compiled kernel, built on first use; :class:`KernelUnavailable` where it cannot be.

    It is built with OpenMP where the compiler has it: loaded after torch, it then shares the
    OpenMP runtime torch loaded (the same ``libgomp.so.1``), so it runs on torch's threads. With
    threads of its own it ran up to 2x slower inside a training step on 2 cores, where torch's
    idle threads spin for a while after each of torch's parallel regions. Without OpenMP it uses
    POSIX threads.
    """
    if not cpu_supported():
        raise KernelUnavailable(
            f"the CPU has no AVX2 (torch dispatches to {torch.backends.cpu.get_cpu_capability()})"
        )
    cc = c_compiler()
    if cc is None:
        raise KernelUnavailable("no C compiler found ($CC, cc or gcc)")
    source, compiler = SOURCE.read_bytes(), _compiler_id(cc).encode()
    first_error = None
    for flags in (FLAGS + ("-fopenmp",), FLAGS):
        key = hashlib.sha256(source + compiler + " ".join(flags).encode()).hexdigest()[:16]
        target = cache_dir() / f"conv3x3_wgrad-{key}.so"
        error = None if target.exists() else _build(cc, flags, target)
        if error is None:
            break
        first_error = first_error or error
    else:
        raise KernelUnavailable(f"{cc} could not compile {SOURCE.name}: {first_error}")
    return _declare(ctypes.CDLL(str(target)))


def available() -> tuple[bool, str]:
    """Whether the kernel runs here, and if not, why (one phrase)."""
    try:
        library()
    except KernelUnavailable as err:
        return False, str(err)
    return True, "AVX2 kernel"


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    fn = lib.radardiff_conv3x3_wgrad
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int] * 6
    return lib


def weight_grad(
    x: torch.Tensor,
    grad_out: torch.Tensor,
    threads: int | None = None,
    lib: ctypes.CDLL | None = None,
) -> torch.Tensor:
    """The weight gradient of ``conv2d(x, w, padding=1)`` for a 3x3 ``w``, given ``grad_out``.

    Both are 4-D fp32 CPU tensors of any strides, (N, Ci, H, W) and (N, Co, H, W). Returns a
    (Co, Ci, 3, 3) tensor in the channels-last layout. ``threads`` defaults to torch's count;
    ``lib`` to :func:`library`.
    """
    if x.dtype != torch.float32 or grad_out.dtype != torch.float32:
        raise TypeError(f"weight_grad takes fp32 tensors, got {x.dtype} and {grad_out.dtype}")
    if x.device.type != "cpu" or grad_out.device.type != "cpu":
        raise TypeError("weight_grad runs on the CPU")
    if (
        x.ndim != 4
        or grad_out.ndim != 4
        or (x.shape[0], *x.shape[2:]) != (grad_out.shape[0], *grad_out.shape[2:])
    ):
        raise ValueError(f"weight_grad: shapes {tuple(x.shape)} and {tuple(grad_out.shape)}")
    n, ci, h, w = x.shape
    co = grad_out.shape[1]
    out = torch.empty((co, 3, 3, ci), dtype=torch.float32)
    xs = (ctypes.c_long * 4)(*x.stride())
    gs = (ctypes.c_long * 4)(*grad_out.stride())
    rc = (lib or library()).radardiff_conv3x3_wgrad(
        x.data_ptr(), xs, grad_out.data_ptr(), gs, out.data_ptr(),
        n, h, w, ci, co, threads or torch.get_num_threads(),
    )  # fmt: skip
    if rc == 1:
        raise MemoryError("conv3x3 weight gradient: no memory for the packed panels")
    if rc != 0:
        raise RuntimeError(f"conv3x3 weight gradient failed (code {rc})")
    return out.permute(0, 3, 1, 2)


def input_grad(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The input gradient of ``conv2d(x, weight, padding=1)`` for a 3x3 ``weight``.

    In channels-last it is the forward convolution of ``grad_out`` with the flipped, transposed
    weight, which oneDNN runs faster than its backward-data primitive there (the 32 px recipe's
    128-channel layer at 32 px: 64 against 110 ms, batch 32, AVX2 EPYC); in NCHW the
    backward-data primitive is as fast or faster. (Asking that primitive for the bias gradient
    too makes oneDNN compute the weight gradient as well, 2.4x the time: the bias gradient is
    ``grad_out.sum`` instead.)
    """
    if grad_out.is_contiguous(memory_format=torch.channels_last) and not grad_out.is_contiguous():
        flipped = weight.flip((2, 3)).transpose(0, 1)
        return F.conv2d(grad_out, flipped.contiguous(memory_format=torch.channels_last), padding=1)
    return torch.ops.aten.convolution_backward(
        grad_out, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, False, False]
    )[0]


class _Conv3x3(torch.autograd.Function):
    """conv2d(x, w, b, padding=1) whose weight gradient is :func:`weight_grad`."""

    @staticmethod
    def forward(ctx, x, weight, bias):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, padding=1)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        grad_x = input_grad(grad_out, x, weight) if need_x else None
        grad_w = None
        if need_w:
            grad_w = weight_grad(x, grad_out).contiguous(memory_format=_layout(weight))
        grad_b = grad_out.sum((0, 2, 3)) if ctx.has_bias and need_b else None
        return grad_x, grad_w, grad_b


def _layout(t: torch.Tensor) -> torch.memory_format:
    if t.is_contiguous():
        return torch.contiguous_format
    return torch.channels_last


def eligible(module: nn.Module) -> bool:
    """A layer the kernel computes: 3x3, stride 1, zero padding 1, no dilation, no groups."""
    return (
        type(module) is nn.Conv2d
        and module.kernel_size == (3, 3)
        and module.stride == (1, 1)
        and module.padding == (1, 1)
        and module.dilation == (1, 1)
        and module.groups == 1
        and module.padding_mode == "zeros"
        and module.in_channels >= MIN_IN_CHANNELS
    )


def _forward(module: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias):
    if (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and weight.requires_grad
        and torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and x.ndim == 4
    ):
        return _Conv3x3.apply(x, weight, bias)
    return nn.Conv2d._conv_forward(module, x, weight, bias)


def install(network: nn.Module) -> int:
    """Route the eligible 3x3 convolutions' weight gradients to the kernel; returns how many.

    The layers keep their parameters and state dict; only their ``_conv_forward`` changes.
    Call :func:`available` first: the kernel is compiled at the first backward pass otherwise.
    """
    count = 0
    for module in network.modules():
        if eligible(module):
            module._conv_forward = functools.partial(_forward, module)  # type: ignore[method-assign]
            count += 1
    return count


def uninstall(network: nn.Module) -> None:
    """Undo :func:`install`."""
    for module in network.modules():
        if "_conv_forward" in vars(module):
            del module._conv_forward


def choose(
    requested: str,
    device: torch.device | str,
    fp32: bool,
    compiled: bool,
    option: str = "train.conv_weight_grad",
) -> tuple[bool, str]:
    """Whether training uses the kernel, and why, from ``requested`` (auto, radardiff, torch).

    ``auto`` takes it on a CPU that trains in fp32 without torch.compile, where it compiles and
    loads; an explicit ``radardiff`` that cannot run there is refused in one line.
    """
    if requested not in CONV_WEIGHT_GRADS:
        raise ConfigError(f"{option}: one of {', '.join(CONV_WEIGHT_GRADS)}, got '{requested}'")
    if requested == "torch":
        return False, f"{option} = torch"
    device = torch.device(device)
    blocker = None
    if device.type != "cpu":
        blocker = f"it is a CPU kernel and training runs on {device.type}"
    elif not fp32:
        blocker = "training runs with autocast (the kernel is fp32)"
    elif compiled:
        blocker = "train.compile is on"
    else:
        ok, why = available()
        if not ok:
            blocker = why
    if blocker is None:
        return True, f"{option} = {requested}"
    if requested == "radardiff":
        raise ConfigError(f"{option} = radardiff cannot run: {blocker}; use auto or torch")
    return False, f"{option} = auto; {blocker}"
