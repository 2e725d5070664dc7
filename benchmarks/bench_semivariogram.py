"""Benchmark: FFT semivariogram against scikit-gstat's pair-based estimator on 64x64 images.

Run:  python benchmarks/bench_semivariogram.py [--size 64] [--images 8] [--max-lag 32]

Prints the time per image of both estimators, their ratio, and the largest relative difference
between their semivariances (the two must agree to 1e-6). Needs scikit-gstat.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from radardiff.evaluate.measures.semivariogram import bin_edges_px, semivariogram


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--max-lag", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    import skgstat

    rng = np.random.default_rng(args.seed)
    imgs = rng.normal(size=(args.images, args.size, args.size)).cumsum(axis=1)
    imgs[rng.random(imgs.shape) < 0.05] = np.nan  # realistic no-data pixels
    edges = bin_edges_px(args.max_lag)

    semivariogram(imgs[:1], max_lag=args.max_lag)  # warm the FFT plan / geometry cache
    reps = 20
    t0 = time.perf_counter()
    for _ in range(reps):
        fast = semivariogram(imgs, max_lag=args.max_lag).gamma
    t_fft = (time.perf_counter() - t0) / (reps * args.images)

    ref = np.empty_like(fast)
    t0 = time.perf_counter()
    for i, z in enumerate(imgs):
        yy, xx = np.nonzero(np.isfinite(z))
        v = skgstat.Variogram(
            np.c_[yy, xx].astype(float),
            z[yy, xx],
            bin_func=edges,
            estimator="matheron",
            fit_method=None,
        )
        ref[i] = v.experimental
    t_pairs = (time.perf_counter() - t0) / args.images

    rel = np.nanmax(np.abs(fast - ref) / np.abs(ref))
    print(f"images: {args.images} x {args.size}x{args.size}, max_lag {args.max_lag}, 5% NaN")
    print(f"FFT (radardiff):         {1e3 * t_fft:9.3f} ms/image")
    print(f"pairs (scikit-gstat):    {1e3 * t_pairs:9.3f} ms/image")
    print(f"speed-up:                {t_pairs / t_fft:9.1f}x")
    print(f"max relative difference: {rel:9.2e}")
    if not args.no_record:
        from _results import record

        numbers = {"images": args.images, "size": args.size, "max_lag": args.max_lag,
                   "fft_ms_per_image": round(1e3 * t_fft, 4),
                   "pairs_ms_per_image": round(1e3 * t_pairs, 3),
                   "speedup": round(t_pairs / t_fft, 1), "max_rel_difference": float(rel)}  # fmt: skip
        print(f"recorded in {record('semivariogram', numbers)}")


if __name__ == "__main__":
    main()
