"""``radardiff study``: how sampling choices change radar realism and cost."""

from __future__ import annotations

import click

from radardiff.cli._common import SEED, conv_kernels_option, parse_int_list, precision_option


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
    "--samplers",
    default="ddim,dpmsolver++",
    show_default=True,
    help="Comma-separated samplers, each NAME or NAME:key=value:... with sampler options and "
    "clip=static|dynamic|none (e.g. ddim:eta=1, ddpm:variance=fixed_large).",
)
@click.option(
    "--steps", default="10,25,50,100,250,1000", show_default=True, help="Comma-separated counts."
)
@click.option("--n", "n", type=int, default=256, show_default=True, help="Samples per row.")
@click.option("--real", type=click.Path(dir_okay=False), required=True, help="Real data (.h5).")
@click.option(
    "--floor",
    type=click.Path(dir_okay=False),
    default=None,
    help="Real data of the same distribution, disjoint from --real: N of its images give the "
    "floor row [default: the run's training file].",
)
@click.option(
    "--out", type=click.Path(file_okay=False), default=None, help="Default: RUN_DIR/study."
)
@click.option(
    "--checkpoint",
    default=None,
    help="Checkpoint: a step number, latest or best [default: the recipe's sample.checkpoint].",
)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@precision_option()
@click.option(
    "--features", type=click.Path(), default=None, help="Feature extractor for FID/KID/P&R."
)
@click.option(
    "--students",
    default=None,
    help="Comma-separated distilled runs of RUN_DIR (radardiff distill): a row each, sampled "
    "with its own sampler and steps.",
)
@click.option(
    "--compile",
    "compile_",
    is_flag=True,
    help="Sample with the network compiled (as radardiff sample --compile), compiled before the "
    "first row is timed.",
)
@conv_kernels_option()
def samplers(
    run_dir, samplers, steps, n, real, floor, out, checkpoint, seed, batch_size, precision,
    features, students, compile_, conv_kernels,
) -> None:  # fmt: skip
    """Metrics and wall time for each sampler and step count: do fast samplers fail?

    \b
    Example:
      radardiff study samplers runs/noise --samplers ddpm,ddim,ddim:eta=1,dpmsolver++ \\
          --steps 10,25,50,100,250,1000 --n 256 --real data/val.h5
      radardiff study samplers runs/noise --samplers ddpm --steps 1000 --n 256 \\
          --real data/val.h5 --students runs/noise_4,runs/noise_2
    Writes RUN_DIR/study/samplers.json and samplers.csv; 'radardiff report' plots them.
    """
    from radardiff.evaluate.study import study_samplers
    from radardiff.sample.device import pick_device

    names = [s.strip() for s in samplers.split(",") if s.strip()]
    counts = parse_int_list(steps, "--steps") or ()

    def show(row: dict) -> None:
        click.echo(
            f"{row['sampler']:>28s} {row['steps']:>5d} steps {row['nfe']:6.0f} calls "
            f"{row['s_per_sample']:8.4f} s/sample  " + _scores(row)
        )

    result = study_samplers(
        run_dir, names, counts, n, real, out, seed, batch_size=batch_size,
        extractor=features, device=pick_device(), on_row=show, checkpoint=checkpoint,
        floor=floor, precision=precision, compile=compile_, conv_kernels=conv_kernels,
        students=[x.strip() for x in (students or "").split(",") if x.strip()],
    )  # fmt: skip
    st, ref = result.settings, result.reference
    if ref is not None:
        click.echo(f"{'floor':>28s} ({ref['n']} images of {ref['source']}): " + _scores(ref))
    trained = (
        f"{st['train_steps']} steps, {st['train_minutes']:.1f} min of training"
        if st.get("train_minutes") is not None
        else f"{st['train_steps']} steps"
    )
    click.echo(
        f"run {st['run_name']} ({st['run_dir']}), checkpoint {st['checkpoint']} ({trained}); "
        f"{st['n']} samples per row, seed {st['seed']}, against {st['real']}"
    )
    click.echo(f"wrote {result.json_path} and {result.csv_path}")


def _scores(row: dict) -> str:
    keys = (("semivariogram_rel_error", "sv error", "{:.4g}"), ("lag1_ratio", "lag-1 ratio",
            "{:.3g}"), ("noise_fraction", "noise samples", "{:.1%}"))  # fmt: skip
    return "  ".join(
        f"{label} {'-' if row.get(k) is None else fmt.format(row[k])}" for k, label, fmt in keys
    )
