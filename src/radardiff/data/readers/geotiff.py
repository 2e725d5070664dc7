"""GeoTIFF scenes: one file, or a folder of files, each a scene with a no-data value.

The no-data value comes from the file's ``GDAL_NODATA`` tag or from the ``nodata`` argument
(PyRate / ROI_PAC interferograms use 0); those pixels become NaN. Pixel spacing and units are
read from the GeoTIFF tags (see :mod:`radardiff.data.readers.raster`). Scenes are usually cut
into tiles by ``prepare(..., tile=...)``. Unwrapped interferograms (units radians, ``unw`` in
the name or an interferogram ``DATA_TYPE``) default to the kind ``insar_unwrapped``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from radardiff.data.readers.base import TIFF_EXTS, class_from_filename, list_files
from radardiff.data.readers.images import RasterFilesReader
from radardiff.errors import DataError


class GeoTiffReader(RasterFilesReader):
    default_kind = "generic"
    default_units = "unknown"
    float_units = "unknown"
    format_name = "geotiff"

    def _kind_hint(self, path: Path, units: str, data_type: str | None) -> str | None:
        if units != "rad":
            return None
        text = f"{path.name} {data_type or ''}".lower()
        if "wrap" in text and "unw" not in text:
            return "insar_wrapped"
        if "unw" in text or "ifg" in text:
            return "insar_unwrapped"
        return None


def geotiff_reader(
    src: Path,
    classes: Literal["auto", "filename", "none"] = "auto",
    nodata: float | None = None,
) -> GeoTiffReader:
    """A GeoTIFF file or a folder of them; classes only when asked (``classes="filename"``)."""
    if src.is_file():
        files = [src]
    elif src.is_dir():
        files = list_files(src, TIFF_EXTS)
    else:
        raise DataError(f"{src}: no such file or folder")
    if not files:
        raise DataError(f"{src}: no GeoTIFF files (.tif, .tiff) found")
    labels = (
        [class_from_filename(p, required=True) for p in files]  # type: ignore[misc]
        if classes == "filename"
        else None
    )
    return GeoTiffReader(src, files, labels, nodata)
