"""``radardiff evaluate``."""

from __future__ import annotations

import click


@click.command()
@click.option(
    "--real", type=click.Path(dir_okay=False), required=True, help="Real dataset file (.h5)."
)
@click.option(
    "--fake", type=click.Path(dir_okay=False), required=True, help="Generated dataset file (.h5)."
)
@click.option(
    "--out", type=click.Path(file_okay=False), required=True, help="Output folder for metrics.json."
)
@click.option(
    "--metrics",
    default=None,
    help="Comma-separated subset of: semivariogram, psd, histogram, ranges, speckle, phase.",
)
@click.option("--max-lag", type=int, default=None, help="Largest semivariogram lag in pixels.")
@click.option(
    "--run",
    "run_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Take the evaluation defaults from this run's config.",
)
def evaluate(
    real: str, fake: str, out: str, metrics: str | None, max_lag: int | None, run_dir: str | None
) -> None:
    """Compare generated data with real data in radar terms; writes OUT/metrics.json.

    \b
    Example:
      radardiff evaluate --real data/val.h5 --fake runs/demo/samples/samples.h5 --out runs/demo/eval
      radardiff evaluate --real a.h5 --fake b.h5 --out eval --metrics semivariogram,psd
    The schema of metrics.json is documented in radardiff.evaluate.metrics.
    """
    from radardiff.config import EvalConfig, RunDir, load_config, validate_config
    from radardiff.evaluate import evaluate_files

    base = load_config(RunDir(run_dir).config).evaluate if run_dir else EvalConfig()
    data = base.model_dump()
    if metrics:
        data["metrics"] = [m.strip() for m in metrics.split(",") if m.strip()]
    if max_lag is not None:
        data["max_lag"] = max_lag
    cfg = validate_config(data, "--metrics/--max-lag", EvalConfig)
    result = evaluate_files(real, fake, cfg, out)
    shown = {k: v for k, v in result["scalars"].items() if v is not None}
    for key, value in shown.items():
        click.echo(f"{key:28s} {value:.6g}")
    click.echo(f"wrote {out}/metrics.json")
