"""Every radardiff kernel over batches of 1-3 images x 1-2 threads x both layouts, against torch
(float64 where torch's float32 is itself inexact), and the self-check that keeps a kernel bug
out of any output (:mod:`radardiff.accel.selfcheck`).

A batch with fewer images than threads once left the channels-last group norm's only image to
a thread that skipped it: ``sample --n 1`` wrote all-NaN images.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from radardiff.accel import conv as kconv
from radardiff.accel import dropout as kdrop
from radardiff.accel import library as klib
from radardiff.accel import modules as kmod
from radardiff.accel import norm as knorm
from radardiff.accel import selfcheck

OK, WHY = klib.available()
pytestmark = pytest.mark.skipif(not OK, reason=f"the kernels cannot run here: {WHY}")
CL = torch.channels_last
MATRIX = [(n, t, layout) for n in (1, 2, 3) for t in (1, 2) for layout in ("nchw", "cl")]
IDS = [f"n{n}-t{t}-{layout}" for n, t, layout in MATRIX]


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _lay(x: torch.Tensor, layout: str) -> torch.Tensor:
    return x.contiguous(memory_format=CL if layout == "cl" else torch.contiguous_format)


def _close(got: torch.Tensor, want: torch.Tensor, rel: float) -> None:
    """Within ``rel`` of the largest value of ``want`` (every element, NaN failing)."""
    largest = want.double().abs().max().item()
    worst = (got.double() - want.double()).abs().max().item()
    assert worst <= rel * largest, (worst, largest)


def _data(n, ci, co, size, layout, seed):
    g = torch.Generator().manual_seed(seed)
    x = _lay(torch.randn(n, ci, size, size, generator=g), layout)
    gy = _lay(torch.randn(n, co, size, size, generator=g), layout)
    return x, gy, g


@pytest.mark.parametrize("n,t,layout", MATRIX, ids=IDS)
def test_conv3x3_forward_residual_and_both_gradients(n, t, layout, threads):
    threads(t)
    x, gy, g = _data(n, 16, 32, 9, layout, seed=n + 10 * t)
    w = torch.randn(32, 16, 3, 3, generator=g) / 12
    b, res = torch.randn(32, generator=g), _lay(torch.randn(n, 32, 9, 9, generator=g), layout)
    u = kconv.winograd_weight(w, threads=t)
    ref = F.conv2d(x.double(), w.double(), b.double(), padding=1)
    _close(kconv.winograd_conv(x, u, 32, b, threads=t), ref, 1e-5)
    _close(kconv.winograd_conv(x, u, 32, b, threads=t, residual=res), ref + res, 1e-5)
    dx = torch.nn.grad.conv2d_input(x.shape, w.double(), gy.double(), padding=1)
    _close(kconv.input_grad(gy, w), dx, 1e-5)
    dw = torch.nn.grad.conv2d_weight(x.double(), w.shape, gy.double(), padding=1)
    _close(kconv.weight_grad(x, gy, threads=t), dw, 1e-5)


@pytest.mark.parametrize("n,t,layout", MATRIX, ids=IDS)
def test_conv1x1_forward_and_both_gradients(n, t, layout, threads):
    threads(t)
    x, gy, g = _data(n, 16, 24, 7, layout, seed=n + 10 * t)
    w, b = torch.randn(24, 16, 1, 1, generator=g) / 4, torch.randn(24, generator=g)
    _close(kconv.conv1x1(x, w, b, threads=t), F.conv2d(x.double(), w.double(), b.double()), 1e-6)
    dx = torch.nn.grad.conv2d_input(x.shape, w.double(), gy.double())
    _close(kconv.conv1x1_input_grad(gy, w), dx, 1e-6)
    dw = torch.nn.grad.conv2d_weight(x.double(), w.shape, gy.double())
    _close(kconv.conv1x1_weight_grad(x, gy, threads=t), dw, 1e-6)


@pytest.mark.parametrize("silu", [True, False])
@pytest.mark.parametrize("n,t,layout", MATRIX, ids=IDS)
def test_group_norm_forward_and_backward(n, t, layout, silu, threads):
    threads(t)
    x, gy, g = _data(n, 32, 32, 6, layout, seed=n + 10 * t + silu)
    x = x * 3 + 2
    a, b = torch.randn(n, 32, generator=g), torch.randn(n, 32, generator=g)
    y, mean, rstd = knorm.forward(x, 8, a, b, silu=silu, threads=t)
    want_y, want_mean, want_rstd = knorm.reference_forward(x.double(), 8, a, b, silu=silu)
    _close(y, want_y, 1e-5)
    _close(mean, want_mean, 1e-6)
    _close(rstd, want_rstd, 1e-6)
    dx, da, db = knorm.backward(x, gy, 8, a, b, mean, rstd, silu=silu, threads=t)
    want = knorm.reference_backward(x.double(), gy.double(), 8, a.double(), b.double(),
                                          silu=silu)  # fmt: skip
    for got, w in zip((dx, da, db), want, strict=True):
        _close(got, w, 1e-5)


@pytest.mark.parametrize("n,t,layout", MATRIX, ids=IDS)
def test_dropout_masks_have_their_form_and_law(n, t, layout, threads):
    threads(t)
    x, _, _ = _data(n, 16, 16, 32, layout, seed=n + 10 * t)
    y = kdrop.dropout_mask_apply(x, 0.3, seed=1234 + n, threads=t)
    ok, detail = kdrop.dropout_looks_right(x, y, 0.3)
    assert ok, detail
    assert y.stride() == x.stride()
    # a function of the seed and the position alone: the thread count changes nothing
    torch.testing.assert_close(y, kdrop.dropout_mask_apply(x, 0.3, 1234 + n, threads=1),
                               rtol=0, atol=0)  # fmt: skip


def test_the_form_check_catches_what_dropout_never_gives():
    x = torch.randn(4, 16, 16, 16)
    assert not kdrop.dropout_looks_right(x, x * 1.5, 0.3)[0]  # nothing dropped
    assert not kdrop.dropout_looks_right(x, torch.zeros_like(x), 0.3)[0]  # all dropped
    y = F.dropout(x, 0.3)
    assert kdrop.dropout_looks_right(x, y, 0.3)[0]


@pytest.fixture
def fresh_verdicts():
    selfcheck.forget()
    yield
    selfcheck.forget()


def _network():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.GroupNorm(8, 32),
                        nn.Conv2d(32, 16, 1), nn.Dropout(0.2))  # fmt: skip
    kmod.install(net)
    return net


def test_a_broken_kernel_is_caught_at_first_use_and_torch_is_used(
    fresh_verdicts, monkeypatch, caplog
):
    """A kernel that returns wrong values (as the group norm once did for one image on two
    threads) is found by the first call on its signature: torch's result is returned then and
    at every later call of that signature, with one warning; other signatures keep the kernel."""
    net = _network()
    x = torch.randn(1, 16, 8, 8).contiguous(memory_format=CL)
    with torch.no_grad():
        want = nn.Sequential(*[m for m in net][:3])  # the same modules on torch's path
        kmod.uninstall(want)
        reference = want(x).clone()
    kmod.install(net)
    calls = []
    real = knorm.forward

    def broken(x, *args, **kwargs):
        y, mean, rstd = real(x, *args, **kwargs)
        calls.append(1)
        return y + 7.0, mean, rstd

    monkeypatch.setattr(knorm, "forward", broken)
    net.eval()
    with caplog.at_level(logging.WARNING, logger="radardiff"), torch.no_grad():
        first = net[:3](x)
        second = net[:3](x)
    torch.testing.assert_close(first, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(second, reference, rtol=1e-5, atol=1e-5)
    assert len(calls) == 1  # checked once; torch's path for that signature afterwards
    warnings = [r for r in caplog.records if "disagreed with torch" in r.getMessage()]
    assert len(warnings) == 1 and "group norm" in warnings[0].getMessage()
    # another signature (two images) is checked on its own, and fails on its own too
    with torch.no_grad():
        net[:3](torch.randn(2, 16, 8, 8).contiguous(memory_format=CL))
    assert len(calls) == 2


def test_a_broken_gradient_kernel_is_caught_in_training(fresh_verdicts, monkeypatch):
    net = _network()
    real = kconv.weight_grad
    monkeypatch.setattr(kconv, "weight_grad", lambda x, g, **k: real(x, g, **k) * 0)
    x = torch.randn(2, 16, 8, 8)
    net[0](x).square().sum().backward()
    got = net[0].weight.grad.clone()
    kmod.uninstall(net)
    net[0].weight.grad = None
    net[0](x).square().sum().backward()
    _close(got, net[0].weight.grad, 1e-5)


def test_a_right_kernel_passes_its_check_and_is_used(fresh_verdicts, monkeypatch):
    net = _network()
    used = []
    real = kconv.winograd_conv
    monkeypatch.setattr(kconv, "winograd_conv", lambda *a, **k: used.append(1) or real(*a, **k))
    net.eval()
    with torch.no_grad():
        for _ in range(3):
            net[0](torch.randn(3, 16, 8, 8))
    assert len(used) == 3 and selfcheck.checks_run == 1


def test_a_broken_dropout_kernel_falls_back_to_torchs(fresh_verdicts, monkeypatch):
    net = _network()
    monkeypatch.setattr(kdrop, "dropout_mask_apply", lambda x, p, seed, **k: x * 0 + 1)
    net.train()
    x = torch.randn(2, 16, 8, 8)
    y = net[3](x)
    assert kdrop.dropout_looks_right(x, y, 0.2)[0]
    assert selfcheck.verdict(selfcheck.signature("dropout", (x,), 0.2)) is False
