"""Sampler study: do fast samplers fail on radar data?

For each sampler and step count, :func:`study_samplers` generates the same ``n`` seeds from a run
(:func:`radardiff.sample.generate`), times the generation, evaluates the samples against a real
file (:func:`radardiff.evaluate.evaluate_files`) and collects one row of numbers. The same seeds
are used for every row, so differences between rows come from the sampler and the step count,
not from the initial noise.

Output (``out_dir``, by default ``RUN/study``)
---------------------------------------------
``samplers.json``: ``{"schema": "radardiff.study/1", "rows": [row, ...], "settings": {...},
"reference": {...} | null}``,
one row per (sampler, steps) in request order with the keys

- ``sampler`` (str), ``steps`` (int): the request;
- ``n`` (int), ``wall_s`` (float, seconds for the whole generation, model load excluded),
  ``s_per_sample`` (``wall_s / n``), ``nfe`` (network evaluations per sample, counted);
- every scalar of ``metrics.json`` (``semivariogram_rel_error``, ``psd_log_rmse``, ...; ``null``
  when not computed);
- ``samples`` and ``metrics``: paths of the generated file and of its ``metrics.json``.

``reference``: ``null`` or the scalars of ``n`` images drawn (seeded) from the run's *training*
file and evaluated against the same real file, with ``source`` and ``n``: what a perfect
sampler scores with ``n`` samples. A row is only worse than another when it is clearly above
this finite-sample floor. (The floor is optimistic when the real file is the training file.)

``samplers.csv``: the same rows as a table (one column per key). The report draws
``semivariogram_rel_error`` against ``steps``, one line per sampler.

Timing: one warm-up batch is generated first (and discarded) so the first row does not pay for
one-time start-up costs; outputs of an earlier study are deleted before each row so the
resumable generator regenerates (and times) every sample.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radardiff.config import EvalConfig
from radardiff.config.io import atomic_write_text
from radardiff.data import DatasetFile
from radardiff.data.dataset_file import write_dataset
from radardiff.errors import ConfigError
from radardiff.evaluate.metrics import SCALAR_KEYS, evaluate_files
from radardiff.sample import SampleOptions, denoise_batch, generate, load_run

SCHEMA = "radardiff.study/1"
ROW_KEYS = ("sampler", "steps", "n", "wall_s", "s_per_sample", "nfe", *SCALAR_KEYS)


@dataclass
class StudyResult:
    rows: list[dict[str, Any]]
    json_path: Path
    csv_path: Path
    reference: dict[str, Any] | None = None


class _CallCounter:
    """Counts forward calls of the network (a forward pre-hook)."""

    def __init__(self, model) -> None:
        self.calls = 0
        self._handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, module, args) -> None:
        self.calls += 1

    def remove(self) -> None:
        self._handle.remove()


def _clear(path: Path) -> None:
    """Remove an earlier study's output and its resumable parts, so every sample is timed."""
    parts = path.with_name(path.name + ".parts")
    if parts.is_dir():
        shutil.rmtree(parts)
    path.unlink(missing_ok=True)


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    keys = list(dict.fromkeys(k for r in rows for k in r))
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r[k] for k in keys})
    return buf.getvalue()


def study_samplers(
    run_dir: str | os.PathLike,
    samplers: Sequence[str],
    steps_list: Sequence[int],
    n: int,
    real: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    seed: int = 0,
    *,
    batch_size: int = 64,
    eval_cfg: EvalConfig | None = None,
    extractor: Any = None,
    device: str = "cpu",
    on_row: Callable[[dict[str, Any]], None] | None = None,
    with_reference: bool = True,
) -> StudyResult:
    """Generate, time and evaluate ``n`` samples for every (sampler, steps); write the table.

    Parameters
    ----------
    run_dir : a trained run directory (its EMA weights are used).
    samplers, steps_list : names from :data:`radardiff.diffusion.SAMPLERS`, step counts.
    n : samples per row (the same seeds 0..n-1 of ``seed`` in every row).
    real : the real dataset file the samples are compared with.
    out_dir : default ``RUN/study``; samples go to ``out_dir/samples``, metrics to
        ``out_dir/eval/SAMPLER_STEPS``.
    eval_cfg : metrics and settings (default: the run's ``evaluate`` section).
    extractor : feature extractor (path or object) for FID/KID/precision/recall, optional.
    on_row : called with each row as soon as it is complete.
    with_reference : also evaluate ``n`` images of the run's training file against ``real``
        (the ``reference`` entry: the scores of a perfect sampler at this ``n``).

    Returns
    -------
    StudyResult
        The rows (see the module docstring) and the paths of ``samplers.json`` / ``.csv``.
    """
    if not samplers or not steps_list:
        raise ConfigError("study: give at least one sampler and one step count")
    if n < 2:
        raise ConfigError(f"study: --n must be at least 2 (metrics need 2 samples), got {n}")
    bad = [s for s in steps_list if s < 1]
    if bad:
        raise ConfigError(f"study: --steps must be positive, got {bad[0]}")
    run = load_run(run_dir, device=device)
    out = Path(out_dir) if out_dir is not None else run.run.root / "study"
    cfg = eval_cfg or run.cfg.evaluate
    if extractor is not None and not hasattr(extractor, "features"):
        from radardiff.evaluate.extractor import load_extractor

        extractor = load_extractor(extractor)
    # check every request before the first long generation
    from radardiff.diffusion import make_sampler

    for name in samplers:
        for k in steps_list:
            make_sampler(name, run.cfg.diffusion, int(k), {})
    opts0 = SampleOptions(n=1, sampler=samplers[0], steps=int(min(steps_list)), seed=seed)
    denoise_batch(run, opts0, np.arange(1))  # warm-up: thread pools, kernels, allocator
    rows: list[dict[str, Any]] = []
    batches = -(-n // batch_size)
    for name in samplers:
        for k in steps_list:
            tag = f"{name}_{int(k)}"
            path = out / "samples" / f"{tag}.h5"
            path.parent.mkdir(parents=True, exist_ok=True)
            _clear(path)
            opts = SampleOptions(n=n, sampler=name, steps=int(k), seed=seed, batch_size=batch_size)
            counter = _CallCounter(run.model)
            t0 = time.perf_counter()
            try:
                result = generate(run, opts, path, rank=0, world=1)
            finally:
                counter.remove()
            wall = time.perf_counter() - t0
            metrics = evaluate_files(
                real, result.path, cfg, out / "eval" / tag, extractor=extractor
            )
            row = {
                "sampler": name, "steps": int(k), "n": n, "wall_s": wall,
                "s_per_sample": wall / n, "nfe": counter.calls / batches,
                **metrics["scalars"],
                "samples": str(result.path), "metrics": str(out / "eval" / tag / "metrics.json"),
            }  # fmt: skip
            rows.append(row)
            if on_row is not None:
                on_row(row)
    reference = _reference(run, n, real, cfg, extractor, out, seed) if with_reference else None
    settings = {
        "run_dir": str(run.run.root), "checkpoint": run.checkpoint.name, "real": str(real),
        "n": n, "seed": seed, "batch_size": batch_size, "device": str(device),
        "samplers": list(samplers), "steps": [int(k) for k in steps_list],
        "metrics": list(cfg.metrics), "feature_extractor": getattr(extractor, "name", None),
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    doc = {"schema": SCHEMA, "rows": rows, "settings": settings, "reference": reference}
    json_path, csv_path = out / "samplers.json", out / "samplers.csv"
    atomic_write_text(json_path, json.dumps(doc, indent=2) + "\n")
    atomic_write_text(csv_path, _csv(rows))
    return StudyResult(rows=rows, json_path=json_path, csv_path=csv_path, reference=reference)


def _reference(run, n, real, cfg, extractor, out: Path, seed: int) -> dict[str, Any] | None:
    """Scalars of ``n`` training images against ``real``: what a perfect sampler would score
    with ``n`` samples (the finite-sample floor of every metric); None without a training file."""
    train = Path(run.cfg.data.train) if run.cfg.data.train else None
    if train is None or not train.is_file():
        return None
    with DatasetFile(train) as ds:
        if len(ds) < n:
            return None
        idx = np.sort(np.random.default_rng(seed).choice(len(ds), n, replace=False))
        i = ds.info
        path = write_dataset(
            out / "samples" / "reference_training.h5", ds.images(idx), ds.labels(idx),
            kind=i.kind, units=i.units, class_names=i.class_names,
            pixel_spacing_m=i.pixel_spacing_m, source=f"{train} (study reference)",
        )  # fmt: skip
    metrics = evaluate_files(real, path, cfg, out / "eval" / "reference", extractor=extractor)
    return {"source": str(train), "n": n, **metrics["scalars"]}
