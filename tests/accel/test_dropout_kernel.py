"""radardiff's dropout kernel: Philox4x32-10 masks over the storage order, its backward the same
mask, and the layer it is installed under."""

from __future__ import annotations

import ctypes
import math

import pytest
import torch
from torch import nn

from radardiff.accel import dropout as kdrop
from radardiff.accel import library as klib
from radardiff.accel import modules as kmod

OK, WHY = klib.available()
needs_kernel = pytest.mark.skipif(not OK, reason=f"the kernel cannot run here: {WHY}")
CL = torch.channels_last
MASK32 = 2**32 - 1


def philox_reference(counter, key):
    """Philox4x32-10 from its definition (Salmon et al. 2011), in Python integers."""
    c, (k0, k1) = list(counter), key
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k0, p1 & MASK32, (p0 >> 32) ^ c[3] ^ k1, p0 & MASK32]
        k0, k1 = (k0 + 0x9E3779B9) & MASK32, (k1 + 0xBB67AE85) & MASK32
    return c


def kept_reference(n: int, p: float, seed: int) -> torch.Tensor:
    """Which of n elements the kernel keeps, from the layout stated in ``kernels/dropout.c``."""
    threshold = kdrop._dropout_threshold(p)
    key = (seed & MASK32, seed >> 32)
    words = {}
    kept = torch.empty(n, dtype=torch.bool)
    for i in range(n):
        b, r = divmod(i, 32)
        c = 8 * b + r % 8
        if c not in words:
            words[c] = philox_reference((c & MASK32, c >> 32, 0, 0), key)
        kept[i] = words[c][r // 8] >= threshold
    return kept


@needs_kernel
def test_philox_gives_the_published_known_answers():
    """Random123's known-answer vectors for Philox4x32-10, and the reference for other lanes."""
    known = [
        ((0, 0, 0, 0), (0, 0), [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
        ((MASK32,) * 4, (MASK32,) * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1],
        ),
    ]
    for counter, key, words in known:
        assert philox_reference(counter, key) == words
        lanes = kdrop.philox((counter[0] & ~7, *counter[1:]), key)
        assert lanes[counter[0] & 7] == words  # the lane that holds this counter
        for k, got in enumerate(lanes):
            assert got == philox_reference(((counter[0] & ~7) + k, *counter[1:]), key)


@needs_kernel
@pytest.mark.parametrize("n,seed", [(75, 3), (32, 2**63 + 5), (1, 0)])
def test_dropout_keeps_the_elements_philox_says_and_scales_them(n, seed):
    """The last, partial vector too (75 = 2 x 32 + 11), and a key using all 64 bits."""
    p = 0.3
    x = torch.randn(n, generator=torch.Generator().manual_seed(1))
    y = kdrop.dropout_mask_apply(x, p, seed)
    kept = kept_reference(n, p, seed)
    expect = torch.where(kept, x * torch.tensor(1 / (1 - p), dtype=torch.float32), 0.0)
    assert torch.equal(y, expect)


@needs_kernel
def test_dropout_statistics_threads_and_seeds():
    """Over 2^20 elements the kept share is 1 - p within 5 standard errors, neighbours (in a
    vector, across vectors and across a counter's words) are independent, the mask does not
    depend on the thread count and changes with the seed."""
    p, n = 0.1, 2**20
    ones = torch.ones(n)
    kept = kdrop.dropout_mask_apply(ones, p, 12345) != 0
    se = math.sqrt(p * (1 - p) / n)
    assert abs(kept.double().mean().item() - (1 - p)) < 5 * se
    for lag in (1, 8, 32):  # next lane, next word of the same counter, next block
        both = (kept[:-lag] & kept[lag:]).double().mean().item()
        assert abs(both - (1 - p) ** 2) < 5 * math.sqrt((1 - p) ** 2 * (1 - (1 - p) ** 2) / n)
    for threads in (1, 3):
        other = kdrop.dropout_mask_apply(ones, p, 12345, threads=threads) != 0
        assert torch.equal(other, kept)
    fresh = kdrop.dropout_mask_apply(ones, p, 12346) != 0
    assert 0.1 < (fresh != kept).double().mean().item() < 0.25  # 2 p (1 - p) = 0.18 apart


@needs_kernel
def test_dropout_refuses_what_it_does_not_compute():
    x = torch.randn(4, 8, 5, 5)
    with pytest.raises(ValueError, match="p must be in"):
        kdrop.dropout_mask_apply(x, 1.0, 0)
    with pytest.raises(ValueError, match="dense"):
        kdrop.dropout_mask_apply(x[:, :, ::2], 0.5, 0)
    with pytest.raises(TypeError, match="fp32 CPU"):
        kdrop.dropout_mask_apply(x.double(), 0.5, 0)


@needs_kernel
@pytest.mark.parametrize("layout", [torch.contiguous_format, CL])
def test_installed_dropout_trains_with_one_mask_and_is_off_in_eval(layout):
    """Training: the gradient passes where the output was kept, scaled alike (also when the
    gradient comes in another layout), the draws follow torch's global seed; eval: identity."""
    layer = nn.Sequential(nn.Dropout(0.25))
    kmod.install(layer)
    assert type(layer[0]) is kmod.KernelDropout
    x = torch.randn(3, 20, 6, 7).contiguous(memory_format=layout).requires_grad_()
    torch.manual_seed(7)
    y = layer(x)
    assert y.stride() == x.stride()
    kept = y != 0
    assert 0.5 < kept.double().mean().item() < 0.95
    torch.testing.assert_close(y[kept], x[kept] / 0.75, rtol=1e-6, atol=0)
    y.backward(torch.full(y.shape, 2.0))  # contiguous: another layout than x's in channels-last
    assert torch.equal(x.grad != 0, kept)
    torch.testing.assert_close(x.grad[kept], torch.full_like(x.grad[kept], 2 / 0.75))
    torch.manual_seed(7)
    assert torch.equal(layer(x), y)  # the same seed, the same mask
    assert not torch.equal(layer(x), y)  # the next draw, another
    layer.eval()
    assert torch.equal(layer(x), x)
    kmod.uninstall(layer)
    assert type(layer[0]) is nn.Dropout


@needs_kernel
def test_installed_dropout_leaves_other_cases_to_torch(monkeypatch):
    """p = 0 layers are not touched; bf16 and strided inputs go to torch's dropout."""
    net = nn.Sequential(nn.Dropout(0.0), nn.Dropout(0.5))
    kmod.install(net)
    assert type(net[0]) is nn.Dropout and type(net[1]) is kmod.KernelDropout
    calls = []
    monkeypatch.setattr(kdrop, "dropout_mask_apply", lambda *a, **k: calls.append(1))
    for x in (torch.randn(4, 6, 5, 5, dtype=torch.bfloat16), torch.randn(4, 6, 5, 5)[..., ::2]):
        y = net(x)
        kept = y != 0
        assert y.dtype == x.dtype and 0 < kept.sum() < y.numel()
        assert torch.equal(y[kept], x[kept] * 2)
    assert calls == []


@needs_kernel
def test_posix_thread_build_gives_the_same_masks(tmp_path):
    target = tmp_path / "plain.so"
    assert klib._build(klib.c_compiler(), klib.FLAGS, target) is None
    plain = klib._declare(ctypes.CDLL(str(target)))
    x = torch.randn(3, 64, 33, 33)
    for threads in (1, 2, 3):
        assert torch.equal(
            kdrop.dropout_mask_apply(x, 0.1, 99, threads, lib=plain),
            kdrop.dropout_mask_apply(x, 0.1, 99),
        )
