"""radardiff's kernels as torch custom operators, with their gradients registered.

Three operators in the ``radardiff`` namespace (``torch.ops.radardiff.*``), defined with
``torch.library.custom_op``: torch's own extension point for kernels it does not have. Each has
its autograd formula registered (``register_autograd``) and a fake implementation (shapes and
strides without computing, ``register_fake``) so that tracing tools see through it.

- ``conv(x, weight, u, bias, residual)``: ``residual + conv2d(x, weight, bias, padding=k // 2)``
  for a 3x3 weight (``u``: its Winograd transform, :func:`radardiff.accel.conv.winograd_weight`)
  or a 1x1 one (``u`` None; no residual);
- ``group_norm_act(x, a, b, groups, eps, silu)``: ``act(group_norm(x) * a + b)`` with ``a``,
  ``b`` per image and channel, and the group means and reciprocal standard deviations;
- ``dropout(x, p, seed)``: dropout with Philox masks of ``seed``.

Every operator and gradient checks its kernel against torch's computation of the same at the
first call on each signature (:mod:`radardiff.accel.selfcheck`) and uses torch's where they
disagree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from radardiff.accel import conv as kconv
from radardiff.accel import dropout as kdrop
from radardiff.accel import norm as knorm
from radardiff.accel import selfcheck


def _name(weight: Tensor) -> str:
    return "conv1x1" if weight.shape[-1] == 1 else "conv3x3"


@torch.library.custom_op("radardiff::conv", mutates_args=())
def conv(
    x: Tensor, weight: Tensor, u: Tensor | None, bias: Tensor | None, residual: Tensor | None
) -> Tensor:
    """``residual + conv2d(x, weight, bias, padding=k // 2)`` on the kernels (see the module
    docstring); checked against torch's at the first call on each signature."""

    def kernel() -> Tensor:
        if u is None:
            return kconv.conv1x1(x, weight, bias)
        if residual is None:
            return kconv.winograd_conv(x, u, weight.shape[0], bias)
        return kconv.winograd_conv(x, u, weight.shape[0], bias, residual=residual)

    def reference() -> Tensor:
        y = F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2)
        return y if residual is None else residual + y

    key = selfcheck.signature(_name(weight), (x, weight, bias, residual))
    return selfcheck.checked(key, kernel, reference)


@conv.register_fake
def _(x, weight, u, bias, residual):
    n, _, h, w = x.shape
    co = weight.shape[0]
    if u is None:
        layout = kconv.pointwise_layout(x, co)
    else:
        layout = kconv.winograd_layout(x, residual)
    return torch.empty((n, co, h, w), dtype=x.dtype, device=x.device, memory_format=layout)


def _conv_setup(ctx, inputs, output) -> None:
    x, weight, _, bias, _ = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _conv_backward(ctx, grad_out: Tensor):
    x, weight = ctx.saved_tensors
    need_x, need_w, _, need_b, need_r = ctx.needs_input_grad
    pad, name = weight.shape[-1] // 2, _name(weight)
    pointwise = weight.shape[-1] == 1
    grad_x = grad_w = grad_b = None
    if need_x:
        grad_x = selfcheck.checked(
            selfcheck.signature(f"{name} input gradient", (grad_out, weight)),
            lambda: (kconv.conv1x1_input_grad if pointwise else kconv.input_grad)(grad_out, weight),
            lambda: torch.nn.grad.conv2d_input(x.shape, weight, grad_out, padding=pad),
        )
    if need_w:
        grad_w = selfcheck.checked(
            selfcheck.signature(f"{name} weight gradient", (x, grad_out)),
            lambda: (kconv.conv1x1_weight_grad if pointwise else kconv.weight_grad)(x, grad_out),
            lambda: torch.nn.grad.conv2d_weight(x, weight.shape, grad_out, padding=pad),
        )
        # in the weight's own strides (a 1x1 weight's size-1 dimensions' too)
        grad_w = torch.empty_like(weight).copy_(grad_w)
    if ctx.has_bias and need_b:
        # a sum by itself: asking oneDNN's backward-data primitive for the bias gradient makes it
        # compute the weight gradient as well (docs/performance.md)
        grad_b = grad_out.sum((0, 2, 3))
    return grad_x, grad_w, None, grad_b, grad_out if need_r else None


conv.register_autograd(_conv_backward, setup_context=_conv_setup)


@torch.library.custom_op("radardiff::group_norm_act", mutates_args=())
def group_norm_act(
    x: Tensor, a: Tensor, b: Tensor, groups: int, eps: float, silu: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """``act(xhat * a + b)`` (act: SiLU, or the identity without ``silu``) for the
    group-normalized ``xhat`` of ``x``, ``a`` and ``b`` (N, C); with the (N, groups) means and
    reciprocal standard deviations; checked against torch's (float64) at first use."""
    key = selfcheck.signature("group norm", (x, a, b), groups, silu)
    return selfcheck.checked(
        key,
        lambda: knorm.forward(x, groups, a, b, eps, silu),
        lambda: knorm.reference_forward(x, groups, a, b, eps, silu),
    )


@group_norm_act.register_fake
def _(x, a, b, groups, eps, silu):
    stats = x.new_empty((x.shape[0], groups))
    return torch.empty_like(x), stats, torch.empty_like(stats)


def _gn_setup(ctx, inputs, output) -> None:
    x, a, b, groups, eps, silu = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, a, b, mean, rstd)
    ctx.groups, ctx.eps, ctx.silu = groups, eps, silu


def _gn_backward(ctx, grad_y: Tensor, grad_mean, grad_rstd):
    x, a, b, mean, rstd = ctx.saved_tensors
    key = selfcheck.signature("group norm backward", (x, grad_y, a, b), ctx.groups, ctx.silu)
    dx, da, db = selfcheck.checked(
        key,
        lambda: knorm.backward(x, grad_y, ctx.groups, a, b, mean, rstd, ctx.silu),
        lambda: knorm.reference_backward(x, grad_y, ctx.groups, a, b, ctx.eps, ctx.silu),
    )
    return dx, da, db, None, None, None


group_norm_act.register_autograd(_gn_backward, setup_context=_gn_setup)


@torch.library.custom_op("radardiff::dropout", mutates_args=())
def dropout(x: Tensor, p: float, seed: int) -> Tensor:
    """Dropout of ``x`` with the Philox mask of ``seed`` (:mod:`radardiff.accel.dropout`)."""
    return kdrop.dropout_mask_apply(x, p, seed)


@dropout.register_fake
def _(x, p, seed):
    return torch.empty_like(x)


def _dropout_setup(ctx, inputs, output) -> None:
    x, p, seed = inputs
    ctx.p, ctx.seed, ctx.shape, ctx.strides = p, seed, x.shape, x.stride()


def _dropout_backward(ctx, grad_out: Tensor):
    if grad_out.stride() != ctx.strides:  # the mask is over the input's storage order
        grad_out = torch.empty_strided(ctx.shape, ctx.strides).copy_(grad_out)
    return kdrop.dropout_mask_apply(grad_out, ctx.p, ctx.seed), None, None


dropout.register_autograd(_dropout_backward, setup_context=_dropout_setup)
