"""``radardiff distill``."""

from __future__ import annotations

from pathlib import Path

import click

from radardiff.cli._common import bar_callback, is_main_process, progress


@click.command()
@click.argument("teacher", required=False, type=click.Path(file_okay=False))
@click.option(
    "--out", type=click.Path(file_okay=False), required=True, help="Student run directory."
)
@click.option(
    "--method",
    type=click.Choice(["progressive", "consistency"]),
    default="progressive",
    show_default=True,
    help="progressive: halve DDIM's steps per stage; consistency: one stage, any --steps.",
)
@click.option("--steps", type=int, default=None, help="The student's sampling steps [default: 4].")
@click.option(
    "--teacher-steps",
    type=int,
    default=None,
    help="Teacher DDIM steps the first stage halves [256]; consistency: intervals of the "
    "teacher's ODE grid [64].",
)
@click.option(
    "--steps-per-stage",
    type=int,
    default=None,
    help="Training steps per halving (consistency: in all) [2000].",
)
@click.option(
    "--checkpoint",
    default=None,
    help="The teacher's checkpoint: a step, latest or best [default: the teacher recipe's sample.checkpoint].",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a value of the student's config, e.g. --set distill.lr=5e-5 (repeatable).",
)
@click.option("--resume", is_flag=True, help="Continue the student run from its latest checkpoint.")
@click.option("--dry-run", is_flag=True, help="Print the student's resolved config and exit.")
def distill(
    teacher, out, method, steps, teacher_steps, steps_per_stage, checkpoint, overrides, resume,
    dry_run,
) -> None:  # fmt: skip
    """Distil a trained TEACHER run into a student run that samples in a few steps.

    Progressive distillation (Salimans and Ho 2022): each stage of --steps-per-stage training
    steps halves the number of DDIM steps, from --teacher-steps down to --steps. Consistency
    distillation (Song et al. 2023): one stage of --steps-per-stage training steps teaches the
    student to map any point of a teacher ODE trajectory to its end; it samples with the
    'consistency' sampler in any number of calls (--steps is its default). The student run is a
    normal run: 'radardiff sample STUDENT' samples it with its sampler at its steps.

    \b
    Examples:
      radardiff distill runs/noise --out runs/noise_4 --steps 4
      radardiff distill runs/noise --out runs/noise_cd --method consistency --steps 2 \\
          --steps-per-stage 4000
      radardiff distill runs/noise --out runs/noise_2 --steps 2 --steps-per-stage 1500 \\
          --set train.batch_size=64
      radardiff distill --out runs/noise_4 --resume        # continue a killed distillation
    """
    from radardiff.config import RunDir, dumps_config, load_config
    from radardiff.models import load_run
    from radardiff.models.shipped import refuse_shipped
    from radardiff.train.distill import distill as run_distill
    from radardiff.train.distill import student_config

    refuse_shipped(out, "--out")
    if teacher is None:
        if not resume:
            raise click.UsageError("missing TEACHER (only --resume may omit it)")
        RunDir(out).require()
        cfg = load_config(RunDir(out).config, list(overrides))
    else:
        given = {"method": method, "steps": steps, "teacher_steps": teacher_steps,
                 "steps_per_stage": steps_per_stage}  # fmt: skip
        distill_opts = {k: v for k, v in given.items() if v is not None}
        run = load_run(teacher, checkpoint=checkpoint)
        cfg = student_config(run, distill_opts, Path(out).name, list(overrides))
    if dry_run:
        click.echo(dumps_config(cfg), nl=False)
        return
    with progress(cfg.train.steps, f"distill {cfg.distill.method}", unit="step") as bar:
        result = run_distill(cfg, out, resume=resume, on_progress=bar_callback(bar))
    if is_main_process():
        click.echo(
            f"distilled {result.steps} steps into {result.run_dir} "
            f"(samples with {cfg.sample.sampler} in {cfg.sample.steps} steps)"
        )
