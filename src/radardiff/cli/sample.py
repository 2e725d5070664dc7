"""``radardiff sample``."""

from __future__ import annotations

import click

from radardiff.cli._common import bar_callback, parse_int_list, parse_kv, progress


@click.command()
@click.argument("run_dir", required=False, type=click.Path(file_okay=False))
@click.option("--n", "n", type=int, help="Number of samples.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="Output: .h5 (dataset file), .npz, .png (grid), .tif (folder of GeoTIFFs).",
)
@click.option(
    "--sampler",
    default=None,
    help="Sampler name (see --list-samplers); default from the run's config.",
)
@click.option(
    "--steps", type=int, default=None, help="Sampling steps (respaced over the trained T)."
)
@click.option(
    "--class",
    "classes",
    default=None,
    help="Class index, or a comma-separated list given in turn (2,2,5: a 2:1 mix).",
)
@click.option(
    "--guidance", type=float, default=None, help="Classifier-free guidance scale (1 = none)."
)
@click.option("--seed", type=int, default=None, help="Sample i uses seed (SEED, i).")
@click.option("--batch-size", type=int, default=None)
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Sampler option, e.g. --option solver_order=3 (repeatable).",
)
@click.option(
    "--precision", type=click.Choice(["no", "bf16", "fp16"]), default="no", show_default=True
)
@click.option("--weights", type=click.Choice(["ema", "model"]), default="ema", show_default=True)
@click.option(
    "--clip/--no-clip",
    default=None,
    help="Clip x0 estimates to [-1, 1] [default: when the normalisation bounds the data].",
)
@click.option(
    "--list-samplers", is_flag=True, help="List the samplers and their options, then exit."
)
def sample(
    run_dir,
    n,
    out,
    sampler,
    steps,
    classes,
    guidance,
    seed,
    batch_size,
    options,
    precision,
    weights,
    clip,
    list_samplers,
) -> None:
    """Generate samples from a trained run, in physical units.

    \b
    Examples:
      radardiff sample runs/demo --n 64 --out runs/demo/samples/ddim50.h5 --sampler ddim --steps 50
      radardiff sample runs/demo --n 16 --out grid.png --sampler dpmsolver++ --steps 20 \\
          --option solver_order=3
      radardiff sample --list-samplers
    Interrupted? Run the same command again: finished batches are kept.
    """
    from radardiff.diffusion import describe_samplers

    if list_samplers:
        click.echo("\n".join(describe_samplers()))
        return
    for value, name in ((run_dir, "RUN_DIR"), (n, "--n"), (out, "--out")):
        if value is None:
            raise click.UsageError(f"missing {name}")
    from radardiff.sample import SampleOptions, generate, load_run
    from radardiff.sample.device import pick_device

    run = load_run(run_dir, weights=weights, device=pick_device())
    sc = run.cfg.sample
    opts = SampleOptions(
        n=n,
        sampler=sampler or sc.sampler,
        steps=steps or sc.steps,
        seed=sc.seed if seed is None else seed,
        batch_size=batch_size or sc.batch_size,
        classes=parse_int_list(classes, "--class"),
        guidance=sc.guidance if guidance is None else guidance,
        sampler_options=parse_kv(options, "--option"),
        mixed_precision=precision,
        clip=clip,
    )
    with progress(n, f"sample {opts.sampler} x{opts.steps}", unit="img") as bar:
        result = generate(run, opts, out, on_progress=bar_callback(bar))
    click.echo(f"wrote {result.n} samples to {result.path} ({result.seconds:.1f} s)")
