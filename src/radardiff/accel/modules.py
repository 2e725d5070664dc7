"""The network's layers on radardiff's operators: module classes swapped in, and out again.

:func:`install` gives each eligible layer of a network the class of its kind here, a subclass of
its own class that keeps every parameter, buffer and state-dict key (checkpoints, EMA and
``save_pretrained`` see the same network) and calls the operators of :mod:`radardiff.accel.ops`
where a call fits them (fp32 on the CPU outside autocast, a dense layout) and its parent class's
code otherwise; :func:`uninstall` gives the layers their classes back.

- ``nn.Conv2d`` 3x3 (stride 1, padding 1) and 1x1 (stride 1, no padding), no dilation or groups,
  at least 16 input and output channels -> :class:`KernelConv2d`;
- ``nn.GroupNorm`` -> :class:`KernelGroupNorm` (the fused kernel without the SiLU);
- ``nn.Dropout`` (p > 0) -> :class:`KernelDropout`, while training;
- diffusers' ``ResnetBlock2D`` (no up- or downsampling inside, SiLU, affine group norms, a
  ``default`` or ``scale_shift`` time embedding) -> :class:`FusedResnetBlock2D`: its group norms
  and SiLUs fused, its residual sum made in its last convolution's output pass;
- diffusers' self-attention layers get the processor of :mod:`radardiff.accel.attention` (by
  diffusers' own ``set_processor``): q, k and v as one product.

The last two re-implement a diffusers forward pass, so they are used only with the diffusers
releases they were written against and tested on (:data:`DIFFUSERS_VERSIONS`); with any other,
those layers keep diffusers' code (and a test fails, so that a new release is checked before it
is trusted).
"""

from __future__ import annotations

from dataclasses import dataclass

import diffusers
import torch
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import ResnetBlock2D
from torch import nn

from radardiff.accel import attention, norm, ops, selfcheck
from radardiff.accel import conv as kconv
from radardiff.accel import dropout as kdrop
from radardiff.accel.conv import dense

# the diffusers releases whose ResnetBlock2D.forward and AttnProcessor2_0 the fused classes
# reproduce (tests/accel compare them with diffusers' own on every kind of input)
DIFFUSERS_VERSIONS = ("0.42.1",)
MIN_CHANNELS = 16


def diffusers_supported() -> bool:
    """Whether the installed diffusers is one the fused forwards were written against."""
    return diffusers.__version__ in DIFFUSERS_VERSIONS


def _computes(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether the kernels take this call of an eligible layer (else torch's convolution)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and (bias is None or bias.dtype == torch.float32)
        and not torch.is_autocast_enabled("cpu")
        and x.ndim == 4
    )


class KernelConv2d(nn.Conv2d):
    """An eligible ``nn.Conv2d`` on the ``radardiff::conv`` operator: training (all three
    products) and without gradients (the forward pass, a 3x3 layer's transformed weight kept
    until the weight changes)."""

    def _transformed(self, weight: torch.Tensor) -> torch.Tensor:
        """The transformed weight for a pass without gradients, kept with a copy of the weight
        it came from and redone when the weight differs from that copy. (A version counter would
        not do: torch's fused AdamW changes parameters in place without bumping theirs.)"""
        cached = getattr(self, "_radardiff_winograd", None)
        if (
            cached is not None
            and cached[0].shape == weight.shape
            and torch.equal(cached[0], weight)
        ):
            return cached[1]
        with torch.inference_mode(False), torch.no_grad():
            source = weight.detach().clone()
            cached = (source, kconv.winograd_weight(source))
        self._radardiff_winograd = cached
        return cached[1]

    def _kernel_call(self, x, weight, bias, residual=None) -> torch.Tensor | None:
        """The operator's result, or None where the call is not the kernels' (then torch's)."""
        if not _computes(x, weight, bias):
            return None
        pointwise = self.kernel_size == (1, 1)
        if not torch.is_grad_enabled():
            return ops.conv(x, weight, None if pointwise else self._transformed(weight), bias,
                            residual)  # fmt: skip
        if weight.requires_grad:
            u = None if pointwise else kconv.winograd_weight(weight.detach())
            return ops.conv(x, weight, u, bias, residual)
        return None

    def _conv_forward(self, x, weight, bias):
        y = self._kernel_call(x, weight, bias)
        return super()._conv_forward(x, weight, bias) if y is None else y

    def plus(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``residual + self(x)``, for a 3x3 layer with the sum made in the convolution's output
        transform (one pass over the output fewer, bit for bit torch's sum); else by torch."""
        fits = (
            self.kernel_size == (3, 3)
            and not (self._forward_hooks or self._forward_pre_hooks)
            and residual.device.type == "cpu"
            and residual.dtype == torch.float32
            and residual.shape == (x.shape[0], self.out_channels, *x.shape[2:])
        )
        y = self._kernel_call(x, self.weight, self.bias, residual) if fits else None
        return residual + self(x) if y is None else y


def eligible_conv(module: nn.Module) -> bool:
    """A layer the kernels compute: a plain ``nn.Conv2d`` (no dilation, no groups, zero padding)
    that is 3x3 with stride 1 and padding 1, or 1x1 with stride 1 and no padding, with at least
    16 input and output channels (narrower layers leave most of the kernels' 16 lanes empty)."""
    return (
        type(module) in (nn.Conv2d, KernelConv2d)
        and (module.kernel_size, module.padding) in (((3, 3), (1, 1)), ((1, 1), (0, 0)))
        and module.stride == (1, 1)
        and module.dilation == (1, 1)
        and module.groups == 1
        and module.padding_mode == "zeros"
        and min(module.in_channels, module.out_channels) >= MIN_CHANNELS
    )


def group_norm_act(
    x: torch.Tensor,
    gn: nn.GroupNorm,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    silu: bool = True,
) -> torch.Tensor:
    """``act(gn(x) * (1 + scale) + shift)`` (``scale``, ``shift``: (N, C, 1, 1) or None), on the
    ``radardiff::group_norm_act`` operator where :func:`radardiff.accel.norm.fits` ``x``, else
    by torch's operations."""
    if not norm.fits(x):
        y = torch.nn.functional.group_norm(x, gn.num_groups, gn.weight, gn.bias, gn.eps)
        if scale is not None:
            y = y * (1 + scale) + shift
        return torch.nn.functional.silu(y) if silu else y
    n, c = x.shape[:2]
    weight = gn.weight if gn.affine else torch.ones(c)
    bias = gn.bias if gn.affine else torch.zeros(c)
    if scale is None:
        a, b = weight.expand(n, c), bias.expand(n, c)
    else:
        factor = 1 + scale.reshape(n, c)
        a, b = weight * factor, bias * factor + shift.reshape(n, c)
    return ops.group_norm_act(x, a, b, gn.num_groups, gn.eps, silu)[0]


class KernelGroupNorm(nn.GroupNorm):
    """An ``nn.GroupNorm`` on the fused kernel (without its SiLU) where the input fits it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if norm.fits(x):
            return group_norm_act(x, self, silu=False)
        return super().forward(x)


class FusedResnetBlock2D(ResnetBlock2D):
    """diffusers' ``ResnetBlock2D.forward`` (of :data:`DIFFUSERS_VERSIONS`) with its group norms
    and SiLUs fused and its residual sum made in the last convolution's output pass
    (:meth:`KernelConv2d.plus`); diffusers' own where the input does not fit the kernel."""

    def forward(self, input_tensor, temb, *args, **kwargs):
        if args or kwargs or not norm.fits(input_tensor):
            return super().forward(input_tensor, temb, *args, **kwargs)
        hidden = self.conv1(group_norm_act(input_tensor, self.norm1))
        if self.time_emb_proj is not None:
            if not self.skip_time_act:
                temb = self.nonlinearity(temb)
            temb = self.time_emb_proj(temb)[:, :, None, None]
        if self.time_embedding_norm == "default":
            if temb is not None:
                hidden = hidden + temb
            hidden = group_norm_act(hidden, self.norm2)
        else:
            if temb is None:
                raise ValueError(
                    "`temb` should not be None when `time_embedding_norm` is scale_shift"
                )
            scale, shift = torch.chunk(temb, 2, dim=1)
            hidden = group_norm_act(hidden, self.norm2, scale, shift)
        hidden = self.dropout(hidden)
        if self.conv_shortcut is not None:
            if self.training:
                input_tensor = input_tensor.contiguous()
            input_tensor = self.conv_shortcut(input_tensor)
        out = _plus(self.conv2, hidden, input_tensor)  # input_tensor + conv2(hidden)
        return out if self.output_scale_factor == 1.0 else out / self.output_scale_factor


def _plus(conv: nn.Conv2d, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    if isinstance(conv, KernelConv2d):
        return conv.plus(x, residual)
    return residual + conv(x)


def eligible_block(block: nn.Module) -> bool:
    """A ``ResnetBlock2D`` whose forward pass :class:`FusedResnetBlock2D` reproduces: no up- or
    downsampling inside, SiLU, affine group norms, a ``default`` or ``scale_shift`` time
    embedding."""
    return (
        type(block) in (ResnetBlock2D, FusedResnetBlock2D)
        and block.upsample is None
        and block.downsample is None
        and type(block.nonlinearity) is nn.SiLU
        and isinstance(block.norm1, nn.GroupNorm)
        and isinstance(block.norm2, nn.GroupNorm)
        and block.norm1.affine
        and block.norm2.affine
        and block.time_embedding_norm in ("default", "scale_shift")
    )


# the kernels' check of a dropout mask uses a fixed seed: it must not draw from torch's global
# generator, or a resumed run would draw other masks than an unbroken one
_CHECK_SEED = 0x5EED_D20B


def _dropout_trusted(x: torch.Tensor, p: float) -> bool:
    """The dropout kernel's verdict on this signature, checked at its first use: a mask drawn
    without gradients and held to :func:`dropout_looks_right` (its masks are not torch's, so
    the check is of their form and law, not of equality)."""
    key = selfcheck.signature("dropout", (x,), p)
    verdict = selfcheck.verdict(key)
    if verdict is None:
        with torch.no_grad():
            y = kdrop.dropout_mask_apply(x.detach(), p, _CHECK_SEED)
        verdict, detail = kdrop.dropout_looks_right(x.detach(), y, p)
        selfcheck.record(key, verdict, detail)
    return verdict


class KernelDropout(nn.Dropout):
    """An ``nn.Dropout`` on the ``radardiff::dropout`` operator while training, its mask's seed
    drawn from torch's global generator."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self.training
            and 0.0 < self.p < 1.0
            and not self.inplace
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.numel() > 0
            and dense(x)
            and _dropout_trusted(x, self.p)
        ):
            seed = int(torch.empty((), dtype=torch.int64).random_())
            return ops.dropout(x, self.p, seed)
        return super().forward(x)


# each kernel class and the class it stands in for
_BASES: dict[type, type] = {
    KernelConv2d: nn.Conv2d,
    KernelGroupNorm: nn.GroupNorm,
    KernelDropout: nn.Dropout,
    FusedResnetBlock2D: ResnetBlock2D,
}


@dataclass(frozen=True)
class Installed:
    """What :func:`install` put on the kernels."""

    convolutions: int = 0
    dropouts: int = 0
    blocks: int = 0  # residual blocks with their group norms and SiLUs fused
    attentions: int = 0  # attention layers projecting q, k, v in one product
    group_norms: int = 0  # the other group norms
    diffusers_note: str = ""  # why residual blocks and attention kept diffusers' code, if so


def install(network: nn.Module) -> Installed:
    """Put the eligible layers of ``network`` on the kernels (see the module docstring)."""
    fused = diffusers_supported()
    counts = {"convolutions": 0, "dropouts": 0, "blocks": 0, "group_norms": 0}
    inside: set[int] = set()
    for module in network.modules():
        if fused and eligible_block(module):
            module.__class__ = FusedResnetBlock2D
            inside.update((id(module.norm1), id(module.norm2)))
            counts["blocks"] += 1
    for module in network.modules():
        if eligible_conv(module):
            module.__class__ = KernelConv2d
            counts["convolutions"] += 1
        elif type(module) in (nn.Dropout, KernelDropout) and module.p > 0:
            module.__class__ = KernelDropout
            counts["dropouts"] += 1
        elif type(module) in (nn.GroupNorm, KernelGroupNorm) and id(module) not in inside:
            module.__class__ = KernelGroupNorm
            counts["group_norms"] += 1
    attentions = attention.install(network) if fused else 0
    note = "" if fused else (
        f"residual blocks and attention on diffusers' own code (the fused ones were written for "
        f"diffusers {', '.join(DIFFUSERS_VERSIONS)}, this is {diffusers.__version__})"
    )  # fmt: skip
    return Installed(attentions=attentions, diffusers_note=note, **counts)


def forget(network: nn.Module) -> None:
    """Drop the transformed weights kept for passes without gradients (about 3x the weights'
    memory); the next such pass transforms them again."""
    for module in network.modules():
        vars(module).pop("_radardiff_winograd", None)


def uninstall(network: nn.Module) -> None:
    """Give every layer :func:`install` changed its own class and processor back."""
    attention.uninstall(network)
    forget(network)
    for module in network.modules():
        base = _BASES.get(type(module))
        if base is not None:
            module.__class__ = base


def installed(network: nn.Module) -> Installed:
    """What of ``network`` runs on the kernels now."""
    kinds = {KernelConv2d: "convolutions", KernelDropout: "dropouts",
             FusedResnetBlock2D: "blocks", KernelGroupNorm: "group_norms"}  # fmt: skip
    counts = dict.fromkeys(kinds.values(), 0)
    for module in network.modules():
        if type(module) in kinds:
            counts[kinds[type(module)]] += 1
    attentions = sum(
        isinstance(m, Attention) and isinstance(m.processor, attention.FusedQKVProcessor)
        for m in network.modules()
    )
    return Installed(attentions=attentions, **counts)
