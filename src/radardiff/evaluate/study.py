"""Sampler study: do fast samplers fail on radar data?

For each sampler and step count, :func:`study_samplers` generates the same ``n`` seeds from a run
(:func:`radardiff.sample.generate`), times the generation, evaluates the samples against a real
file (:func:`radardiff.evaluate.evaluate_files`) and collects one row of numbers. The same seeds
are used for every row, so differences between rows come from the sampler and the step count,
not from the initial noise.

A sampler is given as ``NAME`` or ``NAME:key=value:key=value`` (:func:`parse_sampler`): its
options (``ddim:eta=1``, ``ddpm:variance=fixed_large``, ``dpmsolver++:solver_order=3``) and the
denoiser's x0 clipping (``clip=static|dynamic|none``); the row's ``sampler`` is that text.
Distilled students of the run (``students``) add one row each, sampled with their own default
sampler and steps (``sampler`` reads ``student NAME (SAMPLER)``, ``student`` holds the run).

Output (``out_dir``, by default ``RUN/study``)
---------------------------------------------
``samplers.json``: ``{"schema": "radardiff.study/1", "rows": [row, ...], "settings": {...},
"reference": {...} | null}``,
one row per (sampler, steps) in request order with the keys

- ``sampler`` (str, the variant as given), ``name`` (the registered sampler), ``options``
  (dict), ``clip`` (str or null: the run's default), ``steps`` (int): the request;
- ``n`` (int), ``wall_s`` (float, seconds for the whole generation, model load excluded),
  ``s_per_sample`` (``wall_s / n``), ``nfe`` (network evaluations per sample, counted);
- every scalar of ``metrics.json`` (``semivariogram_rel_error``, ``psd_log_rmse``, ...; ``null``
  when not computed);
- ``samples`` and ``metrics``: paths of the generated file and of its ``metrics.json``.

``reference``: ``null`` or the scalars of ``n`` images drawn (seeded) from the floor file (the
run's *training* file by default) and evaluated against the same real file, with ``source`` and
``n``: what a perfect sampler scores with ``n`` samples. A row is only worse than another when it
is clearly above this finite-sample floor. (The floor is optimistic when the real file holds the
floor's images: give a disjoint file of the same distribution as ``floor``.)

``settings`` says what every number stands on: the run, its checkpoint and training length
(``train_steps``, ``train_images``, ``train_minutes`` summed from stats.jsonl, null when
unknown), the real and floor files, ``n`` and the seed.

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
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radardiff._files import holding
from radardiff.config import EvalConfig, RunDir
from radardiff.config.io import atomic_write_text
from radardiff.data import DatasetFile
from radardiff.data.dataset_file import write_dataset
from radardiff.diffusion import make_sampler
from radardiff.diffusion.denoiser import CLIP_MODES
from radardiff.errors import ConfigError
from radardiff.evaluate.metrics import SCALAR_KEYS, evaluate_files
from radardiff.models import LoadedRun
from radardiff.models.network import compiled_for_sampling
from radardiff.sample import SampleOptions, denoise_batch, generate, load_run
from radardiff.sample.generate import request

SCHEMA = "radardiff.study/1"
ROW_KEYS = ("sampler", "steps", "n", "wall_s", "s_per_sample", "nfe", *SCALAR_KEYS)


@dataclass(frozen=True)
class SamplerVariant:
    """One sampler of a study: a registered name, its options, and the x0 clipping."""

    text: str
    name: str
    options: dict[str, Any]
    clip: str | None


def parse_sampler(text: str) -> SamplerVariant:
    """``NAME[:key=value...]``: a sampler with options (values typed as TOML: ``eta=1.0``,
    ``use_karras_sigmas=true``, ``variance=fixed_large``) and ``clip=static|dynamic|none``."""
    name, *pairs = [p.strip() for p in text.strip().split(":")]
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"study sampler '{text}': expected NAME:key=value, got '{pair}'")
        try:
            options[key.strip()] = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            options[key.strip()] = raw.strip()
    clip = options.pop("clip", None)
    if clip is not None and clip not in CLIP_MODES:
        raise ConfigError(
            f"study sampler '{text}': clip must be one of {', '.join(CLIP_MODES)}, got '{clip}'"
        )
    return SamplerVariant(text=text.strip(), name=name, options=options, clip=clip)


def training_length(run: RunDir, step: int) -> dict[str, Any]:
    """Steps, images and minutes of training up to checkpoint ``step`` (minutes summed from the
    throughput of the log lines of stats.jsonl; None when the log says nothing)."""
    minutes, images, last_images = 0.0, None, 0
    if run.stats.is_file():
        for line in run.stats.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if "img_per_s" not in row or row.get("step", 0) > step:
                continue
            seen = int(row.get("images_seen", 0))
            if row["img_per_s"]:
                minutes += (seen - last_images) / row["img_per_s"] / 60.0
            last_images = images = seen
    return {
        "train_steps": step,
        "train_images": images,
        "train_minutes": minutes if images else None,
    }


@dataclass
class StudyResult:
    rows: list[dict[str, Any]]
    json_path: Path
    csv_path: Path
    reference: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)


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
    rows = [{k: json.dumps(v) if isinstance(v, dict) else v for k, v in r.items()} for r in rows]
    buf = io.StringIO()
    keys = list(dict.fromkeys(k for r in rows for k in r))
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r[k] for k in keys})
    return buf.getvalue()


@holding("out_dir")
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
    checkpoint: int | str | None = None,
    floor: str | os.PathLike | None = None,
    precision: str = "no",
    students: Sequence[str | os.PathLike] = (),
    compile: bool = False,
    conv_kernels: str = "auto",
) -> StudyResult:
    """Generate, time and evaluate ``n`` samples for every (sampler, steps); write the table.

    Parameters
    ----------
    run_dir : a trained run directory (its EMA weights are used).
    samplers : sampler variants, ``NAME[:key=value...]`` (:func:`parse_sampler`).
    steps_list : step counts; each sampler runs at each of them.
    n : samples per row (the same seeds 0..n-1 of ``seed`` in every row).
    real : the real dataset file the samples are compared with.
    out_dir : default ``RUN/study``; samples go to ``out_dir/samples``, metrics to
        ``out_dir/eval/SAMPLER_STEPS``.
    eval_cfg : metrics and settings (default: the run's ``evaluate`` section).
    extractor : feature extractor (path or object) for FID/KID/precision/recall, optional.
    on_row : called with each row as soon as it is complete.
    with_reference : also evaluate ``n`` images of ``floor`` against ``real`` (the
        ``reference`` entry: the scores of a perfect sampler at this ``n``).
    checkpoint : a step number or checkpoint name of the run (default: the latest).
    floor : the file the reference images come from (default: the run's training file).
    precision : ``no``, ``bf16`` or ``fp16`` autocast of the network.
    students : distilled runs of this run (``radardiff distill``): one row each, with its own
        default sampler and steps, the same seeds, real and floor files.
    compile : sample with each network compiled (``radardiff sample --compile``), compiled
        before the first row is timed, for the study's batch size.
    conv_kernels : ``auto``, ``radardiff`` or ``torch``: whose 3x3 and 1x1 convolutions the
        networks run (``radardiff sample --conv-kernels``).

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
    variants = [parse_sampler(s) for s in samplers]
    run = load_run(run_dir, device=device, checkpoint=checkpoint)
    out = Path(out_dir) if out_dir is not None else run.run.root / "study"
    cfg = eval_cfg or run.cfg.evaluate
    if extractor is not None and not hasattr(extractor, "features"):
        from radardiff.evaluate.extractor import load_extractor

        extractor = load_extractor(extractor)
    how = {"seed": seed, "batch_size": batch_size, "mixed_precision": precision,
           "compile": compile, "conv_kernels": conv_kernels}  # fmt: skip
    requests = [(v, int(k), _options(v, n, k, how)) for v in variants for k in steps_list]
    student_runs = [load_run(s, device=device) for s in students]
    for st in student_runs:
        requests.append((st, st.cfg.sample.steps, request(st.cfg.sample, n, **how)))
    for who, _, opts in requests:  # check every request before the first long generation
        diffusion = (who if isinstance(who, LoadedRun) else run).cfg.diffusion
        make_sampler(opts.sampler, diffusion, opts.steps, opts.sampler_options)
    _warm_up(run, requests[0][2], student_runs)
    rows: list[dict[str, Any]] = []
    for who, k, opts in requests:
        student = who if isinstance(who, LoadedRun) else None
        source = student or run
        text = _student_label(student) if student else who.text
        tag = _tag(text, k)
        path = out / "samples" / f"{tag}.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        _clear(path)
        wall, calls, result = _timed_generate(source, opts, path)
        metrics = evaluate_files(real, result.path, cfg, out / "eval" / tag, extractor=extractor)
        how = (
            {"name": opts.sampler, "options": opts.sampler_options, "clip": opts.clip,
             "student": str(student.run.root)} if student
            else {"name": who.name, "options": who.options, "clip": who.clip}
        )  # fmt: skip
        row = {
            "sampler": text, **how, "steps": k, "n": n, "wall_s": wall, "s_per_sample": wall / n,
            "nfe": calls / -(-n // batch_size), **metrics["scalars"],
            "samples": str(result.path), "metrics": str(out / "eval" / tag / "metrics.json"),
        }  # fmt: skip
        rows.append(row)
        if on_row is not None:
            on_row(row)
    floor_file = (
        Path(floor) if floor else (Path(run.cfg.data.train) if run.cfg.data.train else None)
    )
    reference = (
        _reference(floor_file, n, real, cfg, extractor, out, seed) if with_reference else None
    )
    settings = {
        "run_dir": str(run.run.root), "run_name": run.cfg.name, "checkpoint": run.checkpoint.name,
        **training_length(run.run, _step_of(run.checkpoint)), "real": str(real),
        "floor": None if floor_file is None else str(floor_file), "n": n, "seed": seed,
        "batch_size": batch_size, "device": str(device), "precision": precision,
        "compile": compile, "conv_kernels": conv_kernels,
        "samplers": [v.text for v in variants], "steps": [int(k) for k in steps_list],
        "students": [str(st.run.root) for st in student_runs],
        "metrics": list(cfg.metrics), "feature_extractor": getattr(extractor, "name", None),
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    doc = {"schema": SCHEMA, "rows": rows, "settings": settings, "reference": reference}
    json_path, csv_path = out / "samplers.json", out / "samplers.csv"
    atomic_write_text(json_path, json.dumps(doc, indent=2) + "\n")
    atomic_write_text(csv_path, _csv(rows))
    return StudyResult(
        rows=rows, json_path=json_path, csv_path=csv_path, reference=reference, settings=settings
    )


def _warm_up(run: LoadedRun, opts: SampleOptions, students: Sequence[LoadedRun]) -> None:
    """One untimed network call through each run's sampling path (thread pools, kernels); with
    ``opts.compile`` on a full batch, so that each network compiles here, for the batch size the
    rows run at, and not in the first row's time."""
    rows = min(int(opts.batch_size), opts.n) if opts.compile else 1
    warm = replace(opts, n=rows, sampler="ddim", steps=1, sampler_options={})
    for who in (run, *students):
        denoise_batch(who, warm, np.arange(rows))


def _network(run: LoadedRun, opts: SampleOptions) -> torch.nn.Module:
    """The network a request calls: the run's, or its compiled one (whose Python-level calls a
    hook sees: hooks added to a network after torch.compile traced it are not run)."""
    return compiled_for_sampling(run.model, run.compiled) if opts.compile else run.model


def _timed_generate(run: LoadedRun, opts: SampleOptions, path: Path):
    """Seconds, network calls (counted by a hook) and the result of one generation."""
    counter = _CallCounter(_network(run, opts))
    t0 = time.perf_counter()
    try:
        result = generate(run, opts, path, rank=0, world=1)
    finally:
        counter.remove()
    return time.perf_counter() - t0, counter.calls, result


def _student_label(student: LoadedRun) -> str:
    sc = student.cfg.sample
    return f"student {student.run.root.name} ({sc.sampler})"


def _options(v: SamplerVariant, n, k, how: dict) -> SampleOptions:
    return SampleOptions(
        n=n, sampler=v.name, steps=int(k), sampler_options=dict(v.options), clip=v.clip, **how
    )


def _tag(text: str, steps: int) -> str:
    """A file-name-safe tag of a variant and step count."""
    safe = "".join(c if c.isalnum() or c in "+-." else "_" for c in text)
    return f"{safe}_{steps}"


def _step_of(ckpt: Path) -> int:
    try:
        return int(ckpt.name.split("_")[-1])
    except ValueError:
        return 0


def _reference(train, n, real, cfg, extractor, out: Path, seed: int) -> dict[str, Any] | None:
    """Scalars of ``n`` images of ``train`` (the floor file) against ``real``: what a perfect
    sampler would score with ``n`` samples (the finite-sample floor of every metric); None
    without such a file."""
    if train is None or not train.is_file():
        return None
    with DatasetFile(train) as ds:
        if len(ds) < n:
            return None
        idx = np.sort(np.random.default_rng(seed).choice(len(ds), n, replace=False))
        i = ds.info
        path = write_dataset(
            out / "samples" / "reference_floor.h5", ds.images(idx), ds.labels(idx),
            kind=i.kind, units=i.units, class_names=i.class_names,
            pixel_spacing_m=i.pixel_spacing_m, source=f"{train} (study reference)",
        )  # fmt: skip
    metrics = evaluate_files(real, path, cfg, out / "eval" / "reference", extractor=extractor)
    return {"source": str(train), "n": n, **metrics["scalars"]}
