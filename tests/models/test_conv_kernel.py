"""radardiff's AVX2 weight-gradient kernel for 3x3 convolutions: values against a float64
reference over odd shapes and layouts, independence from the thread count, the autograd layer,
which layers take it, when training uses it, and the one-line refusals."""

from __future__ import annotations

import logging
import os
import stat

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import tiny_run_config
from radardiff.errors import ConfigError
from radardiff.models import build_unet, conv_kernel

OK, WHY = conv_kernel.available()
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
        (3, 20, 13, 7, 5),  # nothing a multiple of the 6 x 16 tile
        (2, 16, 6, 4, 4),  # exactly one tile
        (1, 17, 7, 1, 1),  # one pixel: only the centre tap sees data
        (2, 33, 20, 3, 40),  # a row longer than the kernel's block of positions
        (5, 1, 3, 6, 6),  # one input channel
        (4, 48, 64, 16, 16),
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
    got = conv_kernel.weight_grad(x, gy)
    assert got.shape == (co, ci, 3, 3) and got.dtype == torch.float32
    ref = reference(x, gy)
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=1e-5 * ref.abs().max().item())
    # the border taps see zero padding: at one pixel only the centre tap has a gradient
    if h == w == 1:
        assert got[:, :, [0, 0, 0, 1, 1, 2, 2, 2], [0, 1, 2, 0, 2, 0, 1, 2]].abs().max() == 0


@needs_kernel
def test_weight_grad_does_not_depend_on_the_thread_count():
    """Each output tile's sum runs in one order whatever the thread count: bit-identical."""
    x, gy = _pair(6, 40, 25, 9, 11, seed=3)
    runs = [conv_kernel.weight_grad(x, gy, threads=t) for t in (1, 2, 3, 7)]
    for other in runs[1:]:
        assert torch.equal(runs[0], other)


@needs_kernel
def test_weight_grad_refuses_what_it_does_not_compute():
    x, gy = _pair(2, 16, 8, 4, 4)
    with pytest.raises(TypeError, match="fp32"):
        conv_kernel.weight_grad(x.double(), gy.double())
    with pytest.raises(ValueError, match="shapes"):
        conv_kernel.weight_grad(x, gy[:, :, :3])
    with pytest.raises(ValueError, match="shapes"):
        conv_kernel.weight_grad(x, gy[:1])


def _conv_pair(layout, bias=True):
    torch.manual_seed(0)
    plain = nn.Conv2d(24, 20, 3, padding=1, bias=bias)
    fast = nn.Conv2d(24, 20, 3, padding=1, bias=bias)
    fast.load_state_dict(plain.state_dict())
    if layout == "channels_last":
        plain, fast = plain.to(memory_format=CL), fast.to(memory_format=CL)
    assert conv_kernel.install(fast) == 1
    return plain, fast


@needs_kernel
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("bias", [True, False])
def test_installed_layer_gives_torchs_output_and_gradients(layout, bias):
    plain, fast = _conv_pair(layout, bias)
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
    assert torch.equal(y0, y1)  # the forward pass is torch's own
    torch.testing.assert_close(gx1, gx0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw1, gw0, rtol=1e-5, atol=1e-5)
    assert gw1.is_contiguous(
        memory_format=CL if layout == "channels_last" else torch.contiguous_format
    )
    if bias:
        torch.testing.assert_close(gb1, gb0, rtol=1e-5, atol=1e-5)
    assert fast.state_dict().keys() == plain.state_dict().keys()


@needs_kernel
def test_installed_layer_uses_the_kernel_only_while_training_in_fp32(monkeypatch):
    """Without gradients, with a frozen weight or under autocast the layer is torch's conv."""
    _, fast = _conv_pair("nchw")
    calls = []
    real = conv_kernel.weight_grad
    monkeypatch.setattr(
        conv_kernel, "weight_grad", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    x = torch.randn(2, 24, 6, 6)
    fast(x).sum().backward()
    assert calls == [1]
    with torch.no_grad():
        fast(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast(x).float().sum().backward()
    fast.weight.requires_grad_(False)
    fast(x.requires_grad_()).sum().backward()
    assert calls == [1]
    conv_kernel.uninstall(fast)
    fast.weight.requires_grad_(True)
    fast(x).sum().backward()
    assert calls == [1]


def test_only_plain_3x3_stride_1_layers_are_eligible():
    ok = nn.Conv2d(16, 8, 3, padding=1)
    assert conv_kernel.eligible(ok)
    for layer in [
        nn.Conv2d(16, 8, 1),
        nn.Conv2d(16, 8, 3, padding=1, stride=2),
        nn.Conv2d(16, 8, 3, padding=2, dilation=2),
        nn.Conv2d(16, 8, 3, padding=1, groups=2),
        nn.Conv2d(16, 8, 3, padding=1, padding_mode="reflect"),
        nn.Conv2d(8, 8, 3, padding=1),  # too few input channels to pay
        nn.Conv2d(16, 8, 5, padding=2),
    ]:
        assert not conv_kernel.eligible(layer), layer
    net = build_unet(tiny_run_config("x.h5", model={"base_channels": 16}).model, 1, False)
    expected = sum(conv_kernel.eligible(m) for m in net.modules())
    assert expected > 0 and conv_kernel.install(net) == expected
    conv_kernel.uninstall(net)
    assert not any("_conv_forward" in vars(m) for m in net.modules())


def test_choice_of_training_path(monkeypatch):
    choose = conv_kernel.choose
    assert choose("torch", "cpu", True, False) == (False, "train.conv_weight_grad = torch")
    use, why = choose("auto", "cuda", True, False)
    assert not use and "CPU kernel" in why and "cuda" in why
    use, why = choose("auto", "cpu", False, False)
    assert not use and "autocast" in why
    use, why = choose("auto", "cpu", True, True)
    assert not use and "train.compile" in why
    with pytest.raises(ConfigError, match="train.compile is on"):
        choose("radardiff", "cpu", True, True)
    with pytest.raises(ConfigError, match="one of auto, radardiff, torch"):
        choose("fast", "cpu", True, False)
    monkeypatch.setattr(conv_kernel, "available", lambda: (False, "no C compiler found (x)"))
    assert choose("auto", "cpu", True, False) == (
        False,
        "train.conv_weight_grad = auto; no C compiler found (x)",
    )
    with pytest.raises(ConfigError, match=r"radardiff cannot run: no C compiler found"):
        choose("radardiff", "cpu", True, False)


@pytest.fixture
def fresh_library(monkeypatch, tmp_path):
    """library() rebuilt from scratch into a cache of the test's own."""
    monkeypatch.setenv("RADARDIFF_CACHE", str(tmp_path / "cache"))
    conv_kernel.library.cache_clear()
    yield tmp_path
    conv_kernel.library.cache_clear()


def test_no_compiler_is_one_line(fresh_library, monkeypatch):
    monkeypatch.setattr(conv_kernel, "cpu_supported", lambda: True)
    monkeypatch.setattr(conv_kernel, "c_compiler", lambda: None)
    ok, why = conv_kernel.available()
    assert not ok and why == "no C compiler found ($CC, cc or gcc)"


def test_failing_compiler_is_one_line_and_leaves_no_file(fresh_library, monkeypatch):
    fake = fresh_library / "badcc"
    fake.write_text("#!/bin/sh\necho 'fatal: no AVX2 here' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(conv_kernel, "cpu_supported", lambda: True)
    monkeypatch.setattr(conv_kernel, "c_compiler", lambda: str(fake))
    ok, why = conv_kernel.available()
    assert not ok and why.endswith("could not compile conv3x3_wgrad.c: fatal: no AVX2 here")
    assert "\n" not in why
    assert os.listdir(fresh_library / "cache") == []


def test_no_avx2_is_reported(fresh_library, monkeypatch):
    monkeypatch.setattr(conv_kernel, "cpu_supported", lambda: False)
    ok, why = conv_kernel.available()
    assert not ok and why.startswith("the CPU has no AVX2")


@needs_kernel
def test_compiled_once_into_the_cache(fresh_library):
    conv_kernel.library()
    built = os.listdir(fresh_library / "cache")
    assert len(built) == 1 and built[0].startswith("conv3x3_wgrad-") and built[0].endswith(".so")
    conv_kernel.library.cache_clear()
    mtime = os.stat(fresh_library / "cache" / built[0]).st_mtime_ns
    conv_kernel.library()  # found, not rebuilt
    assert os.stat(fresh_library / "cache" / built[0]).st_mtime_ns == mtime


@needs_kernel
def test_training_logs_its_choice(noise_files, tmp_path, caplog):
    from radardiff.train import train

    cfg = tiny_run_config(str(noise_files[0]), model={"base_channels": 16}, train={"steps": 1})
    with caplog.at_level(logging.INFO, logger="radardiff"):
        train(cfg, tmp_path / "a")
    assert "weight gradient: radardiff's AVX2 kernel" in caplog.text
    assert "(train.conv_weight_grad = auto)" in caplog.text
    caplog.clear()
    torch_cfg = tiny_run_config(
        str(noise_files[0]), train={"steps": 1, "conv_weight_grad": "torch"}
    )
    with caplog.at_level(logging.INFO, logger="radardiff"):
        train(torch_cfg, tmp_path / "b")
    assert "weight gradient: torch's (train.conv_weight_grad = torch)" in caplog.text


def test_explicit_kernel_with_compile_is_refused_before_the_run(noise_files, tmp_path):
    from radardiff.train import train

    cfg = tiny_run_config(
        str(noise_files[0]), train={"compile": True, "conv_weight_grad": "radardiff"}
    )
    with pytest.raises(ConfigError, match="train.conv_weight_grad = radardiff cannot run"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_functional_conv_matches_layer():
    """The kernel's layer computes conv2d(x, w, b, padding=1), nothing else."""
    layer = nn.Conv2d(16, 4, 3, padding=1)
    x = torch.randn(1, 16, 5, 5)
    conv_kernel.install(layer)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight, layer.bias, padding=1))


@needs_kernel
def test_training_with_the_kernel_follows_torch_and_resumes_bit_identically(noise_files, tmp_path):
    """Four steps with the kernel end where torch's end, up to float rounding (which AdamW's
    normalisation of near-zero gradients can amplify to a few per cent of a step's change); stopped
    at 2 and resumed, they end bit-identical to the unbroken run."""
    from safetensors.torch import load_file

    from radardiff.train import train

    def cfg(steps, path):
        return tiny_run_config(
            str(noise_files[0]),
            model={"base_channels": 16, "dropout": 0.1},
            train={"steps": steps, "conv_weight_grad": path, "deterministic": True},
        )

    def weights(run, step=None):
        name = f"step_{step:07d}" if step else (run / "checkpoints/latest").read_text().strip()
        return load_file(
            run / "checkpoints" / name / "model" / "diffusion_pytorch_model.safetensors"
        )

    train(cfg(4, "radardiff"), tmp_path / "straight")
    train(cfg(2, "radardiff"), tmp_path / "resumed")
    train(cfg(4, "radardiff"), tmp_path / "resumed", resume=True)
    train(cfg(4, "torch"), tmp_path / "torch")
    a, b, t = (weights(tmp_path / r) for r in ("straight", "resumed", "torch"))
    for key in a:
        assert torch.equal(a[key], b[key]), key
        torch.testing.assert_close(a[key], t[key], rtol=1e-3, atol=2e-4)
    moved = max((a[k] - weights(tmp_path / "straight", step=2)[k]).abs().max() for k in a)
    assert moved > 1e-3  # two steps of lr 1e-3 moved the weights: the comparisons have teeth


@needs_kernel
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_frozen_input_or_bias_still_gives_the_other_gradients(layout):
    """Only the gradients asked for are computed, each equal to torch's."""
    plain, fast = _conv_pair(layout)
    x = torch.randn(2, 24, 5, 6)
    if layout == "channels_last":
        x = x.contiguous(memory_format=CL)
    for layer in (plain, fast):
        layer.bias.requires_grad_(False)
        layer(x).square().sum().backward()  # x needs no gradient either
    assert fast.bias.grad is None
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, rtol=1e-5, atol=1e-5)


@needs_kernel
def test_posix_thread_build_gives_the_openmp_builds_values(tmp_path):
    """Where the compiler has no OpenMP the kernel is built with POSIX threads: same sums."""
    import ctypes

    target = tmp_path / "plain.so"
    assert conv_kernel._build(conv_kernel.c_compiler(), conv_kernel.FLAGS, target) is None
    plain = conv_kernel._declare(ctypes.CDLL(str(target)))
    x, gy = _pair(4, 40, 19, 6, 9, seed=5)
    for threads in (1, 3):
        assert torch.equal(
            conv_kernel.weight_grad(x, gy, threads, lib=plain), conv_kernel.weight_grad(x, gy)
        )
