"""Network builders from config (diffusers ``UNet2DModel``).

The names below are loaded on first use (PEP 562): importing ``radardiff.models`` or one of its
light modules (``network``, ``shipped``) does not import diffusers, whose import (with torch's
compiler stack) costs seconds at every command start, most of them commands that never build a
network (``--help``, data commands, refusals of bad input).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_WHERE = {
    "ConditionEmbedding": "conditioning",
    "condition_frame": "conditioning",
    "degrade": "conditioning",
    "log_range_moments": "conditioning",
    "pack_conditions": "conditioning",
    "range_embedding_value": "conditioning",
    "superres_pair": "conditioning",
    "upsample": "conditioning",
    "LoadedRun": "run",
    "load_model": "run",
    "load_run": "run",
    "DEFAULT_CHANNEL_MULT": "unet",
    "build_unet": "unet",
    "channel_mult": "unet",
    "model_in_channels": "unet",
}

__all__ = list(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and editors: the names as if imported eagerly
    from radardiff.models.conditioning import (  # noqa: F401
        ConditionEmbedding,
        condition_frame,
        degrade,
        log_range_moments,
        pack_conditions,
        range_embedding_value,
        superres_pair,
        upsample,
    )
    from radardiff.models.run import LoadedRun, load_model, load_run  # noqa: F401
    from radardiff.models.unet import (  # noqa: F401
        DEFAULT_CHANNEL_MULT,
        build_unet,
        channel_mult,
        model_in_channels,
    )
