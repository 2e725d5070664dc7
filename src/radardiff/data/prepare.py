"""``radardiff data prepare``: turn what users have into dataset files (see DESIGN.md).

The source is streamed: one item (image, scene, stack entry) is read at a time, optionally
converted to dB, cut into tiles, screened for no data, resized, and appended to the output in
batches of ``batch_size``, so memory holds at most one source item plus one batch per split.

Splits are seeded and exact: with ``split=(0.8, 0.1, 0.1)`` the source items are permuted by
``numpy.random.default_rng(seed)`` and cut in counts given by largest-remainder rounding of
``fraction * n_items``. Every tile of an item goes to the item's split, so overlapping tiles of
one scene never leak between train and test. A single source item (one scene) is split by
tile instead, which can leak where tiles overlap (``stride < tile``): a warning says so.
Each output names its source items (attribute ``items``, a JSON list, when under 60,000
characters), so that a later step can check that two files share no scene, and records the item
of every sample (extra ``scene``: its index in ``items``), so that a later step can take the
tiles of some scenes only (:mod:`radardiff.data.scenes`).

Maps (``maps=[MapSpec(...)]``, ``--map NAME=PATH``): a label map, a DEM, a coherence map per
scene or for the whole stack (:mod:`radardiff.data.map_sources`), read on each scene's grid, cut
into the same tiles as the images (nearest neighbour for label maps where samples are resized)
and written as the output's ``maps`` (:mod:`radardiff.data.maps`).

Each output is written to a temporary file and renamed when complete
(:class:`~radardiff.data.dataset_file.DatasetWriter`): an interrupted run leaves no
half-written dataset.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radardiff import _stop
from radardiff.data.dataset_file import KINDS, DatasetWriter, check_dataset_path
from radardiff.data.map_sources import MapSet, MapSpec
from radardiff.data.maps import MapChannel, check_maps
from radardiff.data.readers import open_reader
from radardiff.data.readers.base import Reader, negative_fraction
from radardiff.data.scenes import SCENE_EXTRA
from radardiff.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class SplitOutput:
    """One written file: its split name (``all`` without a split), path and counts."""

    name: str
    path: Path
    n: int
    class_counts: dict[str, int] | None


@dataclass(frozen=True)
class PrepareResult:
    """What :func:`prepare` read, skipped and wrote."""

    format: str
    n_items: int
    n_written: int
    outputs: tuple[SplitOutput, ...]
    shape: tuple[int, int, int]
    kind: str
    units: str
    class_names: list[str] | None
    pixel_spacing_m: float | None
    skipped_all_nan: int
    skipped_nan_fraction: int
    skipped_too_small: int
    seconds: float
    maps: tuple[MapChannel, ...] = ()


def parse_split(text: str) -> tuple[float, ...]:
    """``"0.8,0.1,0.1"`` -> (0.8, 0.1, 0.1); two or three non-negative fractions summing to 1."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--split: '{text}' is not a comma-separated list of fractions") from None
    _check_split(values)
    return values


def _check_split(values: Sequence[float]) -> None:
    if not 2 <= len(values) <= 3 or any(not np.isfinite(v) or v < 0 for v in values):
        raise ConfigError(
            f"--split: expected 2 or 3 non-negative fractions (train,val[,test]), got {list(values)}"
        )
    if abs(sum(values) - 1.0) > 1e-6:
        raise ConfigError(f"--split: fractions {list(values)} sum to {sum(values):g}, not 1")


def split_counts(n: int, fractions: Sequence[float]) -> np.ndarray:
    """Exact counts summing to ``n``: floors of ``f * n`` plus the largest remainders."""
    raw = np.asarray(fractions, dtype=np.float64) * n
    counts = np.floor(raw).astype(np.int64)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    return counts


def split_assignment(n: int, fractions: Sequence[float], seed: int) -> np.ndarray:
    """Split index of each of ``n`` units, a seeded permutation cut into :func:`split_counts`."""
    perm = np.random.default_rng(seed).permutation(n)
    out = np.empty(n, dtype=np.int64)
    start = 0
    for s, c in enumerate(split_counts(n, fractions)):
        out[perm[start : start + c]] = s
        start += c
    return out


def split_paths(out: Path, names: Sequence[str]) -> list[Path]:
    """``data.h5`` -> ``data_train.h5``, ``data_val.h5`` ..."""
    suffix = out.suffix or ".h5"
    return [out.with_name(f"{out.stem}_{name}{suffix}") for name in names]


def tiles(img: np.ndarray, tile: int, stride: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """Row-major ``(y, x, crop)`` for every ``tile x tile`` crop at multiples of ``stride``."""
    _, h, w = img.shape
    for y in range(0, h - tile + 1, stride):
        for x in range(0, w - tile + 1, stride):
            yield y, x, img[:, y : y + tile, x : x + tile]


def resize_nan(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(C, H, W)`` to ``size = (h, w)`` with Pillow's antialiased bilinear filter.

    No-data aware: with validity mask :math:`m`, the output is
    :math:`R(x\\,m) / R(m)` (normalised convolution), and NaN where :math:`R(m) < 1/2`, i.e.
    where most of the filter's support had no data.
    """
    from PIL import Image

    h, w = size
    if img.shape[1:] == (h, w):
        return img
    bilinear = Image.Resampling.BILINEAR

    def r(a: np.ndarray) -> np.ndarray:
        return np.asarray(
            Image.fromarray(np.ascontiguousarray(a, np.float32)).resize((w, h), bilinear)
        )

    valid = np.isfinite(img)
    out = np.empty((img.shape[0], h, w), np.float32)
    for c in range(img.shape[0]):
        if valid[c].all():
            out[c] = r(img[c])
            continue
        den = r(valid[c].astype(np.float32))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[c] = r(np.where(valid[c], img[c], 0.0)) / den
        out[c][den < 0.5] = np.nan
    return out


def to_db(img: np.ndarray) -> np.ndarray:
    """:math:`10 \\log_{10} x`; non-positive intensities have no dB value and become NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 10.0 * np.log10(img)
    out[~np.isfinite(out)] = np.nan
    return out.astype(np.float32, copy=False)


# the share of negative values above which an image cannot be linear intensity or amplitude
DB_NEGATIVE_FRACTION = 0.05


def _check_linear(img: np.ndarray, name: str) -> None:
    """Refuse ``--db`` on values that are already logarithmic: linear intensity or amplitude is
    never negative (beyond a few pixels of noise subtraction), dB values mostly are."""
    negative = negative_fraction(img)
    if negative > DB_NEGATIVE_FRACTION:
        raise DataError(
            f"{name}: --db: {100 * negative:.0f} % of the values are negative "
            f"(min {np.nanmin(img):.3g}): these are not linear intensities but logarithmic (dB) "
            "already; drop --db and give --units dB"
        )


COMPLEX_MODES = ("intensity", "amplitude", "db", "phase")
COMPLEX_UNITS = {"intensity": "linear", "amplitude": "linear", "db": "dB", "phase": "rad"}


def from_complex(img: np.ndarray, mode: str, name: str) -> np.ndarray:
    """Complex SAR values to real ones: ``intensity`` ``|z|^2``, ``amplitude`` ``|z|``, ``db``
    ``10 log10 |z|^2``, ``phase`` ``arg z`` (radians). ``img`` is complex (C, H, W), or real with
    channels (real, imaginary) pairs: 2 channels make one, 2k channels k."""
    if not np.iscomplexobj(img):
        if img.shape[0] % 2:
            raise DataError(
                f"{name}: --complex {mode}: {img.shape[0]} real channel(s) cannot be (real, "
                "imaginary) pairs; complex data are a complex type or an even number of channels"
            )
        img = img[0::2] + 1j * img[1::2]
    if mode == "phase":
        return np.angle(img).astype(np.float32)
    power = (img.real.astype(np.float64) ** 2 + img.imag.astype(np.float64) ** 2).astype(np.float32)
    if mode == "intensity":
        return power
    if mode == "amplitude":
        return np.sqrt(power)
    return to_db(power)


@dataclass
class _Counts:
    all_nan: int = 0
    nan_fraction: int = 0
    too_small: int = 0


def prepare(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    format: str = "auto",
    key: str | None = None,
    label_key: str | None = None,
    classes: str = "auto",
    nodata: float | None = None,
    tile: int | None = None,
    stride: int | None = None,
    max_nan_fraction: float | None = None,
    resize: int | tuple[int, int] | None = None,
    crop: int | tuple[int, int] | None = None,
    kind: str | None = None,
    units: str | None = None,
    db: bool = False,
    complex_mode: str | None = None,
    split: Sequence[float] | None = None,
    seed: int = 0,
    batch_size: int = 256,
    progress: ProgressFn | None = None,
    maps: Sequence[MapSpec] = (),
) -> PrepareResult:
    """Read ``src`` and write dataset file(s) at ``out`` (``OUT_train.h5``... with ``split``).

    Parameters
    ----------
    format, key, label_key, classes, nodata : reading, see :func:`.readers.open_reader`.
    tile, stride : ``tile x tile`` crops of each item every ``stride`` pixels (default ``tile``).
    max_nan_fraction : drop samples with more no data (default 0.5 with tiles, else 1.0); all-NaN
        samples are always dropped. Dropped samples are counted.
    resize, crop : output size S or (H, W) of each sample, resampled (:func:`resize_nan`) or
        centre-cropped and padded with no data (:func:`crop_or_pad`); one or the other.
    kind, units : dataset attributes; default to what the source, ``db`` or ``complex_mode`` imply.
    db, complex_mode : dB of intensities (:func:`to_db`); ``intensity``, ``amplitude``, ``db`` or
        ``phase`` of complex data (:func:`from_complex`), which are refused without it.
    split, seed : train/val[/test] fractions and the seed of the split.
    batch_size, progress : samples written at a time; ``progress(items_done, items_total)``.
    maps : maps beside the images (:class:`~radardiff.data.map_sources.MapSpec`), written as the
        outputs' ``maps``; a map off the scene's grid, or without data where the scene has
        some, is refused.
    """
    t0 = time.perf_counter()
    src, out = Path(src), check_dataset_path(out)
    plan = _checked_plan(
        tile, stride, max_nan_fraction, resize, crop, kind, batch_size, split, db, complex_mode
    )
    reader = open_reader(src, format, key=key, label_key=label_key, classes=classes, nodata=nodata)
    map_set = None
    try:
        n = _item_count(reader, src)
        kind, units = _kind_and_units(reader, kind, units, db, complex_mode)
        names, fracs, paths = _split_outputs(out, split)
        assign = _assignment(src, n, fracs, seed, plan)
        map_set = MapSet(maps, reader) if maps else None
        options = _options_record(reader, label_key, plan, split, seed, nodata, map_set)
        sink = _Sink(paths, names, reader, kind, units, plan.size, options, batch_size)
        sink.map_channels = map_set.channels if map_set is not None else ()
        outputs, counts = _write_all(
            src, reader, sink, plan, assign, fracs, seed, progress, map_set
        )
    finally:
        reader.close()
        if map_set is not None:
            map_set.close()
    _warn_skipped(src, counts, plan.max_nan)
    return _result(reader, n, sink, outputs, counts, time.perf_counter() - t0)


def _result(reader: Reader, n: int, sink: _Sink, outputs, counts: _Counts, seconds: float):
    return PrepareResult(
        format=reader.info.format,
        n_items=n,
        n_written=sum(o.n for o in outputs),
        outputs=outputs,
        shape=sink.shape,
        kind=sink.kind,
        units=sink.units,
        class_names=reader.class_names,
        pixel_spacing_m=sink.spacing(),
        skipped_all_nan=counts.all_nan,
        skipped_nan_fraction=counts.nan_fraction,
        skipped_too_small=counts.too_small,
        seconds=seconds,
        maps=sink.map_channels,
    )


def _item_count(reader: Reader, src: Path) -> int:
    n = len(reader)
    if n == 0:
        raise DataError(f"{src}: no samples found")
    return n


def _kind_and_units(reader: Reader, kind, units, db: bool, complex_mode) -> tuple[str, str]:
    """The dataset's kind and units: as given, else implied by the conversion, else the
    source's."""
    if complex_mode is not None and complex_mode not in COMPLEX_MODES:
        raise ConfigError(
            f"--complex: unknown mode '{complex_mode}'; use one of {', '.join(COMPLEX_MODES)}"
        )
    if complex_mode is not None and db:
        raise ConfigError("--complex and --db: use --complex db for dB of complex data")
    implied = COMPLEX_UNITS.get(complex_mode or "", "dB" if db else None)
    source_kind = reader.info.kind
    if source_kind == "generic" and (db or complex_mode in ("intensity", "db")):
        source_kind = "sar_backscatter"  # dB of intensities: backscatter whatever the files say
    return kind or source_kind, units or implied or reader.info.units


def _split_outputs(out: Path, split: Sequence[float] | None):
    """Names, fractions and paths of the output files: one per non-empty split, or ``out``."""
    if not split:
        return ["all"], [1.0], [out]
    names = [s for s, f in zip(SPLIT_NAMES, split, strict=False) if f > 0]
    return names, [f for f in split if f > 0], split_paths(out, names)


def _assignment(src: Path, n: int, fracs: list[float], seed: int, plan: _Plan):
    """The split of each item; None when a single item's samples are split themselves."""
    if n > 1 or len(fracs) == 1:
        return split_assignment(n, fracs, seed)
    if plan.tile is not None and plan.stride < plan.tile:
        log.warning("%s: one scene split by overlapping tiles; splits share pixels", src)
    return None


def _options_record(
    reader: Reader, label_key, plan: _Plan, split, seed: int, nodata, map_set: MapSet | None
) -> dict:
    """The options as recorded in the output files (attribute ``prepare_options``)."""
    maps = [
        {"name": s.name, "path": str(s.path), "codes": list(s.codes) if s.codes else None}
        for s in (map_set.specs if map_set is not None else ())
    ]
    return {
        "format": reader.info.format,
        "key": getattr(reader, "key", None),
        "label_key": label_key,
        "tile": plan.tile,
        "stride": plan.stride,
        "max_nan_fraction": plan.max_nan,
        "resize": plan.size,
        "crop": list(plan.crop) if plan.crop else None,
        "db": plan.db,
        "complex": plan.complex_mode,
        "split": list(split) if split else None,
        "seed": seed,
        "nodata": nodata,
        "maps": maps or None,
    }


def _write_all(src, reader, sink, plan, assign, fracs, seed, progress, map_set=None):
    """Stream every item into ``sink`` and close it; on any failure what was written goes."""
    counts = _Counts()
    with ExitStack() as stack:
        stack.callback(sink.abort_unclosed)
        _stream(reader, sink, plan, counts, assign, fracs, seed, progress, map_set)
        _check_written(src, sink, counts, plan.max_nan)
        outputs = sink.close()
    return outputs, counts


def _warn_skipped(src: Path, counts: _Counts, max_nan: float) -> None:
    if counts.all_nan + counts.nan_fraction + counts.too_small:
        log.warning(
            "%s: skipped %d all-NaN, %d over %.2f NaN, %d smaller than the tile",
            src,
            counts.all_nan,
            counts.nan_fraction,
            max_nan,
            counts.too_small,
        )


@dataclass(frozen=True)
class _Plan:
    tile: int | None
    stride: int | None
    max_nan: float
    size: tuple[int, int] | None
    db: bool
    complex_mode: str | None = None
    crop: tuple[int, int] | None = None


def _stream(reader, sink, plan: _Plan, counts, assign, fracs, seed, progress, map_set) -> None:
    """Read every item once and hand its samples to ``sink`` in the split of the item.

    Without ``assign`` (a single source item) the samples of that one item are split
    themselves, which needs them all first; one scene's tiles are what memory holds then.
    """
    labels = reader.label_indices()
    pending: list[tuple[tuple[np.ndarray, np.ndarray | None], int | None]] = []
    rows = 0
    if progress is not None:
        progress(0, len(reader))
    for i in range(len(reader)):
        _stop.check()
        img = reader.read(i)
        if plan.complex_mode is not None:
            img = from_complex(img, plan.complex_mode, reader.name(i))
        elif np.iscomplexobj(img):
            raise DataError(
                f"{reader.name(i)}: complex values; give --complex intensity, amplitude, db or "
                "phase"
            )
        if plan.db:
            _check_linear(img, reader.name(i))
            img = to_db(img)
        lab = None if labels is None else int(labels[i])
        rows = plan.tile or img.shape[1]
        maps = _item_maps(map_set, i, img, reader.name(i))
        if plan.crop is not None:
            img = crop_or_pad(img, plan.crop)
            maps = crop_or_pad(maps, plan.crop) if maps is not None else None
        categorical = map_set.categorical if map_set is not None else ()
        for sample in _samples(
            img, plan.tile, plan.stride, plan.max_nan, plan.size, counts, maps, categorical
        ):
            if assign is not None:
                sink.add(int(assign[i]), sample, lab, reader.name(i), rows)
            else:
                pending.append((sample, lab))
        if progress is not None:
            progress(i + 1, len(reader))
    order = split_assignment(len(pending), fracs, seed)
    for s, (sample, lab) in zip(order, pending, strict=True):
        sink.add(int(s), sample, lab, reader.name(0), rows)


def _item_maps(map_set: MapSet | None, i: int, img: np.ndarray, name: str) -> np.ndarray | None:
    """The maps of item ``i`` on its grid, checked against its no data (one line naming the
    scene when a map has a hole where the scene has data)."""
    if map_set is None:
        return None
    maps = map_set.read(i, img.shape[1:])
    check_maps(maps[None], img[None], map_set.channels, name)
    return maps


def _size_option(value, option: str) -> tuple[int, int] | None:
    if value is None:
        return None
    size = (value, value) if isinstance(value, int) else tuple(value)
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"{option}: expected a positive size S or HxW, got {value}")
    return size  # type: ignore[return-value]


def crop_or_pad(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(C, H, W)`` centre-cropped to ``size = (h, w)``, smaller sides padded with NaN (no
    data) around the centre; no pixel is resampled."""
    h, w = size
    out = np.full((img.shape[0], h, w), np.nan, np.float32)
    H, W = img.shape[1:]
    ch, cw = min(h, H), min(w, W)
    sy, sx = (H - ch) // 2, (W - cw) // 2
    dy, dx = (h - ch) // 2, (w - cw) // 2
    out[:, dy : dy + ch, dx : dx + cw] = img[:, sy : sy + ch, sx : sx + cw]
    return out


def _checked_plan(
    tile, stride, max_nan_fraction, resize, crop, kind, batch_size, split, db, complex_mode
) -> _Plan:
    """How every sample is cut and sized, once the options are checked (the first wrong one is
    refused)."""
    if tile is not None and tile < 1:
        raise ConfigError(f"--tile: must be a positive number of pixels, got {tile}")
    if stride is not None and tile is None:
        raise ConfigError("--stride: needs --tile")
    stride = stride if stride is not None else tile
    if stride is not None and stride < 1:
        raise ConfigError(f"--stride: must be a positive number of pixels, got {stride}")
    max_nan = max_nan_fraction if max_nan_fraction is not None else (0.5 if tile else 1.0)
    if not 0.0 <= max_nan <= 1.0:
        raise ConfigError(f"--max-nan: must lie in [0, 1], got {max_nan}")
    size = _size_option(resize, "--resize")
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"--kind: unknown kind '{kind}'; expected one of {', '.join(KINDS)}")
    if batch_size < 1:
        raise ConfigError(f"batch_size: must be positive, got {batch_size}")
    if crop is not None and resize is not None:
        raise ConfigError("--crop and --resize: give one (crop keeps pixels, resize resamples)")
    crop_size = _size_option(crop, "--crop")
    if split is not None:
        _check_split(split)
    return _Plan(tile, stride, max_nan, size, db, complex_mode, crop_size)


def _samples(
    img, tile, stride, max_nan, size, counts: _Counts, maps=None, categorical=()
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """``(image, maps)`` of every kept sample; maps (or None) cut and sized as the image."""
    c = img.shape[0]
    both = img if maps is None else np.concatenate([img, maps], axis=0)
    if tile is None:
        crops = [both]
    else:
        if img.shape[1] < tile or img.shape[2] < tile:
            counts.too_small += 1
            return
        crops = (cr for _, _, cr in tiles(both, tile, stride))
    for crop in crops:
        image = crop[:c]
        nan = np.isnan(image)
        frac = nan.mean() if nan.any() else 0.0
        if frac == 1.0:
            counts.all_nan += 1
            continue
        if frac > max_nan:
            counts.nan_fraction += 1
            continue
        if size is not None:
            image = resize_nan(image, size)
        yield image, (None if maps is None else _sized_maps(crop[c:], size, categorical))


def _sized_maps(maps: np.ndarray, size, categorical: Sequence[bool]) -> np.ndarray:
    """Maps resized like the image: label maps by nearest neighbour (a class is never
    averaged into another), other maps as :func:`resize_nan` does images."""
    if size is None:
        return maps
    from PIL import Image

    out = resize_nan(maps, size)
    h, w = size
    for m, is_label in enumerate(categorical):
        if is_label:
            img = Image.fromarray(np.ascontiguousarray(maps[m], np.float32))
            out[m] = np.asarray(img.resize((w, h), Image.Resampling.NEAREST))
    return out


def _check_written(src: Path, sink: _Sink, counts: _Counts, max_nan: float) -> None:
    if sink.total:
        return
    if counts.all_nan and not (counts.nan_fraction or counts.too_small):
        raise DataError(f"{src}: every sample is all NaN (no data); nothing to write")
    if counts.nan_fraction:
        raise DataError(
            f"{src}: every sample has more than {max_nan:g} no-data pixels; raise --max-nan"
        )
    if counts.too_small:
        raise DataError(f"{src}: every image is smaller than the tile; lower --tile")
    raise DataError(f"{src}: no samples found")


MAX_ITEMS_ATTR = 60_000  # characters of the JSON list of source items kept as attribute 'items'


class _Sink:
    """Batched writers, one per split, opened at the first sample (its shape fixes the file's)."""

    map_channels: tuple[MapChannel, ...] = ()

    def __init__(self, paths, names, reader: Reader, kind, units, size, options, batch) -> None:
        self.paths, self.names, self.reader = paths, names, reader
        self.kind, self.units, self.size = kind, units, size
        self.options, self.batch = options, batch
        self.writers: list[DatasetWriter] = []
        self.buffers: list[list[tuple]] = [[] for _ in names]
        self.shape: tuple[int, int, int] = (0, 0, 0)
        self.first_name = ""
        self.total = 0
        self.class_counts = [dict() for _ in names]
        self.items: list[dict[str, int]] = [dict() for _ in names]  # source item -> its index
        self._scales: set[float] = set()
        self._closed = False

    def _open(self, shape, name) -> None:
        info = self.reader.info
        self.shape, self.first_name = shape, name
        attrs = {**info.attrs, "prepare_options": json.dumps(self.options)}
        for path in self.paths:
            self.writers.append(
                DatasetWriter(
                    path,
                    shape,
                    kind=self.kind,
                    units=self.units,
                    class_names=self.reader.class_names,
                    with_labels=self.reader.labels is not None,
                    pixel_spacing_m=None,
                    source=str(self.reader.src),
                    attrs=attrs,
                    extras={SCENE_EXTRA: ((), "<i4")},
                    maps=self.map_channels,
                )
            )

    def add(self, s: int, sample, label: int | None, name: str, rows: int) -> None:
        """Queue ``sample`` = ``(image, maps or None)`` for split ``s``."""
        sample, maps = sample
        if not self.writers:
            self._open(sample.shape, name)
        elif sample.shape != self.shape:
            if sample.shape[0] != self.shape[0]:
                raise DataError(
                    f"{name}: {sample.shape[0]} channel(s), but {self.first_name} has "
                    f"{self.shape[0]}: every sample needs the same channels"
                )
            raise DataError(
                f"{name}: size {sample.shape[1:]} differs from {self.shape[1:]} of "
                f"{self.first_name}; use --resize, --crop or --tile for images of mixed sizes"
            )
        if self.size is not None:
            # source pixels per output pixel, to rescale the pixel spacing
            self._scales.add(round(rows / self.size[0], 9))
        scene = self.items[s].setdefault(name, len(self.items[s]))
        self.buffers[s].append((sample, label, scene, maps))
        self.total += 1
        if label is not None:
            cname = (self.reader.class_names or [])[label]
            self.class_counts[s][cname] = self.class_counts[s].get(cname, 0) + 1
        if len(self.buffers[s]) >= self.batch:
            self._flush(s)

    def _flush(self, s: int) -> None:
        buf = self.buffers[s]
        if not buf:
            return
        images = np.stack([b[0] for b in buf])
        labels = None if buf[0][1] is None else np.array([b[1] for b in buf], np.int64)
        scenes = np.array([b[2] for b in buf], np.int32)
        maps = np.stack([b[3] for b in buf]) if self.map_channels else None
        self.writers[s].append(images, labels, maps, **{SCENE_EXTRA: scenes})
        buf.clear()

    def spacing(self) -> float | None:
        base = self.reader.info.pixel_spacing_m
        if base is None or self.size is None:
            return base
        return base * next(iter(self._scales)) if len(self._scales) == 1 else None

    def close(self) -> tuple[SplitOutput, ...]:
        outputs = []
        spacing = self.spacing()
        for s, w in enumerate(self.writers):
            self._flush(s)
            if spacing is not None:
                w.update_attrs({"pixel_spacing_m": spacing})
            items = json.dumps(list(self.items[s]))
            if len(items) <= MAX_ITEMS_ATTR:  # HDF5 keeps attributes under 64 KiB
                w.update_attrs({"items": items})
            if w.n == 0:
                log.warning("%s: split '%s' is empty", self.paths[s], self.names[s])
            outputs.append(
                SplitOutput(
                    self.names[s],
                    w.close(),
                    w.n,
                    dict(sorted(self.class_counts[s].items()))
                    if self.reader.labels is not None
                    else None,
                )
            )
        self._closed = True
        return tuple(outputs)

    def abort_unclosed(self) -> None:
        if not self._closed:
            for w in self.writers:
                w.abort()
