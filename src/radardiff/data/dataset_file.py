"""The dataset file: one HDF5 file per split, in physical units.

Layout (see DESIGN.md):

- ``images``: float32 (N, C, H, W), physical units, NaN where there is no data;
- ``labels`` (optional): int64 (N,), class names in the attribute ``class_names`` (JSON list);
- optional per-sample extras of leading size N (``seeds``, ``coherence``, ``unwrapped`` ...);
- optional ``maps``: float32 (N, M, H, W) on the images' grid, described by the attribute
  ``map_channels`` (label maps with class names, a DEM in metres...; see
  :mod:`radardiff.data.maps`);
- attributes ``kind``, ``units``, ``pixel_spacing_m`` (optional), ``source``,
  ``radardiff_version``.

Files are written to a temporary name beside the target and renamed when complete, so an
interrupted writer never leaves a half-written dataset. Readers are lazy: chunked reads only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from radardiff import _stop
from radardiff._files import OutputHold
from radardiff._version import __version__
from radardiff.data.maps import (
    MAPS_ATTR,
    MAPS_DATASET,
    MapChannel,
    channels_from_attr,
    channels_to_attr,
    check_channels,
    check_maps,
)
from radardiff.errors import DataError, DiskFullError, is_disk_full

KINDS = ("sar_backscatter", "insar_unwrapped", "insar_wrapped", "insar_noise", "generic")
SUFFIXES = (".h5", ".hdf5")
_CHUNK_BYTES = 1 << 18
log = logging.getLogger(__name__)


def check_dataset_path(path: str | os.PathLike) -> Path:
    """``path`` as a dataset file's name: HDF5 under another extension (a .png that is not a
    picture) is refused before anything is read or written."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(f"{path}: a dataset file is HDF5 and must end in {' or '.join(SUFFIXES)}")
    return path


def _check_stored(path: Path, dset) -> None:
    """Refuse a dataset that declares more than it stores: a few-KB file that claims 1e9 images
    would otherwise be read (or allocated) for minutes before anything is found wrong. Chunked
    data must have every chunk written; contiguous data its whole size on disk."""
    declared = int(np.prod(dset.shape, dtype=np.int64)) * dset.dtype.itemsize
    if declared == 0:
        return
    if dset.chunks is not None:
        per_axis = [-(-s // c) for s, c in zip(dset.shape, dset.chunks, strict=True)]
        want = int(np.prod(per_axis, dtype=np.int64))
        have = dset.id.get_num_chunks()
        if have < want:
            raise DataError(
                f"{path}: '{dset.name.lstrip('/')}' declares {dset.shape[0]} images {dset.shape[1:]} but only "
                f"{have} of its {want} chunks were ever written (truncated or never filled)"
            )
    elif dset.id.get_storage_size() < declared:
        raise DataError(
            f"{path}: '{dset.name.lstrip('/')}' declares {dset.shape[0]} images {dset.shape[1:]} "
            f"({declared} bytes) but stores {dset.id.get_storage_size()} bytes"
        )


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset file holds, read from its metadata only."""

    path: Path
    n: int
    channels: int
    height: int
    width: int
    kind: str
    units: str
    class_names: list[str] | None
    has_labels: bool
    pixel_spacing_m: float | None
    source: str
    extras: list[str] = field(default_factory=list)
    maps: tuple[MapChannel, ...] = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


def _chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    per_sample = int(np.prod(shape[1:])) * itemsize
    rows = max(1, min(shape[0] or 1, _CHUNK_BYTES // max(per_sample, 1)))
    return (rows, *shape[1:])


class DatasetWriter:
    """Append samples to a new dataset file; the file appears only on :meth:`close`.

    Use as a context manager: an exception inside the block deletes the temporary file and leaves
    any existing file at ``path`` untouched. The output is held against other writers from the
    start (:func:`radardiff._files.hold_output`); every :meth:`append` is a stop point
    (:func:`radardiff._stop.check`), and so is :meth:`close` before the file moves into place.
    :meth:`close` refuses a file without a single finite image value: no data at all is never a
    result.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        shape: tuple[int, int, int],
        *,
        kind: str,
        units: str,
        class_names: list[str] | None = None,
        with_labels: bool | None = None,
        pixel_spacing_m: float | None = None,
        source: str = "",
        extras: dict[str, tuple[tuple[int, ...], str]] | None = None,
        attrs: dict[str, Any] | None = None,
        maps: tuple[MapChannel, ...] | list[MapChannel] = (),
    ) -> None:
        if kind not in KINDS:
            raise DataError(f"{path}: unknown kind '{kind}'; expected one of {', '.join(KINDS)}")
        self.path = check_dataset_path(path)
        self._tmp = self.path.with_name(f".{self.path.name}.partial")
        self._h5 = None
        self._hold = None
        self.finite = 0
        self._open_partial()
        with_labels = bool(class_names) if with_labels is None else with_labels
        try:
            self.map_channels = check_channels(maps, str(self.path))
            if MAPS_DATASET in (extras or {}):
                raise DataError(f"{self.path}: '{MAPS_DATASET}' is not an extra; give maps=")
            self._create_datasets(shape, with_labels, extras or {})
            self._write_attrs(kind, units, source, class_names, pixel_spacing_m, attrs or {})
        except BaseException as err:  # a full disk, a bad attribute: no partial file, no hold
            self.abort()
            if isinstance(err, Exception):
                self._raise_disk_full(err)
            raise
        self.n = 0

    def _open_partial(self) -> None:
        """Hold the output and open its partial file; a failure leaves neither behind."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._hold = OutputHold(self.path)
            if self._tmp.is_file():
                log.warning("%s: removed the unfinished file of an interrupted write", self._tmp)
                self._tmp.unlink()
            self._h5 = h5py.File(self._tmp, "w")
        except OSError as err:
            if self._hold is not None:
                with contextlib.suppress(OSError):
                    self._tmp.unlink(missing_ok=True)
                self._hold.release()
            if is_disk_full(err):
                raise DiskFullError(
                    f"{self.path}: disk full while writing the dataset file"
                ) from None
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise DataError(f"{self.path}: cannot write the dataset file ({msg})") from None

    def _create_datasets(
        self,
        shape: tuple[int, int, int],
        with_labels: bool,
        extras: dict[str, tuple[tuple[int, ...], str]],
    ) -> None:
        """The growable images, labels and extras datasets, empty."""
        c, h, w = shape
        self._images = self._h5.create_dataset(
            "images",
            shape=(0, c, h, w),
            maxshape=(None, c, h, w),
            dtype="float32",
            chunks=_chunks((1, c, h, w), 4),
        )
        self._labels = (
            self._h5.create_dataset(
                "labels", shape=(0,), maxshape=(None,), dtype="int64", chunks=(4096,)
            )
            if with_labels
            else None
        )
        self._maps = None
        if self.map_channels:
            m = len(self.map_channels)
            self._maps = self._h5.create_dataset(
                MAPS_DATASET,
                shape=(0, m, h, w),
                maxshape=(None, m, h, w),
                dtype="float32",
                chunks=_chunks((1, m, h, w), 4),
            )
        self._extras = {}
        for name, (tail, dtype) in extras.items():
            self._extras[name] = self._h5.create_dataset(
                name,
                shape=(0, *tail),
                maxshape=(None, *tail),
                dtype=dtype,
                chunks=_chunks((1, *tail), np.dtype(dtype).itemsize),
            )

    def _write_attrs(
        self,
        kind: str,
        units: str,
        source: str,
        class_names: list[str] | None,
        pixel_spacing_m: float | None,
        attrs: dict[str, Any],
    ) -> None:
        a = self._h5.attrs
        a["kind"], a["units"], a["source"] = kind, units, source
        a["radardiff_version"] = __version__
        if class_names is not None:
            a["class_names"] = json.dumps(list(class_names))
        if pixel_spacing_m is not None:
            a["pixel_spacing_m"] = float(pixel_spacing_m)
        for key, value in attrs.items():
            a[key] = value if not isinstance(value, dict | list) else json.dumps(value)
        if self.map_channels:
            a[MAPS_ATTR] = channels_to_attr(self.map_channels)

    def append(
        self,
        images: np.ndarray,
        labels: np.ndarray | None = None,
        maps: np.ndarray | None = None,
        **extras: np.ndarray,
    ) -> None:
        """Append ``images`` with their labels, maps (checked by
        :func:`radardiff.data.maps.check_maps`) and extras: all or none of them, as the file
        was opened."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1:] != self._images.shape[1:]:
            raise DataError(
                f"{self.path}: images of shape {images.shape[1:]} do not fit the file's "
                f"{self._images.shape[1:]}"
            )
        _stop.check()
        k = images.shape[0]
        if (labels is None) != (self._labels is None):
            raise DataError(f"{self.path}: labels must be given for every batch or for none")
        if set(extras) != set(self._extras):
            raise DataError(f"{self.path}: extras {sorted(extras)} != {sorted(self._extras)}")
        if (maps is None) != (self._maps is None):
            raise DataError(
                f"{self.path}: maps must be given for every batch of a file with maps, and only "
                "there"
            )
        if maps is not None:
            maps = check_maps(maps, images, self.map_channels, str(self.path))
        self._grow_write(self._images, images)
        if maps is not None:
            self._grow_write(self._maps, maps)
        self.finite += int(np.isfinite(images).sum())
        if labels is not None:
            self._grow_write(self._labels, np.asarray(labels, dtype=np.int64).reshape(k))
        for name, value in extras.items():
            self._grow_write(self._extras[name], np.asarray(value))
        self.n += k

    def update_attrs(self, attrs: dict[str, Any], remove: tuple[str, ...] = ()) -> None:
        """Set (dicts and lists as JSON) or remove file attributes before :meth:`close`."""
        a = self._h5.attrs
        for key, value in attrs.items():
            a[key] = value if not isinstance(value, dict | list) else json.dumps(value)
        for key in remove:
            if key in a:
                del a[key]

    def _grow_write(self, dset: h5py.Dataset, value: np.ndarray) -> None:
        start = dset.shape[0]
        dset.resize(start + value.shape[0], axis=0)
        dset[start:] = value

    def close(self) -> Path:
        """Finish the file and move it into place."""
        if self.n and not self.finite:
            raise DataError(
                f"{self.path}: all {self.n} images are wholly NaN or infinite (no data at all); "
                "nothing written"
            )
        self._h5.attrs["n"] = self.n
        self._h5.close()
        _stop.check()
        os.replace(self._tmp, self.path)
        self._hold.release()
        return self.path

    def abort(self) -> None:
        try:
            self._h5.close()
        except Exception:  # noqa: BLE001 - a full disk may fail the flush; the file goes anyway
            pass
        finally:
            self._tmp.unlink(missing_ok=True)
            self._hold.release()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.close()
            except Exception as err:
                self.abort()
                self._raise_disk_full(err)
                raise
        else:
            self.abort()
            if isinstance(exc, Exception):
                self._raise_disk_full(exc)

    def _raise_disk_full(self, err: Exception) -> None:
        if is_disk_full(err):
            raise DiskFullError(f"{self.path}: disk full while writing the dataset file") from None


def write_dataset(
    path: str | os.PathLike,
    images: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    kind: str,
    units: str,
    class_names: list[str] | None = None,
    pixel_spacing_m: float | None = None,
    source: str = "",
    extras: dict[str, np.ndarray] | None = None,
    attrs: dict[str, Any] | None = None,
    maps: np.ndarray | None = None,
    map_channels: tuple[MapChannel, ...] | list[MapChannel] = (),
) -> Path:
    """Write a whole in-memory dataset atomically."""
    images = np.asarray(images, dtype=np.float32)
    extras = extras or {}
    spec = {k: (v.shape[1:], v.dtype.str) for k, v in extras.items()}
    with DatasetWriter(
        path,
        images.shape[1:],
        kind=kind,
        units=units,
        class_names=class_names,
        with_labels=labels is not None,
        pixel_spacing_m=pixel_spacing_m,
        source=source,
        extras=spec,
        attrs=attrs,
        maps=map_channels,
    ) as writer:
        writer.append(images, labels, maps, **extras)
    return Path(path)


class DatasetFile:
    """Lazy reader of a dataset file. Opens the HDF5 file on first use (fork-safe)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._h5: h5py.File | None = None
        self._pid = os.getpid()
        self.info = self._read_info()

    def _open(self) -> h5py.File:
        if self._pid != os.getpid():  # a forked DataLoader worker: never share the parent's handle
            self._h5, self._pid = None, os.getpid()
        if self._h5 is None:
            self._h5 = h5py.File(self.path, "r")
        return self._h5

    def _read_info(self) -> DatasetInfo:
        if not self.path.is_file():
            raise DataError(f"{self.path}: dataset file not found")
        try:
            with h5py.File(self.path, "r") as h5:
                keys = list(h5.keys())
                if "images" not in h5:
                    raise DataError(
                        f"{self.path}: no 'images' dataset; keys present: {', '.join(keys) or 'none'}"
                    )
                img = h5["images"]
                if img.ndim != 4:
                    raise DataError(
                        f"{self.path}: 'images' has shape {img.shape}, expected (N, C, H, W)"
                    )
                n = img.shape[0]
                _check_stored(self.path, img)
                has_labels = "labels" in h5
                if has_labels and h5["labels"].shape != (n,):
                    raise DataError(
                        f"{self.path}: 'labels' has shape {h5['labels'].shape}, expected ({n},)"
                    )
                a = dict(h5.attrs)
                names = json.loads(a["class_names"]) if "class_names" in a else None
                extras = [k for k in keys if k not in ("images", "labels", MAPS_DATASET)]
                maps = self._map_info(h5, a, img.shape)
                return DatasetInfo(
                    path=self.path,
                    n=n,
                    channels=img.shape[1],
                    height=img.shape[2],
                    width=img.shape[3],
                    kind=str(a.get("kind", "generic")),
                    units=str(a.get("units", "")),
                    class_names=names,
                    has_labels=has_labels,
                    pixel_spacing_m=float(a["pixel_spacing_m"]) if "pixel_spacing_m" in a else None,
                    source=str(a.get("source", "")),
                    extras=extras,
                    maps=maps,
                )
        except DataError:
            raise
        except (OSError, KeyError, ValueError) as err:
            raise DataError(f"{self.path}: not a readable HDF5 dataset file ({err})") from None

    def _map_info(self, h5: h5py.File, a: dict, shape: tuple[int, ...]) -> tuple[MapChannel, ...]:
        """The map channels, checked against the stored ``maps`` (grid and count)."""
        if MAPS_DATASET not in h5:
            if MAPS_ATTR in a:
                raise DataError(f"{self.path}: attribute '{MAPS_ATTR}' without a 'maps' dataset")
            return ()
        if MAPS_ATTR not in a:
            raise DataError(f"{self.path}: 'maps' without the attribute '{MAPS_ATTR}' naming them")
        channels = check_channels(channels_from_attr(a[MAPS_ATTR], str(self.path)), str(self.path))
        dset = h5[MAPS_DATASET]
        want = (shape[0], len(channels), *shape[2:])
        if dset.shape != want:
            raise DataError(
                f"{self.path}: 'maps' has shape {dset.shape}, expected {want} (the images' grid, "
                f"{len(channels)} channel(s))"
            )
        _check_stored(self.path, dset)
        return channels

    def __len__(self) -> int:
        return self.info.n

    def attrs(self) -> dict[str, Any]:
        return dict(self._open().attrs)

    def _take(self, name: str, indices: np.ndarray | slice) -> np.ndarray:
        dset = self._open()[name]
        if isinstance(indices, slice):
            return dset[indices]
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return np.empty((0, *dset.shape[1:]), dset.dtype)
        order = np.argsort(idx, kind="stable")
        uniq, inverse = np.unique(idx[order], return_inverse=True)
        try:
            block = dset[uniq]
        except (OSError, ValueError) as err:
            raise DataError(f"{self.path}: cannot read '{name}' ({err})") from None
        out = np.empty((idx.size, *dset.shape[1:]), dset.dtype)
        out[order] = block[inverse]
        return out

    def images(self, indices: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Images in physical units; non-finite values (+-Inf as well as NaN) are no data."""
        x = self._take("images", indices).astype(np.float32, copy=False)
        bad = np.isinf(x)
        if bad.any():
            x = np.where(bad, np.float32(np.nan), x)
        return x

    def maps(self, indices: np.ndarray | slice = slice(None)) -> np.ndarray | None:
        """The maps of the samples ``(n, M, H, W)``, or None for a file without maps."""
        if not self.info.maps:
            return None
        return self._take(MAPS_DATASET, indices).astype(np.float32, copy=False)

    def labels(self, indices: np.ndarray | slice = slice(None)) -> np.ndarray | None:
        return self._take("labels", indices) if self.info.has_labels else None

    def extra(self, name: str, indices: np.ndarray | slice = slice(None)) -> np.ndarray:
        if name not in self.info.extras:
            raise DataError(
                f"{self.path}: no '{name}' dataset; keys present: "
                f"{', '.join(['images', *self.info.extras])}"
            )
        return self._take(name, indices)

    def iter_blocks(self, block: int = 1024) -> Iterator[tuple[slice, np.ndarray]]:
        """Stream the images in contiguous blocks (memory bounded by ``block``)."""
        for start in range(0, self.info.n, block):
            sl = slice(start, min(start + block, self.info.n))
            yield sl, self.images(sl)

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_h5"] = None  # h5py handles do not cross process boundaries
        return state

    def __enter__(self) -> DatasetFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
