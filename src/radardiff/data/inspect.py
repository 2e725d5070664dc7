"""``radardiff data inspect``: what a dataset file holds, in physical units, streamed.

The file is read in blocks of ``block`` samples, so memory does not grow with its size.
Minimum, maximum, mean and standard deviation are exact (accumulated in float64); percentiles
are exact up to ``max_values`` finite pixels and otherwise computed from a seeded Bernoulli
subsample of about ``max_values`` pixels (``percentiles_exact`` says which). The per-sample range
is :math:`\\max_{c,y,x} x - \\min_{c,y,x} x` over the pixels with data, one value per sample.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from radardiff.data.dataset_file import DatasetFile
from radardiff.errors import DataError

VALUE_PERCENTILES = (0.1, 1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0, 99.9)
RANGE_PERCENTILES = (0.0, 5.0, 25.0, 50.0, 75.0, 95.0, 100.0)
NAN_RGB = (255, 0, 255)  # no-data pixels in the preview: a colour no grey ramp contains


@dataclass(frozen=True)
class InspectResult:
    """Summary of a dataset file; values in the file's ``units``. NaN where undefined."""

    path: Path
    n: int
    shape: tuple[int, int, int]
    kind: str
    units: str
    source: str
    pixel_spacing_m: float | None
    class_names: list[str] | None
    class_counts: dict[str, int] | None
    extras: list[str]
    value_min: float
    value_max: float
    mean: float
    std: float
    percentiles: dict[float, float]
    percentiles_exact: bool
    nan_fraction: float
    n_all_nan: int
    range_percentiles: dict[float, float]
    preview: Path | None
    # per map channel: name, units, classes and class fractions, or min / max / mean
    maps: list[dict] = field(default_factory=list)

    def to_text(self) -> str:
        """A human-readable report (what ``radardiff data inspect`` prints)."""
        c, h, w = self.shape
        u = self.units
        lines = [
            f"file        {self.path}",
            f"samples     {self.n}   shape (C, H, W) = ({c}, {h}, {w})",
            f"kind        {self.kind}   units {u}"
            + (f"   pixel spacing {self.pixel_spacing_m:.4g} m" if self.pixel_spacing_m else ""),
        ]
        if self.source:
            lines.append(f"source      {self.source}")
        if self.class_counts is not None:
            counts = ", ".join(f"{k}: {v}" for k, v in self.class_counts.items())
            lines.append(f"classes     {len(self.class_counts)}   {counts}")
        if self.extras:
            lines.append(f"extras      {', '.join(self.extras)}")
        for m in self.maps:
            lines.append(f"map         {_map_text(m)}")
        lines += [
            f"values      min {self.value_min:.6g}  max {self.value_max:.6g}  "
            f"mean {self.mean:.6g}  std {self.std:.6g}  [{u}]",
            "percentiles "
            + _fmt(self.percentiles)
            + ("" if self.percentiles_exact else "  (subsampled)"),
            f"no data     {100 * self.nan_fraction:.3f} % of pixels NaN; {self.n_all_nan} all-NaN samples",
            "sample range " + _fmt(self.range_percentiles) + f"  [{u}]",
        ]
        if self.preview is not None:
            lines.append(f"preview     {self.preview}")
        return "\n".join(lines)


def _map_text(m: dict) -> str:
    nan = f"; {100 * m['nan_fraction']:.3f} % NaN"
    if m["classes"] is not None:
        shares = ", ".join(f"{k} {100 * v:.1f} %" for k, v in m["class_fractions"].items())
        return f"{m['name']}: label map, {shares}{nan}"
    return (
        f"{m['name']}: min {m['min']:.6g}  max {m['max']:.6g}  mean {m['mean']:.6g}  "
        f"[{m['units'] or 'no units'}]{nan}"
    )


def _map_summary(ds: DatasetFile, block: int) -> list[dict]:
    """Each map channel's class shares (label maps) or range and mean, streamed."""
    out = []
    for m, ch in enumerate(ds.info.maps):
        counts = np.zeros(len(ch.classes or ()), np.int64)
        lo, hi, total, n, nan = math.inf, -math.inf, 0.0, 0, 0
        for start in range(0, ds.info.n, block):
            v = ds.maps(slice(start, start + block))[:, m]
            f = v[np.isfinite(v)]
            nan += v.size - f.size
            if ch.categorical:
                counts += np.bincount(f.astype(np.int64), minlength=counts.size)[: counts.size]
            elif f.size:
                lo, hi = min(lo, float(f.min())), max(hi, float(f.max()))
                total, n = total + float(f.sum(dtype=np.float64)), n + f.size
        size = ds.info.n * ds.info.height * ds.info.width
        entry = {**ch.to_json(), "nan_fraction": nan / size if size else math.nan}
        if ch.categorical:
            share = counts / max(int(counts.sum()), 1)
            entry["class_fractions"] = {
                c: float(x) for c, x in zip(ch.classes or (), share, strict=True)
            }
        else:
            entry.update(min=lo if n else math.nan, max=hi if n else math.nan,
                         mean=total / n if n else math.nan)  # fmt: skip
        out.append(entry)
    return out


def _fmt(p: dict[float, float]) -> str:
    return "  ".join(f"p{q:g} {v:.5g}" for q, v in p.items())


def inspect(
    path: str | os.PathLike,
    preview: str | os.PathLike | None = None,
    *,
    block: int = 1024,
    max_values: int = 2_000_000,
    seed: int = 0,
) -> InspectResult:
    """Summarise the dataset file at ``path``; write a PNG preview grid when ``preview`` is set."""
    if preview is not None and Path(preview).suffix.lower() != ".png":
        raise DataError(f"{preview}: the preview is a PNG picture; name it .png")
    with DatasetFile(path) as ds:
        info = ds.info
        labels = ds.labels()
        c, h, w = info.shape
        total = info.n * c * h * w
        p_keep = min(1.0, max_values / total) if total else 1.0
        st = _Streamed(np.full(info.n, np.nan), p_keep, np.random.default_rng(seed))
        for sl, x in ds.iter_blocks(block):
            st.add(sl, x)
        maps = _map_summary(ds, block)
    n_finite = total - st.n_nan
    values = np.concatenate(st.kept) if st.kept else np.empty(0)
    mean = st.mean if n_finite else math.nan
    std = math.sqrt(st.m2 / n_finite) if n_finite else math.nan
    counts = None if labels is None else _class_counts(labels, info.class_names)
    written = write_preview(path, preview) if preview is not None else None
    return InspectResult(
        path=Path(path),
        n=info.n,
        shape=info.shape,
        kind=info.kind,
        units=info.units,
        source=info.source,
        pixel_spacing_m=info.pixel_spacing_m,
        class_names=info.class_names,
        class_counts=counts,
        extras=list(info.extras),
        value_min=float(st.lo) if n_finite else math.nan,
        value_max=float(st.hi) if n_finite else math.nan,
        mean=float(mean),
        std=float(std),
        percentiles=_percentiles(values, VALUE_PERCENTILES),
        percentiles_exact=p_keep >= 1.0,
        nan_fraction=st.n_nan / total if total else math.nan,
        n_all_nan=int(np.isnan(st.ranges).sum()),
        range_percentiles=_percentiles(st.ranges[np.isfinite(st.ranges)], RANGE_PERCENTILES),
        preview=written,
        maps=maps,
    )


@dataclass
class _Streamed:
    """Value statistics of a file accumulated block by block: NaN count, min, max, count, mean
    and M2, a random subset of the values (each kept with probability ``p_keep``) for the
    percentiles, and each sample's range (NaN for a sample without data)."""

    ranges: np.ndarray
    p_keep: float
    rng: np.random.Generator
    n_nan: int = 0
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf
    kept: list[np.ndarray] = field(default_factory=list)

    def add(self, sl: slice, x: np.ndarray) -> None:
        flat = x.reshape(x.shape[0], -1)
        finite = np.isfinite(flat)
        self.n_nan += int(flat.size - finite.sum())
        v = flat[finite].astype(np.float64)
        if v.size:
            self._merge(v)
        has = finite.any(axis=1)
        mx = np.where(finite, flat, -np.inf).max(axis=1)
        mn = np.where(finite, flat, np.inf).min(axis=1)
        self.ranges[sl] = np.where(has, mx - mn, np.nan)

    def _merge(self, v: np.ndarray) -> None:
        self.lo, self.hi = min(self.lo, v.min()), max(self.hi, v.max())
        # Chan et al. pairwise merge of (count, mean, M2): no cancellation for offsets
        bm = v.mean()
        bm2 = np.square(v - bm).sum()
        delta, n_new = bm - self.mean, self.n + v.size
        self.m2 += bm2 + delta**2 * self.n * v.size / n_new
        self.mean += delta * v.size / n_new
        self.n = n_new
        self.kept.append(v if self.p_keep >= 1.0 else v[self.rng.random(v.size) < self.p_keep])


def _class_counts(labels: np.ndarray, class_names: list[str] | None) -> dict[str, int]:
    """Samples per class, by name (the class index when the file names none)."""
    names = class_names or [str(i) for i in range(int(labels.max(initial=-1)) + 1)]
    bins = np.bincount(labels, minlength=len(names)) if labels.size else np.zeros(len(names), int)
    return {name: int(k) for name, k in zip(names, bins, strict=False)}


def _percentiles(v: np.ndarray, qs: Sequence[float]) -> dict[float, float]:
    if v.size == 0:
        return {q: math.nan for q in qs}
    return {q: float(p) for q, p in zip(qs, np.percentile(v, qs), strict=True)}


def write_preview(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    cols: int = 8,
    max_rows: int = 10,
    min_px: int = 64,
) -> Path:
    """A PNG grid of samples (channel 0), each stretched min-max, no data in magenta.

    With labels, row ``k`` holds the first ``cols`` samples of class ``k`` (at most
    ``max_rows`` classes); without, the first ``cols * 4`` samples.
    """
    from PIL import Image

    with DatasetFile(path) as ds:
        labels = ds.labels()
        if labels is not None and labels.size:
            rows = [np.flatnonzero(labels == k)[:cols] for k in np.unique(labels)[:max_rows]]
        else:
            idx = np.arange(min(ds.info.n, cols * 4))
            rows = [idx[i : i + cols] for i in range(0, idx.size, cols)]
        rows = [r for r in rows if r.size]
        _, h, w = ds.info.shape
        zoom = max(1, math.ceil(min_px / max(h, w)))
        th, tw, pad = h * zoom, w * zoom, 2
        n_cols = max((r.size for r in rows), default=1)
        grid = np.full((len(rows) * (th + pad) + pad, n_cols * (tw + pad) + pad, 3), 255, np.uint8)
        for r, idx in enumerate(rows):
            for j, img in enumerate(ds.images(idx)[:, 0]):
                tile = _to_rgb(img).repeat(zoom, 0).repeat(zoom, 1)
                y, x = pad + r * (th + pad), pad + j * (tw + pad)
                grid[y : y + th, x : x + tw] = tile
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(out)
    return out


def _to_rgb(img: np.ndarray) -> np.ndarray:
    finite = np.isfinite(img)
    rgb = np.empty((*img.shape, 3), np.uint8)
    if finite.any():
        lo, hi = float(img[finite].min()), float(img[finite].max())
        scaled = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        grey = np.clip(np.nan_to_num(scaled) * 255 + 0.5, 0, 255).astype(np.uint8)
        rgb[:] = grey[..., None]
    rgb[~finite] = NAN_RGB
    return rgb
