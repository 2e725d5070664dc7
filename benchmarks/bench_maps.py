"""Map conditioning against its floor: do generated images follow their maps as real ones do?

Three cases, each a model trained with ``model.maps`` (the built-in tiny recipe's network, a
global normalisation, ``--normalization``, ``global_standardize`` by default, so that levels and
amplitudes are the network's to learn, not drawn at random), sampled with the recipe's default
sampler over held-out maps, and evaluated with the metric ``maps`` and the map-free metrics next
to their floor (other real images against the same held-out ones):

- ``dem_synth``: ``data synth insar_noise_dem`` (stratified delay over a fractal DEM, the
  coefficient known): the regression of phase on elevation;
- ``sar_synth``: ``data synth sar_map`` in dB (water near-Gamma, land K-distributed, ships):
  per-label level, ENL and log-cumulants; then the segmentation experiment (a U-Net segmenter
  trained on real, generated, real + generated and physics pairs, tested on held-out real);
- ``dem_real``: the shared ENVISAT interferograms with their DEM (``data prepare --map``),
  split by scene: the real phase-elevation relation and the generated one, side by side.

Each case also samples with ``--guidance 0`` (the model's "no map" branch): the same network
without its map, the baseline that shows what the map adds.

Usage::

    python benchmarks/bench_maps.py --work /tmp/bench_maps            # about an hour, 2 cores
    python benchmarks/bench_maps.py --cases dem_synth --steps 300 --n-train 512 --no-record
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import run_cli as _run  # noqa: E402

ENVISAT = HERE.parent.parent / "shared" / "realdata" / "pyrate_envisat_unw"
KEYS = ("map_slope_w1", "map_slope_median_real", "map_slope_median_fake", "map_label_db_error",
        "map_label_enl_ratio", "map_label_k2_error", "semivariogram_rel_error", "lag1_ratio",
        "psd_log_rmse", "histogram_w1", "sar_enl_ratio", "sar_k2_w1", "sar_db_w1",
        "memorisation_ratio", "near_copy_fraction")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="dem_synth,sar_synth,dem_real")
    ap.add_argument("--steps", type=int, default=1500, help="training steps of each model")
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-eval", type=int, default=500)
    ap.add_argument("--seg-steps", type=int, default=300, help="0: no segmentation experiment")
    ap.add_argument(
        "--normalization",
        default="global_standardize",
        help="data.normalization of the map models (a global one: levels follow the map)",
    )
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--work", default="/tmp/bench_maps")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    from radardiff.cli.main import main as cli

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    pre = ["--threads", str(args.threads)] if args.threads else []
    run = lambda *a: _run(cli, [*pre, *a])  # noqa: E731
    numbers = {"steps": args.steps, "n_train": args.n_train, "n_eval": args.n_eval,
               "normalization": args.normalization, "cases": {}}  # fmt: skip
    for case in args.cases.split(","):
        t0 = time.perf_counter()
        numbers["cases"][case] = CASES[case](run, work / case, args)
        numbers["cases"][case]["minutes"] = round((time.perf_counter() - t0) / 60, 1)
        print(json.dumps({case: numbers["cases"][case]}, indent=1))
    numbers["load_average_end"] = list(os.getloadavg())
    if not args.no_record:
        from _results import record

        print(f"recorded in {record('maps', numbers)}")


def _synth(run, w: Path, kind: str, args, params: list[str]) -> dict[str, Path]:
    files = {"train": (args.n_train, 0), "val": (args.n_eval, 1), "floor": (args.n_eval, 2)}
    out = {}
    for name, (n, seed) in files.items():
        out[name] = w / f"{name}.h5"
        if not out[name].is_file():
            run("data", "synth", kind, "--n", n, "--size", 32, "--seed", seed, "--out",
                out[name], *params)  # fmt: skip
    return out


def _model(run, w: Path, train: Path, maps: str, args) -> tuple[Path, float]:
    """Train (unless done) the tiny network conditioned on ``maps``; its training minutes."""
    out = w / "run"
    t0 = time.perf_counter()
    if not (out / "checkpoints" / "latest").is_file():
        run("train", HERE.parent / "configs" / "tiny.toml", "--out", out,
            "--set", f"data.train={train}", "--set", f"model.maps=[{maps}]",
            "--set", f"data.normalization={args.normalization}", "--set", f"train.steps={args.steps}",
            "--set", f"train.checkpoint_every={args.steps}", "--set", "train.val_every=100000")  # fmt: skip
    return out, round((time.perf_counter() - t0) / 60, 1)


def _judge(run, w: Path, model: Path, val: Path, floor: Path, metrics: str, train: Path) -> dict:
    """Samples over ``val``'s maps (with the map, and without: guidance 0) and the metrics of
    each, and of ``floor``, against ``val``."""
    rows = {}
    n = _count(val)
    for name, extra in (("generated", []), ("no_map", ["--guidance", "0"])):
        out = w / f"{name}.h5"
        if not out.is_file():
            run("sample", model, "--map", val, "--n", n, "--out", out, "--seed", 7, *extra)
        rows[name] = _evaluate(run, w / f"eval_{name}", val, out, metrics)
    # memorisation: the samples' nearest-training distance against the held-out images'
    rows["memorisation"] = _evaluate(run, w / "eval_memorisation", val, w / "generated.h5",
                                     "memorisation", ["--train", train])  # fmt: skip
    rows["floor"] = _evaluate(run, w / "eval_floor", val, floor, metrics)
    return rows


def _evaluate(run, out: Path, real: Path, fake: Path, metrics: str, extra: list = ()) -> dict:
    if not (out / "metrics.json").is_file():
        run("evaluate", "--real", real, "--fake", fake, "--out", out, "--metrics", metrics, *extra)
    d = json.loads((out / "metrics.json").read_text())
    row = {k: d["scalars"].get(k) for k in KEYS if d["scalars"].get(k) is not None}
    labels = (d.get("maps") or {}).get("labels") or {}
    for name, sides in labels.items():
        row[f"labels_{name}"] = {c: {s: {k: sides[s][c][k] for k in ("mean_db", "enl", "k2", "k3")}
                                     for s in ("real", "fake")} for c in sides["real"]}  # fmt: skip
    cont = (d.get("maps") or {}).get("continuous") or {}
    for name, sec in cont.items():
        row[f"slopes_{name}"] = {s: sec[s] for s in ("real", "fake")}
    return row


def _count(path: Path) -> int:
    from radardiff.data.dataset_file import DatasetFile

    return DatasetFile(path).info.n


def dem_synth(run, w: Path, args) -> dict:
    w.mkdir(parents=True, exist_ok=True)
    f = _synth(run, w, "insar_noise_dem", args, [])
    model, minutes = _model(run, w, f["train"], "dem", args)
    return {"train_minutes": minutes, **_judge(run, w, model, f["val"], f["floor"],
                                               "maps,semivariogram,psd,histogram", f["train"])}  # fmt: skip


def sar_synth(run, w: Path, args) -> dict:
    w.mkdir(parents=True, exist_ok=True)
    f = _synth(run, w, "sar_map", args, ["--param", "db=true"])
    model, minutes = _model(run, w, f["train"], "land_cover", args)
    rows = {"train_minutes": minutes, **_judge(run, w, model, f["val"], f["floor"],
                                               "maps,sar,psd,histogram", f["train"])}  # fmt: skip
    if args.seg_steps:  # 0: no segmentation experiment
        rows["segmentation"] = _segmentation(run, w, model, f, args)
    return rows


def _segmentation(run, w: Path, model: Path, f: dict, args) -> dict:
    """Segmenters on real (a fresh draw of sar_map), generated (the model over those maps),
    both, and physics pairs (a simpler generator: Gamma speckle everywhere, no land texture,
    one level per class), tested on held-out real."""
    real, physics = w / "seg_real.h5", w / "seg_physics.h5"
    n = min(1000, args.n_train)
    if not real.is_file():
        run("data", "synth", "sar_map", "--n", n, "--size", 32, "--seed", 3, "--out", real,
            "--param", "db=true")  # fmt: skip
    if not physics.is_file():
        run("data", "synth", "sar_map", "--n", n, "--size", 32, "--seed", 4, "--out", physics,
            "--param", "db=true", "--param", "land_texture=[1000,1000]", "--param", "water_texture=0",
            "--param", "water_db=[-20,-20]", "--param", "land_db=[-8,-8]")  # fmt: skip
    out = w / "segmentation"
    if not (out / "segmentation.json").is_file():
        run("downstream", "experiment", "--tasks", "segmentation", "--run", model,
            "--train-real", real, "--test-real", f["floor"], "--physics", physics,
            "--seeds", "0,1,2", "--out", out, "--set",
            f"segmentation.train.steps={args.seg_steps}")  # fmt: skip
    d = json.loads((out / "segmentation.json").read_text())
    return {name: {k: v for k, v in s.items() if k in ("mean_iou", "pixel_accuracy", "seeds")}
            for name, s in d["summary"]["segmentation"]["sets"].items()}  # fmt: skip


def dem_real(run, w: Path, args) -> dict:
    w.mkdir(parents=True, exist_ok=True)
    base = w / "ifg.h5"
    train, val = w / "ifg_train.h5", w / "ifg_val.h5"
    if not train.is_file():
        run("data", "prepare", ENVISAT, "--nodata", 0, "--tile", 32, "--stride", 4, "--split",
            "0.65,0.35", "--seed", 0, "--map", f"dem={ENVISAT / 'dem.tif'}", "--out", base)  # fmt: skip
    model, minutes = _model(run, w, train, "dem", args)
    # the floor: the training scenes' tiles against the held-out ones (other real scenes)
    rows = _judge(run, w, model, val, train, "maps,semivariogram,psd,histogram", train)
    return {"train_minutes": minutes, "n_train": _count(train), "n_val": _count(val), **rows}


CASES = {"dem_synth": dem_synth, "sar_synth": sar_synth, "dem_real": dem_real}


if __name__ == "__main__":
    main()
