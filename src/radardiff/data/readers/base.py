"""What every reader shares: the item list, the class mapping and array layout checks.

A reader turns a source (a folder, a file) into an ordered list of *items*, each one read on
demand as a float32 array ``(C, H, W)`` in the file's physical units, with NaN where there is no
data. Class names are known before any pixel is read (file names, folders, label datasets), so
that ``prepare`` can stream the items without holding more than one in memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radardiff.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
TIFF_EXTS = (".tif", ".tiff")
HDF5_EXTS = (".h5", ".hdf5", ".he5")
NUMPY_EXTS = (".npy", ".npz")


@dataclass(frozen=True)
class SourceInfo:
    """Defaults a source suggests for the dataset file; ``prepare`` options override them."""

    format: str
    kind: str
    units: str
    pixel_spacing_m: float | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


class Reader:
    """An ordered list of items read lazily.

    Subclasses fill ``items`` (one description per sample source, used in messages),
    ``labels`` (one class name per item, or ``None`` for an unlabelled source) and implement
    :meth:`read`.
    """

    info: SourceInfo

    def __init__(self, src: Path) -> None:
        self.src = src
        self.items: list[Any] = []
        self.labels: list[str] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def name(self, i: int) -> str:
        """A short description of item ``i`` for messages (file name, index in a stack)."""
        return str(self.items[i])

    def read(self, i: int) -> np.ndarray:
        """Item ``i`` as float32 ``(C, H, W)``, physical units, NaN where there is no data."""
        raise NotImplementedError

    def close(self) -> None:
        """Release open files (readers that keep none need not override it)."""

    @property
    def class_names(self) -> list[str] | None:
        if self.labels is None:
            return None
        key = id(self.labels), len(self.labels)
        if getattr(self, "_names_key", None) != key:  # labels are fixed once read; cache
            self._names, self._names_key = class_names_of(self.labels), key
        return self._names

    def label_indices(self) -> np.ndarray | None:
        """int64 class index per item, in the order of :attr:`class_names`."""
        if self.labels is None:
            return None
        lookup = {name: i for i, name in enumerate(self.class_names or [])}
        return np.array([lookup[lab] for lab in self.labels], dtype=np.int64)


def class_names_of(labels: Sequence[str]) -> list[str]:
    """Sorted class names; all-integer names keep their value as the class index.

    MNIST-like names ``"0" ... "9"`` (or integer label datasets) must keep label 5 as index 5
    even when some digits are absent, so they map to ``[str(i) for i in range(max + 1)]``.
    """
    uniq = sorted(set(labels))
    if uniq and all(u.isdecimal() for u in uniq):
        top = max(int(u) for u in uniq)
        if top <= 100_000:
            names = [str(i) for i in range(top + 1)]
            if set(uniq) <= set(names):  # "05" would not round trip through int
                return names
    return uniq


def class_from_filename(path: Path, *, required: bool) -> str | None:
    """The reference layout's class: the text before the first underscore of the file name."""
    stem = path.stem
    if "_" not in stem or not stem.split("_", 1)[0]:
        if required:
            raise DataError(
                f"{path}: no class in the file name (expected CLASS_<id>{path.suffix}, "
                "the text before the first underscore); use --classes none for unlabelled data"
            )
        return None
    return stem.split("_", 1)[0]


def list_files(folder: Path, exts: tuple[str, ...], *, recursive: bool = False) -> list[Path]:
    """Files of ``folder`` with one of ``exts`` (case-insensitive), sorted, hidden ones skipped."""
    pattern = "**/*" if recursive else "*"
    return sorted(
        p
        for p in folder.glob(pattern)
        if p.is_file() and p.suffix.lower() in exts and not p.name.startswith(".")
    )


# the largest channel count of a channels-last array (VV/VH, real/imaginary, RGB(A)): no image
# is that few pixels wide
MAX_LAST_CHANNELS = 4


def negative_fraction(img: np.ndarray) -> float:
    """The share of the finite values of ``img`` below 0 (0 when none is finite): linear
    intensity or amplitude is never negative beyond noise, dB values mostly are."""
    finite = img[np.isfinite(img)]
    return float(np.mean(finite < 0)) if finite.size else 0.0


def to_chw(arr: np.ndarray, where: str | os.PathLike) -> np.ndarray:
    """Bring a 2-D or 3-D raster to ``(C, H, W)``.

    Channel-last arrays (``H, W, C`` with ``C <= 4``, what Pillow and most TIFFs give) are
    transposed; a small leading axis is taken as channels already.
    """
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        if arr.shape[-1] <= MAX_LAST_CHANNELS < arr.shape[0]:
            return np.moveaxis(arr, -1, 0)
        if arr.shape[0] <= MAX_LAST_CHANNELS:
            return arr
    raise DataError(f"{where}: array of shape {arr.shape} is not an image (H, W) or (H, W, C)")


def as_float(arr: np.ndarray, where: str | os.PathLike, nodata: float | None = None) -> np.ndarray:
    """float32 copy with ``nodata`` and non-finite values set to NaN (complex64 for complex
    data, which :func:`radardiff.data.prepare.from_complex` turns into real values)."""
    if arr.dtype.kind == "c":  # complex SAR: kept complex; data prepare --complex converts it
        out = np.array(arr, dtype=np.complex64)
        if nodata is not None and not np.isnan(nodata):
            out[arr == nodata] = np.nan
        out[~np.isfinite(out)] = np.nan
        return out
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{where}: unsupported data type {arr.dtype}")
    out = np.array(arr, dtype=np.float32)  # always a copy: never write into a memory map
    if nodata is not None and not np.isnan(nodata):
        out[arr == nodata] = np.nan
    if arr.dtype.kind == "f":
        out[~np.isfinite(out)] = np.nan  # +-inf (and float64 overflow) is no data too
    return out
