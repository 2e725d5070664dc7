"""Where generated noise pays: ``downstream experiment --scene-counts`` on real interferograms.

Prepares the interferograms of ``--data`` (default: the shared ENVISAT PyRate scenes, 17
interferograms, split 11 / 6 by scene with seed 0, 32 x 32 tiles every 2 pixels), runs the curve
(for each scene count, ``--draws`` replicates that each train a generator on exactly those scenes,
then the recovery, detection and unwrapping networks on physics, generated, real and real +
generated noise, tested on the held-out scenes) and records the skill per count, the gains of
real + generated over real alone, where they exceed the spread, the generated noise's diversity
and the minutes of each stage in ``benchmarks/results/curve.jsonl``.

Usage::

    python benchmarks/bench_curve.py --counts 1,2,11 --gen-steps 500 --task-steps 200
    python benchmarks/bench_curve.py --counts 1,2,4,8,11 --gen-steps 1500 --task-steps 1200 \\
        --knobs ddpm,x4 --work /tmp/curve        # the full curve: hours on a 2-core CPU
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import run_cli as _run  # noqa: E402

SHARED = HERE.parent.parent / "shared" / "realdata" / "pyrate_envisat_unw"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED), help="folder of unwrapped interferograms")
    ap.add_argument("--counts", default="1,2,11")
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--gen-steps", type=int, default=500)
    ap.add_argument("--task-steps", type=int, default=200)
    ap.add_argument("--n-noise", type=int, default=256)
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--knobs", default="")
    ap.add_argument("--knob-counts", default=None)
    ap.add_argument("--split", default="scenes", choices=("scenes", "dates"))
    ap.add_argument("--wavelength", default="0.0562")
    ap.add_argument("--work", default="/tmp/bench_curve", help="data and curve (resumable)")
    ap.add_argument("--no-record", action="store_true", help="print only")
    args = ap.parse_args()
    from radardiff.cli.main import main as cli

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    scenes = work / "scenes.h5"
    if not (work / "scenes_train.h5").is_file():
        _run(cli, ["data", "prepare", args.data, "--nodata", "0", "--tile", "32", "--stride",
                   "2", "--split", "0.65,0.35", "--seed", "0", "--out", scenes])  # fmt: skip
    steps = [f"--set={t}.train.steps={args.task_steps}" for t in ("recovery", "detection",
                                                                  "unwrapping")]  # fmt: skip
    cmd = ["downstream", "experiment", "--scene-counts", args.counts, "--draws", args.draws,
           "--seeds", args.seeds, "--gen-steps", args.gen_steps, "--n-noise", args.n_noise,
           "--train-real", work / "scenes_train.h5", "--test-real", work / "scenes_val.h5",
           "--wavelength", args.wavelength, "--n-train", args.n_train, "--n-test", args.n_test,
           "--split", args.split, "--out", work / "curve", *steps]  # fmt: skip
    if args.knobs:
        cmd += ["--knobs", args.knobs]
    if args.knob_counts:
        cmd += ["--knob-counts", args.knob_counts]
    t0 = time.perf_counter()
    _run(cli, cmd)
    wall = (time.perf_counter() - t0) / 60
    import json

    result = json.loads((work / "curve" / "downstream.json").read_text())
    numbers = {
        "command": "radardiff " + " ".join(map(str, cmd)),
        "wall_minutes_this_call": round(wall, 1),
        "minutes_per_stage": result["minutes"],
        "split": result["config"]["split"],
        "curve": result["curve"],
        "diversity": [
            {k: r[k] for k in ("count", "replicate", "scenes", "seed", "diversity")}
            for r in result["replicates"]
        ],  # fmt: skip
        "load_average_end": list(os.getloadavg()),
    }
    print(f"{wall:.1f} minutes; stages {result['minutes']}")
    if not args.no_record:
        from _results import record

        print(f"recorded in {record('curve', numbers)}")


if __name__ == "__main__":
    main()
