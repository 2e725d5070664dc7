"""Folders of PNG / JPG / TIFF images, 8 or 16 bit, the reference code's layout.

The class is the text before the first underscore of the file name (MNIST ``5_00182.png``,
TenGeoP PNGs ``F_<id>.png``), or, with ``classes="folder"``, the name of the sub-folder that
holds the file. Pixel values are kept as stored (digital numbers 0-255 or 0-65535, or the float
values of a float TIFF); a GeoTIFF's no-data value becomes NaN.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np

from radardiff.data.readers.base import (
    IMAGE_EXTS,
    TIFF_EXTS,
    Reader,
    SourceInfo,
    class_from_filename,
    list_files,
    negative_fraction,
)
from radardiff.data.readers.products import POLARISATION, polarisation_groups, product_hint
from radardiff.data.readers.raster import Raster, read_raster, units_name
from radardiff.errors import DataError

log = logging.getLogger(__name__)

ClassMode = Literal["auto", "filename", "folder", "none"]
CLASS_MODES: tuple[str, ...] = ClassMode.__args__  # type: ignore[attr-defined]


class RasterFilesReader(Reader):
    """Items are raster files; one file is one sample (before tiling)."""

    default_kind = "generic"
    default_units = "dn"
    float_units = "unknown"
    format_name = "images"

    def __init__(
        self,
        src: Path,
        files: list[Path],
        labels: list[str] | None,
        nodata: float | None = None,
    ) -> None:
        super().__init__(src)
        groups = polarisation_groups(files)
        if groups is not None:  # VV and VH files of one scene: one sample of two channels
            by_file = dict(zip(files, labels, strict=True)) if labels is not None else None
            self.items = groups
            self.labels = None if by_file is None else [by_file[g[0]] for g in groups]
        else:
            self.items = files
            self.labels = labels
        self.nodata = nodata
        self.info = self._source_info()

    def name(self, i: int) -> str:
        item = self.items[i]
        if isinstance(item, list):  # a scene in several polarisations: stem_VV+VH
            pols = [POLARISATION.match(f.name) for f in item]
            return f"{item[0].parent / pols[0]['stem']}_{'+'.join(m['pol'] for m in pols)}"
        return str(item)

    def read(self, i: int) -> np.ndarray:
        item = self.items[i]
        if not isinstance(item, list):
            return self._same_kind(item, read_raster(item, self.nodata)).data
        bands = [self._same_kind(f, read_raster(f, self.nodata)).data for f in item]
        if len({b.shape[1:] for b in bands}) > 1:
            shapes = ", ".join(f"{f.name} {b.shape[1:]}" for f, b in zip(item, bands, strict=True))
            raise DataError(f"{self.name(i)}: polarisations of different sizes ({shapes})")
        return np.concatenate(bands, axis=0)

    def _same_kind(self, path: Path, raster: Raster) -> Raster:
        """Refuse a file whose values are of another kind than the first file's, by which the
        whole set is described (integers among floats: a DEM or a mask among interferograms;
        other units in the tags): one set must not silently mix quantities."""
        first = self._first
        if first is None or path == first[0]:
            return raster
        kind = np.dtype(raster.stored_dtype).kind in "fc"
        if kind != first[1] or (raster.units and first[2] and raster.units != first[2]):
            what = lambda k, u: f"{'floats' if k else 'integers'}{f' in {u}' if u else ''}"  # noqa: E731
            raise DataError(
                f"{path}: holds {what(kind, raster.units)} where {first[0].name} (which describes "
                f"the set) holds {what(first[1], first[2])}; give the files of one quantity"
            )
        return raster

    def _source_info(self) -> SourceInfo:
        first = self.items[0][0] if isinstance(self.items[0], list) else self.items[0]
        kind, units, spacing, attrs = self.default_kind, self.default_units, None, {}
        if isinstance(self.items[0], list):
            attrs["polarisations"] = [
                POLARISATION.match(f.name)["pol"].upper() for f in self.items[0]
            ]
        self._first = None
        if first.suffix.lower() in TIFF_EXTS:
            # GeoTIFF tags of the first file describe the set (one sensor, one processing)
            r = read_raster(first, self.nodata)
            self._first = (first, np.dtype(r.stored_dtype).kind in "fc", r.units)
            spacing = r.pixel_spacing_m
            stored_float = np.dtype(r.stored_dtype).kind == "f"
            tagged = units_name(r.units)
            units = tagged or (self.float_units if stored_float else units)
            if r.data_type:
                attrs["source_data_type"] = r.data_type
            kind = self._kind_hint(first, units, r.data_type) or kind
            hint = product_hint(first)
            if hint is not None:  # a product's name: its kind, and its units unless tagged
                kind, units = hint[0], tagged or hint[1]
                attrs["product_from_name"] = first.name
            if units == "linear" and negative_fraction(r.data) > 0.5:
                log.info(
                    "%s: %.0f %% of the values are negative: intensities in dB, not linear "
                    "(--units to say otherwise)",
                    first,
                    100 * negative_fraction(r.data),
                )
                units = "dB"
        return SourceInfo(self.format_name, kind, units, spacing, attrs)

    def _kind_hint(self, path: Path, units: str, data_type: str | None) -> str | None:
        return None


def image_folder_reader(
    src: Path, classes: ClassMode = "auto", nodata: float | None = None
) -> RasterFilesReader:
    """The reader of an image folder (see the module docstring)."""
    if not src.is_dir():
        raise DataError(f"{src}: not a folder of images")
    top = list_files(src, IMAGE_EXTS)
    if classes == "auto":
        if top:
            named = [class_from_filename(p, required=False) for p in top]
            classes = "filename" if all(named) else "none"
            if any(named) and not all(named):
                log.warning(
                    "%s: some file names carry no CLASS_ prefix; reading without classes", src
                )
        else:
            classes = "folder"
    if classes == "folder" or (classes == "none" and not top):
        files = folder_class_files(src, IMAGE_EXTS)  # without classes: sub-folders of images
        labels = [p.relative_to(src).parts[0] for p in files] if classes == "folder" else None
    else:
        files = top
        if not files:
            raise DataError(f"{src}: no image files ({', '.join(IMAGE_EXTS)}) found")
        labels = (
            [class_from_filename(p, required=True) for p in files]  # type: ignore[misc]
            if classes == "filename"
            else None
        )
    return RasterFilesReader(src, files, labels, nodata)


def folder_class_files(src: Path, exts: tuple[str, ...]) -> list[Path]:
    """Files in the class sub-folders of ``src`` (one sub-folder per class, searched deeply)."""
    files = [
        p
        for sub in sorted(d for d in src.iterdir() if d.is_dir() and not d.name.startswith("."))
        for p in list_files(sub, exts, recursive=True)
    ]
    if not files:
        raise DataError(f"{src}: no class sub-folders holding {', '.join(exts)} files found")
    return files
