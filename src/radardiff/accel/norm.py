"""Group normalization fused with the SiLU after it, on the C kernel (fp32 CPU).

A diffusers ``ResnetBlock2D`` runs ``GroupNorm -> SiLU -> conv`` twice, the second time with the
time embedding's per-image scale and shift between the two (``scale_shift``) or added before the
norm (``default``). torch computes that in four to six passes over the activation, each reading
or writing the whole tensor from memory: the group statistics, the normalization, the scale and
shift, the SiLU (and as many again backward, plus the SiLU's saved output). The kernel
(``kernels/groupnorm.c``) does a group of one image at a time while it is in cache: two passes
for the statistics, one for ``silu(xhat * A + B)`` with the scale and shift folded into the
per-image, per-channel ``A`` and ``B``; the backward pass recomputes the activation from the
input instead of storing it, two passes. Gradients of the weight, bias, scale and shift follow
from the kernel's per-channel sums through ``A`` and ``B`` (small (N, C) tensors, by autograd).

Results differ from torch's by float rounding (about 1e-6 of the largest value): the
statistics are summed in another order (float over 64 positions a lane, then double), and
``a = x * (rstd A) + (B - mean rstd A)`` is rounded once. :func:`reference_forward` and
:func:`reference_backward` are torch's computation of the same, in float64.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F

from radardiff.accel.library import library, raise_for


def _layout(x: torch.Tensor) -> int | None:
    """0 for (N, C, positions) with positions contiguous, 1 with channels contiguous (C a
    multiple of 8), None for any other tensor or layout."""
    if x.ndim not in (3, 4) or x.numel() == 0:
        return None
    if x.is_contiguous():
        return 0
    c = x.shape[1]
    if x.ndim == 3:
        dense = x.stride() == (x.shape[2] * c, 1, c)
    else:
        dense = x.is_contiguous(memory_format=torch.channels_last)
    return 1 if dense and c % 8 == 0 else None


def fits(x: torch.Tensor) -> bool:
    """Whether the kernel takes ``x``: fp32 on the CPU, NCHW or channels-last (see
    :func:`_layout`), outside autocast."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and _layout(x) is not None
    )


def _sizes(x: torch.Tensor, groups: int) -> tuple[int, int, int, int]:
    n, c = x.shape[:2]
    if c % groups:
        raise ValueError(f"group_norm_act: {c} channels in {groups} groups")
    return n, c, x.numel() // (n * c), groups


def _per_image(v: torch.Tensor, n: int, c: int, what: str) -> torch.Tensor:
    if v.shape not in ((c,), (n, c)) or v.dtype != torch.float32 or v.device.type != "cpu":
        raise ValueError(f"group_norm_act: {what} must be fp32 ({c},) or ({n}, {c}) on the CPU")
    return v.expand(n, c).contiguous()


def forward(
    x: torch.Tensor,
    groups: int,
    a: torch.Tensor,
    b: torch.Tensor,
    eps: float = 1e-5,
    silu: bool = True,
    threads: int | None = None,
    lib: ctypes.CDLL | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``act(xhat * a + b)`` for the group-normalized ``xhat`` of ``x`` (act: SiLU, or the
    identity without ``silu``), ``a`` and ``b`` (C,) or (N, C); with the (N, groups) means and
    reciprocal standard deviations. The result has ``x``'s layout."""
    layout = _layout(x) if x.dtype == torch.float32 and x.device.type == "cpu" else None
    if layout is None:
        raise ValueError(f"group_norm_act: an fp32 CPU NCHW or channels-last input, got "
                         f"{x.dtype} {tuple(x.shape)} strides {x.stride()}")  # fmt: skip
    n, c, p, g = _sizes(x, groups)
    a, b = _per_image(a, n, c, "a"), _per_image(b, n, c, "b")
    y = torch.empty_like(x)
    mean = torch.empty((n, g), dtype=torch.float32)
    rstd = torch.empty((n, g), dtype=torch.float32)
    rc = (lib or library()).radardiff_gn_forward(
        x.data_ptr(), a.data_ptr(), b.data_ptr(), y.data_ptr(), mean.data_ptr(), rstd.data_ptr(),
        n, c, p, g, float(eps), layout, int(silu), threads or torch.get_num_threads(),
    )  # fmt: skip
    raise_for(rc, "group_norm_act")
    return y, mean, rstd


def backward(
    x: torch.Tensor,
    grad_out: torch.Tensor,
    groups: int,
    a: torch.Tensor,
    b: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    silu: bool = True,
    threads: int | None = None,
    lib: ctypes.CDLL | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of :func:`forward`'s output with respect to ``x``, ``a`` and ``b`` ((N, C)
    each for the last two), given ``grad_out`` and the forward pass's statistics."""
    layout = _layout(x)
    n, c, p, g = _sizes(x, groups)
    if grad_out.shape != x.shape or grad_out.stride() != x.stride():
        grad_out = torch.empty_like(x).copy_(grad_out)
    a, b = _per_image(a, n, c, "a"), _per_image(b, n, c, "b")
    dx = torch.empty_like(x)
    s1 = torch.empty((n, c), dtype=torch.float32)
    s2 = torch.empty((n, c), dtype=torch.float32)
    rc = (lib or library()).radardiff_gn_backward(
        x.data_ptr(), grad_out.data_ptr(), a.data_ptr(), b.data_ptr(), mean.data_ptr(),
        rstd.data_ptr(), dx.data_ptr(), s1.data_ptr(), s2.data_ptr(), n, c, p, g, layout,
        int(silu), threads or torch.get_num_threads(),
    )  # fmt: skip
    raise_for(rc, "group_norm_act backward")
    return dx, s2, s1


def reference_forward(x, groups, a, b, eps=1e-5, silu=True):
    """torch's :func:`forward`: ``act(xhat * a + b)`` with the (N, groups) means and reciprocal
    standard deviations, ``a`` and ``b`` (C,) or (N, C); computed in float64 on an NCHW copy
    (torch's float32 channels-last group norm loses every digit of a group whose mean is large
    against its spread), returned in ``x``'s dtype."""
    n, c = x.shape[:2]
    tail = (1,) * (x.ndim - 2)
    x64 = x.contiguous().double()
    a = a.double().expand(n, c).reshape(n, c, *tail)
    b = b.double().expand(n, c).reshape(n, c, *tail)
    y = F.group_norm(x64, groups, eps=eps) * a + b
    var, mean = torch.var_mean(x64.reshape(n, groups, -1), dim=2, unbiased=False)
    y = F.silu(y) if silu else y
    return y.to(x.dtype), mean.to(x.dtype), torch.rsqrt(var + eps).to(x.dtype)


def reference_backward(x, grad_out, groups, a, b, eps=1e-5, silu=True):
    """torch's :func:`backward`: the gradients of :func:`reference_forward`'s output with
    respect to ``x``, ``a`` and ``b`` ((N, C) each for the last two), by autograd."""
    n, c = x.shape[:2]
    with torch.enable_grad():
        xr, ar, br = (
            v.detach().double().requires_grad_() for v in (x, a.expand(n, c), b.expand(n, c))
        )
        y = reference_forward(xr, groups, ar, br, eps, silu)[0]
        grads = torch.autograd.grad(y, (xr, ar, br), grad_out.double())
    return tuple(g.to(x.dtype) for g in grads)
