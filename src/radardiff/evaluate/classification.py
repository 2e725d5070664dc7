"""Class value of generated data: a classifier trained on generated images, tested on real ones.

:func:`run_classification` trains the ``classification`` network (:mod:`radardiff.evaluate.tasks`)
for each seed on each training set

- ``real``: the labelled real training images,
- ``generated``: generated images of the same classes in the same numbers (a class-conditional
  run sampled by :func:`labelled_samples`, or a labelled file the user made),
- ``real+generated``: the real images and the generated ones together (what augmenting a small
  real set with generated images gives),
- ``physics`` (when given): images of a physics generator with the same classes (for example
  ``radardiff data synth sar``),

with the same optimisation, and tests every network on the labelled images of the held-out real
scenes: accuracy, balanced accuracy (mean per-class recall, the skill; chance is 1 / classes),
per-class recall and the confusion matrix. Classes are matched by name; a class of the held-out
or generated images that the training set lacks is refused, as is a class of the training set
that the model cannot generate. Results go to ``classification.json`` (and a table in
``classification.md``) beside the InSAR tasks' ``downstream.json``; a finished network is not
trained again, so an interrupted experiment resumes.

The same experiment runs the ``segmentation`` task (``task="segmentation"``): images with a
per-pixel label map instead of a class per image (:func:`radardiff.evaluate.tasks.load_segmented`;
a real set prepared with ``--map``, samples of a map-conditioned run over the real training maps
by :func:`map_samples`, ``data synth sar_map`` as physics), scored by the mean intersection over
union, into ``segmentation.json`` and ``segmentation.md``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from radardiff._files import holding
from radardiff.config.io import atomic_write_text
from radardiff.data.dataset_file import DatasetFile
from radardiff.data.maps import select_channels
from radardiff.errors import DataError
from radardiff.evaluate.measures.skill import summarise_over_seeds
from radardiff.evaluate.tasks import TaskConfig, label_map_of, load_labelled, load_segmented

RESULTS = "classification.json"
SEGMENTATION = "segmentation.json"
TASK = "classification"


def default_classification(seed: int = 0, task: str = TASK, **given) -> TaskConfig:
    """The experiment's classifier (or segmenter) training (``given`` overrides): 600 steps of
    64 images (32 for the segmenter)."""
    batch = 64 if task == TASK else 32
    return TaskConfig(**{"task": task, "seed": seed, "steps": 600, "batch_size": batch,
                         "val_every": 50, **given})  # fmt: skip


@dataclass(frozen=True)
class ClassificationConfig:
    """One experiment (module docstring)."""

    train_real: str
    test_real: str
    generated: str
    physics: str | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    training: TaskConfig = field(default_factory=default_classification)
    run: str | None = None  # the run behind ``generated``: checked not to know the test scenes
    label_map: str | None = None  # segmentation: the label map [the training file's only one]

    @property
    def task(self) -> str:
        return self.training.task

    def load(self, files, classes: list[str] | None = None):
        if self.task == "segmentation":
            return load_segmented(files, classes, self.label_map)
        return load_labelled(files, classes)


def training_sets(cfg: ClassificationConfig) -> dict[str, list[str]]:
    sets = {"real": [cfg.train_real], "generated": [cfg.generated],
            "real+generated": [cfg.train_real, cfg.generated]}  # fmt: skip
    if cfg.physics:
        sets = {"physics": [cfg.physics], **sets}
    return sets


def check_inputs(cfg: ClassificationConfig) -> list[str]:
    """Refuse sets that cannot be compared; returns the classes (the real training set's)."""
    from radardiff.evaluate.downstream import _check_run, _check_scenes

    if not cfg.seeds:
        raise DataError("--seeds: at least one seed")
    if Path(cfg.train_real).resolve() == Path(cfg.test_real).resolve():
        raise DataError(f"{cfg.test_real}: the test scenes are the training scenes")
    _check_scenes(cfg.train_real, cfg.test_real)
    if cfg.run is not None:
        _check_run(Path(cfg.run), cfg.test_real)
    if cfg.task == "segmentation":
        return _check_segmented(cfg)
    names = DatasetFile(cfg.train_real).info.class_names
    if not names:
        raise DataError(f"{cfg.train_real}: no class labels; classification needs a labelled set")
    used = _used_classes(cfg.train_real)
    if len(used) < 2:
        raise DataError(f"{cfg.train_real}: images of {len(used)} class; at least two needed")
    for path in filter(None, (cfg.generated, cfg.physics)):
        missing = [c for c in used if c not in _used_classes(path)]
        if missing:
            raise DataError(
                f"{path}: no images of class '{missing[0]}', which {cfg.train_real} holds"
            )
    return list(names)


def _check_segmented(cfg: ClassificationConfig) -> list[str]:
    """The label map's classes (the real training file's); the other sets must hold the
    classes its maps use."""
    info = DatasetFile(cfg.train_real).info
    name = label_map_of(cfg.train_real, info, cfg.label_map)
    classes = list(next(c for c in info.maps if c.name == name).classes or ())
    used = _used_map_classes(cfg.train_real, name)
    if len(used) < 2:
        raise DataError(f"{cfg.train_real}: label map '{name}' uses {len(used)} class; 2 needed")
    for path in filter(None, (cfg.generated, cfg.physics, cfg.test_real)):
        have = _used_map_classes(path, label_map_of(path, DatasetFile(path).info, cfg.label_map))
        missing = [c for c in used if c not in have]
        if missing and path != cfg.test_real:
            raise DataError(f"{path}: no pixel of class '{missing[0]}', which {cfg.train_real} has")
    return classes


def _used_map_classes(path, name: str) -> list[str]:
    f = DatasetFile(path)
    channel = next(c for c in f.info.maps if c.name == name)
    m = f.maps()[:, select_channels(f.info.maps, [name], str(path))[0]]
    return [(channel.classes or ())[int(i)] for i in np.unique(m[np.isfinite(m)])]


def _used_classes(path) -> list[str]:
    f = DatasetFile(path)
    labels, names = f.labels(), f.info.class_names
    if labels is None or not names:
        raise DataError(f"{path}: no class labels; classification needs a labelled set")
    return [names[i] for i in np.unique(labels)]


@holding("out")
def run_classification(
    cfg: ClassificationConfig,
    out,
    on_progress: Callable[[str], None] | None = None,
    device: str = "cpu",
) -> dict:
    """Run (or resume) the experiment into the directory ``out``; returns the results."""
    from radardiff.evaluate.downstream import _jsonable, _network, score_task

    out = Path(out)
    task = cfg.task
    classes = check_inputs(cfg)
    test = cfg.load(cfg.test_real, classes)
    rows = []
    for name, files in training_sets(cfg).items():
        images = cfg.load(files, classes)
        for seed in cfg.seeds:
            tag = f"{task}_{name.replace('+', '_')}_s{seed}"
            if on_progress is not None:
                on_progress(tag)
            tc = dataclasses.replace(cfg.training, seed=seed)
            net, meta = _network(out / "nets" / tag, images, tc, device)
            score = score_task(net, meta, test)
            rows.append({"task": task, "set": name, "seed": seed, **score, "n_train": len(images.targets),
                         "val_score": meta["val_score"], "best_step": meta["best_step"]})  # fmt: skip
    counts = {c: int(np.sum(test.targets == i)) for i, c in enumerate(classes)}
    # chance: a guess of the class (classification); no overlap at all (segmentation)
    chance = 1.0 / len(classes) if task == TASK else 0.0
    result = {"config": {**dataclasses.asdict(cfg), "classes": classes, "test_counts": counts},
              "results": rows, "summary": summarise_over_seeds(rows, {task: chance})}  # fmt: skip
    name = RESULTS if task == TASK else SEGMENTATION
    atomic_write_text(out / name, json.dumps(result, indent=1, default=_jsonable) + "\n")
    atomic_write_text(out / f"{task}.md", markdown(result))
    return result


def markdown(result: dict) -> str:
    """The scores' table (as the InSAR tasks') and the mean recall of each class per set."""
    from radardiff.evaluate.downstream import markdown_table

    classes = result["config"]["classes"]
    key = "iou" if result["results"] and "iou" in result["results"][0] else "recall"
    what = "intersection over union" if key == "iou" else "recall"
    lines = [markdown_table(result).rstrip("\n"), "", f"### {what} per class (mean over seeds)", "",
             "| training set | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]  # fmt: skip
    for name in dict.fromkeys(r["set"] for r in result["results"]):
        mine = [r[key] for r in result["results"] if r["set"] == name]
        cells = []
        for c in classes:
            v = [m[c] for m in mine if m.get(c) is not None]
            cells.append(f"{np.mean(v):.3f}" if v else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def labelled_samples(
    run_dir,
    train_real: str,
    store: Path,
    how: dict,
    checkpoint: str | None = None,
    device: str = "cpu",
    on_progress=None,
) -> Path:
    """Samples of the class-conditional run ``run_dir`` with the classes of ``train_real`` in
    its numbers (seeds ``how['seed'], 0 .. n-1``), into ``store`` (kept; reused when complete)."""
    from radardiff.sample import generate, load_run
    from radardiff.sample.generate import finished, request

    run = load_run(run_dir, device=device, checkpoint=checkpoint)
    have = run.data_info.get("class_names") or []
    if not have or not run.num_classes:
        raise DataError(f"{run_dir}: not a class-conditional model; it cannot make labelled images")
    real = DatasetFile(train_real)
    info = real.info
    made = (
        run.data_info.get("kind"),
        run.data_info.get("units"),
        tuple(run.data_info.get("shape") or ()),
    )
    if made != (info.kind, info.units, tuple(info.shape)):
        raise DataError(
            f"{run_dir}: a model of {made[0]} ({made[1]}) of shape {made[2]}, but {train_real} "
            f"holds {info.kind} ({info.units}) of shape {tuple(info.shape)}"
        )
    names = info.class_names or []
    labels = real.labels()
    missing = [names[i] for i in np.unique(labels) if names[i] not in have]
    if missing:
        raise DataError(
            f"{run_dir}: the model has no class '{missing[0]}' (of {train_real}); its classes: "
            f"{', '.join(have)}"
        )
    classes = tuple(int(have.index(names[i])) for i in labels)
    opts = request(run.cfg.sample, len(classes), classes=classes, **how)
    if not finished(Path(store), run, opts):  # the same request's complete file is kept
        generate(run, opts, store, on_progress=on_progress)
    return Path(store)


def map_samples(
    run_dir, train_real: str, store: Path, how: dict, checkpoint: str | None = None,
    device: str = "cpu", on_progress=None,
) -> Path:  # fmt: skip
    """Samples of the map-conditioned run ``run_dir`` over the maps of ``train_real``, one per
    real training image (seeds ``how['seed'], 0 .. n-1``), into ``store`` (kept; reused when
    complete): generated images with the real label maps, for segmentation."""
    from radardiff.sample import generate, load_run
    from radardiff.sample.generate import finished, request

    run = load_run(run_dir, device=device, checkpoint=checkpoint)
    if run.normalizer.maps is None:
        raise DataError(f"{run_dir}: not a map-conditioned model; it cannot make labelled pixels")
    opts = request(run.cfg.sample, DatasetFile(train_real).info.n, maps=str(train_real), **how)
    if not finished(Path(store), run, opts):
        generate(run, opts, store, on_progress=on_progress)
    return Path(store)
