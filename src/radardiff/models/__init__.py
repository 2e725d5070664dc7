"""Network builders from config (diffusers ``UNet2DModel``)."""

from radardiff.models.conditioning import (
    degrade,
    log_range_moments,
    range_embedding_value,
    upsample,
)
from radardiff.models.unet import DEFAULT_CHANNEL_MULT, build_unet, channel_mult, model_in_channels

__all__ = [
    "degrade",
    "log_range_moments",
    "range_embedding_value",
    "upsample",
    "DEFAULT_CHANNEL_MULT",
    "build_unet",
    "channel_mult",
    "model_in_channels",
]
