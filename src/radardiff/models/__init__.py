"""Network builders from config (diffusers ``UNet2DModel``)."""

from radardiff.models.conditioning import (
    condition_frame,
    degrade,
    log_range_moments,
    range_embedding_value,
    superres_pair,
    upsample,
)
from radardiff.models.run import LoadedRun, load_model, load_run
from radardiff.models.unet import DEFAULT_CHANNEL_MULT, build_unet, channel_mult, model_in_channels

__all__ = [
    "condition_frame",
    "degrade",
    "log_range_moments",
    "range_embedding_value",
    "superres_pair",
    "upsample",
    "DEFAULT_CHANNEL_MULT",
    "LoadedRun",
    "load_model",
    "load_run",
    "build_unet",
    "channel_mult",
    "model_in_channels",
]
