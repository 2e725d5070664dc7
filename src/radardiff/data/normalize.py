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

A constant sample has ``hi == lo`` (or ``std == 0``): it maps to the middle of the output range
(0, or 0.5 for ``minmax_01``) and back to its value, without dividing by zero. NaN pixels (and,
with ``to_db``, intensities <= 0) are no data: filled with 0 in network space and marked False in
the mask. Samples without data in some channel are left out by :meth:`Normalizer.fit` and counted
in a warning. The per-sample statistics are returned by :meth:`Normalizer.transform` and kept for
the whole training set (:attr:`Normalizer.sample_stats`, :meth:`Normalizer.draw_stats`), so that
generated samples can be returned in physical units with :meth:`Normalizer.inverse`.

Global standardisation merges per-block moments (Chan, Golub & LeVeque 1979), so the file is
streamed once and the variance does not suffer the cancellation of ``E[x^2] - E[x]^2``.
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
from radardiff.data.maps import MapEncoder
from radardiff.errors import DataError

log = logging.getLogger(__name__)

Method = Literal[
    "minmax_pm1", "minmax_01", "standardize", "global_minmax", "global_standardize", "none"
]
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


def _holds_data(work: np.ndarray) -> np.ndarray:
    """(B,) True where every channel of a sample has at least one finite pixel."""
    return np.isfinite(work).reshape(*work.shape[:2], -1).any(axis=2).all(axis=1)


def _to_db(x: np.ndarray) -> np.ndarray:
    """``10 log10(x)``; values <= 0 (no valid intensity) become NaN, i.e. no data."""
    with np.errstate(all="ignore"):
        return np.where(x > 0, 10.0 * np.log10(np.where(x > 0, x, 1.0)), np.nan)


def valid_sample_indices(data: DatasetFile, block: int = 1024, to_db: bool = False) -> np.ndarray:
    """Indices of the samples whose every channel holds a finite pixel (streamed).

    The criterion of :meth:`Normalizer.fit`: pass ``to_db`` when the normaliser converts to dB
    (a sample with no positive intensity has no data in dB).
    """
    keep = [
        np.arange(sl.start, sl.stop)[_holds_data(_to_db(x) if to_db else x)]
        for sl, x in data.iter_blocks(block)
    ]
    return np.concatenate(keep) if keep else np.zeros(0, np.int64)


@dataclass
class _Moments:
    """Running count, mean and sum of squared deviations per channel (Chan et al. 1979).

    Merging block moments avoids the cancellation of ``E[x^2] - E[x]^2`` on data whose mean is
    large compared with their spread.
    """

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, channels: int) -> _Moments:
        return cls(np.zeros(channels), np.zeros(channels), np.zeros(channels))

    def add(self, work: np.ndarray) -> None:
        flat = np.moveaxis(work, 1, 0).reshape(work.shape[1], -1)
        fin = np.isfinite(flat)
        cnt = fin.sum(axis=1).astype(np.float64)
        if not cnt.any():
            return
        vals = np.where(fin, flat, 0.0)
        mean = vals.sum(axis=1) / np.maximum(cnt, 1)
        m2 = (np.where(fin, flat - mean[:, None], 0.0) ** 2).sum(axis=1)
        total = self.count + cnt
        delta = mean - self.mean
        safe = np.maximum(total, 1)
        self.mean = self.mean + delta * cnt / safe
        self.m2 = self.m2 + m2 + delta**2 * self.count * cnt / safe
        self.count = total

    def stats(self) -> np.ndarray:
        """(C, 2): mean and population standard deviation."""
        return np.stack([self.mean, np.sqrt(self.m2 / np.maximum(self.count, 1))], axis=-1)


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
    maps: MapEncoder | None = None  # how the maps a model is conditioned on enter it

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise DataError(
                f"normalisation '{self.method}' unknown; expected one of {', '.join(METHODS)}"
            )
        if self.to_db and self.phase:
            raise DataError("normaliser: to_db is for SAR intensity, not wrapped phase")

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
        return _to_db(x) if self.to_db else x

    def stats_of(self, x: np.ndarray) -> np.ndarray:
        """Per-sample statistics (B, C, 2) of physical-unit images (after dB when asked)."""
        return self._stats_of_work(self._to_work(x))

    def _stats_of_work(self, x: np.ndarray) -> np.ndarray:
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
            raise DataError(
                f"normaliser: expected (B, {self.channels}, H, W) images, got {x.shape}"
            )
        if stats is not None and np.shape(stats) != (x.shape[0], self.channels, 2):
            raise DataError(
                f"normaliser: statistics of shape {np.shape(stats)}, expected {(x.shape[0], self.channels, 2)}"
            )
        work = self._to_work(x)
        mask = np.isfinite(work)
        if self.phase:
            y = np.concatenate([np.cos(work), np.sin(work)], axis=1)
            mask = np.concatenate([mask, mask], axis=1)
            stats = np.zeros((x.shape[0], self.channels, 2)) if stats is None else stats
        else:
            stats = (
                self._stats_of_work(work) if stats is None else np.asarray(stats, dtype=np.float64)
            )
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
            # float32 rounds pi up; stay inside (-pi, pi] as the dataset files do
            lim = np.float64(np.nextafter(np.float32(np.pi), np.float32(0)))
            x = np.clip(np.arctan2(y[:, c:], y[:, :c]), -lim, lim)
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
        """Stream the training file once: per-sample statistics, global statistics, valid samples.

        A sample is kept when every channel holds a finite pixel (after dB when ``to_db``); the
        others are skipped and counted in :attr:`skipped_all_nan` and in a logged warning. Wrapped
        phase (kind ``insar_wrapped``) selects the (cos, sin) representation.
        """
        info = data.info
        phase = info.kind == "insar_wrapped"
        if to_db and phase:
            raise DataError(f"{data.path}: to_db is for SAR intensity, not wrapped phase")
        norm = cls(method=method, to_db=to_db, phase=phase, channels=info.channels)
        base = "standardize" if "standardize" in method else "minmax"
        stats, valid = [], []
        moments = _Moments.empty(info.channels)
        for sl, x in data.iter_blocks(block):
            work = norm._to_work(x)
            st = _per_sample_stats(work, base)
            ok = _holds_data(work)
            stats.append(st[ok])
            valid.append(np.arange(sl.start, sl.stop)[ok])
            moments.add(work)
        all_stats = np.concatenate(stats) if stats else np.zeros((0, info.channels, 2))
        valid_idx = np.concatenate(valid) if valid else np.zeros(0, np.int64)
        norm.skipped_all_nan = info.n - valid_idx.size
        if valid_idx.size == 0:
            raise DataError(f"{data.path}: every sample is all NaN (no data to fit a normaliser)")
        if norm.skipped_all_nan:
            log.warning(
                "%s: skipped %d of %d samples that hold no data (all NaN)",
                data.path,
                norm.skipped_all_nan,
                info.n,
            )
        if base == "minmax":
            glob = np.stack([all_stats[:, :, 0].min(0), all_stats[:, :, 1].max(0)], axis=-1)
        else:
            glob = moments.stats()
        norm.global_stats = glob
        norm.sample_stats = (
            all_stats if not norm.is_global else np.broadcast_to(glob, all_stats.shape).copy()
        )
        norm.sample_labels = data.labels(valid_idx) if info.has_labels else None
        norm.valid_indices = valid_idx
        return norm

    def draw_stats(
        self, n: int, rng: np.random.Generator, labels: np.ndarray | None = None
    ) -> np.ndarray:
        """Draw ``n`` per-sample statistics from the training distribution (per class if given)."""
        if self.sample_stats is None or len(self.sample_stats) == 0:
            raise DataError("normaliser: no training statistics to draw from")
        pool = np.asarray(self.sample_stats)
        if labels is None or self.sample_labels is None:
            return pool[rng.integers(0, len(pool), size=n)]
        labels = np.broadcast_to(np.asarray(labels), (n,))
        # one uniform per sample, mapped into its class's pool (the whole pool for unseen classes)
        u = rng.random(n)
        out = np.empty((n, *pool.shape[1:]))
        for lab in np.unique(labels):
            rows = np.flatnonzero(labels == lab)
            idx = np.flatnonzero(self.sample_labels == lab)
            idx = idx if idx.size else np.arange(len(pool))
            out[rows] = pool[idx[np.minimum((u[rows] * idx.size).astype(np.int64), idx.size - 1)]]
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
            "maps": None if self.maps is None else self.maps.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        if d.get("format") != "radardiff.normalizer/1":
            raise ValueError(f"format {d.get('format')!r} is not radardiff.normalizer/1")
        arr = lambda k, dt=np.float64: None if d.get(k) is None else np.asarray(d[k], dtype=dt)  # noqa: E731
        return cls(
            method=d["method"],
            to_db=bool(d["to_db"]),
            phase=bool(d["phase"]),
            channels=int(d["channels"]),
            global_stats=arr("global_stats"),
            sample_stats=arr("sample_stats"),
            sample_labels=arr("sample_labels", np.int64),
            skipped_all_nan=int(d.get("skipped_all_nan", 0)),
            maps=None if d.get("maps") is None else MapEncoder.from_dict(d["maps"]),
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
