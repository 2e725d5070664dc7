"""The cascade on real SAR: a 32 px model and a 32 -> 64 px super-resolution stage trained on real
Sentinel-1 GRD tiles (VV and VH in dB), their 64 px output scored with the SAR metrics beside
the 64 px floor, and beside plain upsampling of the same 32 px samples.

* real 64 px tiles of the training scenes (4 of the 6 shared patches; 64 px tiles leave no room
  for a held-out strip in a 120 px patch, so the 2 other scenes are the floor's tiles);
* the first stage learns those tiles area-averaged to 32 px (what the super-resolution stage is
  conditioned on), the second the 64 px tiles given their 32 px average;
* rows: ``floor`` (held-out scenes against the training tiles), ``cascade`` (what ``radardiff
  sample SR --cascade BASE`` does: the first stage with its recipe's sampler, the second with
  the super-resolution recipe's, or each ``--sr-sampler`` in a row of its own), ``upsampled``
  (the cascade's own 32 px first stage, bilinear in dB to 64 px), each against the training
  tiles with as many tiles as the floor; a generated row is the mean of ``--repeats`` sample
  sets (seeds 0, 1, ...; one set is a noisy judge), with each figure's range over the sets.

Usage::

    python benchmarks/bench_sar_cascade.py                 # first stage 1,000 steps with flips
    python benchmarks/bench_sar_cascade.py --base-steps 3000 --base-augment none   # it copies
    python benchmarks/bench_sar_cascade.py --base-run W/base/run --sr-run W/sr/run \
        --sr-sampler default --sr-sampler dpmsolver++-hybrid:use_karras_sigmas=true:eta=0.5:clip=none:steps=50
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_sar_real import (  # noqa: E402
    REALDATA,
    SCALARS,
    mean_of_sets,
    real_tiles,
    sampler_request,
    sar_metrics,
    train_recipe,
)


def averaged(src: Path, out: Path, size: int) -> Path:
    """The tiles of ``src`` area-averaged to ``size`` (in dB, as the super-resolution stage's
    condition is made)."""
    from radardiff.data.dataset_file import DatasetFile, write_dataset

    x = DatasetFile(src).images()
    f = x.shape[-1] // size
    low = x.reshape(*x.shape[:2], size, f, size, f).mean(axis=(3, 5))
    return write_dataset(out, low, kind="sar_backscatter", units="dB", source=f"{src} averaged")


def upsampled(src: Path, out: Path, size: int) -> Path:
    import torch

    from radardiff.data.dataset_file import DatasetFile, write_dataset

    x = torch.from_numpy(DatasetFile(src).images())
    up = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return write_dataset(
        out, up.numpy(), kind="sar_backscatter", units="dB", source=f"{src} bilinear"
    )


def copying(train: Path, heldout: Path, fake: Path, stride_px: int) -> dict:
    """Memorisation of a set of samples, with a reference that does not need held-out tiles of
    the training scenes: the distance from each training tile to its neighbour one stride over
    (the same scene shifted by ``stride_px``). A sample nearer a training tile than that is a
    copy; the held-out scenes' distances (other land cover) only bound it from above."""
    from radardiff.data.dataset_file import DatasetFile
    from radardiff.evaluate.measures.memorisation import memorisation, standardised

    x, f, h = (DatasetFile(p).images() for p in (train, fake, heldout))
    m = memorisation(f, x, h)
    z = standardised(x)
    shifted = np.linalg.norm(z[:-1] - z[1:], axis=1)  # tiles are written row by row
    d_fake = m.fake_distances
    return {"memorisation_ratio": m.ratio, "nn_distance_fake": float(np.median(d_fake)),
            "nn_distance_heldout_scenes": m.heldout_median,
            "shifted_neighbour_distance": float(np.median(shifted)), "stride_px": stride_px,
            "nearer_than_shifted_neighbour": float(np.mean(d_fake < np.median(shifted)))}  # fmt: skip


def cascade(low_run, sr_run, n: int, seed: int, out: Path, how: dict):
    """``n`` cascade samples (seed ``seed``) of the loaded runs: the first stage with its
    recipe's sampler, the second with the request ``how``; the output, the first stage's file
    and the minutes (a finished stage of this very request is reused, not sampled again)."""
    from radardiff.sample.generate import generate_cascade, request

    low_opts = request(low_run.cfg.sample, n, seed=seed, mixed_precision="auto")
    sr_opts = request(sr_run.cfg.sample, n, seed=seed, mixed_precision="auto", **how)
    t0 = time.perf_counter()
    first, second = generate_cascade(low_run, low_opts, sr_run, sr_opts, out)
    return second.path, first.path, (time.perf_counter() - t0) / 60


def score(train: Path, fake: Path, work: Path, name: str) -> dict:
    m = sar_metrics(train, fake, work, name)
    return {k: m["scalars"].get(k) for k in SCALARS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default=str(HERE.parent / "configs" / "sar_32.toml"))
    ap.add_argument("--sr", default=str(HERE.parent / "configs" / "sar_superres_32_64.toml"))
    # 256 tiles of 4 scenes, area-averaged: sar_32's 3,000 steps learn them by heart (samples
    # within a fifth of the held-out tiles' distance of a training tile); 1,000 with flips do not
    ap.add_argument("--base-steps", type=int, default=1000)
    ap.add_argument("--sr-steps", type=int, default=None)
    ap.add_argument("--base-augment", default="flips", help="train.augment of the first stage")
    ap.add_argument("--base-run", default=None, help="a trained first stage instead")
    ap.add_argument("--sr-run", default=None, help="a trained super-resolution stage instead")
    ap.add_argument("--sr-sampler", action="append", default=[], metavar="SPEC",
                    help="the second stage's sampler, as bench_sar_real.py --sampler takes it "
                         "(repeatable; default: the super-resolution recipe's)")  # fmt: skip
    ap.add_argument("--repeats", type=int, default=3, help="sample sets per generated row")
    ap.add_argument("--work", default="bench_sar_cascade_work")
    ap.add_argument("--realdata", default=str(REALDATA))
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    from radardiff.config import load_config

    work = Path(args.work)
    (work / "base").mkdir(parents=True, exist_ok=True)
    (work / "sr").mkdir(parents=True, exist_ok=True)
    from radardiff.data.dataset_file import DatasetFile

    train64, val64 = real_tiles(Path(args.realdata), 64, 8, "VV+VH", "scene", work)
    train32 = averaged(train64, work / "train_avg32.h5", 32)
    val32 = averaged(val64, work / "val_avg32.h5", 32)
    base, base_min = (
        (Path(args.base_run), None)
        if args.base_run
        else train_recipe(
            Path(args.base), train32, val32, args.base_steps, work / "base", args.base_augment
        )
    )
    sr, sr_min = (Path(args.sr_run), None) if args.sr_run else train_recipe(
        Path(args.sr), train64, val64, args.sr_steps, work / "sr")  # fmt: skip
    n = DatasetFile(val64).info.n
    from radardiff.sample import load_run

    low_run, sr_run = load_run(base), load_run(sr)  # once for every set
    sr_sample = sr_run.cfg.sample
    rows = {"floor": score(train64, val64, work, "floor")}
    samplers, lows, sample_min = {}, [], 0.0
    for k, spec in enumerate(args.sr_sampler or ["default"]):
        name, how = sampler_request(spec, sr_sample, sr_sample.steps)
        samplers[name] = how
        sets = []
        for seed in range(args.repeats):
            tag = f"cascade_{k}_s{seed}"
            out, low, minutes = cascade(low_run, sr_run, n, seed, work / f"{tag}.h5", how)
            sets.append(score(train64, out, work, tag))
            sample_min += minutes
            if k == 0:
                lows.append(low)
        rows[f"cascade (second stage {name})"] = mean_of_sets(sets)
    rows["upsampled (bilinear)"] = mean_of_sets(
        [score(train64, upsampled(low, work / f"upsampled_s{k}.h5", 64), work, f"upsampled_s{k}")
         for k, low in enumerate(lows)]
    )  # fmt: skip
    copies = {"first stage (32 px)": copying(train32, val32, lows[0], 4),
              "cascade (64 px)": copying(train64, val64, work / "cascade_0_s0.h5", 8)}  # fmt: skip
    for name, c in copies.items():
        print(f"{name:22s} " + "  ".join(f"{k} {v:.3g}" for k, v in c.items()))
    for name, r in rows.items():
        print(f"{name:40s} " + "  ".join(f"{k.replace('sar_', '')} {v:.3g}" for k, v in r.items()
                                         if isinstance(v, float)))  # fmt: skip
    numbers = {"tile": 64, "low": 32, "channels": "VV+VH", "holdout": "scene",
               "n_train": DatasetFile(train64).info.n, "n_samples": n,
               "base_run": str(base), "sr_run": str(sr), "copies": copies,
               "base_steps": load_config(base / "config.toml").train.steps,
               "base_augment": load_config(base / "config.toml").train.augment,
               "sr_steps": load_config(sr / "config.toml").train.steps,
               "base_train_minutes": base_min and round(base_min, 1),
               "sr_train_minutes": sr_min and round(sr_min, 1),
               "sample_minutes": round(sample_min, 1), "sr_samplers": samplers,
               "repeats": args.repeats, "rows": rows,
               "load_average_end": list(os.getloadavg())}  # fmt: skip
    if not args.no_record:
        from _results import record

        print(f"recorded in {record('sar_cascade', numbers)}")
    np.set_printoptions(precision=3)


if __name__ == "__main__":
    main()
