"""``radardiff sample``."""

from __future__ import annotations

from dataclasses import dataclass

import click

from radardiff.cli._common import (
    SEED,
    BatchSize,
    FiniteFloat,
    bar_callback,
    conv_kernels_option,
    parse_int_list,
    parse_kv,
    precision_option,
    progress,
)


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
    "--guidance",
    type=FiniteFloat(),
    default=None,
    help="Classifier-free guidance scale (1 = none).",
)
@click.option("--seed", type=SEED, default=None, help="Sample i uses seed (SEED, i).")
@click.option(
    "--batch-size",
    type=BatchSize(),
    metavar="N|auto",
    default=None,
    help="Samples per batch, or auto: what fills a GPU's memory (at most 1024), 64 on a CPU "
    "[default: the run's sample.batch_size, auto].",
)
@click.option(
    "--compile",
    "compile_",
    is_flag=True,
    help="Run the network compiled by torch.compile, once, for the first batch (the log says "
    "how long that took), as CUDA graphs on a GPU. On a CPU it compiles for minutes and pays "
    "only for small networks on long runs (docs/sampling.md).",
)
@conv_kernels_option()
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Sampler option, e.g. --option solver_order=3 (repeatable).",
)
@precision_option()
@click.option(
    "--weights",
    default="ema",
    show_default=True,
    help="ema (the first EMA), model (raw weights) or a further EMA of the run, e.g. ema_16kimg.",
)
@click.option(
    "--checkpoint",
    default=None,
    help="Checkpoint to sample: latest, best (lowest validation loss) or a step number "
    "[default: the recipe's sample.checkpoint, latest unless it says otherwise].",
)
@click.option(
    "--clip",
    type=click.Choice(["auto", "static", "dynamic", "none"]),
    default="auto",
    show_default=True,
    help="x0 clipping: static clamps x0 estimates to [-1, 1], dynamic (Imagen) rescales by each "
    "sample's 99.5th percentile of |x0|; auto: static when the normalisation bounds the data.",
)
@click.option("--no-clip", is_flag=True, help="Same as --clip none.")
@click.option(
    "--cascade",
    "cascade_run",
    type=click.Path(file_okay=False),
    default=None,
    help="Low-resolution run: sample it first, then super-resolve its samples with RUN_DIR "
    "(kept beside --out as NAME.lowres.h5).",
)
@click.option(
    "--low-res",
    "low_res",
    type=click.Path(dir_okay=False),
    default=None,
    help="Super-resolve these low-resolution images (.h5 dataset file, physical units).",
)
@click.option("--low-sampler", default=None, help="Cascade: the first stage's sampler.")
@click.option("--low-steps", type=int, default=None, help="Cascade: the first stage's steps.")
@click.option(
    "--sr-noise",
    type=int,
    default=0,
    show_default=True,
    help="Noise-augmentation level put on the low-resolution condition (0..superres_aug_max).",
)
@click.option(
    "--amplitude",
    type=FiniteFloat(),
    default=None,
    help="Range-conditioned runs: the requested range (max - min) in physical units "
    "[default: drawn from the training set].",
)
@click.option(
    "--map",
    "map_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Map-conditioned runs: the map(s) to follow, a dataset file with the run's maps (one "
    "for all samples, or one per sample), a .npy array or a one-band GeoTIFF; written with the "
    "samples as their label. --guidance W > 1 follows it more strongly.",
)
@click.option(
    "--list-samplers", is_flag=True, help="List the samplers and their options, then exit."
)
def sample(**given) -> None:
    """Generate samples from a trained run, in physical units.

    \b
    Examples:
      radardiff sample runs/demo --n 64 --out runs/demo/samples/ddim50.h5 --sampler ddim --steps 50
      radardiff sample runs/demo --n 16 --out grid.png --sampler dpmsolver++ --steps 20 \\
          --option solver_order=3
      radardiff sample --list-samplers
      radardiff sample runs/sar_sr --cascade runs/sar128 --n 16 --out sr.h5 --class 3
      radardiff sample runs/sar_sr --low-res data/sar128_val.h5 --n 16 --out sr.h5 --sr-noise 50
      radardiff sample runs/noise_range --n 64 --out amp.h5 --amplitude 0.05
      radardiff sample runs/demo --n 4096 --out big.h5 --batch-size auto --compile
      radardiff sample runs/dem_noise --map ifg_dem_val.h5 --n 64 --out over_dem.h5
    Interrupted? Run the same command again: finished batches are kept.
    In a cascade, --class/--guidance go to the low-resolution run; sample i of the output is
    the super-resolution of low-resolution sample i.
    """
    args = _SampleArgs(**given)
    if args.list_samplers:
        from radardiff.diffusion import describe_samplers

        click.echo("\n".join(describe_samplers()))
        return
    args.check()
    from radardiff.sample import load_run
    from radardiff.sample.device import pick_device

    device = pick_device()
    run = load_run(args.run_dir, weights=args.weights, device=device, checkpoint=args.checkpoint)
    opts = args.request(run.cfg.sample)
    result = _cascade(args, run, opts, device) if args.cascade_run else _single(args, run, opts)
    click.echo(f"wrote {result.n} samples to {result.path} ({result.seconds:.1f} s)")


@dataclass(frozen=True)
class _SampleArgs:
    """The command line of ``radardiff sample`` as click parses it: one field per option."""

    run_dir: str | None
    n: int | None
    out: str | None
    sampler: str | None
    steps: int | None
    classes: str | None
    guidance: float | None
    seed: int | None
    batch_size: int | str | None
    compile_: bool
    conv_kernels: str
    options: tuple[str, ...]
    precision: str
    weights: str
    checkpoint: str | None
    clip: str
    no_clip: bool
    cascade_run: str | None
    low_res: str | None
    low_sampler: str | None
    low_steps: int | None
    sr_noise: int
    amplitude: float | None
    map_file: str | None
    list_samplers: bool

    def check(self) -> None:
        for value, name in ((self.run_dir, "RUN_DIR"), (self.n, "--n"), (self.out, "--out")):
            if value is None:
                raise click.UsageError(f"missing {name}")
        if self.cascade_run and self.low_res:
            raise click.UsageError("give --cascade or --low-res, not both")

    def request(self, sc):
        """The request of RUN_DIR (in a cascade, its first stage takes --class and --guidance)."""
        cascade = bool(self.cascade_run)
        return _request(
            sc,
            self.n,
            self.sampler,
            self.steps,
            self.seed,
            self.batch_size,
            classes=None if cascade else self.classes,
            guidance=1.0 if cascade else self.guidance,
            sampler_options=parse_kv(self.options, "--option"),
            mixed_precision=self.precision,
            clip="none" if self.no_clip else (None if self.clip == "auto" else self.clip),
            condition=self.low_res,
            sr_noise=self.sr_noise,
            amplitude=self.amplitude,
            compile=self.compile_,
            conv_kernels=self.conv_kernels,
            maps=self.map_file,
        )

    def low_request(self, sc, opts):
        """The request of a cascade's first stage: its own sampler and steps, the seeds and
        batch size of RUN_DIR's request."""
        return _request(
            sc,
            self.n,
            self.low_sampler,
            self.low_steps,
            opts.seed,
            opts.batch_size,
            classes=self.classes,
            guidance=self.guidance,
            mixed_precision=self.precision,
            compile=self.compile_,
            conv_kernels=self.conv_kernels,
            maps=self.map_file,
        )


def _single(args: _SampleArgs, run, opts):
    from radardiff.sample import generate

    with progress(args.n, f"sample {opts.sampler} x{opts.steps}", unit="img") as bar:
        return generate(run, opts, args.out, on_progress=bar_callback(bar))


def _cascade(args: _SampleArgs, run, opts, device):
    """Sample the low-resolution run, then super-resolve its samples with RUN_DIR."""
    from radardiff.sample import load_run
    from radardiff.sample.generate import generate_cascade

    low = load_run(args.cascade_run, weights=args.weights, device=device)
    low_opts = args.low_request(low.cfg.sample, opts)
    title = f"cascade {low_opts.sampler} -> {opts.sampler}"
    with progress(2 * args.n, title, unit="img") as bar:
        lo, result = generate_cascade(low, low_opts, run, opts, args.out, bar_callback(bar))
    click.echo(f"wrote {lo.n} low-resolution samples to {lo.path} ({lo.seconds:.1f} s)")
    return result


def _request(sc, n, sampler, steps, seed, batch_size, classes, guidance, **rest):
    """A SampleOptions from the command line, defaults from the run's ``[sample]`` config."""
    from radardiff.sample.generate import request

    return request(
        sc, n, sampler=sampler, steps=steps, seed=seed, batch_size=batch_size,
        classes=parse_int_list(classes, "--class"), guidance=guidance, **rest,
    )  # fmt: skip
