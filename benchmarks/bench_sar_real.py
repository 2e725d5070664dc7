"""Generated SAR against real SAR: a recipe trained on real Sentinel-1 (or SLC) tiles, sampled,
and every SAR metric of ``evaluate --metrics sar`` set beside its floor.

The real tiles are split by scene (``data prepare --split``): the model learns the training
scenes only. Each metric is measured three ways, with the same number of tiles:

* ``floor``: the training tiles against the held-out scenes' tiles, other real tiles of the same
  sensor (what a perfect generator of that kind of data reaches);
* ``generated``: the training tiles against the samples of the recipe's default sampler (and of
  DDPM with every step, ``--ddpm``, for scale);
* memorisation: the samples' nearest-training distances against those of the held-out tiles.

Usage::

    python benchmarks/bench_sar_real.py --recipe configs/sar_32.toml           # VV+VH 32 px
    python benchmarks/bench_sar_real.py --recipe configs/sar_64.toml --tile 64
    python benchmarks/bench_sar_real.py --recipe configs/sar_32.toml --channels VV --ddpm
    python benchmarks/bench_sar_real.py --classes scene --set model.range_conditioning=true
    python benchmarks/bench_sar_real.py --run runs/sar_grd --tile 32         # a trained run
    python benchmarks/bench_sar_real.py --run runs/sar_grd --sampler default \
        --sampler dpmsolver++:use_karras_sigmas=true:clip=static:steps=25     # samplers side by side
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
REALDATA = HERE.parent.parent / "shared" / "realdata"
SCALARS = ("sar_enl_ratio", "sar_k2_w1", "sar_k3_w1", "sar_acf1_error", "sar_db_w1",
           "sar_peak_db_w1", "sar_pol_ratio_w1", "histogram_w1", "psd_log_rmse")  # fmt: skip


def _tiles(img: np.ndarray, tile: int, stride: int, rows: tuple[int, int]) -> list[np.ndarray]:
    """(C, H, W) -> the ``tile`` crops every ``stride`` pixels whose rows lie in ``rows``."""
    top, bottom = rows
    return [img[:, i : i + tile, j : j + tile] for i in range(top, bottom - tile + 1, stride)
            for j in range(0, img.shape[-1] - tile + 1, stride)]  # fmt: skip


def real_tiles(realdata: Path, tile: int, stride: int, channels: str, holdout: str,
               work: Path, classes: str = "none") -> tuple[Path, Path]:  # fmt: skip
    """Training and held-out real tiles in dB (``classes='scene'``: labelled by their scene, a
    class-conditional set of several scenes, as ship or land-cover chips are).

    ``holdout='strip'``: every scene gives training tiles from its top and held-out tiles from its
    bottom ``tile`` rows, ``tile // 4`` rows apart (other tiles of the same scenes: the
    distribution the model learned); ``'scene'``: whole scenes held out (Sentinel-1 GRD: 4
    training / 2 held-out patches; needed where a scene is too small for a strip). Sentinel-1
    GRD (``VV+VH``, ``VV`` or ``VH``), or the SLC crop's intensity (``SLC``, one scene).
    """
    from radardiff.data.dataset_file import DatasetFile, write_dataset
    from radardiff.data.prepare import prepare, to_db

    if channels == "SLC":
        z = np.load(realdata / "sar_slc_merlin" / "slc_256x256_real_imag.npy")
        # as data prepare --complex db: a zero intensity (14 pixels of this integer-quantised
        # crop) is no data, not -100 dB, which would stretch its tile's range
        scenes = [to_db((z[..., 0] ** 2 + z[..., 1] ** 2)[None])]
    else:
        res = prepare(realdata / "sar_bigearthnet_s1_example", work / "grd_scenes.h5")
        x = DatasetFile(res.outputs[0].path).images()
        pick = {"VV+VH": slice(0, 2), "VV": slice(0, 1), "VH": slice(1, 2)}[channels]
        scenes = list(x[:, pick])
    if classes == "scene" and (channels == "SLC" or holdout != "strip"):
        raise SystemExit("--classes scene needs Sentinel-1 GRD scenes and --holdout strip")
    sets: dict[str, list] = {"train": [], "val": []}
    labels: dict[str, list] = {"train": [], "val": []}
    for k, img in enumerate(scenes):
        h = img.shape[-2]
        if holdout == "strip":
            cut = h - tile
            parts = {"train": _tiles(img, tile, stride, (0, cut - tile // 4)),
                     "val": _tiles(img, tile, max(1, stride // 2), (cut, h))}  # fmt: skip
        else:
            parts = {"train" if k % 3 != 2 else "val": _tiles(img, tile, stride, (0, h))}
        for name, tiles in parts.items():
            sets[name] += tiles
            labels[name] += [k] * len(tiles)
    out = []
    tag = "" if classes == "none" else f"_{classes}"
    for name, tiles in sets.items():
        arr = np.stack(tiles).astype(np.float32)
        lab = None if classes == "none" else np.asarray(labels[name])
        names = None if lab is None else [f"scene{k}" for k in range(len(scenes))]
        out.append(write_dataset(work / f"real_{channels.replace('+', '')}_{tile}_{holdout}{tag}_{name}.h5",
                                 arr, lab, kind="sar_backscatter", units="dB", source=str(realdata),
                                 class_names=names))  # fmt: skip
    return out[0], out[1]


def train_recipe(
    recipe: Path,
    train: Path,
    val: Path,
    steps: int | None,
    work: Path,
    augment: str | None = None,
    overrides: list[str] | None = None,
) -> tuple[Path, float]:
    from radardiff.config import load_config, validate_config
    from radardiff.data.dataset_file import DatasetFile
    from radardiff.train import train as train_run

    cfg = load_config(recipe, overrides or None).model_dump()
    cfg["data"].update(train=str(train), val=str(val))
    cfg["model"]["in_channels"] = DatasetFile(train).info.channels
    info = DatasetFile(train).info
    cfg["model"]["num_classes"] = len(info.class_names or []) if info.has_labels else 0
    if steps:
        cfg["train"]["steps"] = steps
    if augment:
        cfg["train"]["augment"] = augment
    cfg = validate_config(cfg, recipe.stem)
    t0 = time.perf_counter()
    train_run(cfg, work / "run")
    return work / "run", (time.perf_counter() - t0) / 60


def sample(
    loaded,
    n: int,
    out: Path,
    sampler: str | None = None,
    steps: int | None = None,
    seed: int | None = None,
    sampler_options: dict | None = None,
    clip: str | None = None,
) -> tuple[Path, float]:
    """``n`` samples of the loaded run (:func:`radardiff.sample.load_run`) into ``out``; minutes
    (NaN when ``out`` already holds this very request, which is then scored again only)."""
    from radardiff.sample import generate
    from radardiff.sample.generate import finished, request

    opts = request(loaded.cfg.sample, n, sampler=sampler, steps=steps, seed=seed,
                   sampler_options=sampler_options, clip=clip, mixed_precision="auto")  # fmt: skip
    if finished(out, loaded, opts):
        return out, float("nan")
    t0 = time.perf_counter()
    generate(loaded, opts, out)
    return out, (time.perf_counter() - t0) / 60


def repeated(
    run: Path,
    n: int,
    repeats: int,
    train: Path,
    val: Path,
    work: Path,
    name: str,
    checkpoint: str,
    **how,
) -> dict:
    """``repeats`` sample sets of ``n`` (seeds 0, 1, ...), each scored like the floor's one set
    of held-out tiles (the same size, so the same small-sample bias of every W1): the mean of
    each figure, and its range over the sets."""
    from radardiff.sample import load_run

    loaded = load_run(run, checkpoint=checkpoint)  # once for every set
    steps = f"_{how['steps']}" if how.get("steps") else ""
    given = {k: v for k, v in how.items() if k != "steps" and v}  # another sampler than the run's
    if given:
        steps += "_" + hashlib.sha256(json.dumps(given, sort_keys=True).encode()).hexdigest()[:8]
    sets, minutes = [], 0.0
    for seed in range(repeats):
        tag = f"{name}_{checkpoint}{steps}_s{seed}"
        fake, smin = sample(loaded, n, work / f"{tag}.h5", seed=seed, **how)
        sets.append(score(train, val, fake, work, tag))
        minutes += smin
    row: dict = {"sample_minutes": round(minutes / repeats, 2) if minutes == minutes else None}
    return {**row, **mean_of_sets(sets)}


def mean_of_sets(sets: list[dict]) -> dict:
    """The scores of several sample sets as one row: each figure's mean over the sets and, for
    more than one, its range (``KEY_range``); other values as a list, one per set."""
    row: dict = {"sample_sets": len(sets)}
    for key, value in sets[0].items():
        if isinstance(value, float):
            vals = [r[key] for r in sets if isinstance(r.get(key), float)]
            row[key] = float(np.mean(vals))
            if len(sets) > 1:
                row[f"{key}_range"] = [min(vals), max(vals)]
        else:
            row[key] = value if len(sets) == 1 else [r[key] for r in sets]
    return row


def sampler_request(spec: str, sc, steps: int) -> tuple[str, dict]:
    """A row's name and its sampling request (sampler, steps, options, clip) from ``spec``:
    ``default`` (the run's ``[sample]``, ``steps``) or the study's ``NAME:key=value:clip=MODE``
    with ``steps=K``; the name spells out what the row samples with, the request merged with
    the run's ``[sample]`` by :func:`radardiff.sample.generate.request` itself."""
    from radardiff.evaluate.study import parse_sampler
    from radardiff.sample.generate import request

    if spec == "default":
        name, options, clip = sc.sampler, {}, None
    else:
        v = parse_sampler(spec)
        name, options, clip = v.name, dict(v.options), v.clip
        steps = int(options.pop("steps", steps))
    how = {"steps": steps, "sampler": name, "sampler_options": options, "clip": clip}
    used = request(sc, 1, **dict(how))
    text = "".join(f", {k}={v}" for k, v in used.sampler_options.items())
    text += f", clip {used.clip}" if used.clip else ""
    return f"{name} {steps}{text}", how


def load_run_checkpoint(run: Path, which: str) -> str:
    from radardiff.config import RunDir

    return RunDir(run).named_checkpoint(which).name


def sar_metrics(train: Path, fake: Path, work: Path, name: str) -> dict:
    """``metrics.json`` of ``fake`` against ``train`` with the SAR, histogram and PSD metrics."""
    from radardiff.config import EvalConfig
    from radardiff.evaluate import evaluate_files

    cfg = EvalConfig(metrics=("sar", "histogram", "psd"), bootstrap=0)
    return evaluate_files(train, fake, cfg, work / name, allow_mismatch=True)


def score(train: Path, val: Path, fake: Path, work: Path, name: str) -> dict:
    from radardiff.config import EvalConfig
    from radardiff.evaluate import evaluate_files

    m = sar_metrics(train, fake, work, name)
    out = {k: m["scalars"].get(k) for k in SCALARS}
    if name != "floor":
        mem = evaluate_files(val, fake, EvalConfig(metrics=("histogram", "memorisation"), bootstrap=0),
                             work / f"{name}_mem", allow_mismatch=True, train=train)  # fmt: skip
        out["memorisation_ratio"] = mem["scalars"].get("memorisation_ratio")
        out["near_copy_fraction"] = mem["scalars"].get("near_copy_fraction")
    sar = m.get("sar", {})
    out["enl_real_fake"] = [sar.get("real", {}).get("enl"), sar.get("fake", {}).get("enl")]
    out.update(class_figures(train, fake, sar.get("by_class")))
    return out


def class_figures(train: Path, fake: Path, by_class: dict | None) -> dict:
    """For labelled sets: the mean over classes and channels of |mean dB of a class's tiles -
    that of its training tiles| (does each class keep its own level?), and each class's median
    ENL against its training tiles' (first channel)."""
    from radardiff.data.dataset_file import DatasetFile

    if not by_class:
        return {}
    with DatasetFile(train) as t, DatasetFile(fake) as f:
        (xt, lt), (xf, lf) = ((d.images(), d.labels()) for d in (t, f))
    errs = [np.abs(np.nanmean(xf[lf == k], axis=(0, 2, 3)) - np.nanmean(xt[lt == k], axis=(0, 2, 3)))
            for k in np.unique(lt) if np.any(lf == k)]  # fmt: skip
    enl = {name: (None if c["fake"] is None else float(c["fake"]["enl"][0] / c["real"]["enl"][0]))
           for name, c in by_class.items()}  # fmt: skip
    return {"class_db_error": float(np.mean(errs)), "class_enl_ratio": enl}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=str(HERE.parent / "configs" / "sar_32.toml"))
    ap.add_argument("--run", default=None, help="a trained run instead of training the recipe")
    ap.add_argument("--tile", type=int, default=32)
    ap.add_argument("--stride", type=int, default=8)
    ap.add_argument("--channels", choices=("VV+VH", "VV", "VH", "SLC"), default="VV+VH")
    ap.add_argument("--holdout", choices=("strip", "scene"), default="strip")
    ap.add_argument("--classes", choices=("none", "scene"), default="none",
                    help="scene: each GRD scene a class, a class-conditional model")  # fmt: skip
    ap.add_argument("--steps", type=int, default=None, help="training steps [the recipe's]")
    ap.add_argument("--n", type=int, default=None, help="samples [as many as held-out tiles]")
    ap.add_argument("--ddpm", action="store_true", help="also DDPM with every step")
    ap.add_argument("--repeats", type=int, default=3,
                    help="sample sets of --n, each scored; their mean is reported")  # fmt: skip
    ap.add_argument("--checkpoint", default=None,
                    help="latest, best or a step [the recipe's sample.checkpoint]")  # fmt: skip
    ap.add_argument("--sample-steps", type=int, default=None,
                    help="steps of the recipe's sampler [the recipe's]")  # fmt: skip
    ap.add_argument("--sampler", action="append", default=[], metavar="SPEC",
                    help="a generated row's sampler, as radardiff study samplers takes it "
                         "(NAME:key=value:clip=none), plus steps=K [the run's sample.steps]; "
                         "'default': the run's own [sample] (repeatable; default: the run's)")  # fmt: skip
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="recipe override, as radardiff train --set (repeatable)")  # fmt: skip
    ap.add_argument("--work", default="bench_sar_real_work")
    ap.add_argument("--realdata", default=str(REALDATA))
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (fewer than the cores when other jobs share them)",
    )
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    from radardiff.data.dataset_file import DatasetFile

    train, val = real_tiles(Path(args.realdata), args.tile, args.stride, args.channels,
                            args.holdout, work, args.classes)  # fmt: skip
    minutes = None
    run = Path(args.run) if args.run else None
    if run is None:
        run, minutes = train_recipe(Path(args.recipe), train, val, args.steps, work,
                                    overrides=args.set)  # fmt: skip
    n = args.n or DatasetFile(val).info.n
    rows = {"floor": score(train, val, val, work, "floor")}
    from radardiff.config import load_config

    cfg = load_config(run / "config.toml")
    which = args.checkpoint or cfg.sample.checkpoint
    steps = args.sample_steps or cfg.sample.steps
    samplers = {}
    for spec in args.sampler or ["default"]:
        name, how = sampler_request(spec, cfg.sample, steps)
        samplers[name] = how
        rows[f"generated ({name}, {which} checkpoint)"] = repeated(
            run, n, args.repeats, train, val, work, "generated", checkpoint=which, **how
        )  # fmt: skip
    if args.ddpm:
        rows[f"generated (ddpm, every step, {which} checkpoint)"] = repeated(
            run, n, args.repeats, train, val, work, "ddpm", checkpoint=which,
            sampler="ddpm", steps=cfg.diffusion.timesteps,
        )  # fmt: skip
    for name, r in rows.items():
        print(f"{name:48s} " + "  ".join(f"{k.replace('sar_', '')} {v:.3g}" for k, v in r.items()
                                           if isinstance(v, float)))  # fmt: skip
    numbers = {"channels": args.channels, "classes": args.classes, "tile": args.tile, "stride": args.stride, "holdout": args.holdout,
               "recipe": args.recipe if not args.run else str(run), "overrides": args.set, "train_minutes": minutes and round(minutes, 1),
               "training_steps": cfg.train.steps, "checkpoint": load_run_checkpoint(run, which), "sample_steps": steps,
               "samplers": samplers,
               "n_train": DatasetFile(train).info.n, "n_heldout": DatasetFile(val).info.n, "n_samples": n,
               "rows": rows, "load_average_end": list(os.getloadavg())}  # fmt: skip
    if not args.no_record:
        from _results import record

        print(f"recorded in {record('sar_real', numbers)}")


if __name__ == "__main__":
    main()
