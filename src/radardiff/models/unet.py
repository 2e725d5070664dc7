"""Denoising networks built from config: diffusers ``UNet2DModel``."""

from __future__ import annotations

from diffusers import UNet2DModel

from radardiff.config.schema import DEFAULT_CHANNEL_MULT, ModelConfig
from radardiff.models.conditioning import ConditionEmbedding


def channel_mult(cfg: ModelConfig) -> tuple[int, ...]:
    if cfg.channel_mult is not None:
        return tuple(cfg.channel_mult)
    return DEFAULT_CHANNEL_MULT[cfg.image_size]  # the config refuses sizes without a default


def model_in_channels(cfg: ModelConfig, data_channels: int, map_planes: int = 0) -> int:
    """Input channels: the data, plus the upsampled low-resolution image for super-resolution,
    plus the planes of the maps it is conditioned on (:class:`radardiff.data.maps.MapEncoder`)."""
    return data_channels * (2 if cfg.superres_low_size else 1) + map_planes


def build_unet(
    cfg: ModelConfig, data_channels: int, learned_variance: bool, map_planes: int = 0
) -> UNet2DModel:
    """A ``UNet2DModel`` for ``data_channels`` channels in network space.

    The output has twice the channels when the variance is learned (the second half is the
    interpolation coefficient v of Nichol and Dhariwal 2021). Class conditioning reserves the
    extra class index ``num_classes`` for the null label of classifier-free guidance; class labels
    with range conditioning share a :class:`ConditionEmbedding`. Maps (``map_planes`` input planes)
    combine with any of the embedding's conditions.
    """
    mult = channel_mult(cfg)
    channels = tuple(cfg.base_channels * m for m in mult)
    down, up = [], []
    res = cfg.image_size
    for _ in mult:
        down.append("AttnDownBlock2D" if res in cfg.attention_resolutions else "DownBlock2D")
        res //= 2
    for level in reversed(range(len(mult))):
        r = cfg.image_size // 2**level
        up.append("AttnUpBlock2D" if r in cfg.attention_resolutions else "UpBlock2D")
    out_channels = data_channels * (2 if learned_variance else 1)
    kwargs = {}
    joint = joint_condition(cfg)
    if joint:
        kwargs = {"class_embed_type": "identity", "num_class_embeds": cfg.num_classes + 1}
    elif cfg.num_classes:
        kwargs = {"class_embed_type": None, "num_class_embeds": cfg.num_classes + 1}
    elif cfg.superres_low_size or cfg.range_conditioning:
        kwargs = {"class_embed_type": "timestep"}  # a scalar, embedded like a timestep
    unet = UNet2DModel(
        sample_size=cfg.image_size,
        in_channels=model_in_channels(cfg, data_channels, map_planes),
        out_channels=out_channels,
        block_out_channels=channels,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        layers_per_block=cfg.layers_per_block,
        attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=min(cfg.norm_num_groups, cfg.base_channels),
        dropout=cfg.dropout,
        resnet_time_scale_shift="scale_shift" if cfg.scale_shift_norm else "default",
        **kwargs,
    )
    if joint:
        width = unet.time_embedding.linear_2.out_features
        unet.class_embedding = ConditionEmbedding(width, channels[0], cfg.num_classes, joint)
    return unet


def joint_condition(cfg: ModelConfig) -> tuple[str, ...]:
    """The scalars that share the embedding with class labels (none: diffusers' own slot)."""
    return ("range",) if cfg.num_classes and cfg.range_conditioning else ()
