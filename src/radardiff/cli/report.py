"""``radardiff report``."""

from __future__ import annotations

import click


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "--real",
    type=click.Path(dir_okay=False),
    default=None,
    help="Real dataset file for the grids (default: the one evaluated, else the run's val/train).",
)
@click.option(
    "--samples",
    type=click.Path(dir_okay=False),
    default=None,
    help="Generated dataset file (default: the newest RUN_DIR/samples/*.h5).",
)
def report(run_dir: str, real: str | None, samples: str | None) -> None:
    """Write RUN_DIR/report/index.html: a self-contained page with figures and tables.

    RUN_DIR may also be the --out folder of 'radardiff downstream experiment' (its tables, and
    for a curve over --scene-counts its figure, also written to RUN_DIR/curve.png).

    \b
    Examples:
      radardiff report runs/demo
      xdg-open runs/demo/report/index.html
      radardiff report curve/
    """
    from pathlib import Path

    from radardiff.models.shipped import refuse_shipped
    from radardiff.report import write_downstream_report, write_report

    folder = Path(run_dir)
    results = ("downstream.json", "classification.json")
    if not (folder / "config.toml").is_file() and any((folder / r).is_file() for r in results):
        if real or samples:
            raise click.UsageError("--real and --samples are for run directories")
        click.echo(f"report: {write_downstream_report(folder)}")
        return

    refuse_shipped(run_dir, "RUN_DIR (report writes RUN_DIR/report)")
    path = write_report(run_dir, real=real, samples=samples)
    click.echo(f"report: {path}")
