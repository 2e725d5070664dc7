"""radardiff's fused group norm + SiLU kernel: values and gradients against float64 references,
invariance to threads and batch, robustness, and the residual blocks it is installed under."""

from __future__ import annotations

import ctypes

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.resnet import ResnetBlock2D
from torch import nn

from conftest import tiny_run_config
from radardiff.accel import library as klib
from radardiff.accel import modules as kmod
from radardiff.accel import norm as knorm
from radardiff.models import build_unet

OK, WHY = klib.available()
needs_kernel = pytest.mark.skipif(not OK, reason=f"the kernel cannot run here: {WHY}")
CL = torch.channels_last

SHAPES = [  # (shape, groups): positions a multiple of 8, a tail, fewer than 8, one; 3-D
    ((3, 32, 8, 8), 8),
    ((2, 24, 5, 7), 6),
    ((2, 16, 2, 3), 4),
    ((3, 16, 1, 1), 2),
    ((2, 64, 20), 32),
]


def _layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "nchw":
        return x.contiguous()
    if x.ndim == 4:
        return x.contiguous(memory_format=CL)
    return x.transpose(1, 2).contiguous().transpose(1, 2)  # (N, C, L), channels contiguous


def _reference(x, groups, w, b, scale, shift, silu):
    y = F.group_norm(x, groups, w, b, 1e-5)
    if scale is not None:
        y = y * (1 + scale) + shift
    return F.silu(y) if silu else y


def _inputs(shape, seed, mean=2.0, std=3.0):
    g = torch.Generator().manual_seed(seed)
    n, c = shape[:2]
    tail = (1,) * (len(shape) - 2)
    x = torch.randn(shape, generator=g) * std + mean
    w, b = torch.randn(c, generator=g), torch.randn(c, generator=g)
    scale, shift = (
        torch.randn(n, c, *tail, generator=g) * 0.3,
        torch.randn(n, c, *tail, generator=g),
    )
    return x, w, b, scale, shift


def _norm(c, groups, w, b):
    norm = nn.GroupNorm(groups, c)
    norm.weight, norm.bias = nn.Parameter(w), nn.Parameter(b)
    return norm


@needs_kernel
@pytest.mark.parametrize("layout", ["nchw", "cl"])
@pytest.mark.parametrize("shape,groups", SHAPES)
@pytest.mark.parametrize("mode", ["silu", "scale_shift", "plain"])
def test_values_and_gradients_equal_float64_reference(shape, groups, layout, mode):
    silu, with_ss = mode != "plain", mode == "scale_shift"
    x, w, b, scale, shift = _inputs(shape, seed=len(shape) + groups)
    c = shape[1]
    if layout == "cl" and c % 8:
        pytest.skip("channels-last takes a multiple of 8 channels")
    xk = _layout(x.clone(), layout).requires_grad_()
    norm = _norm(c, groups, w.clone(), b.clone())
    sk, tk = scale.clone().requires_grad_(), shift.clone().requires_grad_()
    assert knorm.fits(xk)
    y = kmod.group_norm_act(xk, norm, sk if with_ss else None, tk if with_ss else None, silu)
    assert y.stride() == xk.stride()  # the input's layout
    ref_in = [v.double().requires_grad_() for v in (x, w, b, scale, shift)]
    ss = (ref_in[3], ref_in[4]) if with_ss else (None, None)
    ref = _reference(ref_in[0], groups, ref_in[1], ref_in[2], *ss, silu)
    gy = torch.randn(ref.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    y.backward(gy.float())
    ref.backward(gy)
    top = ref.abs().max().item()
    torch.testing.assert_close(y.double(), ref, rtol=0, atol=1e-6 * top)
    got = [xk.grad, norm.weight.grad, norm.bias.grad] + ([sk.grad, tk.grad] if with_ss else [])
    for ours, theirs in zip(got, [v.grad for v in ref_in], strict=False):
        torch.testing.assert_close(
            ours.double(), theirs, rtol=0, atol=2e-6 * theirs.abs().max().item()
        )


@needs_kernel
@pytest.mark.parametrize("layout", ["nchw", "cl"])
def test_statistics_hold_for_a_large_mean_and_a_constant_group(layout):
    """A mean 1e4 times the spread: the error is the float mean's rounding alone (the sums run
    about the group's first value, the variance about the mean; torch's channels-last group
    norm was off by 214 here). A constant group gives xhat = 0."""
    x, w, b, _, _ = _inputs((2, 16, 12, 12), seed=3, mean=1000.0, std=0.1)
    x[1, :4] = 5.0  # image 1's first group constant
    x = _layout(x, layout)
    y = kmod.group_norm_act(x, _norm(16, 4, w, b), silu=False)
    ref = _reference(x.double(), 4, w.double(), b.double(), None, None, False)
    _, mean, rstd = knorm.forward(x, 4, w, b, silu=False)
    half_ulp = (torch.tensor(1000.0).nextafter(torch.tensor(2000.0)) - 1000.0).item() / 2
    spread = torch.cat([rstd[0], rstd[1, 1:]]).max().item()  # the constant group aside
    bound = half_ulp * spread * w.abs().max().item() * 1.05
    assert 1e-4 < bound < 1e-3
    torch.testing.assert_close(y.double(), ref, rtol=0, atol=bound)
    torch.testing.assert_close(y[1, :4], b[:4, None, None].expand(4, 12, 12), rtol=0, atol=0)
    assert mean[1, 0].item() == 5.0 and rstd[1, 0].item() == pytest.approx(1e-5**-0.5, rel=1e-6)


@needs_kernel
@pytest.mark.parametrize("layout", ["nchw", "cl"])
def test_results_depend_neither_on_threads_nor_on_the_batch(layout):
    x, w, b, scale, shift = _inputs((5, 32, 9, 9), seed=11)
    x = _layout(x, layout)
    gy = _layout(torch.randn(x.shape), layout)
    a, bb = w * (1 + scale[:, :, 0, 0]), b * (1 + scale[:, :, 0, 0]) + shift[:, :, 0, 0]
    runs = []
    for threads in (1, 2, 3):
        y, mean, rstd = knorm.forward(x, 8, a, bb, threads=threads)
        runs.append((y, *knorm.backward(x, gy, 8, a, bb, mean, rstd, threads=threads)))
    for other in runs[1:]:
        assert all(torch.equal(p, q) for p, q in zip(runs[0], other, strict=True))
    alone, mean, rstd = knorm.forward(x[2:3].contiguous(memory_format=_fmt(x)), 8, a[2:3], bb[2:3])
    assert torch.equal(alone[0], runs[0][0][2])


def _fmt(x):
    return CL if x.ndim == 4 and not x.is_contiguous() else torch.contiguous_format


@needs_kernel
def test_what_the_kernel_does_not_take_goes_to_torch():
    x, w, b, _, _ = _inputs((2, 12, 6, 6), seed=2)
    norm = _norm(12, 3, w, b)
    strided = x[:, :, ::2]
    cl12 = x.contiguous(memory_format=CL)  # 12 channels: not a multiple of 8
    for v in (x.bfloat16(), strided, cl12):
        assert not knorm.fits(v)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not knorm.fits(x)
    ref = F.silu(norm(cl12))
    torch.testing.assert_close(kmod.group_norm_act(cl12, norm), ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="fp32 CPU NCHW or channels-last"):
        knorm.forward(strided, 3, w, b)
    with pytest.raises(ValueError, match="12 channels in 5 groups"):
        knorm.forward(x, 5, w, b)
    with pytest.raises(ValueError, match=r"a must be fp32 \(12,\) or \(2, 12\)"):
        knorm.forward(x, 3, w[:6], b)
    lib = klib.library()
    y = torch.empty(1)
    assert lib.radardiff_gn_forward(x.data_ptr(), w.data_ptr(), b.data_ptr(), y.data_ptr(),
                                    y.data_ptr(), y.data_ptr(), 2, 12, 36, 5, 1e-5, 0, 1, 1) == 2  # fmt: skip


def _block(time_norm: str, cin: int, cout: int, scale_factor: float = 1.0) -> ResnetBlock2D:
    torch.manual_seed(0)
    block = ResnetBlock2D(
        in_channels=cin, out_channels=cout, temb_channels=20, groups=8, dropout=0.0,
        time_embedding_norm=time_norm, output_scale_factor=scale_factor,
    )  # fmt: skip
    with torch.no_grad():  # group norms away from the identity
        for norm in (block.norm1, block.norm2):
            norm.weight.normal_(1.0, 0.3)
            norm.bias.normal_(0.0, 0.3)
    return block


@needs_kernel
@pytest.mark.parametrize("layout", ["nchw", "cl"])
@pytest.mark.parametrize(
    "time_norm,cin,cout,factor", [("scale_shift", 16, 16, 1.0), ("default", 16, 32, 2.0)]
)
def test_installed_block_gives_diffusers_outputs_and_gradients(
    layout, time_norm, cin, cout, factor
):
    plain, fast = _block(time_norm, cin, cout, factor), _block(time_norm, cin, cout, factor)
    assert kmod.eligible_block(fast)
    keys = set(fast.state_dict())
    assert kmod.install(fast).blocks == 1 and kmod.installed(fast).blocks == 1
    assert set(fast.state_dict()) == keys
    x = _layout(torch.randn(3, cin, 10, 10), layout)
    temb = torch.randn(3, 20)
    outs = []
    for block in (plain, fast):
        xi, ti = x.clone().requires_grad_(), temb.clone().requires_grad_()
        y = block(xi, ti)
        y.square().sum().backward()
        grads = [xi.grad, ti.grad] + [p.grad for p in block.parameters()]
        outs.append((y.detach(), grads))
        with torch.no_grad():
            outs[-1] += (block(x, temb),)
    (y0, g0, e0), (y1, g1, e1) = outs
    top = y0.abs().max().item()
    torch.testing.assert_close(y1, y0, rtol=0, atol=2e-6 * top)
    torch.testing.assert_close(e1, e0, rtol=0, atol=2e-6 * top)
    for a, b in zip(g1, g0, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * b.abs().max().item())
    kmod.uninstall(fast)
    assert kmod.installed(fast).blocks == 0 and torch.equal(fast(x, temb), plain(x, temb))


@needs_kernel
@pytest.mark.parametrize("layout", ["nchw", "cl"])
@pytest.mark.parametrize("cin,cout", [(16, 16), (16, 32)])
def test_block_on_the_kernels_adds_its_residual_in_the_convolution_bit_for_bit(
    monkeypatch, layout, cin, cout
):
    """With the convolutions on the kernels too, the residual sum is made in the last
    convolution's output pass: the block's output and gradients are those of torch's sum, bit
    for bit (dropout on, training and without gradients)."""
    block = _block("scale_shift", cin, cout)
    block.dropout.p = 0.25
    kmod.install(block)
    x = _layout(torch.randn(3, cin, 10, 10), layout)
    temb = torch.randn(3, 20)
    fused = kmod._plus
    residuals = []

    def counted(module, h, r):
        residuals.append(r.shape)
        return fused(module, h, r)

    outs = []
    for path in (lambda module, h, r: r + module(h), counted):
        monkeypatch.setattr(kmod, "_plus", path)
        block.zero_grad(set_to_none=True)
        torch.manual_seed(5)  # the dropout masks' seed
        xi, ti = x.clone().requires_grad_(), temb.clone().requires_grad_()
        y = block(xi, ti)
        y.square().sum().backward()
        with torch.no_grad():
            block.eval()
            e = block(x, temb)
            block.train()
        outs.append([y, e, xi.grad, ti.grad] + [p.grad for p in block.parameters()])
    assert residuals == [(3, cout, 10, 10)] * 2
    assert all(torch.equal(a, b) for a, b in zip(*outs, strict=True))


@needs_kernel
def test_block_falls_back_to_diffusers_outside_fp32_and_installs_only_where_eligible():
    block = _block("scale_shift", 16, 16)
    kmod.install(block)
    x, temb = torch.randn(2, 16, 6, 6), torch.randn(2, 20)
    calls = []
    original = knorm.forward
    try:
        knorm.forward = lambda *a, **k: calls.append(1) or original(*a, **k)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            block(x, temb)
        assert not calls
        block(x, temb)
        assert len(calls) == 2  # norm1 and norm2
    finally:
        knorm.forward = original
    up = ResnetBlock2D(in_channels=16, temb_channels=20, groups=8, up=True)
    assert not kmod.eligible_block(up) and kmod.install(up).blocks == 0
    assert type(up.norm1) is kmod.KernelGroupNorm  # plain group norms still take the kernel
    attn_norm = nn.GroupNorm(4, 16)
    kmod.install(attn_norm)
    torch.testing.assert_close(attn_norm(x), F.group_norm(x, 4, attn_norm.weight, attn_norm.bias),
                               rtol=0, atol=1e-5)  # fmt: skip


@needs_kernel
def test_network_install_counts_blocks_and_uninstall_restores(tmp_path):
    cfg = tiny_run_config("unused.h5", model={"base_channels": 16})
    net = build_unet(cfg.model, 1, False).eval()
    blocks = sum(isinstance(m, ResnetBlock2D) for m in net.modules())
    x, t = torch.randn(2, 1, cfg.model.image_size, cfg.model.image_size), torch.tensor([3, 700])
    with torch.no_grad():
        ref = net(x, t).sample
        kmod.install(net)
        assert kmod.installed(net).blocks == blocks > 0
        fast = net(x, t).sample
        kmod.uninstall(net)
        assert kmod.installed(net).blocks == 0
        assert not any(type(m) is kmod.KernelGroupNorm for m in net.modules())
        assert torch.equal(net(x, t).sample, ref)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-4 * ref.abs().max().item())


@needs_kernel
def test_posix_thread_build_gives_the_openmp_builds_values(tmp_path):
    target = tmp_path / "plain.so"
    assert klib._build(klib.c_compiler(), klib.FLAGS, target) is None
    plain = klib._declare(ctypes.CDLL(str(target)))
    x, w, b, _, _ = _inputs((3, 16, 7, 7), seed=4)
    for layout in ("nchw", "cl"):
        xl = _layout(x, layout)
        gy = _layout(torch.randn(x.shape), layout)
        y, mean, rstd = knorm.forward(xl, 4, w, b)
        ours = knorm.backward(xl, gy, 4, w, b, mean, rstd)
        for threads in (1, 3):
            y2, mean2, rstd2 = knorm.forward(xl, 4, w, b, threads=threads, lib=plain)
            assert torch.equal(y2, y) and torch.equal(mean2, mean) and torch.equal(rstd2, rstd)
            theirs = knorm.backward(xl, gy, 4, w, b, mean, rstd, threads=threads, lib=plain)
            assert all(torch.equal(p, q) for p, q in zip(ours, theirs, strict=True))
