"""Time ``radardiff data synth`` for every generator (generation + writing the dataset file).

Usage::

    python benchmarks/bench_synth.py                  # the default sizes below
    python benchmarks/bench_synth.py --kinds insar_noise --n 10000 --size 32

Target (issue 3): ``insar_noise --n 10000 --size 32`` in under 10 s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from radardiff.data.synth import GENERATORS, synthesize

DEFAULTS = {  # kind: (n, size)
    "insar_noise": (10_000, 32),
    "insar_unwrapped": (1_000, 128),
    "insar_wrapped": (1_000, 128),
    "sar": (1_000, 128),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--kinds", nargs="*", default=list(DEFAULTS), choices=list(GENERATORS))
    ap.add_argument("--n", type=int, default=None, help="scenes per kind (default per kind)")
    ap.add_argument("--size", type=int, default=None, help="pixels (default per kind)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-record", action="store_true", help="print only")
    args = ap.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds:
            n, size = DEFAULTS.get(kind, (1000, GENERATORS[kind].default_size))
            n, size = args.n or n, args.size or size
            out = Path(tmp) / f"{kind}.h5"
            t0 = time.perf_counter()
            synthesize(kind, n, size, out, seed=args.seed)
            dt = time.perf_counter() - t0
            mb = out.stat().st_size / 2**20
            print(
                f"{kind:16s} n={n:6d} size={size:4d}  {dt:7.2f} s  {n / dt:9.0f} scenes/s  {mb:8.1f} MiB"
            )
            rows[kind] = {"n": n, "size": size, "seconds": round(dt, 3),
                          "scenes_s": round(n / dt, 1), "mib": round(mb, 1)}  # fmt: skip
    if not args.no_record:
        from _results import record

        print(f"recorded in {record('synth', {'seed': args.seed, 'kinds': rows})}")


if __name__ == "__main__":
    main()
