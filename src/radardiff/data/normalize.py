"""Fitted, invertible normalisation between physical units and the network's space.

Methods (``y`` network space, ``x`` physical units, statistics per sample and channel unless
global):

- ``minmax_pm1``: ``y = 2 (x - lo) / (hi - lo) - 1`` (the paper's default);
- ``minmax_01``: ``y = (x - lo) / (hi - lo)``;
- ``standardize``: ``y = (x - mean) / std``;
- ``global_minmax`` / ``global_standardize``: the same with statistics of the whole training set;
- ``none``: ``y = x``.

``to_db`` applies ``10 log10`` first (linear sigma0 -> dB). Wrapped phase (kind
``insar_wrapped``) is given to the network as (cos, sin) channels and inverted with ``atan2``.

A constant sample has ``hi == lo`` (or ``std == 0``): it maps to 0 and back to its value, without
dividing by zero. The per-sample statistics are returned by :meth:`Normalizer.transform` and kept
for the whole training set, so that generated samples can be returned in physical units.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from radardiff.data.dataset_file import DatasetFile
from radardiff.errors import DataError

log = logging.getLogger(__name__)

Method = Literal["minmax_pm1", "minmax_01", "standardize", "global_minmax", "global_standardize", "none"]
METHODS: tuple[str, ...] = Method.__args__  # type: ignore[attr-defined]


@dataclass
class Normalized:
    """A batch in network space: values with no-data filled, the validity mask, the statistics."""

    images: np.ndarray  # (B, C_model, H, W) float32, finite
    mask: np.ndarray  # (B, C_model, H, W) bool, True where the pixel holds data
    stats: np.ndarray  # (B, C, 2) float64: (lo, hi) or (mean, std) per channel


def _per_sample_stats(x: np.ndarray, method: str) -> np.ndarray:
    """(B, C, 2) statistics over H, W ignoring NaN; all-NaN channels give NaN."""
    flat = x.reshape(*x.shape[:2], -1)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN channels are expected here
        if method in ("standardize", "global_standardize"):
            a, b = np.nanmean(flat, axis=-1), np.nanstd(flat, axis=-1)
        else:
            a, b = np.nanmin(flat, axis=-1), np.nanmax(flat, axis=-1)
    return np.stack([a, b], axis=-1).astype(np.float64)


def valid_sample_indices(data: DatasetFile, block: int = 1024) -> np.ndarray:
    """Indices of the samples that hold at least one finite pixel (streamed)."""
    keep = [
        np.arange(sl.start, sl.stop)[np.isfinite(x).reshape(x.shape[0], -1).any(axis=1)]
        for sl, x in data.iter_blocks(block)
    ]
    return np.concatenate(keep) if keep else np.zeros(0, np.int64)


@dataclass
class Normalizer:
    """A fitted normalisation. Build it with :meth:`fit`, store it with :meth:`save`."""

    method: str = "minmax_pm1"
    to_db: bool = False
    phase: bool = False
    channels: int = 1
    global_stats: np.ndarray | None = None  # (C, 2)
    sample_stats: np.ndarray | None = None  # (N_valid, C, 2) of the training set
    sample_labels: np.ndarray | None = None  # (N_valid,) labels of those samples
    skipped_all_nan: int = 0
    valid_indices: np.ndarray | None = None  # training samples that hold data (not all NaN)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise DataError(f"normalisation '{self.method}' unknown; expected one of {', '.join(METHODS)}")

    # ---- shapes -------------------------------------------------------------------------------
    @property
    def model_channels(self) -> int:
        """Channels the network sees: wrapped phase doubles them (cos, sin)."""
        return 2 * self.channels if self.phase else self.channels

    @property
    def is_global(self) -> bool:
        return self.method.startswith("global_")

    # ---- transform / inverse --------------------------------------------------------------------
    def _to_work(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.to_db:
            with np.errstate(all="ignore"):
                x = np.where(x > 0, 10.0 * np.log10(np.where(x > 0, x, 1.0)), np.nan)
        return x

    def stats_of(self, x: np.ndarray) -> np.ndarray:
        """Per-sample statistics (B, C, 2) of physical-unit images (after dB when asked)."""
        x = self._to_work(x)
        if self.is_global:
            return np.broadcast_to(self._global(), (x.shape[0], *self._global().shape)).copy()
        base = "standardize" if self.method == "standardize" else "minmax"
        return _per_sample_stats(x, base)

    def _global(self) -> np.ndarray:
        if self.global_stats is None:
            raise DataError("normaliser: global statistics are not fitted")
        return np.asarray(self.global_stats, dtype=np.float64)

    def transform(self, x: np.ndarray, stats: np.ndarray | None = None) -> Normalized:
        """Physical units (B, C, H, W) -> network space; NaN pixels filled with 0 and masked."""
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise DataError(f"normaliser: expected (B, {self.channels}, H, W) images, got {x.shape}")
        work = self._to_work(x)
        mask = np.isfinite(work)
        if self.phase:
            y = np.concatenate([np.cos(work), np.sin(work)], axis=1)
            mask = np.concatenate([mask, mask], axis=1)
            stats = np.zeros((x.shape[0], self.channels, 2)) if stats is None else stats
        else:
            stats = self.stats_of(x) if stats is None else np.asarray(stats, dtype=np.float64)
            y = self._forward(work, stats)
        y = np.where(mask, y, 0.0).astype(np.float32)
        return Normalized(images=y, mask=mask, stats=stats)

    def _forward(self, x: np.ndarray, stats: np.ndarray) -> np.ndarray:
        if self.method == "none":
            return x
        a, b = stats[..., 0, None, None], stats[..., 1, None, None]
        scale = b if self.method in ("standardize", "global_standardize") else b - a
        ok = scale > 0
        y = (x - a) / np.where(ok, scale, 1.0)
        if self.method in ("minmax_pm1", "global_minmax"):
            y = 2.0 * y - 1.0
        # a constant sample (zero spread) maps to the middle of the output range, and back exactly
        middle = 0.5 if self.method == "minmax_01" else 0.0
        return np.where(ok, y, middle)

    def inverse(self, y: np.ndarray, stats: np.ndarray | None = None) -> np.ndarray:
        """Network space -> physical units. ``stats`` (B, C, 2) as returned by :meth:`transform`."""
        y = np.asarray(y, dtype=np.float64)
        if self.phase:
            c = self.channels
            x = np.arctan2(y[:, c:], y[:, :c])
        else:
            if stats is None:
                if not self.is_global and self.method != "none":
                    raise DataError("normaliser: per-sample statistics are needed to invert")
                stats = self.stats_of(np.zeros((y.shape[0], self.channels, 1, 1)))
            stats = np.asarray(stats, dtype=np.float64)
            a, b = stats[..., 0, None, None], stats[..., 1, None, None]
            if self.method == "none":
                x = y
            elif self.method in ("standardize", "global_standardize"):
                x = y * b + a
            elif self.method in ("minmax_pm1", "global_minmax"):
                x = (y + 1.0) / 2.0 * (b - a) + a
            else:
                x = y * (b - a) + a
        if self.to_db:
            x = 10.0 ** (x / 10.0)
        return x.astype(np.float32)

    # ---- fitting --------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        data: DatasetFile,
        method: str = "minmax_pm1",
        to_db: bool = False,
        block: int = 1024,
    ) -> Normalizer:
        """Stream the training file once: per-sample statistics, global statistics, valid samples."""
        info = data.info
        phase = info.kind == "insar_wrapped"
        norm = cls(method=method, to_db=to_db, phase=phase, channels=info.channels)
        base = "standardize" if "standardize" in method else "minmax"
        stats, valid = [], []
        s1 = s2 = count = 0.0
        for sl, x in data.iter_blocks(block):
            work = norm._to_work(x)
            st = _per_sample_stats(work, "minmax" if base == "minmax" else "standardize")
            ok = np.isfinite(st).all(axis=(1, 2))
            stats.append(st[ok])
            valid.append(np.arange(sl.start, sl.stop)[ok])
            fin = np.isfinite(work)
            s1 = s1 + np.where(fin, work, 0).sum(axis=(0, 2, 3))
            s2 = s2 + np.where(fin, work, 0).__pow__(2).sum(axis=(0, 2, 3))
            count = count + fin.sum(axis=(0, 2, 3))
        all_stats = np.concatenate(stats) if stats else np.zeros((0, info.channels, 2))
        valid_idx = np.concatenate(valid) if valid else np.zeros(0, np.int64)
        norm.skipped_all_nan = info.n - valid_idx.size
        if valid_idx.size == 0:
            raise DataError(f"{data.path}: every sample is all NaN (no data to fit a normaliser)")
        if norm.skipped_all_nan:
            log.warning("%s: skipped %d all-NaN samples", data.path, norm.skipped_all_nan)
        if base == "minmax":
            glob = np.stack([all_stats[:, :, 0].min(0), all_stats[:, :, 1].max(0)], axis=-1)
        else:
            mean = s1 / np.maximum(count, 1)
            glob = np.stack([mean, np.sqrt(np.maximum(s2 / np.maximum(count, 1) - mean**2, 0))], -1)
        norm.global_stats = glob
        norm.sample_stats = all_stats if not norm.is_global else np.broadcast_to(glob, all_stats.shape).copy()
        norm.sample_labels = data.labels(valid_idx) if info.has_labels else None
        norm.valid_indices = valid_idx
        return norm

    def draw_stats(self, n: int, rng: np.random.Generator, labels: np.ndarray | None = None) -> np.ndarray:
        """Draw ``n`` per-sample statistics from the training distribution (per class if given)."""
        if self.sample_stats is None or len(self.sample_stats) == 0:
            raise DataError("normaliser: no training statistics to draw from")
        pool = np.asarray(self.sample_stats)
        if labels is None or self.sample_labels is None:
            return pool[rng.integers(0, len(pool), size=n)]
        out = np.empty((n, *pool.shape[1:]))
        for i, lab in enumerate(np.asarray(labels)):
            idx = np.flatnonzero(self.sample_labels == lab)
            if idx.size == 0:
                idx = np.arange(len(pool))
            out[i] = pool[idx[rng.integers(0, idx.size)]]
        return out

    # ---- persistence ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        arr = lambda a: None if a is None else np.asarray(a).tolist()  # noqa: E731
        return {
            "format": "radardiff.normalizer/1",
            "method": self.method,
            "to_db": self.to_db,
            "phase": self.phase,
            "channels": self.channels,
            "global_stats": arr(self.global_stats),
            "sample_stats": arr(self.sample_stats),
            "sample_labels": arr(self.sample_labels),
            "skipped_all_nan": self.skipped_all_nan,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        arr = lambda k, dt=np.float64: None if d.get(k) is None else np.asarray(d[k], dtype=dt)  # noqa: E731
        return cls(
            method=d["method"], to_db=bool(d["to_db"]), phase=bool(d["phase"]),
            channels=int(d["channels"]), global_stats=arr("global_stats"),
            sample_stats=arr("sample_stats"), sample_labels=arr("sample_labels", np.int64),
            skipped_all_nan=int(d.get("skipped_all_nan", 0)),
        )

    def save(self, path: str | os.PathLike) -> None:
        from radardiff.config import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Normalizer:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise DataError(f"{path}: normaliser file not found") from None
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"{path}: not a valid normaliser file ({err})") from None
