"""The floors of the SAR metrics on real SAR: real tiles against other real tiles of the same
sensor, scored by ``radardiff evaluate --metrics sar`` exactly as generated tiles would be.

A generated set is judged next to its floor: what a perfect generator reaches with as many
tiles. Two real sets shipped beside the project (``../shared/realdata``, never committed):

* Sentinel-1 IW GRD patches (BigEarthNet-S1, VV and VH in dB, 120 x 120 at 10 m): 32 px tiles
  with stride 16, split by patch (3 scenes against the other 3);
* a single-look complex crop (MERLIN's test image, 256 x 256): intensity, 32 px tiles, split in
  two at random.

Usage::

    python benchmarks/bench_sar_floor.py                       # ../shared/realdata
    python benchmarks/bench_sar_floor.py --realdata DIR --tile 32
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
SCALARS = ("sar_enl_ratio", "sar_k2_w1", "sar_k3_w1", "sar_acf1_error", "sar_db_w1",
           "sar_peak_db_w1", "sar_pol_ratio_w1")  # fmt: skip


def floors(realdata: Path, tile: int, work: Path) -> dict:
    from radardiff.config import EvalConfig
    from radardiff.data.prepare import prepare
    from radardiff.evaluate import evaluate_files

    sets = {
        "sentinel1_grd_vv_vh": dict(src=realdata / "sar_bigearthnet_s1_example", stride=tile // 2),
        "slc_intensity": dict(src=realdata / "sar_slc_merlin" / "slc_256x256_real_imag.npy",
                              stride=tile, complex_mode="intensity", kind="sar_backscatter"),
    }  # fmt: skip
    out = {}
    for name, spec in sets.items():
        src = spec.pop("src")
        res = prepare(src, work / f"{name}.h5", tile=tile, split=(0.5, 0.5), seed=0, **spec)
        a, b = (o.path for o in res.outputs)
        result = evaluate_files(a, b, EvalConfig(metrics=("sar",), bootstrap=0), work / name)
        out[name] = {
            "tiles": [o.n for o in res.outputs],
            "scalars": {k: result["scalars"][k] for k in SCALARS},
            "real_enl": result["sar"]["real"]["enl"],
            "real_k2": result["sar"]["real"]["k2"],
            "real_acf_x": result["sar"]["real"]["acf_x"],
        }
        print(f"{name}: tiles {out[name]['tiles']}  "
              + "  ".join(f"{k} {v:.3g}" for k, v in out[name]["scalars"].items() if v is not None))  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--realdata", default=str(HERE.parent.parent / "shared" / "realdata"))
    ap.add_argument("--tile", type=int, default=32)
    ap.add_argument("--no-record", action="store_true", help="print only")
    args = ap.parse_args()
    realdata = Path(args.realdata)
    if not realdata.is_dir():
        raise SystemExit(f"bench_sar_floor: {realdata}: no real data there")
    with tempfile.TemporaryDirectory() as tmp:
        numbers = {"tile": args.tile, "sets": floors(realdata, args.tile, Path(tmp))}
    if not args.no_record:
        from _results import record

        print(f"recorded in {record('sar_floor', numbers)}")


if __name__ == "__main__":
    main()
