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
from radardiff.errors import ConfigError, RunDirError
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
    run_dir, checkpoint : a trained run (EMA weights), a step or checkpoint name of it (latest).
    samplers, steps_list : variants ``NAME[:key=value...]`` (:func:`parse_sampler`), step counts.
    n, seed : samples per row: the same seeds 0..n-1 of ``seed`` in every row.
    real : the real dataset file the samples are compared with.
    out_dir : default ``RUN/study``: samples in ``samples/``, metrics in ``eval/SAMPLER_STEPS``.
    eval_cfg, extractor : metrics and settings (default: the run's ``evaluate`` section); a
        feature extractor (path or object) for FID/KID/precision/recall, optional.
    on_row : called with each row as soon as it is complete.
    with_reference, floor : also evaluate ``n`` images of ``floor`` (default: the run's training
        file) against ``real``: the ``reference`` entry, what a perfect sampler scores at ``n``.
    students : distilled runs of this run: a row each, with its own default sampler and steps.
    batch_size, device, precision, compile, conv_kernels : as ``radardiff sample`` takes them;
        networks are compiled before the first row is timed, for the study's batch size.

    Returns
    -------
    StudyResult
        The rows (see the module docstring) and the paths of ``samplers.json`` / ``.csv``.
    """
    variants = _variants(samplers, steps_list, n)
    run = load_run(run_dir, device=device, checkpoint=checkpoint)
    if out_dir is None and run.exported:
        raise RunDirError(f"{run_dir}: an exported (read-only) model; give the study's --out")
    out = Path(out_dir) if out_dir is not None else run.run.root / "study"
    cfg = eval_cfg or run.cfg.evaluate
    st = _Study(run, real, cfg, _loaded_extractor(extractor), out, n, seed, batch_size)
    how = {"seed": seed, "batch_size": batch_size, "mixed_precision": precision,
           "compile": compile, "conv_kernels": conv_kernels}  # fmt: skip
    requests, student_runs = _requests(st, variants, steps_list, students, how, device)
    _warm_up(run, requests[0][2], student_runs)
    rows = _rows(st, requests, on_row)
    floor_file = _floor_file(run, floor)
    reference = _reference(st, floor_file) if with_reference else None
    settings = _settings(st, how, device, variants, steps_list, student_runs, floor_file)
    return _write_study(out, rows, settings, reference)


@dataclass
class _Study:
    """What every row of one study shares."""

    run: LoadedRun
    real: str | os.PathLike
    cfg: EvalConfig
    extractor: Any
    out: Path
    n: int
    seed: int
    batch_size: int


def _variants(samplers: Sequence[str], steps_list: Sequence[int], n: int) -> list[SamplerVariant]:
    """The sampler variants, parsed once the request as a whole has been checked."""
    if not samplers or not steps_list:
        raise ConfigError("study: give at least one sampler and one step count")
    if n < 2:
        raise ConfigError(f"study: --n must be at least 2 (metrics need 2 samples), got {n}")
    bad = [s for s in steps_list if s < 1]
    if bad:
        raise ConfigError(f"study: --steps must be positive, got {bad[0]}")
    return [parse_sampler(s) for s in samplers]


def _loaded_extractor(extractor: Any) -> Any:
    if extractor is not None and not hasattr(extractor, "features"):
        from radardiff.evaluate.extractor import load_extractor

        return load_extractor(extractor)
    return extractor


def _requests(st: _Study, variants, steps_list, students, how: dict, device):
    """Every ``(variant or student, steps, options)`` of the study, and the loaded students;
    each request checked against its sampler before the first long generation."""
    requests = [(v, int(k), _options(v, st.n, k, how)) for v in variants for k in steps_list]
    student_runs = [load_run(s, device=device) for s in students]
    for student in student_runs:
        sc = student.cfg.sample
        requests.append((student, sc.steps, request(sc, st.n, **how)))
    for who, _, opts in requests:
        diffusion = (who if isinstance(who, LoadedRun) else st.run).cfg.diffusion
        make_sampler(opts.sampler, diffusion, opts.steps, opts.sampler_options)
    return requests, student_runs


def _floor_file(run: LoadedRun, floor: str | os.PathLike | None) -> Path | None:
    """Where the reference images come from: ``floor``, else the run's training file."""
    if floor:
        return Path(floor)
    return Path(run.cfg.data.train) if run.cfg.data.train else None


def _rows(st: _Study, requests, on_row) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for who, k, opts in requests:
        rows.append(_row(st, who, k, opts))
        if on_row is not None:
            on_row(rows[-1])
    return rows


def _row(st: _Study, who, k: int, opts: SampleOptions) -> dict[str, Any]:
    """Generate, time and evaluate one request: its row of the table."""
    student = who if isinstance(who, LoadedRun) else None
    text = _student_label(student) if student else who.text
    tag = _tag(text, k)
    path = st.out / "samples" / f"{tag}.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear(path)
    wall, calls, result = _timed_generate(student or st.run, opts, path)
    where = st.out / "eval" / tag
    metrics = evaluate_files(st.real, result.path, st.cfg, where, extractor=st.extractor)
    how = (
        {"name": opts.sampler, "options": opts.sampler_options, "clip": opts.clip,
         "student": str(student.run.root)} if student
        else {"name": who.name, "options": who.options, "clip": who.clip}
    )  # fmt: skip
    n = st.n
    return {
        "sampler": text, **how, "steps": k, "n": n, "wall_s": wall, "s_per_sample": wall / n,
        "nfe": calls / -(-n // st.batch_size), **metrics["scalars"],
        "samples": str(result.path), "metrics": str(where / "metrics.json"),
    }  # fmt: skip


def _settings(st: _Study, how: dict, device, variants, steps_list, students, floor_file) -> dict:
    """What every number of the study stands on (the module docstring's ``settings``)."""
    run = st.run
    return {
        "run_dir": str(run.run.root), "run_name": run.cfg.name, "checkpoint": run.checkpoint_name,
        **training_length(run.run, _step_of(run.checkpoint_name)), "real": str(st.real),
        "floor": None if floor_file is None else str(floor_file), "n": st.n, "seed": st.seed,
        "batch_size": st.batch_size, "device": str(device), "precision": how["mixed_precision"],
        "compile": how["compile"], "conv_kernels": how["conv_kernels"],
        "samplers": [v.text for v in variants], "steps": [int(k) for k in steps_list],
        "students": [str(s.run.root) for s in students],
        "metrics": list(st.cfg.metrics), "feature_extractor": getattr(st.extractor, "name", None),
    }  # fmt: skip


def _write_study(out: Path, rows: list, settings: dict, reference: dict | None) -> StudyResult:
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


def _step_of(name: str) -> int:
    try:
        return int(name.split("_")[-1])
    except ValueError:
        return 0


def _reference(st: _Study, train: Path | None) -> dict[str, Any] | None:
    """Scalars of ``n`` images of ``train`` (the floor file) against ``real``: what a perfect
    sampler would score with ``n`` samples (the finite-sample floor of every metric); None
    without such a file."""
    n = st.n
    if train is None or not train.is_file():
        return None
    with DatasetFile(train) as ds:
        if len(ds) < n:
            return None
        idx = np.sort(np.random.default_rng(st.seed).choice(len(ds), n, replace=False))
        i = ds.info
        path = write_dataset(
            st.out / "samples" / "reference_floor.h5", ds.images(idx), ds.labels(idx),
            kind=i.kind, units=i.units, class_names=i.class_names,
            pixel_spacing_m=i.pixel_spacing_m, source=f"{train} (study reference)",
        )  # fmt: skip
    where = st.out / "eval" / "reference"
    metrics = evaluate_files(st.real, path, st.cfg, where, extractor=st.extractor)
    return {"source": str(train), "n": n, **metrics["scalars"]}
