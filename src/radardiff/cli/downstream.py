"""``radardiff downstream``: labelled pairs, reference tasks, train-on-synthetic experiments."""

from __future__ import annotations

import json
from pathlib import Path

import click

from radardiff.cli._common import SEED, FiniteFloat, parse_kv, precision_option, progress

_PAIR_KEYS = ("label", "source", "present", "peak_los_m", "threshold_m", "wavelength_m", "wrap",
              "coherence", "coherence_std", "looks", "augment", "geometry")  # fmt: skip


@click.group()
def downstream() -> None:
    """Train networks on generated radar data, test them on real data.

    \b
    Examples:
      radardiff downstream pairs real_tiles.h5 --n 4000 --out pairs.h5 --wavelength 0.0562
      radardiff downstream train pairs.h5 --task recovery --out nets/rec
      radardiff downstream test nets/rec test_pairs.h5
      radardiff downstream experiment --run runs/ifg --train-real scenes_train.h5 \\
          --test-real scenes_test.h5 --out runs/ifg/downstream
    """


def _pair_params(given: dict, sets: tuple[str, ...]):
    from radardiff.data.pairs import PairParams
    from radardiff.errors import ConfigError

    values = {k: v for k, v in given.items() if v is not None}
    for key, value in parse_kv(sets, "--param").items():
        if key in _PAIR_KEYS:
            values[key] = tuple(value) if isinstance(value, list) else value
        else:
            values.setdefault("geometry", {})[key] = (
                tuple(value) if isinstance(value, list) else value
            )
    try:
        return PairParams(**values)
    except TypeError as err:
        raise ConfigError(f"--param: {err}") from None


@downstream.command("pairs")
@click.argument("noise", nargs=-1, required=True)
@click.option("--n", "n", type=click.IntRange(min=1), required=True, help="Number of pairs.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Output .h5 file.")
@click.option("--label", type=click.Choice(["deformation", "presence", "unwrapped"]),
              default="deformation", show_default=True, help="What each pair's label is.")  # fmt: skip
@click.option("--source", type=click.Choice(["mogi", "okada", "mix"]), default="mogi",
              show_default=True, help="Elastic source of the signal.")  # fmt: skip
@click.option("--peak-los", default=None, help="Range of the peak |LOS displacement| in metres, "
              "log-uniform [0.005,0.05].")  # fmt: skip
@click.option(
    "--threshold",
    type=FiniteFloat(),
    default=None,
    help="--label presence: peak |LOS| (m) from which deformation counts [0.01].",
)
@click.option(
    "--present",
    type=FiniteFloat(),
    default=None,
    help="Fraction of pairs with a source [1; 0.5 with --label presence].",
)
@click.option(
    "--wavelength",
    type=FiniteFloat(),
    default=None,
    help="Radar wavelength in metres [0.0555, Sentinel-1; Envisat 0.0562].",
)
@click.option("--wrap", is_flag=True, help="Wrap the input phase to (-pi, pi].")
@click.option("--coherence", default=None, help="With --wrap: range of the per-tile mean "
              "coherence of decorrelation phase noise, e.g. 0.3,0.9 [none].")  # fmt: skip
@click.option("--looks", type=int, default=None, help="Looks of that phase noise [4].")
@click.option("--no-augment", is_flag=True, help="Use noise tiles as they are (no flips/turns).")
@click.option(
    "--masks",
    type=click.Path(dir_okay=False),
    default=None,
    help="Give these tiles' no-data patterns to noise tiles without any.",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Source geometry, e.g. --param mogi_depth_m=[300,1500] (repeatable).",
)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option(
    "--noise-n",
    type=int,
    default=None,
    help="Run or insar_noise NOISE: tiles to make [--n], kept as OUT.noise.h5.",
)
@click.option("--size", type=int, default=None, help="insar_noise NOISE: tile size.")
@click.option(
    "--pixel-spacing",
    type=FiniteFloat(),
    default=None,
    help="Metres per pixel (for noise files that do not record it).",
)
def pairs_cmd(noise, n, out, label, source, peak_los, threshold, present, wavelength, wrap,
              coherence, looks, no_augment, masks, params, seed, noise_n, size,
              pixel_spacing) -> None:  # fmt: skip
    """Make N labelled pairs: NOISE (dataset files, mixed in equal shares; a run directory,
    sampled; or insar_noise, generated) plus known Mogi/Okada deformation, in physical units.

    The input is written as 'images' (unwrapped, referenced to its mean; or wrapped), the
    label as 'deformation' (field), 'labels' (presence: absent/present) or 'unwrapped'; every
    pair also keeps its source type and peak |LOS|.

    \b
    Examples:
      radardiff downstream pairs real_tiles.h5 --n 4000 --out rec.h5 --wavelength 0.0562
      radardiff downstream pairs runs/ifg --n 4000 --out det.h5 --label presence --wrap \\
          --coherence 0.3,0.9 --source mix --masks real_tiles.h5
      radardiff downstream pairs insar_noise --size 32 --pixel-spacing 84 --n 2000 \\
          --out unw.h5 --label unwrapped --wrap --param mogi_depth_m=[300,1500]
    """
    from radardiff.data.dataset_file import DatasetFile
    from radardiff.data.pairs import NoiseSource, write_pairs
    from radardiff.evaluate.downstream import noise_file

    given = {"label": label, "source": source, "peak_los_m": _pair(peak_los, "--peak-los"),
             "threshold_m": threshold, "present": present, "wavelength_m": wavelength,
             "wrap": wrap, "coherence": _pair(coherence, "--coherence"), "looks": looks,
             "augment": not no_augment}  # fmt: skip
    p = _pair_params(given, params)
    made = [k for k, s in enumerate(noise) if not Path(s).is_file()]  # kept beside OUT
    files = []
    for k, spec in enumerate(noise):
        suffix = ".noise.h5" if len(made) == 1 else f".noise{made.index(k) if k in made else k}.h5"
        store = Path(out).with_suffix(suffix)
        files.append(DatasetFile(noise_file(spec, noise_n or n, store, size=size, seed=seed + k,
                                            pixel_spacing_m=pixel_spacing)))  # fmt: skip
    source_ = NoiseSource(files, pixel_spacing)
    mask_file = DatasetFile(masks) if masks else None
    with progress(n, "pairs", unit="pair") as bar:
        path = write_pairs(source_, n, out, seed, p, mask_file, on_progress=bar.update)
    click.echo(f"wrote {n} {p.label} pairs to {path}")


def _pair(value: str | None, option: str):
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(
            f"expected two numbers LO,HI, got '{value}'", param_hint=option
        ) from None
    return (lo, hi)


@downstream.command("train")
@click.argument("pairs", type=click.Path(dir_okay=False))
@click.option(
    "--task",
    type=click.Choice(["recovery", "detection", "unwrapping", "segmentation"]),
    required=True,
)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Network directory.")
@click.option("--steps", type=click.IntRange(min=1), default=1200, show_default=True)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="[32 recovery and unwrapping, 64 detection]",
)
@click.option("--lr", type=FiniteFloat(), default=2e-3, show_default=True)
@click.option("--width", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--val-fraction", type=FiniteFloat(), default=0.1, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@precision_option(("no", "bf16", "auto"), "the network's training")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1 ...")
@click.option(
    "--label-map",
    default=None,
    help="segmentation: the label map of PAIRS to learn [default: its only label map].",
)
def train_cmd(pairs, task, out, steps, batch_size, lr, width, val_fraction, seed, precision,
              device, label_map) -> None:  # fmt: skip
    """Train the reference network of TASK on a PAIRS file.

    recovery: a small U-Net, noisy unwrapped (or wrapped) phase -> deformation field;
    detection: a small CNN, input -> deformation present or not (its threshold chosen on the
    validation share); unwrapping: the U-Net, wrapped phase -> unwrapped phase (pairs made with
    --wrap --label unwrapped), its error measured after removing each field's mean;
    segmentation: the U-Net with a logit per class, images -> their label map (PAIRS: any
    dataset file with a label map: data prepare --map, sample --map, data synth sar_map),
    scored by intersection over union.

    \b
    Examples:
      radardiff downstream train rec.h5 --task recovery --out nets/rec
      radardiff downstream train det.h5 --task detection --out nets/det --precision auto
      radardiff downstream train unw.h5 --task unwrapping --out nets/unw
      radardiff downstream train sar_map.h5 --task segmentation --out nets/seg
    """
    from radardiff.evaluate.downstream import default_training
    from radardiff.evaluate.tasks import load_pairs, load_segmented, train_task

    given = {"steps": steps, "lr": lr, "width": width, "val_fraction": val_fraction,
             "precision": precision, **({"batch_size": batch_size} if batch_size else {})}  # fmt: skip
    cfg = default_training(task, seed, **given)
    if label_map and task != "segmentation":
        raise click.UsageError("--label-map: segmentation only")
    data = load_segmented(pairs, map_name=label_map) if task == "segmentation" else (
        load_pairs(pairs, task))  # fmt: skip
    with progress(cfg.steps, f"train {task}", unit="step") as bar:
        result = train_task(data, cfg, out, on_progress=bar.update, device=device)
    score = {"detection": "AUC", "segmentation": "mean IoU"}.get(task, "-RMSE")
    click.echo(f"trained {task} network into {out} (best step {result.meta['best_step']}, "
               f"validation {score} {result.meta['val_score']:.4g})")  # fmt: skip


@downstream.command("test")
@click.argument("net", type=click.Path(file_okay=False))
@click.argument("pairs", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
def test_cmd(net, pairs, as_json) -> None:
    """Score a trained NET on a PAIRS file (its own task's scores).

    \b
    Examples:
      radardiff downstream test nets/rec test_rec.h5
      radardiff downstream test nets/det test_det.h5 --json
    """
    from radardiff.evaluate.downstream import score_saved

    scores = score_saved(net, pairs)
    if as_json:
        click.echo(json.dumps(scores, indent=1))
        return
    click.echo("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in scores.items()))  # fmt: skip


from radardiff.cli.downstream_experiment import experiment_cmd  # noqa: E402

downstream.add_command(experiment_cmd, "experiment")
