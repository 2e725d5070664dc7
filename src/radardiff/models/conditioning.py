"""Conditioning inputs: the low-resolution image of super-resolution, the per-sample range, and
the embedding that joins a class label with the range.

One condition alone uses diffusers' own class embedding: class labels a table
(``num_class_embeds``), a scalar (the noise level put on the low-resolution condition, or the
range) ``class_embed_type="timestep"``: the sinusoidal timestep embedding and an MLP, added to the
time embedding. Class labels together with the range use :class:`ConditionEmbedding` in the
network's ``class_embedding`` slot (diffusers ``class_embed_type="identity"``): the sum of the
class's row and the range's MLP, so each resnet block sees both. Such a network is loaded by
:func:`radardiff.models.run.load_model` (diffusers' ``from_pretrained`` alone would drop the
embedding's weights).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

RANGE_EPS = 1e-12


def degrade(x: torch.Tensor, low_size: int) -> torch.Tensor:
    """Area-average ``x`` (B, C, H, W) down to ``low_size`` pixels on a side."""
    return F.interpolate(x, size=(low_size, low_size), mode="area")


def upsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear upsampling of the low-resolution condition to the model's size."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def condition_frame(low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mid-point and half-range (B, C, 1, 1) of each low-resolution image, channel by channel."""
    lo = low.amin(dim=(2, 3), keepdim=True)
    hi = low.amax(dim=(2, 3), keepdim=True)
    return (hi + lo) / 2, ((hi - lo) / 2).clamp_min(1e-6)


def superres_pair(x0: torch.Tensor, low_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The super-resolution target and its condition, both in the frame of the condition.

    ``x0`` (B, C, H, W, network space) is area-averaged to ``low_size``; both are then shifted and
    scaled by the low-resolution image's own mid-point and half-range, so the condition spans
    exactly [-1, 1] and the target a little more (area averaging narrows the range). At sampling
    the low-resolution image is all there is: framing it the same way needs nothing the model
    cannot see, and ``c + h * x0`` returns the output exactly to the low-resolution image's
    network space (see :func:`radardiff.sample.generate`). Returns (target, condition upsampled
    to H).
    """
    low = degrade(x0, low_size)
    c, h = condition_frame(low)
    return (x0 - c) / h, upsample((low - c) / h, x0.shape[-1])


def log_range(stats: torch.Tensor) -> torch.Tensor:
    """log10 of the per-sample range (hi - lo of channel 0) from (B, C, 2) min-max statistics."""
    spread = (stats[:, 0, 1] - stats[:, 0, 0]).abs()
    return torch.log10(spread.clamp_min(RANGE_EPS))


def range_embedding_value(stats: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """The range as a 'timestep' for the embedding: 500 + 100 z, z the standardised log-range.

    The sinusoidal embedding resolves values over the trained timestep scale (0..T), so the
    standardised log-range is mapped onto that scale; z is clipped to +-4.
    """
    z = (log_range(stats) - mean) / max(std, 1e-6)
    return 500.0 + 100.0 * z.clamp(-4.0, 4.0)


def log_range_moments(stats: torch.Tensor) -> tuple[float, float]:
    """Mean and standard deviation of the log-range over a training set's statistics."""
    lr = log_range(stats).double()
    mean = float(lr.mean())
    std = float(lr.std()) if lr.numel() > 1 else 1.0
    return mean, std if math.isfinite(std) and std > 0 else 1.0


# the scalars a joint embedding can hold, in the order of their columns after the class
SCALARS = ("range",)


class ConditionEmbedding(nn.Module):
    """The sum of a class label's embedding and the embeddings of scalars, for one network.

    Its input packs one row per sample: the class index (the null class ``num_classes`` for
    classifier-free guidance) when there are classes, then each scalar of ``scalars`` (as a
    "timestep" value, see :func:`range_embedding_value`). Each scalar gets the sinusoidal
    projection of the network's own time embedding (``proj_dim`` channels, diffusers' defaults
    ``flip_sin_to_cos=True``, ``freq_shift=0``) and its own two-layer MLP, as diffusers'
    ``class_embed_type="timestep"`` does for one scalar.
    """

    def __init__(
        self, dim: int, proj_dim: int, num_classes: int = 0, scalars: tuple[str, ...] = ()
    ) -> None:
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        super().__init__()
        unknown = set(scalars) - set(SCALARS)
        if unknown:
            raise ValueError(f"condition scalars {sorted(unknown)} unknown")
        self.num_classes = int(num_classes)
        self.names = tuple(n for n in SCALARS if n in scalars)
        self.classes = nn.Embedding(self.num_classes + 1, dim) if self.num_classes else None
        self.proj = Timesteps(proj_dim, True, 0)
        self.scalars = nn.ModuleDict({n: TimestepEmbedding(proj_dim, dim) for n in self.names})

    @property
    def columns(self) -> int:
        return (1 if self.num_classes else 0) + len(self.names)

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        if packed.ndim != 2 or packed.shape[1] != self.columns:
            raise ValueError(
                f"joint condition: expected (B, {self.columns}) packed values, got "
                f"{tuple(packed.shape)}"
            )
        packed = packed.float()
        out = None
        col = 0
        if self.classes is not None:
            out = self.classes(packed[:, 0].round().long())
            col = 1
        for name in self.names:
            emb = self.scalars[name](self.proj(packed[:, col]))
            out = emb if out is None else out + emb
            col += 1
        return out

    @classmethod
    def from_state(
        cls, state: dict, proj_dim: int, prefix: str = "class_embedding."
    ) -> ConditionEmbedding:
        """The embedding whose weights ``state`` holds (its parts read from the keys)."""
        table = state.get(f"{prefix}classes.weight")
        names = tuple(n for n in SCALARS if f"{prefix}scalars.{n}.linear_1.weight" in state)
        if table is None and not names:
            raise ValueError("no joint condition embedding in these weights")
        if table is not None:
            dim = table.shape[1]
        else:
            dim = state[f"{prefix}scalars.{names[0]}.linear_2.weight"].shape[0]
        return cls(dim, proj_dim, 0 if table is None else table.shape[0] - 1, names)


def pack_conditions(labels: torch.Tensor | None, *scalars: torch.Tensor) -> torch.Tensor:
    """The input of :class:`ConditionEmbedding`: (B, columns) float32, the class index first."""
    cols = ([] if labels is None else [labels.float()]) + [s.float() for s in scalars]
    return torch.stack(cols, dim=1)
