"""Group normalization fused with the SiLU after it, on radardiff's AVX2 kernel (fp32 CPU).

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

:func:`install` gives the eligible ``ResnetBlock2D`` layers a forward pass of their own that uses
it (same parameters, same state dict; the division by ``output_scale_factor`` skipped where it
is 1), and every other ``nn.GroupNorm`` (attention's, the network's last) the kernel without the
SiLU. They fall back to diffusers' code for other inputs: not fp32 on the CPU, autocast,
strided (neither NCHW nor channels-last) or channels-last with channels not a multiple of 8.
Results differ from torch's by float rounding (about 1e-6 of the largest value): the
statistics are summed in another order (float over 64 positions a lane, then double), and
``a = x * (rstd A) + (B - mean rstd A)`` is rounded once.
"""

from __future__ import annotations

import ctypes
import functools

import torch
import torch.nn.functional as F
from diffusers.models.resnet import ResnetBlock2D
from torch import nn

from radardiff.models import conv_kernel, selfcheck


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
    rc = (lib or conv_kernel.library()).radardiff_gn_forward(
        x.data_ptr(), a.data_ptr(), b.data_ptr(), y.data_ptr(), mean.data_ptr(), rstd.data_ptr(),
        n, c, p, g, float(eps), layout, int(silu), threads or torch.get_num_threads(),
    )  # fmt: skip
    conv_kernel._raise_for(rc, "group_norm_act")
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
    rc = (lib or conv_kernel.library()).radardiff_gn_backward(
        x.data_ptr(), grad_out.data_ptr(), a.data_ptr(), b.data_ptr(), mean.data_ptr(),
        rstd.data_ptr(), dx.data_ptr(), s1.data_ptr(), s2.data_ptr(), n, c, p, g, layout,
        int(silu), threads or torch.get_num_threads(),
    )  # fmt: skip
    conv_kernel._raise_for(rc, "group_norm_act backward")
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


def checked_forward(x, groups, a, b, eps=1e-5, silu=True):
    """:func:`forward`, checked against :func:`reference_forward` on this signature at its
    first use in the process (:mod:`radardiff.models.selfcheck`)."""
    key = selfcheck.signature("group norm", (x, a, b), groups, silu)
    return selfcheck.checked(
        key,
        lambda: forward(x, groups, a, b, eps, silu),
        lambda: reference_forward(x, groups, a, b, eps, silu),
    )


class _GroupNormAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, a, b, groups, eps, silu):  # type: ignore[override]
        y, mean, rstd = checked_forward(x, groups, a, b, eps, silu)
        ctx.save_for_backward(x, a, b, mean, rstd)
        ctx.groups, ctx.silu, ctx.eps = groups, silu, eps
        return y

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, a, b, mean, rstd = ctx.saved_tensors
        key = selfcheck.signature("group norm backward", (x, grad_out, a, b), ctx.groups, ctx.silu)
        dx, da, db = selfcheck.checked(
            key,
            lambda: backward(x, grad_out, ctx.groups, a, b, mean, rstd, ctx.silu),
            lambda: reference_backward(x, grad_out, ctx.groups, a, b, ctx.eps, ctx.silu),
        )
        return dx, da, db, None, None, None


def group_norm_act(
    x: torch.Tensor,
    norm: nn.GroupNorm,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    silu: bool = True,
) -> torch.Tensor:
    """``act(norm(x) * (1 + scale) + shift)`` (``scale``, ``shift``: (N, C, 1, 1) or None), on
    the kernel where :func:`fits` ``x``, else by torch's operations."""
    if not fits(x):
        y = F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
        if scale is not None:
            y = y * (1 + scale) + shift
        return F.silu(y) if silu else y
    n, c = x.shape[:2]
    weight = norm.weight if norm.affine else torch.ones(c)
    bias = norm.bias if norm.affine else torch.zeros(c)
    if scale is None:
        a, b = weight.expand(n, c), bias.expand(n, c)
    else:
        factor = 1 + scale.reshape(n, c)
        a, b = weight * factor, bias * factor + shift.reshape(n, c)
    if torch.is_grad_enabled() and (x.requires_grad or a.requires_grad or b.requires_grad):
        return _GroupNormAct.apply(x, a, b, norm.num_groups, norm.eps, silu)
    return checked_forward(x, norm.num_groups, a, b, norm.eps, silu)[0]


def _group_norm_forward(module: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    if fits(x):
        return group_norm_act(x, module, silu=False)
    return nn.GroupNorm.forward(module, x)


def eligible(block: nn.Module) -> bool:
    """A ``ResnetBlock2D`` whose forward pass :func:`install` replaces: no up- or downsampling
    inside, SiLU, affine group norms, and a ``default`` or ``scale_shift`` time embedding."""
    return (
        isinstance(block, ResnetBlock2D)
        and block.upsample is None
        and block.downsample is None
        and type(block.nonlinearity) is nn.SiLU
        and type(block.norm1) is nn.GroupNorm
        and type(block.norm2) is nn.GroupNorm
        and block.norm1.affine
        and block.norm2.affine
        and block.time_embedding_norm in ("default", "scale_shift")
    )


def _resnet_forward(block: ResnetBlock2D, input_tensor, temb, *args, **kwargs):
    """diffusers' ``ResnetBlock2D.forward`` for an :func:`eligible` block, its group norms and
    SiLUs on the kernel and its residual sum in the last convolution's output pass where that
    convolution is on the kernels too (:func:`conv_kernel.conv_residual`); diffusers' own where
    the input does not fit it."""
    if args or kwargs or not fits(input_tensor):
        return type(block).forward(block, input_tensor, temb, *args, **kwargs)
    hidden = block.conv1(group_norm_act(input_tensor, block.norm1))
    if block.time_emb_proj is not None:
        if not block.skip_time_act:
            temb = block.nonlinearity(temb)
        temb = block.time_emb_proj(temb)[:, :, None, None]
    if block.time_embedding_norm == "default":
        if temb is not None:
            hidden = hidden + temb
        hidden = group_norm_act(hidden, block.norm2)
    else:
        if temb is None:
            raise ValueError("`temb` should not be None when `time_embedding_norm` is scale_shift")
        scale, shift = torch.chunk(temb, 2, dim=1)
        hidden = group_norm_act(hidden, block.norm2, scale, shift)
    hidden = block.dropout(hidden)
    if block.conv_shortcut is not None:
        if block.training:
            input_tensor = input_tensor.contiguous()
        input_tensor = block.conv_shortcut(input_tensor)
    # input_tensor + conv2(hidden), the sum in the convolution kernel's output pass
    out = conv_kernel.conv_residual(block.conv2, hidden, input_tensor)
    return out if block.output_scale_factor == 1.0 else out / block.output_scale_factor


def install(network: nn.Module) -> int:
    """Put the eligible residual blocks, and the other group norms, on the kernel; returns how
    many residual blocks."""
    inside: set[int] = set()
    count = 0
    for module in network.modules():
        if eligible(module):
            module.forward = functools.partial(_resnet_forward, module)  # type: ignore[method-assign]
            inside.update((id(module.norm1), id(module.norm2)))
            count += 1
    for module in network.modules():
        if type(module) is nn.GroupNorm and id(module) not in inside:
            module.forward = functools.partial(_group_norm_forward, module)  # type: ignore[method-assign]
    return count


def uninstall(network: nn.Module) -> None:
    """Undo :func:`install`."""
    for module in network.modules():
        if isinstance(module, (ResnetBlock2D, nn.GroupNorm)):
            vars(module).pop("forward", None)


def installed(network: nn.Module) -> int:
    """How many residual blocks of ``network`` run on the kernel."""
    return sum(isinstance(m, ResnetBlock2D) and "forward" in vars(m) for m in network.modules())
