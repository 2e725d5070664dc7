"""``radardiff downstream experiment``."""

from __future__ import annotations

from pathlib import Path

import click

from radardiff.cli._common import FiniteFloat, parse_int_list, parse_kv, precision_option


@click.command()
@click.option("--train-real", type=click.Path(dir_okay=False), required=True,
              help="Real tiles of the training scenes (.h5, rad).")  # fmt: skip
@click.option("--test-real", type=click.Path(dir_okay=False), required=True,
              help="Real tiles of the held-out scenes (.h5, rad).")  # fmt: skip
@click.option("--run", "run_dir", type=click.Path(file_okay=False), default=None,
              help="radardiff run trained on the training scenes only; sampled for the "
              "generated noise.")  # fmt: skip
@click.option(
    "--generated",
    type=click.Path(dir_okay=False),
    default=None,
    help="Generated noise already sampled (instead of --run).",
)
@click.option(
    "--physics",
    type=click.Path(dir_okay=False),
    default=None,
    help="Physics noise file [insar_noise fitted to --train-real].",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Output directory [RUN/downstream].",
)
@click.option("--seeds", default="0,1,2", show_default=True, help="Seeds (comma-separated).")
@click.option("--n-train", type=click.IntRange(min=2), default=4000, show_default=True,
              help="Training pairs per set and seed.")  # fmt: skip
@click.option("--n-test", type=click.IntRange(min=2), default=2000, show_default=True)
@click.option("--n-noise", type=click.IntRange(min=0), default=2000, show_default=True,
              help="Generated and physics noise tiles to make (the curve: per replicate, 0 = "
              "as many as its real tiles).")  # fmt: skip
@click.option("--tasks", default="recovery,detection,unwrapping", show_default=True)
@click.option(
    "--wavelength",
    type=FiniteFloat(),
    default=None,
    help="Radar wavelength in metres [0.0555; Envisat 0.0562].",
)
@click.option("--sampler", default=None, help="Sampler of --run [the run's].")
@click.option("--steps", "sample_steps", type=int, default=None, help="Its steps [the run's].")
@click.option(
    "--checkpoint",
    default=None,
    help="Checkpoint of --run: a step, latest or best [the recipe's sample.checkpoint].",
)
@precision_option(("no", "bf16", "auto"), "sampling and of the task networks' training")
@click.option("--no-masks", is_flag=True, help="Do not give the real tiles' no-data patterns to "
              "physics and generated noise.")  # fmt: skip
@click.option("--set", "overrides", multiple=True, metavar="TASK.KEY=VALUE",
              help="Pair or training parameter of a task, e.g. --set detection.threshold_m=0.02 "
              "--set recovery.train.steps=2000 (repeatable).")  # fmt: skip
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="Where --run samples and the task networks train: cpu, cuda, cuda:1 ...",
)
@click.option(
    "--compile",
    "compile_",
    is_flag=True,
    help="Sample --run with its network compiled (as radardiff sample --compile).",
)
@click.option("--scene-counts", default=None, metavar="N,N,...",
              help="The curve: numbers of real training scenes (e.g. 1,2,4,8,11); each "
              "replicate trains its own generator on exactly those scenes.")  # fmt: skip
@click.option("--draws", type=int, default=3, show_default=True,
              help="Replicates per scene count (different scene subsets where they exist).")  # fmt: skip
@click.option("--gen-steps", type=int, default=600, show_default=True,
              help="Training steps of each replicate's generator.")  # fmt: skip
@click.option("--recipe", type=click.Path(dir_okay=False), default=None,
              help="Generator recipe (TOML) [the built-in tiny recipe].")  # fmt: skip
@click.option("--gen-set", "gen_set", multiple=True, metavar="KEY=VALUE",
              help="Override of the generator recipe, e.g. --gen-set train.batch_size=16.")  # fmt: skip
@click.option("--split", type=click.Choice(["scenes", "dates"]), default="scenes",
              show_default=True, help="dates: leave out of training every scene that shares an "
              "acquisition date with a test scene.")  # fmt: skip
@click.option("--knobs", default="", help="Generator knobs measured at --knob-counts: ddpm "
              "(DDPM-1000 sampling), x4 (four times the generated noise), e.g. ddpm,x4.")  # fmt: skip
@click.option("--knob-counts", default=None, help="Scene counts where --knobs are measured "
              "[the two smallest].")  # fmt: skip
def experiment_cmd(train_real, test_real, run_dir, generated, physics, out, seeds, n_train,
                   n_test, n_noise, tasks, wavelength, sampler, sample_steps, checkpoint,
                   precision, no_masks, overrides, device, compile_, scene_counts, draws,
                   gen_steps, recipe, gen_set, split, knobs, knob_counts) -> None:  # fmt: skip
    """Train each reference task on four noise sets (physics, generated, real, real +
    generated) for each seed and test every network on the held-out real scenes.

    Writes OUT/downstream.json (every score, mean and spread over seeds, the comparisons) and
    OUT/downstream.md; 'radardiff report RUN' shows the table. Resumes where it stopped.

    --tasks classification (on its own) works on class-labelled sets of any kind (SAR in dB,
    VV and VH, phase, digits): a small classifier trained on the real training images, on as
    many generated ones of the same classes (--run sampled class-conditionally, or
    --generated), on both, and on --physics images when given; tested on the labelled
    held-out images (accuracy, balanced accuracy, recall per class). Writes
    OUT/classification.json and .md; --n-train, --n-test, --n-noise, --wavelength and
    --no-masks are the InSAR tasks'. Training settings: --set classification.train.KEY=VALUE
    (steps, batch_size, lr, width, levels, augment=true for the eight flips and turns).

    --tasks segmentation (on its own) is the same for images with a per-pixel label map
    (data prepare --map NAME=... --map-classes, data synth sar_map): a small U-Net segmenter
    trained on the real images, on samples of a map-conditioned --run over the real training
    maps (or --generated), on both, and on --physics; scored on the held-out labelled images
    by intersection over union (OUT/segmentation.json and .md).

    \b
    Examples:
      radardiff data prepare ifgs/ --nodata 0 --tile 32 --stride 2 --split 0.65,0.35 \\
          --out scenes.h5
      radardiff train configs/tiny.toml --out runs/ifg --set data.train=scenes_train.h5
      radardiff downstream experiment --run runs/ifg --train-real scenes_train.h5 \\
          --test-real scenes_val.h5 --wavelength 0.0562 --precision auto
      radardiff downstream experiment --tasks classification --run runs/sar \\
          --train-real sar_train.h5 --test-real sar_test.h5 --seeds 0,1,2
      radardiff downstream experiment --tasks segmentation --run runs/sar_map \\
          --train-real land_train.h5 --test-real land_test.h5 --physics sar_map_synth.h5
      radardiff downstream experiment --scene-counts 1,2,4,8,11 --train-real scenes_train.h5 \\
          --test-real scenes_val.h5 --wavelength 0.0562 --knobs ddpm,x4 --out curve/
    """
    if scene_counts is not None:
        if run_dir or generated or physics or checkpoint or compile_:
            raise click.UsageError("--scene-counts trains a generator per replicate: no --run, "
                                   "--generated, --physics, --checkpoint or --compile")  # fmt: skip
        if out is None:
            raise click.UsageError("--out is needed with --scene-counts")
        _curve(train_real, test_real, out, scene_counts, draws, seeds, gen_steps, recipe, gen_set,
               split, knobs, knob_counts, tasks, overrides, wavelength, precision,
               {"sampler": sampler, "steps": sample_steps, "precision": precision,
                "device": device}, n_train, n_test, n_noise, not no_masks)  # fmt: skip
        return
    from radardiff.evaluate.downstream import ExperimentConfig, experiment_inputs, run_experiment

    if n_noise < 1:
        raise click.UsageError("--n-noise: at least 1 (0 is the curve's: with --scene-counts)")
    if (run_dir is None) == (generated is None):
        raise click.UsageError("give one of --run and --generated")
    if out is None and run_dir is None:
        raise click.UsageError("--out is needed with --generated")
    if run_dir is not None:
        from radardiff.models.shipped import refuse_shipped, resolve_run

        run_dir = str(resolve_run(run_dir))
        if out is None:
            refuse_shipped(run_dir, "--run (without --out the experiment is written into it)")
    out = Path(out or Path(run_dir) / "downstream")
    task_list = tuple(t.strip() for t in tasks.split(",") if t.strip())
    labelled = [t for t in task_list if t in ("classification", "segmentation")]
    if labelled:
        if len(task_list) > 1:
            raise click.UsageError(f"--tasks: {labelled[0]} runs on its own")
        sampling = {"sampler": sampler, "steps": sample_steps, "seed": None,
                    "mixed_precision": precision, "compile": compile_}  # fmt: skip
        _classification(train_real, test_real, run_dir, generated, physics, out, seeds,
                        overrides, precision, sampling, checkpoint, device, labelled[0])  # fmt: skip
        return
    pairs, training = experiment_inputs(task_list, parse_kv(overrides, "--set"), wavelength,
                                        precision)  # fmt: skip
    sampling = {"sampler": sampler, "steps": sample_steps, "checkpoint": checkpoint,
                "precision": precision, "device": device, "compile": compile_}  # fmt: skip
    gen, phys = _noise(run_dir, generated, physics, train_real, out, n_noise, sampling)
    cfg = ExperimentConfig(
        train_real=train_real, test_real=test_real, generated=str(gen), physics=str(phys),
        seeds=parse_int_list(seeds, "--seeds") or (), n_train=n_train, n_test=n_test,
        tasks=task_list, pairs=pairs, training=training, masks=not no_masks, run=run_dir,
    )  # fmt: skip
    result = run_experiment(cfg, out, on_progress=lambda tag: click.echo(f"  {tag}", err=True),
                            device=device)  # fmt: skip
    from radardiff.evaluate.downstream import markdown_table

    click.echo(markdown_table(result), nl=False)
    click.echo(f"wrote {out / 'downstream.json'}")


def _noise(run_dir, generated, physics, train_real, out, n, sampling: dict):
    from radardiff.data.dataset_file import DatasetFile
    from radardiff.evaluate.downstream import calibrate_physics, noise_file

    out.mkdir(parents=True, exist_ok=True)
    if generated is None:
        generated = noise_file(str(run_dir), n, out / "noise_generated.h5", **sampling)
    if physics is None:
        info = DatasetFile(train_real).info
        physics = noise_file("insar_noise", n, out / "noise_physics.h5", size=info.height,
                             pixel_spacing_m=info.pixel_spacing_m,
                             physics_params=calibrate_physics(train_real))  # fmt: skip
    return generated, physics


def _classification(train_real, test_real, run_dir, generated, physics, out, seeds, overrides,
                    precision, sampling, checkpoint, device, task) -> None:  # fmt: skip
    from radardiff.errors import ConfigError
    from radardiff.evaluate.classification import (
        ClassificationConfig,
        default_classification,
        labelled_samples,
        map_samples,
        markdown,
        run_classification,
    )

    given = {"precision": precision}
    for key, value in parse_kv(overrides, "--set").items():
        if not key.startswith(f"{task}.train."):
            raise ConfigError(f"--set {key}: expected {task}.train.KEY")
        given[key[len(f"{task}.train.") :]] = value
    try:
        training = default_classification(task=task, **given)
    except TypeError as err:
        raise ConfigError(f"--set: {err}") from None
    if generated is None:
        out.mkdir(parents=True, exist_ok=True)
        make, name = ((labelled_samples, "generated_classes.h5") if task == "classification"
                      else (map_samples, "generated_maps.h5"))  # fmt: skip
        generated = make(run_dir, train_real, out / name, sampling, checkpoint, device)
    cfg = ClassificationConfig(
        train_real=train_real, test_real=test_real, generated=str(generated), physics=physics,
        seeds=parse_int_list(seeds, "--seeds") or (), training=training, run=run_dir,
    )  # fmt: skip
    result = run_classification(cfg, out, on_progress=lambda t: click.echo(f"  {t}", err=True),
                                device=device)  # fmt: skip
    click.echo(markdown(result), nl=False)
    click.echo(f"wrote {out / f'{task}.json'}")


def _curve(train_real, test_real, out, counts, draws, seeds, gen_steps, recipe, gen_set, split,
           knobs, knob_counts, tasks, overrides, wavelength, precision, sampling, n_train, n_test,
           n_noise, masks) -> None:  # fmt: skip
    from radardiff.evaluate.curve import CurveConfig, markdown_curve, plan_curve, run_curve
    from radardiff.evaluate.downstream import experiment_inputs

    task_list = tuple(t.strip() for t in tasks.split(",") if t.strip())
    if {"classification", "segmentation"} & set(task_list):
        raise click.UsageError("--scene-counts: the InSAR tasks only (no classification or "
                               "segmentation)")  # fmt: skip
    pairs, training = experiment_inputs(task_list, parse_kv(overrides, "--set"), wavelength,
                                        precision)  # fmt: skip
    cfg = CurveConfig(
        pool=train_real, test_real=test_real, counts=parse_int_list(counts, "--scene-counts") or (),
        draws=draws, seeds=parse_int_list(seeds, "--seeds") or (), recipe=recipe,
        recipe_set=tuple(gen_set), gen_steps=gen_steps, n_noise=n_noise, split=split,
        tasks=task_list, n_train=n_train, n_test=n_test, pairs=pairs, training=training,
        masks=masks, knobs=tuple(k.strip() for k in knobs.split(",") if k.strip()),
        knob_counts=parse_int_list(knob_counts, "--knob-counts"), sampling=sampling,
    )  # fmt: skip
    plan = plan_curve(cfg)  # every refusal before anything is written
    click.echo(f"{len(plan.replicates)} replicates on {len(plan.pool)} training scenes", err=True)
    result = run_curve(cfg, out, on_progress=lambda msg: click.echo(f"  {msg}", err=True))
    from radardiff.report import write_downstream_report

    page = write_downstream_report(out)
    click.echo(markdown_curve(result), nl=False)
    click.echo(f"wrote {Path(out) / 'downstream.json'}, {Path(out) / 'curve.png'} and {page}")
