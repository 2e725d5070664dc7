"""Readers for the radar data users already have, one module per format.

=========  ==============================================================================
format     source
=========  ==============================================================================
images     folder of PNG / JPG / TIFF (8, 16 bit or float); class before the first ``_``
tengeop    TenGeoP-SARwv as distributed: one folder of GeoTIFFs per class
hdf5       an HDF5 file or a folder of them, with a data key (``unwrap``, ``real_data``...)
geotiff    a GeoTIFF scene or a folder of scenes, no-data value -> NaN
numpy      a ``.npy`` stack (memory-mapped) or an ``.npz`` archive
csv        a table of flattened square images, one per row (``.csv``, ``.csv.gz``, ``.tsv``)
=========  ==============================================================================

:func:`open_reader` picks the format from what ``src`` holds unless told; every reader gives
items as float32 ``(C, H, W)`` in physical units with NaN for no data (see
:class:`~radardiff.data.readers.base.Reader`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from radardiff.data.readers.base import (
    HDF5_EXTS,
    IMAGE_EXTS,
    NUMPY_EXTS,
    TIFF_EXTS,
    Reader,
    SourceInfo,
    class_names_of,
)
from radardiff.data.readers.csv_table import csv_reader, is_csv
from radardiff.data.readers.geotiff import geotiff_reader
from radardiff.data.readers.hdf5 import KNOWN_KEYS, hdf5_reader
from radardiff.data.readers.images import CLASS_MODES, ClassMode, image_folder_reader
from radardiff.data.readers.numpy_stack import numpy_reader
from radardiff.data.readers.tengeop import CLASS_DESCRIPTIONS, tengeop_reader
from radardiff.errors import ConfigError, DataError

Format = Literal["auto", "images", "tengeop", "hdf5", "geotiff", "numpy", "csv"]
FORMATS: tuple[str, ...] = Format.__args__  # type: ignore[attr-defined]

__all__ = [
    "CLASS_DESCRIPTIONS",
    "CLASS_MODES",
    "FORMATS",
    "KNOWN_KEYS",
    "ClassMode",
    "Format",
    "Reader",
    "SourceInfo",
    "class_names_of",
    "detect_format",
    "open_reader",
]


def detect_format(src: str | os.PathLike) -> str:
    """The format of ``src`` from its file extensions (see the module docstring)."""
    src = Path(src)
    if src.is_file():
        if is_csv(src):
            return "csv"
        ext = src.suffix.lower()
        for exts, fmt in ((NUMPY_EXTS, "numpy"), (HDF5_EXTS, "hdf5"), (TIFF_EXTS, "geotiff")):
            if ext in exts:
                return fmt
        if ext in IMAGE_EXTS:
            raise DataError(f"{src}: a single {ext} image; give the folder that holds the images")
        raise DataError(f"{src}: unknown file type '{ext}'; pass --format")
    if not src.is_dir():
        raise DataError(f"{src}: no such file or folder")
    exts = {p.suffix.lower() for p in src.iterdir() if p.is_file() and not p.name.startswith(".")}
    has_h5, has_img = bool(exts & set(HDF5_EXTS)), bool(exts & set(IMAGE_EXTS))
    if has_h5 and has_img:
        raise DataError(f"{src}: holds both HDF5 files and images; pass --format")
    if has_h5:
        return "hdf5"
    if has_img:
        return "geotiff" if exts & set(IMAGE_EXTS) <= set(TIFF_EXTS) else "images"
    subdirs = [d for d in src.iterdir() if d.is_dir() and not d.name.startswith(".")]
    sub_exts = {p.suffix.lower() for d in subdirs for p in d.rglob("*") if p.is_file()}
    if sub_exts & set(IMAGE_EXTS):
        return "tengeop" if sub_exts & set(IMAGE_EXTS) <= set(TIFF_EXTS) else "images"
    if exts & set(NUMPY_EXTS):
        raise DataError(f"{src}: give the .npy / .npz file itself, not its folder")
    raise DataError(f"{src}: empty folder, or no image, GeoTIFF or HDF5 files found")


def open_reader(
    src: str | os.PathLike,
    format: str = "auto",
    *,
    key: str | None = None,
    label_key: str | None = None,
    classes: str = "auto",
    nodata: float | None = None,
) -> Reader:
    """Open ``src`` as ``format`` (``auto``: :func:`detect_format`).

    Parameters
    ----------
    key, label_key
        Data and label dataset names (``hdf5``, ``numpy``).
    classes
        Where class names come from in raster folders: ``auto``, ``filename`` (text before the
        first underscore), ``folder`` (sub-folder name) or ``none``.
    nodata
        Value that marks no data (becomes NaN); overrides a GeoTIFF's own ``GDAL_NODATA``.
    """
    src = Path(src)
    if format not in FORMATS:
        raise ConfigError(
            f"--format: unknown format '{format}'; expected one of {', '.join(FORMATS)}"
        )
    if classes not in CLASS_MODES:
        raise ConfigError(
            f"--classes: unknown mode '{classes}'; expected one of {', '.join(CLASS_MODES)}"
        )
    fmt = detect_format(src) if format == "auto" else format
    if key and fmt not in ("hdf5", "numpy"):
        raise ConfigError(f"--key: applies to hdf5 and numpy sources, not to {fmt} ({src})")
    if label_key and fmt not in ("hdf5", "numpy", "csv"):
        raise ConfigError(
            f"--label-key: applies to hdf5, numpy and csv sources, not to {fmt} ({src})"
        )
    if fmt == "csv":
        return csv_reader(src, label_key, nodata)
    if fmt == "images":
        return image_folder_reader(src, classes, nodata)  # type: ignore[arg-type]
    if fmt == "tengeop":
        return tengeop_reader(src, nodata, classes)
    if fmt == "geotiff":
        if classes == "folder":
            raise ConfigError("--classes folder: use --format tengeop or images for class folders")
        return geotiff_reader(src, "filename" if classes == "filename" else "none", nodata)
    if fmt == "hdf5":
        return hdf5_reader(src, key, label_key, nodata)
    return numpy_reader(src, key, label_key, nodata)
