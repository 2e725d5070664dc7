"""Scenes of a prepared dataset file: which tiles come from which scene, the scenes'
acquisition dates, subsets of scenes, and test sets that share no date with training.

``data prepare`` records each file's source items (attribute ``items``) and each tile's item
(extra ``scene``, its index in ``items``). An interferogram is named by its two acquisition
dates in most processors' outputs (``geo_060619-061002_unw.tif`` of PyRate / ROI_PAC,
``20200101_20200113`` of LiCSAR and ISCE, ``S1_20200101_20200113`` ...):
:func:`acquisition_dates` reads them. Two interferograms that share a date share that date's
atmosphere, so a test that keeps such pairs on both sides of a split tests partly on training
noise; :func:`date_disjoint` removes from the training scenes every one that shares a date with
a test scene.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radardiff.data.dataset_file import DatasetFile, DatasetWriter
from radardiff.errors import DataError

SCENE_EXTRA = "scene"

# 8-digit dates (YYYYMMDD) first, then 6-digit ones (YYMMDD), each not inside a longer number
_DATE8 = re.compile(r"(?<!\d)((?:19|20)\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?!\d)")
_DATE6 = re.compile(r"(?<!\d)(\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?!\d)")


@dataclass(frozen=True)
class Scenes:
    """The scenes of a dataset file: ``names`` (its ``items``) and ``index`` (N,), each tile's
    position in ``names``."""

    path: str
    names: list[str]
    index: np.ndarray

    def tiles_of(self, names) -> np.ndarray:
        """Indices of the tiles of the scenes ``names``, in file order."""
        want = [self.names.index(n) for n in names]
        return np.flatnonzero(np.isin(self.index, want))

    def counts(self) -> dict[str, int]:
        return {n: int(c) for n, c in zip(self.names, np.bincount(self.index, minlength=len(self.names)), strict=True)}  # fmt: skip


def read_scenes(path) -> Scenes:
    """The scene record of a prepared file; refused when the file has none."""
    f = DatasetFile(path)
    items = f.attrs().get("items")
    if SCENE_EXTRA not in f.info.extras or items is None:
        raise DataError(
            f"{path}: no record of each tile's scene; prepare it again with 'radardiff data "
            "prepare' (this version records the scenes)"
        )
    names = [Path(str(n)).name for n in json.loads(items)]
    index = f.extra(SCENE_EXTRA).astype(np.int64)
    if index.size and (index.min() < 0 or index.max() >= len(names)):
        raise DataError(f"{path}: its scene record points outside its {len(names)} scenes")
    return Scenes(str(path), names, index)


def acquisition_dates(name: str) -> tuple[str, ...]:
    """The acquisition dates (``YYYYMMDD``, sorted) in a scene's name: 8-digit dates, else
    6-digit ones (``YYMMDD``, years 70-99 read as 19YY, others as 20YY); ``()`` when none."""
    stem = Path(name).name
    found = ["".join(m.groups()) for m in _DATE8.finditer(stem)]
    if not found:
        found = [("19" if int(m.group(1)) >= 70 else "20") + "".join(m.groups())
                 for m in _DATE6.finditer(stem)]  # fmt: skip
    return tuple(sorted(set(found)))


@dataclass(frozen=True)
class DateSplit:
    """Training scenes kept (no date shared with a test scene) and dropped, the test dates."""

    kept: list[str]
    dropped: list[str]
    test_dates: list[str]


def date_disjoint(train: list[str], test: list[str], what: str = "--split dates") -> DateSplit:
    """Remove from ``train`` every scene that shares an acquisition date with a scene of
    ``test``; refused when a scene's name holds no date."""
    for name in (*train, *test):
        if not acquisition_dates(name):
            raise DataError(
                f"{what}: no acquisition date in the scene name '{name}' (expected dates such as "
                "20200101_20200113 or 060619-061002)"
            )
    dates = sorted({d for n in test for d in acquisition_dates(n)})
    kept = [n for n in train if not set(acquisition_dates(n)) & set(dates)]
    return DateSplit(kept, [n for n in train if n not in kept], dates)


def write_scene_subset(src, names, out) -> Path:
    """The tiles of the scenes ``names`` of the prepared file ``src``, written to ``out`` with
    ``src``'s attributes and a scene record of their own (``items`` = ``names`` in ``src``'s
    order)."""
    scenes = read_scenes(src)
    missing = [n for n in names if n not in scenes.names]
    if missing:
        raise DataError(f"{src}: no scene '{missing[0]}'")
    chosen = [n for n in scenes.names if n in set(names)]
    rows = scenes.tiles_of(chosen)
    if rows.size == 0:
        raise DataError(f"{src}: the scenes {', '.join(chosen)} have no tiles")
    f = DatasetFile(src)
    info = f.info
    attrs = {k: v for k, v in f.attrs().items()
             if k not in ("kind", "units", "source", "radardiff_version", "class_names",
                          "pixel_spacing_m", "map_channels")}  # fmt: skip
    attrs["items"] = json.dumps(chosen)
    attrs["subset_of"] = str(src)
    renum = {scenes.names.index(n): i for i, n in enumerate(chosen)}
    labels = f.labels()
    with DatasetWriter(
        out, info.shape, kind=info.kind, units=info.units, class_names=info.class_names,
        with_labels=labels is not None, pixel_spacing_m=info.pixel_spacing_m,
        source=info.source, extras={SCENE_EXTRA: ((), "<i4")}, attrs=attrs, maps=info.maps,
    ) as w:  # fmt: skip
        for first in range(0, rows.size, 1024):
            part = rows[first : first + 1024]
            w.append(f.images(part), None if labels is None else labels[part], f.maps(part),
                     **{SCENE_EXTRA: np.array([renum[i] for i in scenes.index[part]], np.int32)})  # fmt: skip
    return w.path


def draw_scenes(names: list[str], count: int, draws: int, seed: int = 0) -> list[list[str]]:
    """``draws`` different subsets of ``count`` scenes of ``names`` (each in ``names``' order),
    as many as exist when fewer do (one when ``count`` is all of them); drawn with ``seed``."""
    if not 1 <= count <= len(names):
        raise DataError(f"scene count {count}: between 1 and {len(names)}")
    from math import comb

    want = min(draws, comb(len(names), count))
    rng = np.random.default_rng([seed, count, 5])
    found: list[list[str]] = []
    while len(found) < want:
        pick = sorted(rng.choice(len(names), count, replace=False).tolist())
        subset = [names[i] for i in pick]
        if subset not in found:
            found.append(subset)
    return found
