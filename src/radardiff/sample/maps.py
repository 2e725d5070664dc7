"""The maps a map-conditioned run samples over (``sample --map FILE``), read and checked.

``FILE`` is a dataset file with maps (``data prepare --map``, ``data synth sar_map``...; its
maps are taken by name, their classes and units checked against the run's), a ``.npy`` array
``(H, W)``, ``(M, H, W)`` or ``(N, M, H, W)`` holding the run's map channels in its order, or a
one-band GeoTIFF / PNG for a run with one map channel. One map serves every sample; a file of
several gives sample ``i`` map ``i`` (it must hold at least ``--n``).

Generated images hold data everywhere, so a map must too: a NaN in a map is refused, as is a
map off the model's grid, a label value outside its classes, ``--map`` for a run without maps
and a map-conditioned run without ``--map``. A cascade gives its first stage the map at the
final size, reduced by :func:`downsample_maps` (mean of each block for continuous maps, the
most frequent class for label maps), so each stage follows the same map at its resolution.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radardiff.data.dataset_file import SUFFIXES, DatasetFile
from radardiff.data.maps import MapChannel, MapEncoder, select_channels, stray_labels
from radardiff.errors import ConfigError, RadarDiffError


@dataclass(frozen=True)
class RequestMaps:
    """The maps of a request in the run's channel order, raw (physical values, class indices)."""

    maps: np.ndarray  # (K, M, H, W) float32
    encoder: MapEncoder

    def of(self, idx: np.ndarray) -> np.ndarray:
        """The maps of samples ``idx``: the one map for all, or map ``i`` for sample ``i``."""
        idx = np.asarray(idx, np.int64)
        return self.maps[np.zeros_like(idx) if len(self.maps) == 1 else idx]

    @property
    def channels(self) -> tuple[MapChannel, ...]:
        return self.encoder.channels


def check_request_maps(run, path: str | None) -> None:
    """``--map`` given exactly when the run is map-conditioned."""
    enc = run.normalizer.maps
    if enc is None and path:
        raise ConfigError(f"--map {path}: {run.run.root} was trained without maps")
    if enc is not None and not path:
        raise ConfigError(
            f"{run.run.root}: the model is conditioned on maps ({enc.describe()}); give --map "
            "FILE (a dataset file with those maps, a .npy array or a GeoTIFF)"
        )


def load_request_maps(run, path: str | None, n: int, scale: int = 1) -> RequestMaps | None:
    """The checked maps of a request (None for a run without maps)."""
    check_request_maps(run, path)
    enc = run.normalizer.maps
    if enc is None:
        return None
    raw = _read(Path(path), enc)
    size = run.cfg.model.image_size
    if scale > 1 and raw.shape[2:] != (size, size):  # a cascade's final map, for its first stage
        raw = downsample_maps(raw, enc.channels, scale, path)
    if raw.shape[2:] != (size, size):
        raise ConfigError(
            f"--map {path}: maps of {raw.shape[2]} x {raw.shape[3]} pixels, but the model makes "
            f"{size} x {size} images; a map must be on the image's grid"
        )
    if len(raw) != 1 and len(raw) < n:
        raise ConfigError(f"--map {path}: holds {len(raw)} maps for --n {n} (give 1, or {n})")
    _check_values(raw, enc.channels, path)
    return RequestMaps(raw, enc)


def _read(path: Path, enc: MapEncoder) -> np.ndarray:
    if not path.is_file():
        raise ConfigError(f"--map {path}: no such file")
    suffix = path.suffix.lower()
    if suffix in SUFFIXES:
        try:
            f = DatasetFile(path)
            pick = select_channels(f.info.maps, enc.channels, f"--map {path}")
            return f.maps()[:, pick]
        except RadarDiffError as err:
            raise ConfigError(str(err)) from None
    if suffix == ".npy":
        arr = np.load(path, allow_pickle=False).astype(np.float32)
        arr = arr.reshape((1,) * (4 - arr.ndim) + arr.shape) if arr.ndim in (2, 3) else arr
        if arr.ndim != 4 or arr.shape[1] != len(enc.channels):
            raise ConfigError(
                f"--map {path}: an array of shape {np.load(path, mmap_mode='r').shape}; the run "
                f"takes (H, W), (M, H, W) or (N, M, H, W) with M = {len(enc.channels)} "
                f"({', '.join(enc.names)})"
            )
        return arr
    if len(enc.channels) != 1:
        raise ConfigError(
            f"--map {path}: one band, but the run takes {len(enc.channels)} maps "
            f"({', '.join(enc.names)}); give a dataset file or a .npy array"
        )
    from radardiff.data.readers.raster import read_raster

    try:
        data = read_raster(path).data
    except RadarDiffError as err:
        raise ConfigError(f"--map {err}") from None
    if data.shape[0] != 1:
        raise ConfigError(f"--map {path}: {data.shape[0]} bands; a map file holds one")
    return data[None].astype(np.float32)


def _check_values(raw: np.ndarray, channels, path) -> None:
    for m, c in enumerate(channels):
        v = raw[:, m]
        if not np.isfinite(v).all():
            raise ConfigError(
                f"--map {path}: map '{c.name}' has no data (NaN) at {int((~np.isfinite(v)).sum())} "
                "pixel(s); generated images hold data everywhere, so their map must too"
            )
        if c.categorical:
            bad = stray_labels(v, c.classes)
            if bad.any():
                raise ConfigError(
                    f"--map {path}: label map '{c.name}' holds {v[bad][0]:g}, not a class the "
                    f"model was trained on (0..{len(c.classes or ()) - 1}: "
                    f"{', '.join(c.classes or ())})"
                )


def downsample_maps(maps: np.ndarray, channels, factor: int, where: str = "maps") -> np.ndarray:
    """``(K, M, H, W)`` reduced ``factor`` times on each side: the mean of each block of a
    continuous map (over its valid pixels), the most frequent class of a label map's block
    (the lowest class index on a tie)."""
    k, m, h, w = maps.shape
    if h % factor or w % factor:
        raise ConfigError(f"--map {where}: {h} x {w} pixels do not reduce by {factor}")
    blocks = maps.reshape(k, m, h // factor, factor, w // factor, factor)
    out = np.empty((k, m, h // factor, w // factor), np.float32)
    for j, c in enumerate(channels):
        b = blocks[:, j]
        if not c.categorical:
            with np.errstate(invalid="ignore"):
                valid = np.isfinite(b)
                total = np.where(valid, b, 0.0).sum(axis=(2, 4))
                out[:, j] = total / valid.sum(axis=(2, 4))  # NaN where a block has no data
            continue
        counts = np.stack([(b == cls).sum(axis=(2, 4)) for cls in range(len(c.classes or ()))])
        out[:, j] = counts.argmax(axis=0)
    return out


def map_digest(path: str | None) -> str:
    """The SHA-256 of a map file's bytes (part of a request's signature: parts sampled over
    another map are never reused)."""
    if not path:
        return ""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        raise ConfigError(f"--map {path}: cannot read ({err.strerror or err})") from None
    return digest.hexdigest()[:16]
