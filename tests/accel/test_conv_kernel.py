"""radardiff's AVX2 kernels for 3x3 convolutions (Winograd forward pass and input gradient,
direct weight gradient) and 1x1 convolutions (matrix products): values against float64
references over odd shapes and layouts,
independence from the thread count and from the rest of a batch, the autograd layer and the
inference path, which layers take them, when training and sampling use them, and the one-line
refusals."""

from __future__ import annotations

import logging
import os
import stat

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import tiny_run_config
from radardiff.accel import attention as kattn
from radardiff.accel import conv as kconv
from radardiff.accel import library as klib
from radardiff.accel import modules as kmod
from radardiff.accel import policy as kpolicy
from radardiff.errors import ConfigError
from radardiff.models import build_unet

OK, WHY = klib.available()
needs_kernel = pytest.mark.skipif(not OK, reason=f"the kernel cannot run here: {WHY}")
CL = torch.channels_last


def reference(x: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """The weight gradient in float64, by torch's own convolution backward."""
    w = torch.zeros(gy.shape[1], x.shape[1], 3, 3, dtype=torch.float64)
    return torch.ops.aten.convolution_backward(
        gy.double(), x.double(), w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
        [False, True, False],
    )[1]  # fmt: skip


def _pair(n, ci, co, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, ci, h, w, generator=g), torch.randn(n, co, h, w, generator=g)


@needs_kernel
@pytest.mark.parametrize(
    "n,ci,co,h,w",
    [
        (3, 20, 13, 7, 5),  # nothing a multiple of the 4 x 4 tile or the 6 x 16 register tile
        (2, 16, 6, 4, 4),  # exactly one tile
        (1, 17, 7, 1, 1),  # one pixel: only the centre tap sees data
        (2, 33, 20, 3, 40),  # one row of tiles
        (5, 1, 3, 6, 6),  # one input channel
        (4, 48, 64, 16, 16),
        (6, 20, 30, 30, 26),  # 336 tiles: two super-blocks (of 324), the last one short
    ],
)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
def test_weight_grad_equals_float64_reference(n, ci, co, h, w, layout):
    x, gy = _pair(n, ci, co, h, w)
    if layout == "channels_last":
        x, gy = x.contiguous(memory_format=CL), gy.contiguous(memory_format=CL)
    elif layout == "strided":  # views into larger tensors: every stride unusual
        x = torch.randn(n, ci * 2, h + 1, w * 2)[:, ::2, 1:, ::2].copy_(x)
        gy = torch.randn(n + 1, co, h, w).transpose(2, 3).contiguous().transpose(2, 3)[1:].copy_(gy)
    got = kconv.weight_grad(x, gy)
    assert got.shape == (co, ci, 3, 3) and got.dtype == torch.float32
    ref = reference(x, gy)
    # F(3x3, 4x4) in fp32: the transforms' rounding, a few 1e-6 of the largest value
    tol = 2e-5 * ref.abs().max().item()
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=tol)
    # the border taps see zero padding: at one pixel only the centre tap has a gradient
    if h == w == 1:
        assert got[:, :, [0, 0, 0, 1, 1, 2, 2, 2], [0, 1, 2, 0, 2, 0, 1, 2]].abs().max() <= tol


@needs_kernel
def test_weight_grad_does_not_depend_on_the_thread_count():
    """Each output tile's sum runs in one order whatever the thread count: bit-identical."""
    x, gy = _pair(6, 40, 25, 9, 11, seed=3)
    runs = [kconv.weight_grad(x, gy, threads=t) for t in (1, 2, 3, 7)]
    for other in runs[1:]:
        assert torch.equal(runs[0], other)


@needs_kernel
def test_weight_grad_refuses_what_it_does_not_compute():
    x, gy = _pair(2, 16, 8, 4, 4)
    with pytest.raises(TypeError, match="fp32"):
        kconv.weight_grad(x.double(), gy.double())
    with pytest.raises(ValueError, match="shapes"):
        kconv.weight_grad(x, gy[:, :, :3])
    with pytest.raises(ValueError, match="shapes"):
        kconv.weight_grad(x, gy[:1])


def conv_reference(x, w, b=None):
    """conv2d(x, w, b, padding=1) in float64."""
    return F.conv2d(x.double(), w.double(), None if b is None else b.double(), padding=1)


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """``t`` in the layout: NCHW, channels-last, or a view into a larger tensor (every stride
    unusual)."""
    if layout == "channels_last":
        return t.contiguous(memory_format=CL)
    if layout == "strided":
        n, c, h, w = t.shape
        return torch.randn(n, c * 2, h + 1, w * 2)[:, ::2, 1:, ::2].copy_(t)
    return t.contiguous()


WINO_SHAPES = [
    (3, 20, 37, 13, 7),  # nothing a multiple of the 4 x 4 tile, 8 lanes or 16 channels
    (2, 16, 16, 4, 4),  # exactly one tile
    (1, 17, 7, 1, 1),  # one pixel: only the centre tap sees data
    (2, 3, 5, 6, 9),  # fewer channels than a vector's lanes
    (8, 48, 64, 16, 16),  # more tiles than a block (36)
]


@needs_kernel
@pytest.mark.parametrize("n,ci,co,h,w", WINO_SHAPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
def test_winograd_conv_equals_float64_reference(n, ci, co, h, w, layout):
    g = torch.Generator().manual_seed(1)
    x = _layout(torch.randn(n, ci, h, w, generator=g), layout)
    wt, b = torch.randn(co, ci, 3, 3, generator=g), torch.randn(co, generator=g)
    for bias in (b, None):
        got = kconv.conv3x3(x, wt, bias)
        ref = conv_reference(x, wt, bias)
        assert got.shape == (n, co, h, w) and got.dtype == torch.float32
        # F(4x4, 3x3) in fp32: the transforms' rounding, a few 1e-6 of the largest output
        torch.testing.assert_close(got.double(), ref, rtol=0, atol=2e-5 * ref.abs().max().item())
        assert got.is_contiguous(
            memory_format=CL if layout == "channels_last" else torch.contiguous_format
        ) or (h * w == 1)


@needs_kernel
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
def test_input_grad_equals_float64_reference(layout):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 21, 9, 6, generator=g, dtype=torch.float64)
    w = torch.randn(18, 21, 3, 3, generator=g)
    gy = _layout(torch.randn(3, 18, 9, 6, generator=g), layout)
    ref = torch.ops.aten.convolution_backward(
        gy.double(), x, w.double(), None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
        [True, False, False],
    )[0]  # fmt: skip
    got = kconv.input_grad(gy, w)
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=2e-5 * ref.abs().max().item())
    # the transposed transform is the transform of the rotated, transposed weight, exactly
    rotated = w.flip((2, 3)).transpose(0, 1).contiguous()
    assert torch.equal(kconv.winograd_weight(w, transposed=True), kconv.winograd_weight(rotated))


@needs_kernel
def test_winograd_conv_depends_neither_on_threads_nor_on_the_batch():
    """A tile's sums run in one order whatever the thread count, the block it falls in or the
    other images of the batch: each image's output is bit-identical alone and in any batch."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 40, 11, 9, generator=g).contiguous(memory_format=CL)
    w, b = torch.randn(25, 40, 3, 3, generator=g), torch.randn(25, generator=g)
    u = kconv.winograd_weight(w)
    runs = [kconv.winograd_conv(x, u, 25, b, threads=t) for t in (1, 2, 3, 7)]
    for other in runs[1:]:
        assert torch.equal(runs[0], other)
    for i in (0, 4, 6):
        alone = kconv.winograd_conv(x[i : i + 1], u, 25, b)
        assert torch.equal(alone[0], runs[0][i])
    assert torch.equal(kconv.winograd_conv(x[2:5], u, 25, b), runs[0][2:5])


@needs_kernel
def test_winograd_refuses_what_it_does_not_compute():
    x = torch.randn(2, 16, 4, 4)
    with pytest.raises(TypeError, match="fp32"):
        kconv.winograd_weight(torch.randn(8, 16, 3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(Co, Ci, 3, 3\) weight"):
        kconv.winograd_weight(torch.randn(8, 16, 5, 5))
    u = kconv.winograd_weight(torch.randn(8, 16, 3, 3))
    with pytest.raises(ValueError, match="do not match"):
        kconv.winograd_conv(torch.randn(2, 15, 4, 4), u, 8)
    with pytest.raises(ValueError, match="do not match"):
        kconv.winograd_conv(x, u, 17)
    with pytest.raises(TypeError, match="fp32"):
        kconv.winograd_conv(x.double(), u, 8)

    with pytest.raises(ValueError, match="residual"):
        kconv.winograd_conv(x, u, 8, residual=torch.randn(2, 8, 4, 5))


@needs_kernel
@pytest.mark.parametrize("n,ci,co,h,w", [(3, 20, 37, 13, 7), (2, 16, 16, 4, 4), (8, 48, 64, 9, 16)])
@pytest.mark.parametrize("x_layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("r_layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("grad", [True, False])
def test_conv_residual_is_torchs_sum_bit_for_bit(n, ci, co, h, w, x_layout, r_layout, grad):
    """``conv_residual``'s sum made in the output transform: torch's ``r + conv(x)`` bit for
    bit, in torch's layout (the residual's where dense), with the same gradients."""
    torch.manual_seed(0)
    layer = nn.Conv2d(ci, co, 3, padding=1)
    kmod.install(layer)
    x0 = _layout(torch.randn(n, ci, h, w), x_layout)
    r0 = _layout(torch.randn(n, co, h, w), r_layout)
    gy = torch.randn(n, co, h, w)
    results = []
    for fused in (False, True):
        layer.zero_grad(set_to_none=True)
        x, r = x0.clone().requires_grad_(grad), r0.clone().requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            y = kmod._plus(layer, x, r) if fused else r + layer(x)
        grads = []
        if grad:
            (y * gy).sum().backward()
            grads = [x.grad, r.grad, layer.weight.grad, layer.bias.grad]
        results.append((y.detach(), grads))
    (y0, g0), (y1, g1) = results
    assert torch.equal(y1, y0) and y1.stride() == y0.stride()
    assert all(torch.equal(a, b) for a, b in zip(g0, g1, strict=True))


@needs_kernel
def test_conv_residual_falls_back_to_torchs_sum(monkeypatch):
    """Not on the kernels (uninstalled, a 1x1 layer, a hooked layer, a residual to broadcast,
    float64): torch's ``r + conv(x)``, and the fused kernel is not called."""
    calls = []
    real = kconv.winograd_conv
    monkeypatch.setattr(kconv, "winograd_conv", lambda *a, **k: calls.append(k) or real(*a, **k))
    torch.manual_seed(0)
    x, r = torch.randn(2, 16, 6, 6), torch.randn(2, 16, 6, 6)
    plain, pointwise, hooked, installed = (
        nn.Conv2d(16, 16, k, padding=k // 2) for k in (3, 1, 3, 3)
    )
    for layer in (pointwise, hooked, installed):
        kmod.install(layer)
    hooked.register_forward_hook(lambda *_: None)
    with torch.no_grad():
        for layer, xi, ri in (
            (plain, x, r),
            (pointwise, x, r),
            (hooked, x, r),
            (installed, x, r[:, :1]),
        ):
            assert torch.equal(kmod._plus(layer, xi, ri), ri + layer(xi))
        double = nn.Conv2d(16, 16, 3, padding=1).double()
        kmod.install(double)
        xd, rd = x.double(), r.double()
        assert torch.equal(kmod._plus(double, xd, rd), rd + double(xd))
    assert not any("residual" in k for k in calls)
    with torch.no_grad():
        kmod._plus(installed, x, r)
    assert calls[-1].get("residual") is r  # the check above can fail


POINTWISE_SHAPES = [
    (3, 20, 37, 13, 7),  # nothing a multiple of the 6 x 16 tile or of 8 lanes
    (2, 16, 16, 4, 4),  # exactly one tile of positions
    (1, 17, 7, 1, 1),  # one pixel
    (2, 3, 5, 6, 9),  # fewer channels than a vector's lanes
    (2, 40, 24, 9, 50),  # more positions than a strip (64) or a unit (48)
    (1, 64, 1, 5, 5),  # one output channel
]


@needs_kernel
@pytest.mark.parametrize("n,ci,co,h,w", POINTWISE_SHAPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
def test_conv1x1_and_its_gradients_equal_float64_reference(n, ci, co, h, w, layout):
    g = torch.Generator().manual_seed(4)
    x = _layout(torch.randn(n, ci, h, w, generator=g), layout)
    gy = _layout(torch.randn(n, co, h, w, generator=g), layout)
    wt, b = torch.randn(co, ci, 1, 1, generator=g), torch.randn(co, generator=g)
    for bias in (b, None):
        got = kconv.conv1x1(x, wt, bias)
        ref = F.conv2d(x.double(), wt.double(), None if bias is None else bias.double())
        assert got.shape == (n, co, h, w) and got.dtype == torch.float32
        torch.testing.assert_close(got.double(), ref, rtol=0, atol=2e-6 * ref.abs().max().item())
        assert got.is_contiguous(
            memory_format=CL if layout == "channels_last" and co > 1 else torch.contiguous_format
        ) or (h * w == 1)
    ref_x, ref_w = torch.ops.aten.convolution_backward(
        gy.double(), x.double(), wt.double(), None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
        [True, True, False],
    )[:2]  # fmt: skip
    got_x = kconv.conv1x1_input_grad(gy, wt)
    torch.testing.assert_close(got_x.double(), ref_x, rtol=0, atol=2e-6 * ref_x.abs().max().item())
    got_w = kconv.conv1x1_weight_grad(x, gy)
    assert got_w.shape == (co, ci, 1, 1)
    torch.testing.assert_close(got_w.double(), ref_w, rtol=0, atol=2e-6 * ref_w.abs().max().item())


@needs_kernel
def test_conv1x1_depends_neither_on_threads_nor_on_the_batch():
    """Each output's sum runs over the input channels in their order, whatever the thread count
    or the other images; the weight gradient's over the images and chunks of positions."""
    g = torch.Generator().manual_seed(6)
    for layout in ("nchw", "channels_last"):
        x = _layout(torch.randn(7, 40, 11, 13, generator=g), layout)
        w, b = torch.randn(25, 40, 1, 1, generator=g), torch.randn(25, generator=g)
        runs = [kconv.conv1x1(x, w, b, threads=t) for t in (1, 2, 3, 7)]
        for other in runs[1:]:
            assert torch.equal(runs[0], other)
        for i in (0, 4, 6):
            assert torch.equal(kconv.conv1x1(x[i : i + 1], w, b)[0], runs[0][i])
    x, gy = _pair(5, 21, 26, 23, 17, seed=7)  # 391 positions: chunks and an 8-lane tail
    grads = [kconv.conv1x1_weight_grad(x, gy, threads=t) for t in (1, 2, 3, 7)]
    for other in grads[1:]:
        assert torch.equal(grads[0], other)


@needs_kernel
def test_conv1x1_refuses_what_it_does_not_compute():
    x = torch.randn(2, 16, 4, 4)
    with pytest.raises(TypeError, match="fp32"):
        kconv.conv1x1(x.double(), torch.randn(8, 16, 1, 1))
    with pytest.raises(ValueError, match=r"\(Co, Ci, 1, 1\) weight"):
        kconv.conv1x1(x, torch.randn(8, 16, 3, 3))
    with pytest.raises(ValueError, match="do not match"):
        kconv.conv1x1(x, torch.randn(8, 15, 1, 1))
    with pytest.raises(ValueError, match="shapes"):
        kconv.conv1x1_weight_grad(x, torch.randn(2, 8, 4, 3))


def _conv_pair(layout, bias=True, size=3):
    torch.manual_seed(0)
    plain = nn.Conv2d(24, 20, size, padding=size // 2, bias=bias)
    fast = nn.Conv2d(24, 20, size, padding=size // 2, bias=bias)
    fast.load_state_dict(plain.state_dict())
    if layout == "channels_last":
        plain, fast = plain.to(memory_format=CL), fast.to(memory_format=CL)
    assert kmod.install(fast).convolutions == 1
    return plain, fast


@needs_kernel
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("size", [3, 1])
def test_installed_layer_gives_torchs_output_and_gradients(layout, bias, size):
    plain, fast = _conv_pair(layout, bias, size)
    x = torch.randn(3, 24, 10, 9)
    if layout == "channels_last":
        x = x.contiguous(memory_format=CL)
    grads = []
    for layer in (plain, fast):
        xi = x.clone().requires_grad_()
        y = layer(xi)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        grads.append((y.detach(), xi.grad, layer.weight.grad, getattr(layer.bias, "grad", None)))
    (y0, gx0, gw0, gb0), (y1, gx1, gw1, gb1) = grads
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-5)
    assert y1.is_contiguous(
        memory_format=CL if layout == "channels_last" else torch.contiguous_format
    )
    torch.testing.assert_close(gx1, gx0, rtol=1e-5, atol=1e-5)
    # the Winograd weight gradient: within a few 1e-6 of the largest value
    torch.testing.assert_close(gw1, gw0, rtol=0, atol=2e-5 * gw0.abs().max().item())
    assert gw1.is_contiguous(
        memory_format=CL if layout == "channels_last" else torch.contiguous_format
    )
    if bias:
        torch.testing.assert_close(gb1, gb0, rtol=1e-5, atol=1e-5)
    assert fast.state_dict().keys() == plain.state_dict().keys()


def _counting(monkeypatch):
    """Counts the calls of the kernels' three entry points."""
    calls = {"conv": 0, "weight_grad": 0, "transform": 0}
    for name, key in (("winograd_conv", "conv"), ("weight_grad", "weight_grad"),
                      ("winograd_weight", "transform")):  # fmt: skip
        real = getattr(kconv, name)

        def counted(*a, real=real, key=key, **k):
            calls[key] += 1
            return real(*a, **k)

        monkeypatch.setattr(kconv, name, counted)
    return calls


@needs_kernel
def test_installed_layer_uses_the_kernels_in_fp32_training_and_inference(monkeypatch):
    """Training: forward, input gradient, weight gradient. Without gradients: the forward pass,
    with the weight transformed once until the weight changes, however it is changed. With a frozen weight that needs an
    input gradient, under autocast or uninstalled: torch's convolution."""
    plain, fast = _conv_pair("channels_last")
    calls = _counting(monkeypatch)
    x = torch.randn(2, 24, 6, 6).contiguous(memory_format=CL)
    fast(x.requires_grad_()).sum().backward()
    assert calls == {"conv": 2, "weight_grad": 1, "transform": 2}  # forward and input gradient
    with torch.no_grad():
        fast(x)
        fast(x)
    with torch.inference_mode():
        y = fast(x)
    assert calls == {"conv": 5, "weight_grad": 1, "transform": 3}  # one transform kept
    with torch.no_grad():
        torch.testing.assert_close(y, plain(x), rtol=1e-5, atol=1e-5)
        version = fast.weight._version
        fast.weight.data.mul_(2)  # in place, unseen by the version counter (as fused AdamW)
        assert fast.weight._version == version
        torch.testing.assert_close(fast(x), F.conv2d(x, fast.weight, fast.bias, padding=1),
                                   rtol=1e-5, atol=1e-5)  # fmt: skip
    assert calls == {"conv": 6, "weight_grad": 1, "transform": 4}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast(x).float().sum().backward()
    fast.weight.requires_grad_(False)
    fast(x).sum().backward()
    kmod.forget(fast)
    assert "_radardiff_winograd" not in vars(fast) and type(fast) is kmod.KernelConv2d
    with torch.no_grad():
        fast(x)  # transformed again
    assert calls == {"conv": 7, "weight_grad": 1, "transform": 5}
    kmod.uninstall(fast)
    assert "_radardiff_winograd" not in vars(fast)
    fast.weight.requires_grad_(True)
    fast(x).sum().backward()
    with torch.no_grad():
        fast(x)
    assert calls == {"conv": 7, "weight_grad": 1, "transform": 5}


@needs_kernel
def test_installed_1x1_layer_uses_the_kernel_in_fp32_training_and_inference(monkeypatch):
    """Training: forward and input gradient (products), weight gradient. Without gradients: the
    forward product. Under autocast: torch's convolution."""
    plain, fast = _conv_pair("nchw", size=1)
    calls = {"product": 0, "weight_grad": 0}
    for name, key in (("_pointwise", "product"), ("conv1x1_weight_grad", "weight_grad")):
        real = getattr(kconv, name)

        def counted(*a, real=real, key=key, **k):
            calls[key] += 1
            return real(*a, **k)

        monkeypatch.setattr(kconv, name, counted)
    x = torch.randn(2, 24, 6, 6)
    fast(x.requires_grad_()).sum().backward()
    assert calls == {"product": 2, "weight_grad": 1}
    with torch.inference_mode():
        y = fast(x)
        torch.testing.assert_close(y, plain(x), rtol=1e-5, atol=1e-5)
    assert calls == {"product": 3, "weight_grad": 1}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast(x).float().sum().backward()
    assert calls == {"product": 3, "weight_grad": 1}


def test_only_plain_3x3_and_1x1_stride_1_layers_are_eligible():
    for ok in (nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 32, 1), nn.Conv2d(64, 16, 1)):
        assert kmod.eligible_conv(ok), ok
    for layer in [
        nn.Conv2d(16, 16, 1, stride=2),
        nn.Conv2d(16, 16, 1, padding=1),
        nn.Conv2d(8, 16, 1),
        nn.Conv2d(16, 16, 3),  # no padding
        nn.Conv2d(16, 16, 3, padding=1, stride=2),
        nn.Conv2d(16, 16, 3, padding=2, dilation=2),
        nn.Conv2d(16, 16, 3, padding=1, groups=2),
        nn.Conv2d(16, 16, 3, padding=1, padding_mode="reflect"),
        nn.Conv2d(8, 16, 3, padding=1),  # too few input channels to pay
        nn.Conv2d(16, 8, 3, padding=1),  # too few output channels
        nn.Conv2d(64, 1, 3, padding=1),  # a network's last layer
        nn.Conv2d(16, 16, 5, padding=2),
    ]:
        assert not kmod.eligible_conv(layer), layer
    net = build_unet(tiny_run_config("x.h5", model={"base_channels": 16}).model, 1, False)
    expected = sum(kmod.eligible_conv(m) for m in net.modules())
    pointwise = sum(kmod.eligible_conv(m) and m.kernel_size == (1, 1) for m in net.modules())
    assert expected > pointwise > 0 and kmod.install(net).convolutions == expected
    kmod.uninstall(net)
    assert not any(type(m) is kmod.KernelConv2d for m in net.modules())


def test_choice_of_path(monkeypatch):
    choose = kpolicy.choose
    assert choose("torch", "cpu", True, False) == (False, "train.conv_kernels = torch")
    use, why = choose("auto", "cuda", True, False)
    assert not use and "CPU kernels" in why and "cuda" in why
    use, why = choose("auto", "cpu", False, False)
    assert not use and "autocast" in why
    use, why = choose("auto", "cpu", True, True)
    assert not use and "torch.compile" in why
    assert choose("torch", "cpu", True, False, "--conv-kernels") == (
        False,
        "--conv-kernels = torch",
    )
    with pytest.raises(ConfigError, match="train.conv_kernels = radardiff cannot run: torch.comp"):
        choose("radardiff", "cpu", True, True)
    with pytest.raises(ConfigError, match="one of auto, radardiff, torch"):
        choose("fast", "cpu", True, False)
    monkeypatch.setattr(kpolicy, "available", lambda: (False, "no C compiler found (x)"))
    assert choose("auto", "cpu", True, False) == (
        False,
        "train.conv_kernels = auto; no C compiler found (x)",
    )
    with pytest.raises(ConfigError, match=r"radardiff cannot run: no C compiler found"):
        choose("radardiff", "cpu", True, False)


@pytest.fixture
def fresh_library(monkeypatch, tmp_path):
    """library() rebuilt from scratch into a cache of the test's own."""
    monkeypatch.setenv("RADARDIFF_CACHE", str(tmp_path / "cache"))
    klib.library.cache_clear()
    yield tmp_path
    klib.library.cache_clear()


def test_no_compiler_is_one_line(fresh_library, monkeypatch):
    monkeypatch.setattr(klib, "cpu_supported", lambda: True)
    monkeypatch.setattr(klib, "c_compiler", lambda: None)
    ok, why = klib.available()
    assert not ok and why == "no C compiler found ($CC, cc or gcc)"


def test_failing_compiler_is_one_line_and_leaves_no_file(fresh_library, monkeypatch):
    fake = fresh_library / "badcc"
    fake.write_text("#!/bin/sh\necho 'fatal: no AVX2 here' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(klib, "cpu_supported", lambda: True)
    monkeypatch.setattr(klib, "c_compiler", lambda: str(fake))
    ok, why = klib.available()
    assert not ok and why.endswith(
        "could not compile conv3x3_wino.c, conv1x1.c, dropout.c, groupnorm.c: fatal: no AVX2 here"
    )
    assert "\n" not in why
    assert os.listdir(fresh_library / "cache") == []


def test_no_avx2_is_reported(fresh_library, monkeypatch):
    monkeypatch.setattr(klib, "cpu_supported", lambda: False)
    ok, why = klib.available()
    assert not ok and why.startswith("the CPU has no AVX2")


@needs_kernel
def test_compiled_once_into_the_cache(fresh_library):
    klib.library()
    built = sorted(os.listdir(fresh_library / "cache"))
    assert len(built) == 2 and built[1].startswith("conv-") and built[1].endswith(".so")
    assert built[0] == built[1].replace(".so", ".json")  # the marker, with the library's hash
    klib.library.cache_clear()
    mtime = os.stat(fresh_library / "cache" / built[1]).st_mtime_ns
    klib.library()  # found, not rebuilt
    assert os.stat(fresh_library / "cache" / built[1]).st_mtime_ns == mtime


@needs_kernel
def test_training_logs_its_choice(noise_files, tmp_path, caplog):
    from radardiff.train import train

    cfg = tiny_run_config(str(noise_files[0]), model={"base_channels": 16}, train={"steps": 1})
    with caplog.at_level(logging.INFO, logger="radardiff"):
        train(cfg, tmp_path / "a")
    assert "convolutions: radardiff's AVX2 kernels (3x3: Winograd" in caplog.text
    assert "(train.conv_kernels = auto)" in caplog.text
    assert "; group norm + SiLU fused, 8 residual blocks;" in caplog.text  # down 2, mid 2, up 4
    assert "; attention: q, k, v in one product, 4 layers;" in caplog.text  # down 2, mid, up 1
    assert "each checked against torch at its first call" in caplog.text
    caplog.clear()
    torch_cfg = tiny_run_config(str(noise_files[0]), train={"steps": 1, "conv_kernels": "torch"})
    with caplog.at_level(logging.INFO, logger="radardiff"):
        train(torch_cfg, tmp_path / "b")
    assert "convolutions: torch's (train.conv_kernels = torch)" in caplog.text


def test_explicit_kernel_with_compile_is_refused_before_the_run(noise_files, tmp_path):
    from radardiff.train import train

    cfg = tiny_run_config(str(noise_files[0]), train={"compile": True, "conv_kernels": "radardiff"})
    with pytest.raises(ConfigError, match="train.conv_kernels = radardiff cannot run"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_functional_conv_matches_layer():
    """The kernels' layer computes conv2d(x, w, b, padding=1), nothing else (where the kernels
    cannot run, by torch's convolution)."""
    layer = nn.Conv2d(16, 16, 3, padding=1)
    x = torch.randn(1, 16, 5, 5)
    assert kmod.install(layer).convolutions == 1
    with torch.no_grad():
        torch.testing.assert_close(
            layer(x), F.conv2d(x, layer.weight, layer.bias, padding=1), rtol=1e-5, atol=1e-5
        )


@needs_kernel
def test_training_with_the_kernel_follows_torch_and_resumes_bit_identically(noise_files, tmp_path):
    """Four steps with the kernels end where torch's end, up to float rounding (which AdamW's
    normalisation of near-zero gradients can amplify, for a few weights, to a step's change):
    without dropout, whose masks come from another generator on the kernels' path. Stopped at 2
    and resumed, with dropout, they end bit-identical to the unbroken run."""
    from safetensors.torch import load_file

    from radardiff.train import train

    def cfg(steps, path, dropout=0.1):
        return tiny_run_config(
            str(noise_files[0]),
            model={"base_channels": 16, "dropout": dropout},
            train={"steps": steps, "conv_kernels": path, "deterministic": True},
        )

    def weights(run, step=None):
        name = f"step_{step:07d}" if step else (run / "checkpoints/latest").read_text().strip()
        return load_file(
            run / "checkpoints" / name / "model" / "diffusion_pytorch_model.safetensors"
        )

    train(cfg(4, "radardiff"), tmp_path / "straight")
    train(cfg(2, "radardiff"), tmp_path / "resumed")
    train(cfg(4, "radardiff"), tmp_path / "resumed", resume=True)
    train(cfg(4, "radardiff", 0.0), tmp_path / "kernels")
    train(cfg(4, "torch", 0.0), tmp_path / "torch")
    a, b, kern, t = (weights(tmp_path / r) for r in ("straight", "resumed", "kernels", "torch"))
    far, total = 0, 0
    for key in a:
        assert torch.equal(a[key], b[key]), key
        diff = (kern[key] - t[key]).abs()
        # a gradient near zero can change sign under float rounding, and AdamW then moves that
        # weight the other way: at most 2 lr a step, for a handful of weights
        assert diff.max() <= 2 * 1e-3 * 4, key
        far += int((diff > 2e-4 + 1e-3 * t[key].abs()).sum())
        total += diff.numel()
    assert far <= 1e-3 * total, (far, total)
    moved = max((a[k] - weights(tmp_path / "straight", step=2)[k]).abs().max() for k in a)
    assert moved > 1e-3  # two steps of lr 1e-3 moved the weights: the comparisons have teeth


@needs_kernel
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("size", [3, 1])
def test_frozen_input_or_bias_still_gives_the_other_gradients(layout, size):
    """Only the gradients asked for are computed, each equal to torch's."""
    plain, fast = _conv_pair(layout, size=size)
    x = torch.randn(2, 24, 5, 6)
    if layout == "channels_last":
        x = x.contiguous(memory_format=CL)
    for layer in (plain, fast):
        layer.bias.requires_grad_(False)
        layer(x).square().sum().backward()  # x needs no gradient either
    assert fast.bias.grad is None
    # the loss squares the Winograd forward pass: its rounding carries into the gradient
    scale = plain.weight.grad.abs().max().item()
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, rtol=0, atol=2e-5 * scale)


@needs_kernel
def test_posix_thread_build_gives_the_openmp_builds_values(tmp_path):
    """Where the compiler has no OpenMP the kernel is built with POSIX threads: same sums."""
    import ctypes

    target = tmp_path / "plain.so"
    assert klib._build(klib.c_compiler(), klib.FLAGS, target) is None
    plain = klib._declare(ctypes.CDLL(str(target)))
    x, gy = _pair(4, 40, 19, 6, 9, seed=5)
    w = torch.randn(19, 40, 3, 3)
    u = kconv.winograd_weight(w)
    for threads in (1, 3):
        assert torch.equal(kconv.weight_grad(x, gy, threads, lib=plain), kconv.weight_grad(x, gy))
        assert torch.equal(kconv.winograd_weight(w, False, threads, lib=plain), u)
        assert torch.equal(
            kconv.winograd_conv(x, u, 19, threads=threads, lib=plain),
            kconv.winograd_conv(x, u, 19),
        )
        w1 = w[:, :, 1:2, 1:2]
        for layout in (torch.contiguous_format, CL):
            xl = x.contiguous(memory_format=layout)
            assert torch.equal(
                kconv.conv1x1(xl, w1, threads=threads, lib=plain), kconv.conv1x1(xl, w1)
            )
        assert torch.equal(
            kconv.conv1x1_weight_grad(x, gy, threads, lib=plain),
            kconv.conv1x1_weight_grad(x, gy),
        )


@needs_kernel
def test_trainer_puts_the_kernels_under_its_network_and_its_ema_networks(noise_files, tmp_path):
    """The EMA networks validate and sample without gradients: on the Winograd forward pass."""
    from radardiff.train.loop import Trainer

    def patched(network) -> int:
        return sum(type(m) is kmod.KernelConv2d for m in network.modules())

    for setting, expect in (("auto", True), ("torch", False)):
        cfg = tiny_run_config(
            str(noise_files[0]),
            model={"base_channels": 16, "dropout": 0.1},
            train={"conv_kernels": setting},
        )
        trainer = Trainer(cfg, tmp_path / setting)
        eligible = sum(kmod.eligible_conv(m) for m in trainer.ema.primary.modules())
        assert eligible > 0 and trainer.net.kernels is expect
        for network in (trainer.acc.unwrap_model(trainer.model), *trainer.ema.models):
            assert patched(network) == (eligible if expect else 0)
        dropouts = sum(isinstance(m, nn.Dropout) and m.p > 0 for m in trainer.ema.primary.modules())
        model = trainer.acc.unwrap_model(trainer.model)
        assert dropouts > 0 and kmod.installed(model).dropouts == (dropouts if expect else 0)
        blocks = sum(kmod.eligible_block(m) for m in model.modules())
        for network in (model, *trainer.ema.models):  # group norm + SiLU fused in each
            assert blocks > 0 and kmod.installed(network).blocks == (blocks if expect else 0)
        layers = sum(kattn.eligible(m) for m in model.modules())
        for network in (model, *trainer.ema.models):  # q, k, v in one product in each
            assert layers > 0 and kattn.installed(network) == (layers if expect else 0)
