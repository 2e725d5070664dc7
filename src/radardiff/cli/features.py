"""``radardiff features``: the radar feature extractor behind FID, KID and precision/recall."""

from __future__ import annotations

import click

from radardiff.cli._common import SEED, bar_callback, progress


@click.group()
def features() -> None:
    """Train the radar feature extractor used by 'radardiff evaluate --features'.

    \b
    Example:
      radardiff features train data/noise_train.h5 --out features/noise --epochs 6
      radardiff evaluate --real data/val.h5 --fake s.h5 --out eval --features features/noise
    """


@features.command("train")
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output folder.")
@click.option("--epochs", type=int, default=6, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option(
    "--mode",
    type=click.Choice(["auto", "classifier", "simclr"]),
    default="auto",
    show_default=True,
    help="auto: a classifier when DATA has labels, else a SimCLR encoder.",
)
@click.option(
    "--normalization",
    default="minmax_pm1",
    show_default=True,
    help="Input normalisation (as in the training config's data.normalization).",
)
@click.option("--to-db", is_flag=True, help="Convert linear SAR intensity to dB first.")
@click.option(
    "--max-samples", type=int, default=2048, show_default=True, help="Training images used."
)
def train(data, out, epochs, seed, mode, normalization, to_db, max_samples) -> None:
    """Train a small CNN feature extractor on DATA.h5 and save it in OUT.

    \b
    Examples:
      radardiff features train data/train.h5 --out features/noise --epochs 6 --seed 0
      radardiff evaluate --real data/val.h5 --fake runs/noise/samples/s.h5 \\
          --out runs/noise/eval --features features/noise
    """
    from radardiff.errors import RadarDiffError
    from radardiff.evaluate.extractor import train_extractor

    if max_samples < 2:
        raise RadarDiffError(f"--max-samples must be at least 2, got {max_samples}")
    with progress(epochs, "features train", unit="epoch") as bar:
        r = train_extractor(
            data, out, epochs=epochs, seed=seed, mode=mode, normalization=normalization,
            to_db=to_db, max_samples=max_samples, on_progress=bar_callback(bar),
        )  # fmt: skip
    extra = f", train accuracy {r.train_accuracy:.3f}" if r.train_accuracy is not None else ""
    click.echo(
        f"wrote {r.mode} extractor to {r.path} ({r.n_train} images, {r.epochs} epochs, "
        f"final loss {r.losses[-1]:.4g}{extra}, {r.seconds:.1f} s)"
    )
