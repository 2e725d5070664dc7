"""radardiff's 3x3 and 1x1 convolutions on the C kernels, fp32 CPU tensors in, tensors out.

* ``kernels/conv3x3_wino.c``: the forward pass by Winograd's F(4x4, 3x3) (36 multiplications per
  4 x 4 outputs and channel pair, against 144), the tiles a block at a time: input transform,
  36 matrix products with 6 tiles x 16 output channels in registers, output transform and bias.
  The input gradient is the same kernel on the output gradient with the weight rotated and
  transposed. The weight gradient is the same algorithm read the other way (F(3x3, 4x4)): each
  4x4 tile of the output gradient and the input tile under it transformed, 36 products per tile
  and channel pair summed over the tiles (a super-block of tiles at a time, each thread its own
  36th parts), the sums transformed into the kernel. Outputs and weight gradients are within
  float rounding of the transforms of the largest value (about 2e-5; the tests hold them to
  1e-5 of float64 references on small layers).
* ``kernels/conv1x1.c``: a 1x1 convolution is one matrix product per image, its input gradient
  the product with the transposed weight: 6 x 16 register tiles, over positions in NCHW (the
  input packed in strips of 16 positions) and over output channels in channels-last (the weight
  packed in panels of 16). Its NCHW weight gradient sums 3 x 4 channel pairs over 8 positions
  per lane; in channels-last that is one matrix product by torch.

All sum in an order fixed by the shapes alone (never by the thread count, nor, for the forward
passes, by the other images of a batch), so training stays deterministic and resumes
bit-identically, and a sample does not depend on its batch. Why these kernels, and what they
gained over oneDNN's on the machines measured: docs/performance.md.

These functions are the raw kernels (tests call them directly); networks reach them through the
custom operators of :mod:`radardiff.accel.ops`, which check them against torch at first use.
"""

from __future__ import annotations

import ctypes

import torch

from radardiff.accel.library import check, check_pair, library, raise_for, strides


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
    check_pair("weight_grad", x, grad_out)
    n, ci, h, w = x.shape
    co = grad_out.shape[1]
    out = torch.empty((co, 3, 3, ci), dtype=torch.float32)
    rc = (lib or library()).radardiff_conv3x3_wino_wgrad(
        x.data_ptr(), strides(x), grad_out.data_ptr(), strides(grad_out), out.data_ptr(),
        n, h, w, ci, co, threads or torch.get_num_threads(),
    )  # fmt: skip
    raise_for(rc, "conv3x3 weight gradient")
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
    check("winograd_weight", weight)
    if weight.ndim != 4 or weight.shape[2:] != (3, 3):
        raise ValueError(f"winograd_weight: a (Co, Ci, 3, 3) weight, got {tuple(weight.shape)}")
    if transposed:
        weight = weight.transpose(0, 1)
    co, ci = weight.shape[:2]
    u = torch.empty((36, -(-co // 16), ci, 16), dtype=torch.float32)
    rc = (lib or library()).radardiff_wino_weights(
        weight.data_ptr(), strides(weight), int(transposed), co, ci, u.data_ptr(),
        threads or torch.get_num_threads(),
    )  # fmt: skip
    raise_for(rc, "winograd_weight")
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
    check("winograd_conv", x, u, *extra)
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
    layout = winograd_layout(x, residual)
    y = torch.empty((n, out_channels, h, w), dtype=torch.float32, memory_format=layout)
    if residual is not None:
        if residual.shape != y.shape:
            raise ValueError(
                f"winograd_conv: residual {tuple(residual.shape)} for an output {tuple(y.shape)}"
            )
        if residual.stride() != y.stride():
            residual = torch.empty_like(y).copy_(residual)
    rc = (lib or library()).radardiff_conv3x3_wino_res(
        x.data_ptr(), strides(x), u.data_ptr(), None if bias is None else bias.data_ptr(),
        None if residual is None else residual.data_ptr(), y.data_ptr(), strides(y), n, h, w,
        ci, out_channels, threads or torch.get_num_threads(),
    )  # fmt: skip
    raise_for(rc, "winograd_conv")
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


def pointwise_layout(x: torch.Tensor, out_channels: int) -> torch.memory_format:
    """The layout of a 1x1 kernel's output: x's where the kernel reads it as it is (NCHW, or
    channels-last with more than one output channel), else NCHW (x is made contiguous)."""
    layout = _pointwise_layout(x)
    if layout is None or (layout == torch.channels_last and out_channels == 1):
        return torch.contiguous_format
    return layout


def winograd_layout(x: torch.Tensor, residual: torch.Tensor | None) -> torch.memory_format:
    """The layout of a Winograd kernel's output: channels-last where ``x`` is, else NCHW; the
    residual's where one is summed in (torch's sum takes the first term's layout)."""
    if residual is not None and dense(residual):
        return memory_layout(residual)
    if x.stride(1) == 1 and x.shape[1] > 1:
        return torch.channels_last
    return torch.contiguous_format


def _pointwise(x: torch.Tensor, a: torch.Tensor, bias, what: str, threads=None, lib=None):
    """``y[n] = a @ x[n] (+ bias)`` over the positions of each image, for an (M, K) ``a`` of any
    strides; y is channels-last where x is, else contiguous."""
    check(what, x, a, *([] if bias is None else [bias]))
    if x.ndim != 4 or a.ndim != 2 or a.shape[1] != x.shape[1]:
        raise ValueError(f"{what}: input {tuple(x.shape)} and weight {tuple(a.shape)} do not match")
    n, k, h, w = x.shape
    m = a.shape[0]
    layout = pointwise_layout(x, m)
    if _pointwise_layout(x) != layout:
        x = x.contiguous()
    if bias is not None:
        bias = bias.contiguous()
    y = torch.empty((n, m, h, w), dtype=torch.float32, memory_format=layout)
    rc = (lib or library()).radardiff_conv1x1(
        x.data_ptr(), strides(x), a.data_ptr(), a.stride(0), a.stride(1),
        None if bias is None else bias.data_ptr(), y.data_ptr(), strides(y), n, h, w, k, m,
        threads or torch.get_num_threads(),
    )  # fmt: skip
    raise_for(rc, what)
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
    check_pair("conv1x1_weight_grad", x, grad_out)
    n, ci, h, w = x.shape
    co = grad_out.shape[1]
    nchw = torch.contiguous_format
    if _pointwise_layout(x) == nchw and _pointwise_layout(grad_out) == nchw:
        out = torch.empty((co, ci), dtype=torch.float32)
        rc = (lib or library()).radardiff_conv1x1_wgrad(
            x.data_ptr(), strides(x), grad_out.data_ptr(), strides(grad_out), out.data_ptr(),
            n, h, w, ci, co, threads or torch.get_num_threads(),
        )  # fmt: skip
        raise_for(rc, "conv1x1 weight gradient")
    else:  # positions by channels: views where both are channels-last
        out = grad_out.permute(0, 2, 3, 1).reshape(-1, co).t() @ x.permute(0, 2, 3, 1).reshape(
            -1, ci
        )
    return out.view(co, ci, 1, 1)


def dense(x: torch.Tensor) -> bool:
    """Contiguous or channels-last: the storage holds each element once, with no gaps."""
    return x.is_contiguous() or (x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last))


def memory_layout(t: torch.Tensor) -> torch.memory_format:
    """NCHW where ``t`` is contiguous, else channels-last (for dense 4-D tensors)."""
    if t.is_contiguous():
        return torch.contiguous_format
    return torch.channels_last
