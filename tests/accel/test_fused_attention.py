"""Attention with q, k, v as one product: diffusers' values and gradients to float rounding,
the fallbacks, and the install on a network."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from conftest import tiny_run_config
from radardiff.accel import attention as kattn
from radardiff.accel import modules as kmod
from radardiff.accel import policy as kpolicy
from radardiff.models import build_unet

CL = torch.channels_last


def _attention(channels=32, heads=4, group_norm=True, seed=0, **kwargs) -> Attention:
    """A layer as diffusers' UNet2DModel makes it (its mid-block's without a group norm)."""
    torch.manual_seed(seed)
    attn = Attention(
        channels,
        heads=heads,
        dim_head=channels // heads,
        rescale_output_factor=kwargs.pop("rescale", 1.0),
        eps=1e-5,
        norm_num_groups=8 if group_norm else None,
        residual_connection=True,
        bias=True,
        upcast_softmax=True,
        _from_deprecated_attn_block=True,
        **kwargs,
    )
    with torch.no_grad():  # biases made non-zero, so that their concatenation is checked too
        for p in attn.parameters():
            p.add_(torch.randn(p.shape) * 0.1)
    return attn


def _input(shape, layout, seed=1):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return x.contiguous(memory_format=CL) if layout == "cl" else x


@pytest.mark.parametrize("group_norm", [True, False])
@pytest.mark.parametrize("layout", ["nchw", "cl", "tokens"])
@pytest.mark.parametrize("rescale", [1.0, 2.0])
def test_values_and_gradients_agree_with_diffusers(group_norm, layout, rescale):
    attn = _attention(group_norm=group_norm, rescale=rescale)
    shape = (3, 7 * 5, 32) if layout == "tokens" else (3, 32, 7, 5)
    x = _input(shape, layout)
    ref_x, fused_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    assert isinstance(attn.processor, AttnProcessor2_0)
    ref = attn(ref_x)
    ref.backward(grad)
    ref_grads = {n: p.grad.clone() for n, p in attn.named_parameters()}
    attn.zero_grad(set_to_none=True)
    assert kattn.eligible(attn)
    assert kattn.install(attn) == 1 and kattn.installed(attn) == 1
    out = attn(fused_x)
    out.backward(grad)
    assert out.stride() == ref.stride()
    # the same bits with torch's CPU matrix products here; to float rounding in general
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6 * ref.abs().max().item())
    scale = ref_x.grad.abs().max().item()
    torch.testing.assert_close(fused_x.grad, ref_x.grad, rtol=0, atol=1e-5 * scale)
    for name, p in attn.named_parameters():
        torch.testing.assert_close(
            p.grad, ref_grads[name], rtol=1e-5, atol=1e-6 * ref_grads[name].abs().max().item()
        )
    with torch.inference_mode():
        torch.testing.assert_close(
            attn(x), ref.detach(), rtol=0, atol=1e-6 * ref.abs().max().item()
        )


def test_other_calls_go_to_the_processor_it_had():
    attn = _attention()
    x = torch.randn(2, 9, 32)
    mask = torch.zeros(2, 1, 9)
    mask[:, :, -3:] = -1e4
    encoder = torch.randn(2, 5, 32)
    with torch.no_grad():
        refs = attn(x, attention_mask=mask), attn(x, encoder_hidden_states=encoder)
        kattn.install(attn)
        outs = attn(x, attention_mask=mask), attn(x, encoder_hidden_states=encoder)
    assert all(torch.equal(a, b) for a, b in zip(outs, refs, strict=True))


def test_only_eligible_layers_are_installed_and_install_twice_keeps_the_first_processor():
    cross = Attention(32, cross_attention_dim=16, heads=4, dim_head=8)
    assert not kattn.eligible(cross)
    assert kattn.install(cross) == 0 and kattn.installed(cross) == 0
    attn = _attention()
    first = attn.processor
    kattn.install(attn)
    kattn.install(attn)
    assert attn.processor.fallback is first
    kattn.uninstall(attn)
    assert attn.processor is first and kattn.installed(attn) == 0


def test_network_install_counts_layers_keeps_the_state_dict_and_uninstall_restores():
    cfg = tiny_run_config("unused.h5", model={"base_channels": 16})
    net = build_unet(cfg.model, 1, False).eval()
    layers = sum(isinstance(m, Attention) for m in net.modules())
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x, t = torch.randn(2, 1, cfg.model.image_size, cfg.model.image_size), torch.tensor([3, 700])
    with torch.no_grad():
        ref = net(x, t).sample
        assert kattn.install(net) == layers > 0
        assert net.state_dict().keys() == state.keys()
        torch.testing.assert_close(
            net(x, t).sample, ref, rtol=0, atol=1e-6 * ref.abs().max().item()
        )
        kattn.uninstall(net)
        assert kattn.installed(net) == 0
        assert all(
            isinstance(m.processor, AttnProcessor2_0)
            for m in net.modules()
            if isinstance(m, Attention)
        )
        kmod.install(net)  # with radardiff's kernels
        assert kattn.installed(net) == layers
        kmod.uninstall(net)
        assert kattn.installed(net) == 0


def test_the_fused_forwards_are_bound_to_the_diffusers_they_were_written_for(monkeypatch):
    """FusedResnetBlock2D and FusedQKVProcessor reproduce diffusers' code: on a diffusers release
    they were not checked against, those layers keep diffusers' own forward (and this test fails
    on the installed release, so that a new one is checked before it is listed)."""
    import diffusers

    assert diffusers.__version__ in kmod.DIFFUSERS_VERSIONS, (
        f"diffusers {diffusers.__version__}: check FusedResnetBlock2D and FusedQKVProcessor "
        "against its ResnetBlock2D.forward and AttnProcessor2_0, then add it to DIFFUSERS_VERSIONS"
    )
    cfg = tiny_run_config("unused.h5", model={"base_channels": 16})
    net = build_unet(cfg.model, 1, False)
    monkeypatch.setattr(diffusers, "__version__", "0.0.1")
    done = kmod.install(net)
    assert done.blocks == 0 and done.attentions == 0 and done.convolutions > 0
    assert "this is 0.0.1" in done.diffusers_note
    assert "residual blocks and attention on diffusers' own code" in kpolicy.describe(
        True, done, "x"
    )
