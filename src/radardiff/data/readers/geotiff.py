"""GeoTIFF scenes: one file, or a folder of files, each a scene with a no-data value.

The no-data value comes from the file's ``GDAL_NODATA`` tag or from the ``nodata`` argument
(PyRate / ROI_PAC interferograms use 0); those pixels become NaN. Pixel spacing and units are
read from the GeoTIFF tags (see :mod:`radardiff.data.readers.raster`). Scenes are usually cut
into tiles by ``prepare(..., tile=...)``. Unwrapped interferograms (units radians, ``unw`` in
the name or an interferogram ``DATA_TYPE``) default to the kind ``insar_unwrapped``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Literal

from radardiff.data.readers.base import TIFF_EXTS, class_from_filename, list_files
from radardiff.data.readers.images import RasterFilesReader
from radardiff.errors import DataError

log = logging.getLogger(__name__)

# an elevation model beside a stack of scenes (PyRate's dem.tif, *_dem.tif, srtm_*.tif): a map
# of the scenes' grid, not a scene of the stack
ELEVATION = re.compile(r"(^|[_.\-])(dem|dsm|dtm|srtm|hgt|height|elevation)([_.\-]|$)")


def is_elevation_map(path: Path) -> bool:
    """Whether the file's name says it is an elevation model (DEM) rather than a scene."""
    return ELEVATION.search(path.stem.lower()) is not None


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
        maps = [p for p in files if is_elevation_map(p)]
        if maps and len(maps) < len(files):
            files = [p for p in files if p not in maps]
            log.warning(
                "%s: left out %s, an elevation model (DEM) by its name, not a scene of the stack",
                src, ", ".join(p.name for p in maps),
            )  # fmt: skip
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
