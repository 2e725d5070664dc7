"""Maps beside the images of ``data prepare``: read, matched to each scene, checked on its grid.

A map source is a file or a folder, read by the same readers as images (GeoTIFF, PNG, NumPy,
HDF5). It gives each scene its map in one of three ways:

- **one map** (a file of one item): the same map for every scene, as the DEM beside a stack of
  interferograms on one grid (``../shared/realdata/pyrate_envisat_unw/dem.tif``);
- **one map per scene, by name**: a folder whose files are named like the scenes
  (``scene_017.tif`` in the images folder, ``scene_017.png`` in the maps folder); a scene
  without its map is refused, even when the folder holds a single map;
- **one map per scene, by position**: a stack (``.npy``, HDF5) with as many maps as the image
  stack has images.

Every map must be one channel on the scene's grid: the same height and width and, where both
files are GeoTIFFs, the same origin and pixel size. A label map's file values are the class
indices ``0 .. K-1`` or, with ``codes``, any values (``--map-classes land=0:water,1:land,
255:ship``), turned into indices.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radardiff.data.maps import MapChannel, check_channels, stray_labels
from radardiff.data.readers import open_reader
from radardiff.data.readers.base import Reader
from radardiff.data.readers.geotiff import is_elevation_map
from radardiff.data.readers.products import POLARISATION
from radardiff.data.readers.raster import read_grid, units_name
from radardiff.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MapSpec:
    """A map asked for: its name, where it is, its units or classes, its no-data value."""

    name: str
    path: Path
    units: str | None = None
    classes: tuple[str, ...] | None = None
    codes: tuple[float, ...] | None = None  # the file value of each class, when not 0..K-1
    nodata: float | None = None


def _pairs(values: Sequence[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        name, sep, rest = v.partition("=")
        if not sep or not name or not rest:
            raise ConfigError(f"{option}: expected NAME=VALUE, got '{v}'")
        if name in out:
            raise ConfigError(f"{option}: '{name}' given twice")
        out[name] = rest
    return out


def _classes(text: str, name: str) -> tuple[tuple[str, ...], tuple[float, ...] | None]:
    """``water,land,ship`` (values 0, 1, 2) or ``0:water,1:land,255:ship`` (any values)."""
    parts = [p.strip() for p in text.split(",")]
    coded = [":" in p for p in parts]
    if any(coded) and not all(coded):
        raise ConfigError(
            f"--map-classes {name}: give every class as VALUE:NAME or none ('{text}')"
        )
    if not all(coded):
        return tuple(parts), None
    codes, names = [], []
    for p in parts:
        value, _, cname = p.partition(":")
        try:
            codes.append(float(value))
        except ValueError:
            raise ConfigError(f"--map-classes {name}: '{value}' is not a number") from None
        names.append(cname)
    if len(set(codes)) != len(codes):
        raise ConfigError(f"--map-classes {name}: a value is given to two classes ('{text}')")
    return tuple(names), tuple(codes)


def parse_map_specs(
    maps: Sequence[str],
    units: Sequence[str] = (),
    classes: Sequence[str] = (),
    nodata: Sequence[str] = (),
) -> list[MapSpec]:
    """The ``--map NAME=PATH`` options with their ``--map-units``, ``--map-classes`` and
    ``--map-nodata NAME=...``; a setting for a map not given is refused."""
    paths = _pairs(maps, "--map")
    per = {
        "--map-units": _pairs(units, "--map-units"),
        "--map-classes": _pairs(classes, "--map-classes"),
        "--map-nodata": _pairs(nodata, "--map-nodata"),
    }
    for option, values in per.items():
        for name in values:
            if name not in paths:
                raise ConfigError(f"{option}: '{name}' is not a map given by --map")
    specs = []
    for name, path in paths.items():
        cls, codes = (
            _classes(per["--map-classes"][name], name)
            if name in per["--map-classes"]
            else (None, None)
        )
        nd = per["--map-nodata"].get(name)
        try:
            nd_value = float(nd) if nd is not None else None
        except ValueError:
            raise ConfigError(f"--map-nodata {name}: '{nd}' is not a number") from None
        specs.append(MapSpec(name, Path(path), per["--map-units"].get(name), cls, codes, nd_value))
    try:
        check_channels([MapChannel(s.name, classes=s.classes) for s in specs], "--map")
    except DataError as err:
        raise ConfigError(str(err)) from None
    return specs


def item_key(reader: Reader, i: int) -> str | None:
    """The stem by which item ``i`` is matched to a map of the same name (None for an item
    of a stack, which has only its position)."""
    item = reader.items[i]
    if isinstance(item, Path):
        return item.stem
    if isinstance(item, list) and item and isinstance(item[0], Path):  # VV + VH of one scene
        m = POLARISATION.match(item[0].name)
        return m["stem"] if m else item[0].stem
    if isinstance(item, tuple) and len(item) == 2 and item[1] is None:  # one HDF5 file
        return Path(item[0]).stem
    return None


def item_file(reader: Reader, i: int) -> Path | None:
    item = reader.items[i]
    if isinstance(item, Path):
        return item
    if isinstance(item, list) and item and isinstance(item[0], Path):
        return item[0]
    return None


class MapSet:
    """The maps of every item of an image ``reader``: :meth:`read` gives ``(M, H, W)``."""

    def __init__(self, specs: Sequence[MapSpec], reader: Reader) -> None:
        self.specs = list(specs)
        self.reader = reader
        self.sources: list[Reader] = []
        try:
            for spec in self.specs:
                try:
                    src = open_reader(spec.path, "auto", classes="none", nodata=spec.nodata)
                except DataError as err:
                    raise DataError(f"--map {spec.name}: {err}") from None
                self.sources.append(src)
            self._index = [
                self._match(s, src) for s, src in zip(self.specs, self.sources, strict=True)
            ]
        except BaseException:
            self.close()
            raise
        self.channels = tuple(
            MapChannel(s.name, self._units(s, src), s.classes)
            for s, src in zip(self.specs, self.sources, strict=True)
        )
        self._single: dict[int, np.ndarray] = {}  # channel -> the one map of a one-map source

    @property
    def categorical(self) -> tuple[bool, ...]:
        return tuple(c.categorical for c in self.channels)

    @staticmethod
    def _units(spec: MapSpec, src: Reader) -> str:
        if spec.classes is not None:
            return ""
        if spec.units is not None:
            return spec.units
        tagged = units_name(src.info.units) if src.info.units not in ("unknown", "dn") else None
        if tagged:
            return tagged
        first = item_file(src, 0)
        return "m" if first is not None and is_elevation_map(first) else ""

    def _match(self, spec: MapSpec, src: Reader) -> list[int]:
        """The map item of each image item."""
        n = len(self.reader)
        if spec.path.is_file() and len(src) == 1:
            return [0] * n
        keys = [item_key(self.reader, i) for i in range(n)]
        map_keys = [item_key(src, j) for j in range(len(src))]
        if spec.path.is_dir():  # a folder of maps: each scene's by its name, never by position
            if any(k is None for k in keys):
                raise DataError(
                    f"{spec.path}: a folder of maps is matched to scenes by name, but the scenes "
                    f"of {self.reader.src} have none (a stack); give a stack of maps"
                )
            lookup = {k: j for j, k in enumerate(map_keys)}
            missing = [self.reader.name(i) for i, k in enumerate(keys) if k not in lookup]
            if missing:
                raise DataError(
                    f"{spec.path}: no map '{spec.name}' named like {missing[0]} "
                    f"({len(missing)} of {n} scenes have none); name each map like its scene"
                )
            return [lookup[k] for k in keys]  # type: ignore[index]
        if len(src) == n:
            return list(range(n))
        raise DataError(
            f"{spec.path}: map '{spec.name}' holds {len(src)} maps for {n} scenes; give one map "
            "for all, one per scene named like it, or a stack of one per scene"
        )

    def read(self, i: int, shape: tuple[int, int]) -> np.ndarray:
        """The maps of image item ``i`` (``shape`` its height and width), float32 ``(M, H, W)``;
        categorical values as class indices, NaN where a map has no data."""
        out = np.empty((len(self.specs), *shape), np.float32)
        for m, (spec, src) in enumerate(zip(self.specs, self.sources, strict=True)):
            j = self._index[m][i]
            value = self._single.get(m)
            if value is None:
                value = self._load(spec, src, j)
                if len(src) == 1:  # read once, given to every scene
                    self._single[m] = value
            self._check_grid(spec, src, j, i, value.shape, shape)
            out[m] = value
        return out

    def _load(self, spec: MapSpec, src: Reader, j: int) -> np.ndarray:
        arr = src.read(j)
        if np.iscomplexobj(arr) or arr.shape[0] != 1:
            raise DataError(
                f"{src.name(j)}: map '{spec.name}' has {arr.shape[0]} channel(s)"
                f"{' of complex values' if np.iscomplexobj(arr) else ''}; a map file holds one"
            )
        v = arr[0].astype(np.float32, copy=False)
        if spec.classes is None:
            return v
        if spec.codes is not None:
            idx = np.full(v.shape, np.nan, np.float32)
            for k, code in enumerate(spec.codes):
                idx[v == code] = k
            stray = np.isfinite(v) & np.isnan(idx)
            allowed = ", ".join(f"{c:g}" for c in spec.codes)
        else:
            idx = v
            stray = stray_labels(v, spec.classes)
            allowed = f"0..{len(spec.classes) - 1}"
        if stray.any():
            raise DataError(
                f"{src.name(j)}: label map '{spec.name}' holds {v[stray][0]:g}, not one of the "
                f"classes' values ({allowed}); give --map-classes {spec.name}=VALUE:NAME,..."
            )
        return idx

    def _check_grid(self, spec, src, j, i, got, want) -> None:
        if tuple(got) != tuple(want):
            raise DataError(
                f"{src.name(j)}: map '{spec.name}' is {got[0]} x {got[1]} pixels but "
                f"{self.reader.name(i)} is {want[0]} x {want[1]}; a map must be on the image's "
                "grid"
            )
        a, b = item_file(src, j), item_file(self.reader, i)
        ga = read_grid(a) if a is not None else None
        gb = read_grid(b) if b is not None else None
        if ga is not None and gb is not None:
            tol = 1e-6 * max(abs(ga[2]), abs(ga[3]))
            if any(
                not math.isclose(x, y, rel_tol=1e-9, abs_tol=tol)
                for x, y in zip(ga, gb, strict=True)
            ):
                raise DataError(
                    f"{src.name(j)}: map '{spec.name}' is on another grid than "
                    f"{self.reader.name(i)} (origin and pixel size {_grid(ga)} against "
                    f"{_grid(gb)}); a map must be on the image's grid"
                )

    def close(self) -> None:
        for src in self.sources:
            src.close()


def _grid(g) -> str:
    return f"({g[0]:.9g}, {g[1]:.9g}) step ({g[2]:.6g}, {g[3]:.6g})"
