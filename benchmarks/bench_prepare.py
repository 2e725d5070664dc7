"""Throughput of ``radardiff data prepare`` on a folder of PNGs (the reference layout).

Makes ``--n`` random 8-bit ``SIZE x SIZE`` PNGs named ``<class>_<id>.png`` in a temporary
folder, prepares them with a train/val/test split and prints images per second. The target
of issue 3 is 10,000 PNGs of 128 x 128 in under 60 s on the 2-core development machine.

    python benchmarks/bench_prepare.py --n 10000 --size 128
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from radardiff.data.inspect import inspect
from radardiff.data.prepare import prepare


def make_pngs(folder: Path, n: int, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = rng.integers(0, 256, (size, size), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"{i % 10}_{i:05d}.png", compress_level=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--no-record", action="store_true", help="print only")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "png"
        src.mkdir()
        t0 = time.perf_counter()
        make_pngs(src, args.n, args.size)
        t_make = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = prepare(src, Path(tmp) / "out.h5", split=(0.8, 0.1, 0.1), seed=0)
        dt = time.perf_counter() - t0
        t0 = time.perf_counter()
        summary = inspect(result.outputs[0].path)
        dt_inspect = time.perf_counter() - t0
    assert summary.n == result.outputs[0].n
    assert result.n_written == args.n
    print(f"made {args.n} PNGs {args.size}x{args.size} in {t_make:.1f} s")
    print(
        f"prepare: {args.n} images in {dt:.2f} s = {args.n / dt:,.0f} img/s "
        f"(target: 10,000 in < 60 s); outputs "
        + ", ".join(f"{o.name}={o.n}" for o in result.outputs)
    )
    print(
        f"inspect: {summary.n} images in {dt_inspect:.2f} s = {summary.n / dt_inspect:,.0f} img/s"
    )
    if not args.no_record:
        from _results import record

        numbers = {"n": args.n, "size": args.size, "prepare_s": round(dt, 2),
                   "prepare_img_s": round(args.n / dt, 1),
                   "inspect_img_s": round(summary.n / dt_inspect, 1)}  # fmt: skip
        print(f"recorded in {record('prepare', numbers)}")


if __name__ == "__main__":
    main()
