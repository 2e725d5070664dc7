"""Metric ``maps``: does a generated set follow its maps as the real set follows its own?

For the maps that both files carry (by name; label maps must have the same classes):

- a **continuous map** (a DEM): each image's least-squares slope on the map, a plane in x and
  y fitted with it (:func:`.measures.maps.elevation_regression`, ``ramp=True``: a tilt is not
  read as a relation to the map); the slopes' medians, quartiles and median R^2 per set, and the
  Wasserstein-1 distance between the two sets' slope distributions (``map_slope_w1``, in the
  image's units per map unit: rad/m for phase over a DEM);
- a **label map** of SAR backscatter: each class's level, ENL and log-cumulants
  (:func:`.measures.maps.per_label_sar_stats`) per set, and their differences averaged over the
  classes measurable in both (``map_label_db_error`` in dB, ``map_label_enl_ratio``,
  ``map_label_k2_error``).

The real set's maps are its own and the generated set's are the ones it was made from
(``sample --map`` writes them), so both sides are judged on their own pixels. As every metric,
these are read against their floor: the same metric on other real images.
"""

from __future__ import annotations

import numpy as np

from radardiff.data.dataset_file import DatasetFile
from radardiff.data.maps import MapChannel, select_channels
from radardiff.errors import DataError
from radardiff.evaluate.measures.distributions import w1 as wasserstein1
from radardiff.evaluate.measures.maps import elevation_regression, per_label_sar_stats

MAP_SCALARS = ("map_slope_w1", "map_slope_median_real", "map_slope_median_fake",
               "map_label_db_error", "map_label_enl_ratio", "map_label_k2_error")  # fmt: skip


def shared_maps(rset: DatasetFile, fset: DatasetFile) -> list[MapChannel]:
    """The maps both files carry (by name and, for label maps, classes); refused when none."""
    fake = {c.name: c for c in fset.info.maps}
    shared = [c for c in rset.info.maps if c.name in fake and fake[c.name].classes == c.classes]
    if not shared:
        have = lambda ds: ", ".join(c.name for c in ds.info.maps) or "no maps"  # noqa: E731
        raise DataError(
            f"metric 'maps': {rset.path} ({have(rset)}) and {fset.path} ({have(fset)}) share no "
            "map (same name; label maps with the same classes)"
        )
    return shared


def _read(ds: DatasetFile, idx: np.ndarray, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    pick = select_channels(ds.info.maps, names, str(ds.path))
    return ds.images(idx)[:, 0].astype(np.float64), ds.maps(idx)[:, pick]


def _slopes(x: np.ndarray, m: np.ndarray) -> tuple[dict, np.ndarray]:
    fit = elevation_regression(x, m, np.isfinite(x) & np.isfinite(m), ramp=True)
    s = fit.slope[np.isfinite(fit.slope)]
    if s.size == 0:
        return {"n": 0, "slope_median": None, "slope_q25": None, "slope_q75": None,
                "r2_median": None}, s  # fmt: skip
    q25, med, q75 = np.percentile(s, [25, 50, 75])
    r2 = fit.r2[np.isfinite(fit.r2)]
    return {"n": int(s.size), "slope_median": float(med), "slope_q25": float(q25),
            "slope_q75": float(q75), "r2_median": float(np.median(r2)) if r2.size else None}, s  # fmt: skip


def _label_summary(stats) -> dict:
    return {k: {"pixels": v.pixels, "samples": v.samples, "mean_db": v.mean_db,
                "db_mean": v.db_mean, "enl": v.enl, "k2": v.k2, "k3": v.k3, "reason": v.reason}
            for k, v in stats.items()}  # fmt: skip


def _intensity(x: np.ndarray, units: str) -> np.ndarray:
    return np.power(10.0, x / 10.0) if "db" in units.lower() else x


def maps_section(rset: DatasetFile, fset: DatasetFile, idx: dict, units: dict, scalars: dict):
    """The ``maps`` section of metrics.json and its scalars (module docstring)."""
    shared = shared_maps(rset, fset)
    names = [c.name for c in shared]
    xr, mr = _read(rset, idx["real"], names)
    xf, mf = _read(fset, idx["fake"], names)
    section: dict = {"shared": names, "continuous": {}, "labels": {}}
    w1s, label_rows = [], []
    for k, c in enumerate(shared):
        if not c.categorical:
            (sr, vr), (sf, vf) = _slopes(xr, mr[:, k]), _slopes(xf, mf[:, k])
            w1 = wasserstein1(vr, vf) if vr.size and vf.size else None
            section["continuous"][c.name] = {"units": c.units, "real": sr, "fake": sf,
                                             "slope_w1": w1}  # fmt: skip
            if w1 is not None:
                w1s.append(w1)
                if len(w1s) == 1:  # the medians of the first continuous map
                    scalars["map_slope_median_real"] = sr["slope_median"]
                    scalars["map_slope_median_fake"] = sf["slope_median"]
        elif rset.info.kind == "sar_backscatter":
            classes = list(c.classes or ())
            real = per_label_sar_stats(_intensity(xr, units["real"]), mr[:, k], classes)
            fake = per_label_sar_stats(_intensity(xf, units["fake"]), mf[:, k], classes)
            section["labels"][c.name] = {"real": _label_summary(real), "fake": _label_summary(fake)}
            label_rows += [(real[n], fake[n]) for n in classes]
    scalars["map_slope_w1"] = float(np.mean(w1s)) if w1s else None
    _label_scalars(label_rows, scalars)
    return section


def _label_scalars(rows, scalars: dict) -> None:
    both = lambda a, b: np.isfinite(a) and np.isfinite(b)  # noqa: E731
    db = [abs(f.mean_db - r.mean_db) for r, f in rows if both(r.mean_db, f.mean_db)]
    enl = [f.enl / r.enl for r, f in rows if both(r.enl, f.enl) and r.enl > 0]
    k2 = [abs(f.k2 - r.k2) for r, f in rows if both(r.k2, f.k2)]
    scalars["map_label_db_error"] = float(np.mean(db)) if db else None
    scalars["map_label_enl_ratio"] = float(np.mean(enl)) if enl else None
    scalars["map_label_k2_error"] = float(np.mean(k2)) if k2 else None
