"""Per-pixel maps aligned with the images of a dataset file: label maps, DEMs, coherence.

A dataset file may carry ``maps``: float32 ``(N, M, H, W)`` on the grid of ``images`` (same
``N``, ``H``, ``W``), described by the attribute ``map_channels`` (a JSON list, one entry per
channel: ``{"name": "dem", "units": "m", "classes": null}``). A *categorical* channel has
``classes`` (a list of names): its values are the class indices ``0 .. K-1``, as floats. A
*continuous* channel (a DEM in metres, a coherence in [0, 1]) holds physical values.

No data: a map may be NaN only where every image channel is NaN too (a map is the label or the
condition of each valid pixel, so a valid pixel without one could never be used); the reverse,
a map value under no-data image pixels, is normal (a DEM covers the sea where an interferogram
is decorrelated). :func:`check_maps` refuses anything else, naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from radardiff.errors import DataError

MAPS_DATASET = "maps"
MAPS_ATTR = "map_channels"


@dataclass(frozen=True)
class MapChannel:
    """One map channel: its name, its units and, for a label map, its class names."""

    name: str
    units: str = ""
    classes: tuple[str, ...] | None = None

    @property
    def categorical(self) -> bool:
        return self.classes is not None

    def describe(self) -> str:
        if self.categorical:
            return f"{self.name} (classes {', '.join(self.classes or ())})"
        return f"{self.name} ({self.units or 'no units'})"

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "units": self.units,
            "classes": list(self.classes) if self.classes is not None else None,
        }

    @classmethod
    def from_json(cls, d: dict) -> MapChannel:
        classes = d.get("classes")
        return cls(str(d["name"]), str(d.get("units", "")), tuple(classes) if classes else None)


def check_channels(channels: Sequence[MapChannel], where: str) -> tuple[MapChannel, ...]:
    """Refuse nameless, duplicated or class-less categorical channels."""
    channels = tuple(channels)
    names = [c.name for c in channels]
    for c in channels:
        if not c.name or not c.name.replace("_", "").replace("-", "").isalnum():
            raise DataError(f"{where}: map name '{c.name}' must be letters, digits, _ or -")
        if c.classes is not None and (len(c.classes) < 2 or len(set(c.classes)) != len(c.classes)):
            raise DataError(
                f"{where}: label map '{c.name}' needs two or more distinct class names, got "
                f"{list(c.classes)}"
            )
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{where}: map name(s) {', '.join(dup)} given twice")
    return channels


def channels_to_attr(channels: Sequence[MapChannel]) -> str:
    return json.dumps([c.to_json() for c in channels])


def channels_from_attr(text: str | bytes, where: str) -> tuple[MapChannel, ...]:
    try:
        raw = json.loads(text)
        return tuple(MapChannel.from_json(d) for d in raw)
    except (ValueError, TypeError, KeyError):
        raise DataError(
            f"{where}: attribute '{MAPS_ATTR}' is not a JSON list of map channels"
        ) from None


def stray_labels(values: np.ndarray, classes) -> np.ndarray:
    """Where finite ``values`` are not a class index ``0 .. len(classes) - 1`` (bool, the
    shape of ``values``; NaN, no data, is never stray)."""
    with np.errstate(invalid="ignore"):
        bad = (values != np.round(values)) | (values < 0) | (values >= len(classes or ()))
    return bad & np.isfinite(values)


def check_maps(
    maps: np.ndarray, images: np.ndarray, channels: Sequence[MapChannel], where: str
) -> np.ndarray:
    """``maps`` as float32 ``(N, M, H, W)`` for ``images`` ``(N, C, H, W)``, or a one-line
    :class:`DataError` naming ``where``: wrong shape, infinite values, a label value that is not
    one of the classes, or no map value where the image has data."""
    maps = np.asarray(maps, dtype=np.float32)
    want = (images.shape[0], len(channels), *images.shape[2:])
    if maps.shape != want:
        raise DataError(
            f"{where}: maps of shape {maps.shape[1:]} do not fit images {images.shape[1:]} "
            f"with {len(channels)} map channel(s); a map must be on the image's grid"
        )
    if np.isinf(maps).any():
        raise DataError(f"{where}: maps hold infinite values")
    data = np.isfinite(images).any(axis=1)
    for m, c in enumerate(channels):
        v = maps[:, m]
        hole = np.isnan(v) & data
        if hole.any():
            raise DataError(
                f"{where}: map '{c.name}' has no data (NaN) at {int(hole.sum())} pixel(s) where "
                "the image has data"
            )
        if c.categorical:
            bad = stray_labels(v, c.classes)
            if bad.any():
                raise DataError(
                    f"{where}: label map '{c.name}' holds {v[bad][0]:g}, not a class index "
                    f"0..{len(c.classes or ()) - 1} ({', '.join(c.classes or ())})"
                )
    return maps


MAP_FORMAT = "radardiff.maps/1"


@dataclass(frozen=True)
class MapEncoder:
    """How maps enter a network: fitted on a training file, saved with its normaliser.

    The network input of a map is, channel by channel of :attr:`channels`: one-hot planes for
    a label map (one per class), the standardised value ``(v - mean) / std`` for a continuous
    map (mean and standard deviation over the training file's valid map pixels), 0 where a map
    has no data; then one *presence* plane, 1 for a given map and 0 for the dropped one of
    classifier-free guidance (every plane 0: "no map"), so that a map whose encoding happens to
    be 0 is never mistaken for no map.
    """

    channels: tuple[MapChannel, ...]
    moments: tuple[tuple[float, float] | None, ...]  # (mean, std) of each continuous channel

    @property
    def width(self) -> int:
        """Input planes the maps take in the network."""
        return sum(len(c.classes) if c.classes else 1 for c in self.channels) + 1

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.channels)

    @classmethod
    def fit(cls, path: str, available: Sequence[MapChannel], maps_of, names: Sequence[str],
            n: int, block: int = 1024) -> MapEncoder:  # fmt: skip
        """The encoder of the map channels ``names`` of a training file at ``path`` holding
        ``available`` channels; ``maps_of(slice)`` reads its maps ``(b, M, H, W)``."""
        index = select_channels(available, names, path)
        chosen = tuple(available[i] for i in index)
        sums = np.zeros((len(index), 3))  # count, sum, sum of squares (float64)
        for start in range(0, n, block):
            m = maps_of(slice(start, min(start + block, n)))[:, index].astype(np.float64)
            for k, c in enumerate(chosen):
                if not c.categorical:
                    v = m[:, k][np.isfinite(m[:, k])]
                    sums[k] += (v.size, v.sum(), np.square(v).sum())
        moments = []
        for k, c in enumerate(chosen):
            if c.categorical:
                moments.append(None)
                continue
            count, s1, s2 = sums[k]
            if count == 0:
                raise DataError(f"{path}: map '{c.name}' holds no data")
            mean = s1 / count
            std = float(np.sqrt(max(s2 / count - mean**2, 0.0)))
            moments.append((float(mean), std if std > 1e-12 else 1.0))
        return cls(chosen, tuple(moments))

    def encode(self, maps: np.ndarray) -> np.ndarray:
        """Maps ``(B, M, H, W)`` in the encoder's channel order to network planes
        ``(B, width, H, W)`` float32 (presence 1)."""
        planes = []
        for k, (c, mom) in enumerate(zip(self.channels, self.moments, strict=True)):
            v = maps[:, k]
            if c.categorical:
                cls_idx = np.arange(len(c.classes or ()), dtype=np.float32)[None, :, None, None]
                planes.append((v[:, None] == cls_idx).astype(np.float32))
            else:
                z = (v - mom[0]) / mom[1]
                planes.append(np.where(np.isfinite(z), z, 0.0).astype(np.float32)[:, None])
        planes.append(np.ones((maps.shape[0], 1, *maps.shape[2:]), np.float32))
        return np.concatenate(planes, axis=1)

    def to_dict(self) -> dict:
        return {
            "format": MAP_FORMAT,
            "channels": [c.to_json() for c in self.channels],
            "moments": [list(m) if m is not None else None for m in self.moments],
        }

    @classmethod
    def from_dict(cls, d: dict) -> MapEncoder:
        if d.get("format") != MAP_FORMAT:
            raise ValueError(f"map encoder format {d.get('format')!r} is not {MAP_FORMAT}")
        channels = tuple(MapChannel.from_json(c) for c in d["channels"])
        moments = tuple(tuple(m) if m is not None else None for m in d["moments"])
        return cls(channels, moments)  # type: ignore[arg-type]

    def describe(self) -> str:
        return "; ".join(c.describe() for c in self.channels)


def select_channels(
    available: Sequence[MapChannel], wanted: Sequence[str | MapChannel], where: str
) -> list[int]:
    """Positions in ``available`` of the channels ``wanted`` (names, or channels whose units
    and classes must match too): a missing map, or a label map whose classes differ from the
    ones a model was trained on, is refused in one line naming ``where``."""
    names = [c.name for c in available]
    out = []
    for w in wanted:
        name = w if isinstance(w, str) else w.name
        if name not in names:
            have = ", ".join(names) if names else "no maps"
            raise DataError(f"{where}: no map '{name}' (it holds {have})")
        got = available[names.index(name)]
        if isinstance(w, MapChannel):
            if w.classes != got.classes:
                raise DataError(
                    f"{where}: label map '{name}' has classes {list(got.classes or ())}, but the "
                    f"model was trained on {list(w.classes or ())}"
                )
            if not w.categorical and w.units != got.units:
                raise DataError(
                    f"{where}: map '{name}' is in {got.units or 'no units'}, but the model was "
                    f"trained on {w.units or 'no units'}"
                )
        out.append(names.index(name))
    return out
