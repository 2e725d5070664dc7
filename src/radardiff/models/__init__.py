"""Network builders from config (diffusers ``UNet2DModel``)."""

from radardiff.models.unet import DEFAULT_CHANNEL_MULT, build_unet, channel_mult, model_in_channels

__all__ = ["DEFAULT_CHANNEL_MULT", "build_unet", "channel_mult", "model_in_channels"]
