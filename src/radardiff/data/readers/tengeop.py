"""TenGeoP-SARwv as distributed: one folder of GeoTIFFs per class.

TenGeoP-SARwv (Wang et al., 2019, "Labelled SAR imagery dataset of ten geophysical phenomena
from Sentinel-1 wave mode", Geoscience Data Journal 6(2), doi:10.1002/gdj3.73) holds about
37,000 Sentinel-1 wave-mode vignettes (~20 km x 20 km, 5 m pixels, VV) in ten class folders
``F`` ... ``O``. The GeoTIFFs carry calibrated backscatter (linear sigma0) as floats; they are
kept as such (``units="linear"``), or converted to dB by ``prepare(..., to_db=True)``. The
vignettes differ slightly in size, so ``prepare`` needs ``resize`` or ``tile`` for them.
"""

from __future__ import annotations

from pathlib import Path

from radardiff.data.readers.base import TIFF_EXTS
from radardiff.data.readers.images import (
    RasterFilesReader,
    class_from_filename,
    folder_class_files,
)
from radardiff.errors import DataError

CLASS_DESCRIPTIONS = {
    "F": "pure ocean waves",
    "G": "wind streaks",
    "H": "micro convective cells",
    "I": "rain cells",
    "J": "biological slicks",
    "K": "sea ice",
    "L": "iceberg",
    "M": "low wind area",
    "N": "atmospheric front",
    "O": "oceanic front",
}


class TenGeoPReader(RasterFilesReader):
    default_kind = "sar_backscatter"
    default_units = "linear"
    float_units = "linear"
    format_name = "tengeop"

    def _source_info(self):
        info = super()._source_info()
        known = {
            c: CLASS_DESCRIPTIONS[c] for c in self.class_names or [] if c in CLASS_DESCRIPTIONS
        }
        if known:
            info.attrs["class_descriptions"] = known
        return info


def tengeop_reader(
    src: Path, nodata: float | None = None, classes: str = "folder"
) -> TenGeoPReader:
    """Class folders of GeoTIFFs under ``src``: the folder name is the class (``classes``
    ``auto`` or ``folder``), or the file name's prefix (``filename``), or there are no classes
    (``none``: sub-folders that are not classes, such as BigEarthNet-S1's one per patch)."""
    if not src.is_dir():
        raise DataError(f"{src}: TenGeoP-SARwv expects a folder of class folders")
    files = folder_class_files(src, TIFF_EXTS)
    if classes == "none":
        labels = None
    elif classes == "filename":
        labels = [class_from_filename(p, required=True) for p in files]
    else:
        labels = [p.relative_to(src).parts[0] for p in files]
    return TenGeoPReader(src, files, labels, nodata)
