"""``radardiff demo``: the whole pipeline on built-in synthetic InSAR noise scenes."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from radardiff.cli._common import SEED, bar_callback, progress

STAGES = ("shipped model", "synthesise data", "train", "sample", "evaluate", "report")
SHIPPED = "envisat-noise-32"  # real ENVISAT atmospheric noise, sampled before the demo trains


@click.command()
@click.option("--out", type=click.Path(file_okay=False), default="runs/demo", show_default=True)
@click.option(
    "--steps",
    type=int,
    default=360,
    show_default=True,
    help="Training steps (sized so that the demo ends within 10 minutes on 2 CPU cores).",
)
@click.option(
    "--n-train", type=int, default=4000, show_default=True, help="Synthetic training scenes."
)
@click.option("--n-samples", type=int, default=128, show_default=True, help="Scenes to generate.")
@click.option("--seed", type=SEED, default=0, show_default=True)
def demo(out: str, steps: int, n_train: int, n_samples: int, seed: int) -> None:
    """Synthesise 32x32 InSAR noise, train a small model on the CPU, sample, evaluate, report.

    First, in seconds, 64 samples of the shipped model envisat-noise-32 (real ENVISAT
    atmospheric noise; 'radardiff models' lists the others) go to OUT/shipped/.

    \b
    Example:
      radardiff demo                       # writes runs/demo/report/index.html (< 10 min, 2 CPU cores)
      radardiff demo --out /tmp/demo --steps 200 --n-samples 64   # a quicker look
    """
    from radardiff.config import RunDir
    from radardiff.config.recipes import tiny_config
    from radardiff.data.synth import synthesize
    from radardiff.evaluate import evaluate_files
    from radardiff.report import write_report
    from radardiff.sample import generate, load_run
    from radardiff.sample.generate import request
    from radardiff.train import train

    root = Path(out)
    data_dir, run = root / "data", RunDir(root)
    marker = root / ".radardiff-demo"
    if marker.is_file():
        shutil.rmtree(root)  # an earlier demo's output: the demo starts afresh
    elif root.exists() and any(root.iterdir()):
        raise click.UsageError(f"{root} exists and is not a demo output; pass another --out")
    root.mkdir(parents=True, exist_ok=True)
    marker.touch()
    with progress(len(STAGES), "demo", unit="stage") as stages:
        stages.set_postfix_str(STAGES[0])
        shipped = _shipped_samples(root / "shipped", seed)
        stages.update(1)
        stages.set_postfix_str(STAGES[1])
        train_h5 = synthesize("insar_noise", n_train, 32, data_dir / "train.h5", seed)
        val_h5 = synthesize("insar_noise", max(n_samples, 256), 32, data_dir / "val.h5", seed + 1)
        cfg = tiny_config(str(train_h5.resolve()), str(val_h5.resolve()), steps=steps)
        # a model trained a few hundred steps: DPM-Solver++ with steps uniform in time, not the
        # recipe's Karras levels, which show its rough low-noise predictions and scored worse
        # on the demo run (docs/sampling.md, fast sampling: training length decides the spacing)
        sample = cfg.sample.model_copy(update={"options": {"use_karras_sigmas": False}})
        cfg = cfg.model_copy(update={"sample": sample})
        stages.update(1)
        stages.set_postfix_str(STAGES[2])
        with progress(cfg.train.steps, "  train", unit="step") as bar:
            train(cfg, root, on_progress=bar_callback(bar))
        stages.update(1)
        stages.set_postfix_str(STAGES[3])
        samples = run.samples / f"{cfg.sample.sampler}_{cfg.sample.steps}.h5"
        opts = request(cfg.sample, n_samples, seed=seed)
        with progress(n_samples, "  sample", unit="img") as bar:
            generate(load_run(root), opts, samples, on_progress=bar_callback(bar))
        stages.update(1)
        stages.set_postfix_str(STAGES[4])
        evaluate_files(val_h5, samples, cfg.evaluate, run.eval)
        stages.update(1)
        stages.set_postfix_str(STAGES[5])
        page = write_report(root)
        stages.update(1)
    if shipped is not None:
        click.echo(f"shipped model {SHIPPED}: {shipped.resolve()} (and .h5 beside it)")
    click.echo(f"report: {page.resolve()}")
    click.echo(f"metrics: {run.metrics.resolve()}")


def _shipped_samples(out: Path, seed: int) -> Path | None:
    """64 samples of the shipped model, as a PNG grid and a dataset file (None when this
    installation ships no models)."""
    from radardiff.data import DatasetFile
    from radardiff.models.shipped import shipped_models
    from radardiff.sample import generate, load_run
    from radardiff.sample.generate import request
    from radardiff.sample.writers import REFERENCE_FREE_KINDS, write_png_grid

    if SHIPPED not in shipped_models():
        return None
    run = load_run(SHIPPED)
    generate(run, request(run.cfg.sample, 64, seed=seed), out / f"{SHIPPED}.h5")
    with DatasetFile(out / f"{SHIPPED}.h5") as f:
        centre = f.info.kind in REFERENCE_FREE_KINDS
        return write_png_grid(out / f"{SHIPPED}.png", f.images(), centre=centre)
