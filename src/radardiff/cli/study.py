"""``radardiff study``: how sampling choices change radar realism and cost."""

from __future__ import annotations

import click

from radardiff.cli._common import parse_int_list


@click.group()
def study() -> None:
    """Studies over a trained run (sampler and step count).

    \b
    Example:
      radardiff study samplers runs/noise --samplers ddim,dpmsolver++ --steps 10,25,100 \
          --n 256 --real data/noise_val.h5
    """


@study.command("samplers")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "--samplers", default="ddim,dpmsolver++", show_default=True, help="Comma-separated names."
)
@click.option(
    "--steps", default="10,25,50,100,250,1000", show_default=True, help="Comma-separated counts."
)
@click.option("--n", "n", type=int, default=256, show_default=True, help="Samples per row.")
@click.option("--real", type=click.Path(dir_okay=False), required=True, help="Real data (.h5).")
@click.option(
    "--out", type=click.Path(file_okay=False), default=None, help="Default: RUN_DIR/study."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option(
    "--features", type=click.Path(), default=None, help="Feature extractor for FID/KID/P&R."
)
def samplers(run_dir, samplers, steps, n, real, out, seed, batch_size, features) -> None:
    """Metrics and wall time for each sampler and step count: do fast samplers fail?

    \b
    Example:
      radardiff study samplers runs/noise --samplers ddim,dpmsolver++ \\
          --steps 10,25,50,100,250,1000 --n 256 --real data/val.h5
    Writes RUN_DIR/study/samplers.json and samplers.csv; 'radardiff report' plots them.
    """
    from radardiff.evaluate.study import study_samplers
    from radardiff.sample.device import pick_device

    names = [s.strip() for s in samplers.split(",") if s.strip()]
    counts = parse_int_list(steps, "--steps") or ()

    def show(row: dict) -> None:
        sv = row.get("semivariogram_rel_error")
        sv = "-" if sv is None else f"{sv:.4g}"
        click.echo(
            f"{row['sampler']:>14s} {row['steps']:>5d} steps  {row['wall_s']:8.2f} s  "
            f"{row['s_per_sample']:.4f} s/sample  semivariogram_rel_error {sv}"
        )

    result = study_samplers(
        run_dir, names, counts, n, real, out, seed, batch_size=batch_size,
        extractor=features, device=pick_device(), on_row=show,
    )  # fmt: skip
    ref = result.reference
    if ref is not None and ref.get("semivariogram_rel_error") is not None:
        click.echo(
            f"{'reference':>14s} (n={ref['n']} training images, a perfect sampler): "
            f"semivariogram_rel_error {ref['semivariogram_rel_error']:.4g}"
        )
    click.echo(f"wrote {result.json_path} and {result.csv_path}")
