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
    help="Comma-separated subset of: semivariogram, psd, histogram, ranges, speckle, phase, "
    "sar (speckle, texture, correlation, bright targets, polarisation ratio: SAR intensity), "
    "memorisation (needs --train).",
)
@click.option(
    "--train",
    type=click.Path(dir_okay=False),
    default=None,
    help="The model's training data (.h5): the memorisation check of --fake against it, with "
    "--real as images the model did not see. Adds 'memorisation' to the metrics.",
)
@click.option("--max-lag", type=int, default=None, help="Largest semivariogram lag in pixels.")
@click.option(
    "--run",
    "run_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Take the evaluation defaults from this run's config.",
)
@click.option(
    "--features",
    type=click.Path(),
    default=None,
    help="Feature extractor for FID, KID, precision/recall: a folder from "
    "'radardiff features train' or a local InceptionV3 weights file (.pth).",
)
@click.option(
    "--likelihood-run",
    type=click.Path(file_okay=False),
    default=None,
    help="Run directory whose EMA model gives the bits/dim of the --real set.",
)
@click.option(
    "--likelihood-steps",
    type=int,
    default=None,
    help="Timesteps kept in the bits/dim bound (default: all T of the run).",
)
@click.option(
    "--likelihood-n", type=int, default=256, show_default=True, help="Real samples in bits/dim."
)
@click.option(
    "--allow-mismatch",
    is_flag=True,
    help="Compare sets of different kinds or pixel spacings (e.g. real insar_unwrapped at 150 m "
    "with insar_noise samples at 100 m); recorded in metrics.json. Shapes and units must agree.",
)
def evaluate(
    real: str,
    fake: str,
    out: str,
    metrics: str | None,
    max_lag: int | None,
    run_dir: str | None,
    features: str | None,
    likelihood_run: str | None,
    likelihood_steps: int | None,
    likelihood_n: int,
    allow_mismatch: bool,
    train: str | None,
) -> None:
    """Compare generated data with real data in radar terms; writes OUT/metrics.json.

    \b
    Example:
      radardiff evaluate --real data/val.h5 --fake runs/demo/samples/samples.h5 --out runs/demo/eval
      radardiff evaluate --real a.h5 --fake b.h5 --out eval --metrics semivariogram,psd
      radardiff evaluate --real data/val.h5 --fake runs/demo/samples/s.h5 --out runs/demo/eval \\
          --features features/demo --likelihood-run runs/demo --likelihood-steps 100
      radardiff evaluate --real data/unw.h5 --fake noise.h5 --out eval --allow-mismatch
      radardiff evaluate --real data/sar_val.h5 --fake sar.h5 --out eval --metrics sar,histogram \\
          --train data/sar_train.h5
    The schema of metrics.json is documented in radardiff.evaluate.metrics.
    """
    from radardiff.config import EvalConfig, RunDir, load_config, validate_config
    from radardiff.evaluate import evaluate_files
    from radardiff.models.shipped import resolve_run

    run_dir = None if run_dir is None else str(resolve_run(run_dir))
    base = load_config(RunDir(run_dir).config).evaluate if run_dir else EvalConfig()
    data = base.model_dump()
    if metrics:
        data["metrics"] = [m.strip() for m in metrics.split(",") if m.strip()]
    if max_lag is not None:
        data["max_lag"] = max_lag
    if train and "memorisation" not in data["metrics"]:
        data["metrics"] = [*data["metrics"], "memorisation"]
    cfg = validate_config(data, "--metrics/--max-lag", EvalConfig)
    if likelihood_steps is not None and likelihood_run is None:
        raise click.UsageError("--likelihood-steps needs --likelihood-run")
    extractor = None
    if features:
        from radardiff.evaluate.extractor import load_extractor

        extractor = load_extractor(features)  # a bad path fails before any long computation
    lik = None
    if likelihood_run:
        from radardiff.evaluate.likelihood import run_bits_per_dim
        from radardiff.sample.device import pick_device

        lik = run_bits_per_dim(
            likelihood_run, real, steps=likelihood_steps, n=likelihood_n, device=pick_device()
        )
    result = evaluate_files(
        real, fake, cfg, out, extractor=extractor, likelihood=lik, allow_mismatch=allow_mismatch,
        train=train,
    )  # fmt: skip
    shown = {k: v for k, v in result["scalars"].items() if v is not None}
    for key, value in shown.items():
        click.echo(f"{key:28s} {value:.6g}")
    click.echo(f"wrote {out}/metrics.json")
