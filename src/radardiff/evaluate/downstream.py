"""Downstream value of generated data: train on one noise source, test on held-out real noise.

:func:`score_task` tests one trained network on a pairs file. :func:`run_experiment` trains each
reference task (:mod:`radardiff.evaluate.tasks`) on pairs made from each training noise set

- ``physics``: the physics generator ``insar_noise`` (its parameters fitted to the real training
  tiles by :func:`calibrate_physics`, or a file the user made),
- ``generated``: a radardiff run's samples (the model trained on the training scenes only),
- ``real``: the real tiles of the training scenes,
- ``real+generated``: both, in equal shares,

with the same number of pairs, the same signals' distribution and the same optimisation, for
each seed (the seed draws the pairs' signals and tiles, the network's initialisation and its
batches), and tests every network on one set of pairs made from the real tiles of the held-out
scenes. Results go to ``downstream.json`` (and a table in ``downstream.md``); a finished network
is not trained again, so an interrupted experiment resumes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from radardiff._files import holding
from radardiff.config.io import atomic_write_text
from radardiff.data.dataset_file import DatasetFile
from radardiff.data.pairs import NoiseSource, PairParams, write_pairs
from radardiff.errors import DataError
from radardiff.evaluate.measures.skill import (
    classification_score,
    detection_score,
    recovery_score,
    segmentation_score,
    summarise_over_seeds,
    unwrapping_score,
)
from radardiff.evaluate.measures.spectra import fit_powerlaw_white
from radardiff.evaluate.tasks import (
    LABELLED_TASKS,
    Pairs,
    TaskConfig,
    load_labelled,
    load_pairs,
    load_segmented,
    predict,
    train_task,
)
from radardiff.models.downstream import TASK_FILE, load_task

log = logging.getLogger(__name__)
SETS = ("physics", "generated", "real", "real+generated")
RESULTS = "downstream.json"


def score_task(net, meta: dict, pairs: str | Path | Pairs) -> dict:
    """The network's skill on a pairs file (or pairs already read): recovery RMSE (the pairs'
    units), RMSE as a fraction of the signal's RMS and skill ``1 - fraction``; detection ROC AUC
    and accuracy at the network's validation threshold; classification (of a labelled image
    set) accuracy and balanced accuracy (the skill), per-class recall and confusion matrix;
    segmentation (of images with a label map) the mean intersection over union (the skill), per
    class, and pixel accuracy."""
    classify = meta["task"] in LABELLED_TASKS
    if isinstance(pairs, Pairs):
        p = pairs
    elif meta["task"] == "segmentation":
        p = load_segmented(pairs, meta["classes"], meta["label_map"])
    else:
        p = load_labelled(pairs, meta["classes"]) if classify else load_pairs(pairs, meta["task"])
    if p.wrapped != meta["wrapped"]:
        raise DataError(
            f"{p.path}: {'wrapped' if p.wrapped else 'unwrapped'} inputs, but the network "
            f"was trained on {'wrapped' if meta['wrapped'] else 'unwrapped'} ones"
        )
    if p.units.strip().lower() != str(meta["units"]).strip().lower():
        raise DataError(f"{p.path}: units '{p.units}' differ from the network's '{meta['units']}'")
    if classify and (p.kind, p.inputs.shape[1]) != (meta["kind"], meta["channels"]):
        raise DataError(
            f"{p.path}: {p.kind} of {p.inputs.shape[1]} channel(s), but the network was trained "
            f"on {meta['kind']} of {meta['channels']}"
        )
    out = predict(net, meta, p.inputs)
    if meta["task"] == "segmentation":
        g = segmentation_score(out, p.targets)
        return {"mean_iou": g.mean_iou, "pixel_accuracy": g.pixel_accuracy, "skill": g.mean_iou,
                "iou": dict(zip(meta["classes"], g.iou, strict=True)), "confusion": g.confusion,
                "n": g.n}  # fmt: skip
    if classify:
        c = classification_score(out, p.targets)
        return {"accuracy": c.accuracy, "balanced_accuracy": c.balanced_accuracy,
                "skill": c.balanced_accuracy, "recall": dict(zip(meta["classes"], c.recall, strict=True)),
                "confusion": c.confusion, "n": c.n}  # fmt: skip
    if meta["task"] == "unwrapping":
        u = unwrapping_score(out, p.targets, p.valid)
        return {"within_pi": u.within_pi, "rmse": u.rmse, "skill": u.skill, "units": p.units,
                "n": u.n}  # fmt: skip
    if meta["task"] == "detection":
        d = detection_score(out, p.targets, meta["threshold"])
        return {"auc": d.auc, "accuracy": d.accuracy, "threshold": d.threshold, "skill": d.auc,
                "n_present": d.n_present, "n_absent": d.n_absent}  # fmt: skip
    r = recovery_score(out, p.targets, p.valid)
    return {"rmse": r.rmse, "signal_rms": r.signal_rms, "rmse_fraction": r.fraction,
            "skill": r.skill, "units": p.units, "n": r.n}  # fmt: skip


def score_saved(model_dir, pairs_path) -> dict:
    net, meta = load_task(model_dir)
    return score_task(net, meta, pairs_path)


def calibrate_physics(path) -> dict:
    """``insar_noise`` parameters fitted to the tiles of ``path``.

    The spectrum's shape comes from the tiles without no data: their radially averaged spectrum
    (mean removed) is fitted with a power law plus white noise, ``P(k) = A k**-beta + s**2``
    (least squares in log P over a grid of beta and s**2), giving ``beta`` and ``noise_std =
    s``. The amplitude comes from every tile (valid pixels, mean removed), since tiles with
    holes are often the rougher ones: ``turb_std`` is the square root of the median tile
    variance less ``s**2``, ``turb_std_spread`` the standard deviation of the logarithm of the
    tiles' standard deviations. No stratified delay or ramp (the turbulent field carries the
    long wavelengths at these tile sizes). What a careful user of the physics simulator would do
    with these data.
    """
    from radardiff.data.synth.fields import radial_psd

    x, std = _tiles_to_fit(path)
    spec = radial_psd(x - x.mean(axis=(1, 2), keepdims=True))
    beta, white = fit_powerlaw_white(spec.k, spec.psd)
    var = float(np.median(std**2))
    return {"beta": round(beta, 3), "turb_std": round(float(np.sqrt(max(var - white, 0.01 * var))), 4),
            "turb_std_spread": round(float(np.std(np.log(std))), 4), "strat_k": 0.0,
            "ramp_rad": 0.0, "noise_std": round(float(np.sqrt(white)), 4)}  # fmt: skip


def _tiles_to_fit(path) -> tuple[np.ndarray, np.ndarray]:
    """The tiles of ``path`` without no data (N, H, W) and the non-zero standard deviations of
    the valid pixels of every tile; refused when too few are left to fit the generator to.

    Where fewer than 8 tiles are free of no data (a single scene with scattered holes), the
    tiles with at most a quarter of no data serve instead, each hole filled with its tile's
    mean (which lowers the fitted spectrum a little at the shortest wavelengths)."""
    clean, nearly, stds = [], [], []
    with DatasetFile(path) as f:
        for _, block in f.iter_blocks(1024):
            x = block[:, 0].astype(np.float64)
            ok = np.isfinite(x).reshape(len(x), -1)
            clean.append(x[ok.all(axis=1)])
            most = (ok.mean(axis=1) >= 0.75) & ~ok.all(axis=1)
            if most.any():
                y = x[most]
                nearly.append(
                    np.where(np.isfinite(y), y, np.nanmean(y, axis=(1, 2), keepdims=True))
                )
            some = ok.sum(axis=1) > 1
            stds.append(np.nanstd(x[some], axis=(1, 2)))
    x = np.concatenate(clean)
    if len(x) < 8 and nearly:
        log.warning(
            "%s: %d tiles without no data; fitting on tiles with holes filled", path, len(x)
        )
        x = np.concatenate([x, *nearly])
    std = np.concatenate(stds)
    if len(x) < 8 or x.shape[-1] != x.shape[-2]:
        raise DataError(
            f"{path}: fewer than 8 square tiles with at most a quarter of no data; cannot fit "
            "the generator"
        )
    std = std[std > 0]
    if std.size < 8:
        raise DataError(f"{path}: the tiles are constant; cannot fit the generator")
    return x, std


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment (module docstring). ``pairs``: pair parameters per task (their label is
    set by the task); ``masks``: give the no-data patterns of the real training tiles to noise
    tiles without any (physics and generated noise)."""

    train_real: str
    test_real: str
    generated: str
    physics: str
    seeds: tuple[int, ...] = (0, 1, 2)
    n_train: int = 4000
    n_test: int = 2000
    tasks: tuple[str, ...] = ("recovery", "detection")
    pairs: dict[str, PairParams] = field(default_factory=dict)
    training: dict[str, TaskConfig] = field(default_factory=dict)
    masks: bool = True
    test_seed: int = 12345
    run: str | None = None  # the run behind ``generated``: checked not to know the test scenes
    # more training sets, name -> noise files mixed in equal shares (the curve's generator knobs)
    extra_sets: dict[str, tuple[str, ...]] = field(default_factory=dict)


def default_pairs(task: str, **given) -> PairParams:
    """The experiment's pairs of ``task`` (``given`` overrides): recovery of Mogi or Okada
    deformation of 2-20 mm peak LOS (comparable to the atmospheric noise) from unwrapped phase;
    detection, on wrapped phase with decorrelation noise (mean coherence 0.5-0.95), of
    deformation of at least 10 mm among sources of 2-50 mm and tiles without any; unwrapping of
    wrapped phase with the same decorrelation noise and sources of 10-100 mm (up to 3.6
    fringes; the truth: the noise plus the deformation, without the decorrelation noise)."""
    if task == "unwrapping":
        base = {"label": "unwrapped", "source": "mix", "wrap": True, "coherence": (0.5, 0.95),
                "peak_los_m": (0.01, 0.1)}  # fmt: skip
    elif task == "detection":
        base = {"label": "presence", "source": "mix", "wrap": True, "coherence": (0.5, 0.95),
                "peak_los_m": (0.002, 0.05), "threshold_m": 0.01}  # fmt: skip
    elif task == "recovery":
        base = {"label": "deformation", "source": "mix", "peak_los_m": (0.002, 0.02)}
    else:
        raise DataError(f"--tasks: unknown task '{task}'; expected recovery, detection, unwrapping")
    return PairParams(**{**base, **given})


def default_training(task: str, seed: int = 0, **given) -> TaskConfig:
    batch = 64 if task == "detection" else 32
    return TaskConfig(**{"task": task, "seed": seed, "steps": 1200, "batch_size": batch, **given})


def _noise(cfg: ExperimentConfig, name: str) -> list[DatasetFile]:
    files = {"physics": [cfg.physics], "generated": [cfg.generated], "real": [cfg.train_real],
             "real+generated": [cfg.train_real, cfg.generated],
             **{k: list(v) for k, v in cfg.extra_sets.items()}}[name]  # fmt: skip
    return [DatasetFile(f) for f in files]


def check_inputs(cfg: ExperimentConfig) -> float:
    """Refuse sets that cannot be compared; returns the common pixel spacing (m)."""
    if not cfg.seeds:
        raise DataError("--seeds: at least one seed")
    for name, path in (("--train-real", cfg.train_real), ("--test-real", cfg.test_real)):
        if DatasetFile(path).info.kind not in ("insar_unwrapped", "insar_noise"):
            raise DataError(f"{path} ({name}): unwrapped interferograms (rad) expected")
    if Path(cfg.train_real).resolve() == Path(cfg.test_real).resolve():
        raise DataError(f"{cfg.test_real}: the test scenes are the training scenes")
    _check_scenes(cfg.train_real, cfg.test_real)
    if cfg.run is not None:
        _check_run(Path(cfg.run), cfg.test_real)
    every = [DatasetFile(p) for p in (cfg.test_real, cfg.train_real, cfg.generated, cfg.physics)]
    return NoiseSource(every).spacing_m


def _check_scenes(train: str, test: str) -> None:
    """Tiles of one scene on both sides would test on training noise: refused where the files
    name their scenes (``data prepare --split`` records them)."""
    a, b = (DatasetFile(p).attrs().get("items") for p in (train, test))
    if a is None or b is None:
        log.warning(
            "%s / %s: scenes not recorded; cannot check that they do not overlap", train, test
        )
        return
    shared = sorted(set(json.loads(a)) & set(json.loads(b)))
    if shared:
        raise DataError(f"{test}: scenes also in {train}: {', '.join(shared[:3])}")


def _check_run(run_dir: Path, test: str) -> None:
    """A generative model that saw the held-out scenes would leak them into its noise."""
    from radardiff.config import load_config

    train = load_config(run_dir / "config.toml").data.train
    if not train:
        return
    path = Path(train) if Path(train).is_absolute() else run_dir / train
    if not path.is_file():
        path = Path(train)
    if path.is_file() and path.resolve() == Path(test).resolve():
        raise DataError(f"{run_dir}: trained on {test}, the held-out scenes")
    if path.is_file():
        _check_scenes(str(path), test)


def experiment_inputs(
    tasks: tuple[str, ...], overrides: dict, wavelength: float | None, precision: str
) -> tuple[dict[str, PairParams], dict[str, TaskConfig]]:
    """Pair and training parameters per task from ``TASK.KEY`` / ``TASK.train.KEY`` overrides."""
    from radardiff.errors import ConfigError

    pairs: dict[str, dict] = {t: {} for t in tasks}
    training: dict[str, dict] = {t: {"precision": precision} for t in tasks}
    for key, value in overrides.items():
        task, _, rest = key.partition(".")
        if task not in pairs or not rest:
            raise ConfigError(f"--set {key}: expected TASK.KEY with TASK one of {', '.join(tasks)}")
        value = tuple(value) if isinstance(value, list) else value
        if rest.startswith("train."):
            training[task][rest[len("train.") :]] = value
        else:
            pairs[task][rest] = value
    try:
        pp = {t: default_pairs(t, **({"wavelength_m": wavelength} if wavelength else {}), **v)
              for t, v in pairs.items()}  # fmt: skip
        tc = {t: default_training(t, **v) for t, v in training.items()}
    except TypeError as err:
        raise ConfigError(f"--set: {err}") from None
    return pp, tc


@holding("out")
def run_experiment(
    cfg: ExperimentConfig,
    out,
    on_progress: Callable[[str], None] | None = None,
    device: str = "cpu",
) -> dict:
    """Run (or resume) the experiment into the directory ``out``; returns the results."""
    out = Path(out)
    spacing = check_inputs(cfg)
    (out / "pairs").mkdir(parents=True, exist_ok=True)
    rows = []
    for task in cfg.tasks:
        pp = cfg.pairs.get(task) or default_pairs(task)
        test_path = _pairs(out / "pairs" / f"{task}_test.h5", [DatasetFile(cfg.test_real)],
                           cfg.n_test, cfg.test_seed, pp, None, spacing)  # fmt: skip
        test = load_pairs(test_path, task)  # read once, scored by every network
        masks = DatasetFile(cfg.train_real) if cfg.masks else None
        for k, name in enumerate((*SETS, *cfg.extra_sets)):
            for seed in cfg.seeds:
                tag = f"{task}_{_slug(name)}_s{seed}"
                if on_progress is not None:
                    on_progress(tag)
                pairs = _pairs(out / "pairs" / f"{tag}.h5", _noise(cfg, name), cfg.n_train,
                               1000 * seed + k, pp, masks, spacing)  # fmt: skip
                tc = cfg.training.get(task) or default_training(task)
                tc = dataclasses.replace(tc, seed=seed)
                net, meta = _network(out / "nets" / tag, load_pairs(pairs, task), tc, device)
                score = score_task(net, meta, test)
                rows.append({"task": task, "set": name, "seed": seed, **score,
                             "val_score": meta["val_score"], "best_step": meta["best_step"]})  # fmt: skip
    result = {"config": _describe(cfg, spacing), "results": rows, "summary": summarise_over_seeds(rows),
              "noise_realism": noise_realism(cfg, out / "realism")}  # fmt: skip
    atomic_write_text(out / RESULTS, json.dumps(result, indent=1, default=_jsonable) + "\n")
    atomic_write_text(out / "downstream.md", markdown_table(result))
    return result


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


REALISM = ("semivariogram_rel_error", "lag1_ratio", "noise_fraction", "psd_log_rmse",
            "histogram_w1")  # fmt: skip


def noise_realism(cfg: ExperimentConfig, out: Path) -> dict:
    """How each noise set (and the held-out scenes, for scale) compares with the real training
    tiles in radar statistics (:func:`radardiff.evaluate.evaluate_files`, no bootstrap): where a
    training set's skill falls short, this says whether its noise does."""
    from radardiff.config import EvalConfig
    from radardiff.evaluate.metrics import evaluate_files

    ecfg = EvalConfig(metrics=("semivariogram", "psd", "histogram", "ranges"), bootstrap=0)
    found = {}
    for name, path in (("physics", cfg.physics), ("generated", cfg.generated),
                       ("held-out scenes", cfg.test_real)):  # fmt: skip
        where = out / name.replace(" ", "_")
        done = where / "metrics.json"
        newer = max(Path(p).stat().st_mtime_ns for p in (path, cfg.train_real))
        if done.is_file() and done.stat().st_mtime_ns > newer:
            metrics = json.loads(done.read_text(encoding="utf-8"))
        else:
            metrics = evaluate_files(cfg.train_real, path, ecfg, where, allow_mismatch=True)
        scalars = metrics.get("scalars", {})
        found[name] = {k: scalars.get(k) for k in REALISM}
    return found


def _network(net_dir: Path, pairs, tc: TaskConfig, device: str):
    """The network trained on ``pairs`` with ``tc``: the saved one when it was made from the
    same pairs and config, else trained now."""
    if (net_dir / TASK_FILE).is_file():
        net, meta = load_task(net_dir)
        same = json.loads(json.dumps(dataclasses.asdict(tc))) == meta.get("config")
        if same and meta.get("train_pairs_record") == pairs.record:
            return net, meta
    trained = train_task(pairs, tc, net_dir, device=device)
    return trained.net, trained.meta


def _pairs(path: Path, files, n, seed, pp, masks, spacing) -> Path:
    """The pairs file at ``path``, made unless a complete one with the same record, newer than
    its noise files, is there."""
    noise = NoiseSource(files, spacing)
    if path.is_file():
        made = DatasetFile(path)
        record = json.loads(made.attrs().get("pairs", "{}"))
        want = {"seed": seed, "noise": [str(f.path) for f in files], "params": _plain(pp),
                "masks": str(masks.path) if masks is not None else None}  # fmt: skip
        newer = max(Path(f.path).stat().st_mtime_ns for f in files) > path.stat().st_mtime_ns
        if all(record.get(k) == v for k, v in want.items()) and made.info.n == n \
                and not newer:  # fmt: skip
            return path
    return write_pairs(noise, n, path, seed, pp, masks)


def _plain(p: PairParams) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(p), default=_jsonable))


def _describe(cfg: ExperimentConfig, spacing: float) -> dict:
    d = dataclasses.asdict(cfg)
    d["pairs"] = {t: dataclasses.asdict(cfg.pairs.get(t) or default_pairs(t)) for t in cfg.tasks}
    d["training"] = {t: dataclasses.asdict(cfg.training.get(t) or default_training(t))
                     for t in cfg.tasks}  # fmt: skip
    d["pixel_spacing_m"] = spacing
    d["physics_params"] = DatasetFile(cfg.physics).attrs().get("synth_params")
    return d


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, tuple | set):
        return list(o)
    raise TypeError(type(o).__name__)


COLUMNS = {"recovery": [("skill", "skill"), ("rmse", "RMSE"), ("rmse_fraction", "RMSE / signal")],
            "detection": [("auc", "ROC AUC"), ("accuracy", "accuracy")],
            "unwrapping": [("within_pi", "within pi"), ("rmse", "RMSE (rad)")],
            "classification": [("balanced_accuracy", "balanced accuracy"),
                               ("accuracy", "accuracy")],
            "segmentation": [("mean_iou", "mean IoU"), ("pixel_accuracy", "pixel accuracy")]}  # fmt: skip


def table_rows(result: dict) -> list[tuple[str, str, list[str]]]:
    """(task, set, cells "mean +- std") of the summary, for the Markdown and HTML tables."""
    rows = []
    for task, s in result["summary"].items():
        for name, stats in s["sets"].items():
            cells = [f"{stats[k]['mean']:.3f} ± {stats[k]['std']:.3f}" for k, _ in COLUMNS[task]]
            rows.append((task, name, cells + [str(stats["seeds"])]))
    return rows


def markdown_table(result: dict) -> str:
    lines = []
    for task, s in result["summary"].items():
        head = [h for _, h in COLUMNS[task]]
        lines += [f"### {task}", "", f"| training {'set' if task in LABELLED_TASKS else 'noise'} | " + " | ".join(head) + " | seeds |",
                  "|---" * (len(head) + 2) + "|"]  # fmt: skip
        lines += [f"| {name} | " + " | ".join(cells) + " |"
                  for t, name, cells in table_rows(result) if t == task]  # fmt: skip
        crit = s["criteria"]
        lines += ["", ", ".join(f"{k}: {_fmt(v)}" for k, v in crit.items()), ""]
    realism = result.get("noise_realism") or {}
    if realism:
        lines += ["### noise against the real training tiles", "",
                  "| noise | " + " | ".join(REALISM) + " |", "|---" * (len(REALISM) + 1) + "|"]  # fmt: skip
        lines += [f"| {name} | " + " | ".join(_fmt(v.get(k)) for k in REALISM) + " |"
                  for name, v in realism.items()]  # fmt: skip
        lines.append("")
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) and not math.isnan(v) else str(v)


def _is_run(path: Path) -> bool:
    return path.is_dir() and (path / "config.toml").is_file()


def noise_file(
    spec: str,
    n: int,
    store: Path,
    *,
    size: int | None = None,
    pixel_spacing_m: float | None = None,
    seed: int = 0,
    physics_params: dict | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    checkpoint: str | None = None,
    precision: str = "no",
    on_progress=None,
    device: str = "cpu",
    compile: bool = False,
) -> Path:
    """The dataset file of the noise source ``spec``: the file itself, or ``n`` tiles made
    into ``store`` (kept; reused when complete) from a run directory (sampled with its own
    sampler unless given, on ``device``, the network compiled with ``compile``; seeds ``seed,
    0 .. n-1``) or the physics generator ``insar_noise`` (``size`` and ``pixel_spacing_m``
    required, ``physics_params`` its parameters)."""
    path = Path(spec)
    if path.is_file():
        return path
    from radardiff.models.shipped import shipped_models

    if not path.exists() and spec in shipped_models():
        path = shipped_models()[spec]
    if spec == "insar_noise":
        if size is None or pixel_spacing_m is None:
            raise DataError("insar_noise as noise: give --size and --pixel-spacing (the tiles')")
        if not _complete(store, n, physics_params):
            from radardiff.data.synth import synthesize

            synthesize("insar_noise", n, size, store, seed, physics_params, pixel_spacing_m)
        return store
    if _is_run(path):
        how = {"sampler": sampler, "steps": steps, "seed": seed, "mixed_precision": precision,
               "compile": compile}  # fmt: skip
        return _sample_run(path, n, store, how, checkpoint, device, on_progress)
    raise DataError(
        f"{spec}: not a dataset file, a run directory or 'insar_noise'"
        + (" (a directory without config.toml)" if path.is_dir() else "")
    )


def _complete(path: Path, n: int, params: dict | None) -> bool:
    """Whether ``path`` holds ``n`` tiles made with ``params`` (a subset of its recorded ones)."""
    try:
        if not path.is_file() or DatasetFile(path).info.n != n:
            return False
        made = json.loads(DatasetFile(path).attrs().get("synth_params", "{}"))
    except (DataError, ValueError):
        return False
    return all(made.get(k) == v for k, v in (params or {}).items())


def _sample_run(run_dir, n, store, how: dict, checkpoint, device, on_progress):
    from radardiff.sample import generate, load_run
    from radardiff.sample.generate import finished, request

    run = load_run(run_dir, device=device, checkpoint=checkpoint)
    if run.data_info.get("kind") not in ("insar_unwrapped", "insar_noise", "insar_wrapped"):
        raise DataError(
            f"{run_dir}: a model of {run.data_info.get('kind')} data, not of InSAR noise"
        )
    opts = request(run.cfg.sample, n, **how)
    if not finished(Path(store), run, opts):  # the same request's complete file is kept
        generate(run, opts, store, on_progress=on_progress)
    return Path(store)
