"""``radardiff train``."""

from __future__ import annotations

from pathlib import Path

import click

from radardiff.cli._common import bar_callback, is_main_process, progress


def resolve_paths(cfg):
    """Data paths made absolute, so the run directory works from any folder."""
    data = cfg.data
    upd = {"train": str(Path(data.train).resolve()) if data.train else ""}
    if data.val:
        upd["val"] = str(Path(data.val).resolve())
    return cfg.model_copy(update={"data": data.model_copy(update=upd)})


@click.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run directory.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. --set train.steps=500 (repeatable).",
)
@click.option("--resume", is_flag=True, help="Continue from the run's latest checkpoint.")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and exit.")
def train(
    config: str | None, out: str, overrides: tuple[str, ...], resume: bool, dry_run: bool
) -> None:
    """Train a diffusion model from a TOML recipe into a run directory.

    \b
    Examples:
      radardiff train configs/tiny.toml --out runs/tiny --set data.train=data/train.h5
      radardiff train configs/tiny.toml --out runs/tiny --set train.steps=2000 --resume
      radardiff train --out runs/tiny --resume          # the run's own config.toml
      torchrun --nproc_per_node 2 -m radardiff train configs/tiny.toml --out runs/tiny2
    """
    from radardiff.config import RunDir, dumps_config, load_config
    from radardiff.models.shipped import refuse_shipped

    refuse_shipped(out, "--out")
    if config is None:
        if not resume:
            raise click.UsageError("missing CONFIG (only --resume may omit it)")
        RunDir(out).require()
        config = str(RunDir(out).config)
    cfg = resolve_paths(load_config(config, list(overrides)))
    if dry_run:
        click.echo(dumps_config(cfg), nl=False)
        return
    if not cfg.data.train:
        raise click.UsageError(
            "no training data: set data.train in the config or --set data.train=FILE"
        )
    from radardiff.train import train as run_training  # the network's stack: seconds to import

    with progress(cfg.train.steps, "train", unit="step") as bar:
        result = run_training(cfg, out, resume=resume, on_progress=bar_callback(bar))
    if is_main_process():
        click.echo(f"trained {result.steps} steps; run directory: {result.run_dir}")
