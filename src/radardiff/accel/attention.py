"""Self-attention with its query, key and value projections as one matrix product.

diffusers' ``AttnProcessor2_0`` projects the tokens three times, ``to_q``, ``to_k`` and
``to_v``: three matrix products over the same input, and three more for each gradient. Here
the three weights (and biases) are concatenated at each call (a copy the size of the weights,
0.8 MB at 256 channels) and the tokens projected once; the query, key and value are views of
that product. The rest is diffusers' processor step for step: group norm, scaled dot-product
attention, the output projection, the residual and ``rescale_output_factor``.

The forward values agree with diffusers' to float rounding; with torch 2.13's CPU matrix
products on the AVX2 EPYC they were the same bits (each output column summed over the same
input channels in the same order, whichever product it sits in), but no BLAS promises that. The
input's gradient is one product over the three projections' columns instead of three summed,
so it differs by float rounding.

:func:`install` gives an eligible ``Attention`` (self-attention, no spatial norm, no query or key
norm) this processor; the parameters and state dict are unchanged, and a call with a mask, an
encoder state or other arguments goes to the processor it had. It is installed with radardiff's
CPU kernels (:func:`radardiff.accel.modules.install`), the one place it was measured.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torch import nn


def eligible(module: nn.Module) -> bool:
    """An ``Attention`` whose three projections this processor can make one product: self-
    attention, no spatial norm, no query or key norm, three ``nn.Linear`` of one shape."""
    if not isinstance(module, Attention) or module.is_cross_attention:
        return False
    if module.spatial_norm is not None or module.norm_q is not None or module.norm_k is not None:
        return False
    projections = (module.to_q, module.to_k, module.to_v)
    if not all(type(p) is nn.Linear for p in projections):
        return False
    return (
        len({p.in_features for p in projections}) == 1
        and len({p.out_features for p in projections}) == 1
        and len({p.bias is None for p in projections}) == 1
    )


class FusedQKVProcessor:
    """diffusers' ``AttnProcessor2_0`` with ``to_q``, ``to_k``, ``to_v`` as one product;
    other calls go to ``fallback``, the processor the layer had."""

    def __init__(self, fallback) -> None:
        self.fallback = fallback

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        if (
            encoder_hidden_states is not None
            or attention_mask is not None
            or args
            or kwargs
            or hidden_states.ndim not in (3, 4)
        ):
            return self.fallback(
                attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs
            )
        residual = hidden_states
        four_d = hidden_states.ndim == 4
        if four_d:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        q, k, v = attn.to_q, attn.to_k, attn.to_v
        weight = torch.cat((q.weight, k.weight, v.weight))
        bias = None if q.bias is None else torch.cat((q.bias, k.bias, v.bias))
        qkv = F.linear(hidden_states, weight, bias)
        head_dim = q.out_features // attn.heads
        query, key, value = (
            t.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for t in qkv.chunk(3, -1)
        )
        hidden_states = F.scaled_dot_product_attention(
            query, key, value, dropout_p=0.0, is_causal=False
        )
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if four_d:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def install(network: nn.Module) -> int:
    """Give the eligible attention layers of ``network`` the fused processor; returns how
    many. Installing twice keeps the first processor as the fallback."""
    count = 0
    for module in network.modules():
        if eligible(module):
            if not isinstance(module.processor, FusedQKVProcessor):
                module.set_processor(FusedQKVProcessor(module.processor))
            count += 1
    return count


def uninstall(network: nn.Module) -> None:
    """Undo :func:`install`: each layer gets back the processor it had."""
    for module in network.modules():
        if isinstance(module, Attention) and isinstance(module.processor, FusedQKVProcessor):
            module.set_processor(module.processor.fallback)


def installed(network: nn.Module) -> int:
    """How many attention layers of ``network`` run the fused processor."""
    return sum(
        isinstance(m, Attention) and isinstance(m.processor, FusedQKVProcessor)
        for m in network.modules()
    )
