"""One raster file (PNG, JPG, BMP through Pillow; TIFF / GeoTIFF through tifffile) to an array.

GeoTIFF metadata read when present:

- ``GDAL_NODATA`` (tag 42113): the no-data value, set to NaN;
- ``ModelPixelScaleTag`` (33550) with the ``GeoKeyDirectoryTag`` (34735): the pixel spacing.
  Projected rasters (``GTModelTypeGeoKey`` = 1) give metres directly (feet converted);
  geographic ones (= 2) give degrees, converted on a sphere of radius
  :math:`R = 6\\,371\\,008.8` m at the raster's central latitude :math:`\\varphi`:
  :math:`\\Delta y = R\\,\\Delta\\varphi\\,\\pi/180`, :math:`\\Delta x = R \\cos\\varphi\\,
  \\Delta\\lambda\\,\\pi/180`. The single ``pixel_spacing_m`` reported is
  :math:`\\sqrt{\\Delta x\\,\\Delta y}`, the side of the square of equal area;
- ``GDAL_METADATA`` (42112) ``DATA_UNITS`` (PyRate and GDAL write ``RADIANS``, ``MILLIMETRES``...).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radardiff.data.readers.base import TIFF_EXTS, as_float, to_chw
from radardiff.errors import DataError

EARTH_RADIUS_M = 6_371_008.8
_FEET = {9002: 0.3048, 9003: 1200.0 / 3937.0}


@dataclass(frozen=True)
class Raster:
    """A raster in physical units with what its tags say."""

    data: np.ndarray  # (C, H, W) float32, NaN where no data
    nodata: float | None
    pixel_spacing_m: float | None
    units: str | None  # from GDAL_METADATA DATA_UNITS, lower case
    data_type: str | None  # from GDAL_METADATA DATA_TYPE
    stored_dtype: str = "float32"  # the file's sample type before conversion


def read_raster(path: Path, nodata: float | None = None) -> Raster:
    """Read ``path``; ``nodata`` (when given) replaces the file's own no-data value."""
    try:
        if path.suffix.lower() in TIFF_EXTS:
            return _read_tiff(path, nodata)
        return _read_pillow(path, nodata)
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - every decoder failure is a bad input file
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: cannot read the image ({msg})") from None


def _read_pillow(path: Path, nodata: float | None) -> Raster:
    from PIL import Image

    with Image.open(path) as img:
        if img.mode == "P":
            rgb = np.asarray(img.convert("RGB"))
            # grayscale palettes are common; they stay one channel
            arr = rgb[..., 0] if (rgb == rgb[..., :1]).all() else rgb
        elif img.mode in ("LA", "PA"):
            arr = np.asarray(img.convert("L"))
        elif img.mode == "RGBA":
            arr = np.asarray(img.convert("RGB"))
        elif img.mode == "1":
            arr = np.asarray(img.convert("L"))
        else:
            arr = np.asarray(img)
    return Raster(
        as_float(to_chw(arr, path), path, nodata), nodata, None, None, None, arr.dtype.name
    )


def _read_tiff(path: Path, nodata: float | None) -> Raster:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        tags = page.tags
        arr = tif.series[0].asarray()
        file_nodata = _parse_nodata(tags.get(42113))
        spacing = _pixel_spacing(tags, int(page.imagelength))
        units, data_type = _gdal_metadata(tags.get(42112))
    nd = nodata if nodata is not None else file_nodata
    data = as_float(to_chw(arr, path), path, nd)
    return Raster(data, nd, spacing, units, data_type, arr.dtype.name)


def read_grid(path: Path) -> tuple[float, float, float, float] | None:
    """A GeoTIFF's grid from its tags alone (no pixels read): the model coordinates of the
    upper-left corner and the pixel size, ``(x0, y0, dx, dy)``; None for a file without
    georeferencing (any non-TIFF file)."""
    if path.suffix.lower() not in TIFF_EXTS:
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages[0].tags
            scale, tie = tags.get(33550), tags.get(33922)
            if scale is None or tie is None or len(tie.value) < 6:
                return None
            i, j, _, x, y, _ = (float(v) for v in tie.value[:6])
            dx, dy = (float(v) for v in scale.value[:2])
    except Exception:  # noqa: BLE001 - unreadable tags: no grid to compare
        return None
    return (x - i * dx, y + j * dy, dx, dy)


def _parse_nodata(tag) -> float | None:
    if tag is None:
        return None
    text = str(tag.value).strip().strip("\x00")
    try:
        return float(text)
    except ValueError:
        return None


def _pixel_spacing(tags, rows: int) -> float | None:
    scale = tags.get(33550)
    if scale is None:
        return None
    sx, sy = (abs(float(v)) for v in scale.value[:2])
    if sx <= 0 or sy <= 0:
        return None
    keys = _geokeys(tags.get(34735))
    model = keys.get(1024)
    if model == 2:  # geographic: degrees
        tie = tags.get(33922)
        lat0 = float(tie.value[4]) if tie is not None and len(tie.value) >= 6 else 0.0
        lat = math.radians(lat0 - sy * rows / 2)
        dy = EARTH_RADIUS_M * math.radians(sy)
        dx = EARTH_RADIUS_M * math.radians(sx) * math.cos(lat)
        return math.sqrt(dx * dy)
    factor = _FEET.get(keys.get(3076, 9001), 1.0)
    return math.sqrt(sx * sy) * factor


def _geokeys(tag) -> dict[int, int]:
    if tag is None:
        return {}
    v = list(tag.value)
    keys = {}
    for i in range(4, 4 + 4 * int(v[3]), 4):
        if i + 3 < len(v) and v[i + 1] == 0:  # value stored inline
            keys[int(v[i])] = int(v[i + 3])
    return keys


def _gdal_metadata(tag) -> tuple[str | None, str | None]:
    if tag is None:
        return None, None
    text = str(tag.value)

    def item(name: str) -> str | None:
        m = re.search(rf'<Item name="{name}"[^>]*>([^<]*)</Item>', text)
        return m.group(1).strip() if m else None

    units = item("DATA_UNITS")
    return (units.lower() if units else None), item("DATA_TYPE")


def units_name(units: str | None) -> str | None:
    """GDAL's unit words to the short names used in dataset files."""
    if units is None:
        return None
    return {
        "radians": "rad",
        "radian": "rad",
        "millimetres": "mm",
        "millimeters": "mm",
        "metres": "m",
        "meters": "m",
        "db": "dB",
        "decibel": "dB",
    }.get(units, units)
