"""The downstream experiment over the amount of real data: where does generated noise pay?

A user with few interferograms of their own area asks whether a generator trained on them adds
anything to training their networks on the interferograms themselves. :func:`run_curve` answers
it by measurement. For each number of real training scenes ``n`` in ``counts``:

1. *replicates*: ``draws`` of them (made in turn: replicate 0 of every count, then replicate 1
   ...); replicate ``r`` takes the ``r``-th of the different subsets of
   ``n`` scenes of the training pool (drawn once, seeded) and the seed ``seeds[r % len(seeds)]``;
   where fewer subsets exist than replicates (``n`` = all the scenes), subsets repeat and only
   the seed differs, so every point of the curve holds ``draws`` replicates, whose spread is that
   of the scenes drawn, the generator's training and the task networks' seeds together;
2. for each replicate, the tiles of exactly those scenes (:func:`radardiff.data.scenes.write_scene_subset`),
   a diffusion model trained on them alone with the short recipe (the built-in ``tiny`` recipe,
   ``gen_steps`` steps, the replicate's seed; or the user's TOML), sampled for the generated
   noise, and the physics generator ``insar_noise`` fitted to them (the baseline);
3. the downstream experiment of :mod:`radardiff.evaluate.downstream` on those sets (physics,
   generated, real, real + generated) for every task, tested on the held-out scenes (the same
   test pairs for every replicate and count);
4. at the counts in ``knob_counts``, the generator's knobs as more training sets:
   ``ddpm`` (real + the same generator's noise sampled with DDPM, 1000 steps, instead of its
   default sampler) and ``x4`` (real + four times as much generated noise: one real noise tile
   for four generated ones in the pairs); and for every replicate the generated noise's
   diversity, its mean pairwise distance over the real tiles' (1: as varied as the real
   scenes), and its nearest-training distance against the held-out scenes'.

The result (:data:`RESULTS` in ``out``): every network's scores with its count and replicate,
per task, set and count the mean and standard deviation over replicates, the paired gain of each
set that adds generated noise over real alone, and the counts where that gain exceeds the
spread (the mean gain larger than both the standard deviation of the paired gains and that of
real alone). The split is recorded: ``scenes`` (no scene on both sides; dates may be shared, and
how many are is said) or ``dates`` (:func:`radardiff.data.scenes.date_disjoint`: the training
pool loses every scene that shares an acquisition date with a test scene).

Everything is kept under ``out/curve/nNN_rR/``; an interrupted curve resumes, and a finished
replicate is not made again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from radardiff._files import holding
from radardiff.config.io import atomic_write_text, config_to_dict, validate_config
from radardiff.data.dataset_file import DatasetFile
from radardiff.data.scenes import (
    acquisition_dates,
    date_disjoint,
    draw_scenes,
    read_scenes,
    write_scene_subset,
)
from radardiff.errors import ConfigError, DataError
from radardiff.evaluate.downstream import (
    ExperimentConfig,
    _jsonable,
    calibrate_physics,
    default_pairs,
    default_training,
    noise_file,
    run_experiment,
)
from radardiff.evaluate.measures.memorisation import mean_pairwise_distance, memorisation

RESULTS = "downstream.json"
KNOBS = {"ddpm": "real+generated (DDPM-1000)", "x4": "real+generated (4x generated)"}
SPLITS = ("scenes", "dates")
MIN_NOISE = 256


@dataclass(frozen=True)
class CurveConfig:
    """One curve (module docstring). ``pool``: the prepared training scenes (with their scene
    record); ``n_noise``: generated and physics tiles per replicate (0: as many as the real
    tiles, at least 256); ``sampling``: ``sampler``, ``steps``, ``precision``, ``device`` of the
    generated noise; ``recipe``: a TOML recipe for the generators (None: the built-in ``tiny``)
    with ``recipe_set`` overrides."""

    pool: str
    test_real: str
    counts: tuple[int, ...]
    draws: int = 3
    seeds: tuple[int, ...] = (0, 1, 2)
    recipe: str | None = None
    recipe_set: tuple[str, ...] = ()
    gen_steps: int = 600
    n_noise: int = 0
    split: str = "scenes"
    tasks: tuple[str, ...] = ("recovery", "detection", "unwrapping")
    n_train: int = 2000
    n_test: int = 2000
    pairs: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    masks: bool = True
    knobs: tuple[str, ...] = ()
    knob_counts: tuple[int, ...] | None = None  # None: the two smallest counts
    sampling: dict = field(default_factory=dict)
    draw_seed: int = 0


@dataclass(frozen=True)
class Replicate:
    count: int
    index: int
    scenes: tuple[str, ...]
    seed: int

    @property
    def tag(self) -> str:
        return f"n{self.count:02d}_r{self.index}"


@dataclass(frozen=True)
class Plan:
    """What the curve will train: its replicates, the training pool after the split, and the
    split's description."""

    replicates: list[Replicate]
    pool: list[str]
    split: dict
    knob_counts: tuple[int, ...]


def plan_curve(cfg: CurveConfig) -> Plan:
    """Check the request against the data and draw the replicates; nothing is written. Every
    refusal is one line naming the option."""
    if not cfg.counts:
        raise ConfigError("--scene-counts: give at least one count")
    if any(c < 1 for c in cfg.counts):
        raise ConfigError(f"--scene-counts: a count must be at least 1, got {min(cfg.counts)}")
    if cfg.draws < 1:
        raise ConfigError(f"--draws: at least 1, got {cfg.draws}")
    if not cfg.seeds:
        raise ConfigError("--seeds: at least one seed")
    if cfg.split not in SPLITS:
        raise ConfigError(f"--split: 'scenes' or 'dates', got '{cfg.split}'")
    unknown = [k for k in cfg.knobs if k not in KNOBS]
    if unknown:
        raise ConfigError(f"--knobs: unknown knob '{unknown[0]}'; expected {', '.join(KNOBS)}")
    if cfg.gen_steps < 1:
        raise ConfigError(f"--gen-steps: at least 1, got {cfg.gen_steps}")
    if Path(cfg.pool).resolve() == Path(cfg.test_real).resolve():
        raise DataError(f"{cfg.test_real}: the test scenes are the training scenes")
    for name, path in (("--train-real", cfg.pool), ("--test-real", cfg.test_real)):
        if DatasetFile(path).info.kind not in ("insar_unwrapped", "insar_noise"):
            raise DataError(f"{path} ({name}): unwrapped interferograms (rad) expected")
    train, test = read_scenes(cfg.pool), read_scenes(cfg.test_real)
    shared = sorted(set(train.names) & set(test.names))
    if shared:
        raise DataError(f"{cfg.test_real}: scenes also in {cfg.pool}: {', '.join(shared[:3])}")
    pool, split = _split(cfg, train.names, test.names)
    big = max(cfg.counts)
    if big > len(pool):
        where = ""
        if cfg.split == "dates":
            n = len(split["dropped"])
            where = f" left by --split dates ({n} share an acquisition date with a test scene)"
        raise ConfigError(
            f"--scene-counts: {big} scenes asked, but {cfg.pool} holds {len(pool)} training "
            f"scenes{where}"
        )
    counts = sorted(set(cfg.counts))
    knob_counts = tuple(counts[:2]) if cfg.knob_counts is None else tuple(cfg.knob_counts)
    if cfg.knobs and not set(knob_counts) <= set(counts):
        raise ConfigError(f"--knob-counts: {knob_counts} are not all among --scene-counts")
    subsets = {n: draw_scenes(pool, n, cfg.draws, cfg.draw_seed) for n in counts}
    # replicate 0 of every count first: an interrupted curve already spans all the counts
    reps = [Replicate(n, r, tuple(subsets[n][r % len(subsets[n])]), cfg.seeds[r % len(cfg.seeds)])
            for r in range(cfg.draws) for n in counts]  # fmt: skip
    return Plan(reps, pool, split, knob_counts if cfg.knobs else ())


def _split(cfg: CurveConfig, train: list[str], test: list[str]) -> tuple[list[str], dict]:
    if cfg.split == "dates":
        ds = date_disjoint(train, test)
        if not ds.kept:
            raise ConfigError(
                f"--split dates: every training scene of {cfg.pool} shares an acquisition date "
                f"with a test scene of {cfg.test_real} ({len(ds.test_dates)} test dates); no "
                "date-disjoint split exists for these scenes"
            )
        return ds.kept, {"kind": "dates", "kept": ds.kept, "dropped": ds.dropped,
                         "test_dates": ds.test_dates, "shared_dates": []}  # fmt: skip
    dated = all(acquisition_dates(n) for n in (*train, *test))
    test_dates = sorted({d for n in test for d in acquisition_dates(n)}) if dated else []
    shared = sorted({d for n in train for d in acquisition_dates(n)} & set(test_dates))
    return list(train), {"kind": "scenes", "kept": list(train), "dropped": [],
                         "test_dates": test_dates, "shared_dates": shared,
                         "dates_read": dated}  # fmt: skip


def generator_config(cfg: CurveConfig, real: Path, seed: int):
    """The run configuration of one replicate's generator."""
    from radardiff.config import load_config
    from radardiff.config.recipes import tiny_config

    sets = [f"data.train={real.resolve()}", f"train.steps={cfg.gen_steps}", f"train.seed={seed}",
            f"train.checkpoint_every={min(cfg.gen_steps, 500)}", f"train.val_every={cfg.gen_steps}",
            *cfg.recipe_set]  # fmt: skip
    if cfg.recipe is not None:
        return load_config(cfg.recipe, sets)
    from radardiff.config.io import apply_overrides

    return validate_config(apply_overrides(config_to_dict(tiny_config()), sets), "tiny")


def _generator(where: Path, run_cfg) -> Path:
    """The replicate's trained generator: trained now, resumed, or the finished one kept; a run
    there made with another configuration is refused."""
    from radardiff.config import load_config
    from radardiff.config.rundir import RunDir
    from radardiff.train import read_state, train

    run = RunDir(where)
    if (where / "config.toml").is_file():
        made = config_to_dict(load_config(where / "config.toml"))
        if made != config_to_dict(run_cfg):
            raise DataError(
                f"{where}: a generator made with another recipe is there; give another --out"
            )
        ckpt = run.latest_checkpoint()
        if ckpt is not None and read_state(ckpt).step >= run_cfg.train.steps:
            return where
        train(run_cfg, where, resume=ckpt is not None)
        return where
    train(run_cfg, where)
    return where


def _real_subset(cfg: CurveConfig, rep: Replicate, path: Path) -> Path:
    """The replicate's real tiles: written once; one of other scenes, or older than the pool
    (whose generator and networks learned on the old tiles), is refused."""
    if not path.is_file():
        return write_scene_subset(cfg.pool, list(rep.scenes), path)
    attrs = DatasetFile(path).attrs()
    if json.loads(attrs.get("items", "[]")) != list(rep.scenes) or \
            attrs.get("subset_of") != str(cfg.pool):  # fmt: skip
        raise DataError(f"{path}: the tiles of other scenes are there; give another --out")
    if path.stat().st_mtime_ns < Path(cfg.pool).stat().st_mtime_ns:
        raise DataError(f"{path}: made from an older {cfg.pool}; give another --out")
    return path


def _n_noise(cfg: CurveConfig, real: Path) -> int:
    return cfg.n_noise or max(MIN_NOISE, DatasetFile(real).info.n)


def _replicate(cfg: CurveConfig, rep: Replicate, knobs: bool, where: Path, say) -> dict:
    """One replicate: its real tiles, generator, noise sets and experiment."""
    where.mkdir(parents=True, exist_ok=True)
    clock = _Clock(where / "timing.json")
    real = _real_subset(cfg, rep, where / "real.h5")
    run_cfg = generator_config(cfg, real, rep.seed)
    say(f"{rep.tag}: generator on {len(rep.scenes)} scene(s), {cfg.gen_steps} steps")
    with clock("generator"):
        run = _generator(where / "generator", run_cfg)
    n = _n_noise(cfg, real)
    how = {k: cfg.sampling[k] for k in ("sampler", "steps", "precision", "device")
           if cfg.sampling.get(k) is not None}  # fmt: skip
    say(f"{rep.tag}: {n} generated and {n} physics noise tiles")
    with clock("sampling"):
        generated = noise_file(str(run), n, where / "noise_generated.h5", seed=rep.seed, **how)
    info = DatasetFile(real).info
    with clock("physics"):
        physics = noise_file("insar_noise", n, where / "noise_physics.h5", size=info.height,
                             pixel_spacing_m=info.pixel_spacing_m, seed=rep.seed,
                             physics_params=calibrate_physics(real))  # fmt: skip
    extra: dict[str, tuple[str, ...]] = {}
    noise = {"generated": generated}
    if knobs and "ddpm" in cfg.knobs:
        ddpm = {**how, "sampler": "ddpm", "steps": 1000}
        say(f"{rep.tag}: {n} generated noise tiles with DDPM-1000")
        with clock("sampling_ddpm"):
            noise["generated (DDPM-1000)"] = noise_file(str(run), n, where / "noise_ddpm.h5",
                                                        seed=rep.seed, **ddpm)  # fmt: skip
        extra[KNOBS["ddpm"]] = (str(real), str(noise["generated (DDPM-1000)"]))
    if knobs and "x4" in cfg.knobs:
        say(f"{rep.tag}: {4 * n} generated noise tiles (x4)")
        with clock("sampling_x4"):
            x4 = noise_file(str(run), 4 * n, where / "noise_generated_x4.h5", seed=rep.seed,
                            **how)  # fmt: skip
        extra[KNOBS["x4"]] = (str(real), *[str(x4)] * 4)
    ecfg = ExperimentConfig(
        train_real=str(real), test_real=cfg.test_real, generated=str(generated),
        physics=str(physics), seeds=(rep.seed,), n_train=cfg.n_train, n_test=cfg.n_test,
        tasks=cfg.tasks, pairs=cfg.pairs, training=cfg.training, masks=cfg.masks,
        run=str(run), extra_sets=extra,
    )  # fmt: skip
    with clock("tasks"):
        result = run_experiment(ecfg, where / "downstream",
                                on_progress=lambda tag: say(f"{rep.tag}: {tag}"),
                                device=cfg.sampling.get("device") or "cpu")  # fmt: skip
    clock.save()
    return {"rows": result["results"], "noise_realism": result.get("noise_realism", {}),
            "diversity": _diversity(real, cfg.test_real, noise), "n_noise": n,
            "real_tiles": info.n, "seconds": clock.seconds}  # fmt: skip


class _Clock:
    """Seconds of each stage of a replicate, kept in ``timing.json`` beside it: a stage that a
    resumed curve finds made (in under a fifth of the time it took) keeps the time it took; one
    that it partly makes again (a knob's networks added) adds the new time to it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.before = {}
        self.seconds: dict[str, float] = {}

    def __call__(self, stage: str):
        import contextlib
        import time

        @contextlib.contextmanager
        def timed():
            t0 = time.perf_counter()
            yield
            took = time.perf_counter() - t0
            old = self.before.get(stage)
            if old is None:
                self.seconds[stage] = round(took, 1)
            else:  # found made (kept), or partly or wholly made again (the times add up)
                self.seconds[stage] = old if took < 0.2 * old else round(old + took, 1)

        return timed()

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.seconds, indent=1) + "\n")


def _diversity(real: Path, test: str, noise: dict[str, Path]) -> dict:
    """Each generated set's mean pairwise distance over the real tiles', and its median
    nearest-training distance over the held-out scenes' (below 1: closer to the training tiles
    than new scenes are)."""
    x_real = DatasetFile(real).images()
    x_test = DatasetFile(test).images()
    rng = np.random.default_rng(7)
    if len(x_test) > 512:
        x_test = x_test[np.sort(rng.choice(len(x_test), 512, replace=False))]
    base = mean_pairwise_distance(x_real)
    out = {"real_pairwise_rad": base}
    for name, path in noise.items():
        x = DatasetFile(path).images()
        memo = memorisation(x[:512], x_real, x_test)
        out[name] = {"pairwise_ratio": mean_pairwise_distance(x) / base,
                     "nearest_training_ratio": memo.ratio}  # fmt: skip
    return out


@holding("out")
def run_curve(cfg: CurveConfig, out, on_progress: Callable[[str], None] | None = None) -> dict:
    """Run (or resume) the curve into the directory ``out``; returns the results, also written
    to ``out/downstream.json`` and ``out/downstream.md``."""
    plan = plan_curve(cfg)
    out = Path(out)
    say = on_progress or (lambda _msg: None)
    rows, reps = [], []
    for rep in plan.replicates:
        found = _replicate(cfg, rep, rep.count in plan.knob_counts,
                           out / "curve" / rep.tag, say)  # fmt: skip
        for row in found["rows"]:
            rows.append({"count": rep.count, "replicate": rep.index, **row})
        reps.append({"count": rep.count, "replicate": rep.index, "seed": rep.seed,
                     "scenes": list(rep.scenes), "diversity": found["diversity"],
                     "noise_realism": found["noise_realism"], "n_noise": found["n_noise"],
                     "real_tiles": found["real_tiles"], "seconds": found["seconds"]})  # fmt: skip
    stages = dict.fromkeys(k for r in reps for k in r["seconds"])
    minutes = {k: round(sum(r["seconds"].get(k, 0.0) for r in reps) / 60, 1) for k in stages}
    result = {"config": _describe(cfg, plan), "curve": summarise_curve(rows), "results": rows,
              "replicates": reps, "minutes": {**minutes, "total": round(sum(minutes.values()), 1)}}  # fmt: skip
    atomic_write_text(out / RESULTS, json.dumps(result, indent=1, default=_jsonable) + "\n")
    atomic_write_text(out / "downstream.md", markdown_curve(result))
    return result


def summarise_curve(rows: list[dict]) -> dict:
    """Per task: ``sets[set][count]`` = mean, std (over replicates, ddof 1) and n of the skill;
    ``gain[set][count]``: the paired difference of each set holding generated noise and real
    alone (same replicate), its mean, std and whether it ``adds`` (mean > 0 and above both the
    paired std and real's std); ``adds_up_to[set]``: the largest count up to which it adds at
    every count measured (None: at none)."""
    out: dict = {}
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        counts = sorted({r["count"] for r in mine})
        sets: dict = {}
        for name in dict.fromkeys(r["set"] for r in mine):
            sets[name] = {}
            for n in counts:
                v = [r["skill"] for r in mine if r["set"] == name and r["count"] == n]
                if v:
                    sets[name][n] = _spread(v)
        gain: dict = {}
        for name in sets:
            if name not in ("generated",) and not name.startswith("real+"):
                continue
            gain[name] = {}
            for n in counts:
                d = _paired(mine, name, n)
                if d is None:
                    continue
                g = _spread(d)
                real_std = sets["real"][n]["std"]
                g["adds"] = bool(g["mean"] > 0 and g["mean"] > max(g["std"], real_std))
                gain[name][n] = g
        adds_up_to = {}
        for name, per in gain.items():
            last = None
            for n in counts:
                if n not in per or not per[n]["adds"]:
                    break
                last = n
            adds_up_to[name] = last
        out[task] = {"counts": counts, "sets": sets, "gain": gain, "adds_up_to": adds_up_to,
                     "skill_name": _skill_name(task)}  # fmt: skip
    return out


def _paired(rows: list[dict], name: str, n: int) -> list[float] | None:
    by = {}
    for r in rows:
        if r["count"] == n and r["set"] in (name, "real"):
            by.setdefault(r["replicate"], {})[r["set"]] = r["skill"]
    d = [v[name] - v["real"] for v in by.values() if name in v and "real" in v]
    return d or None


def _spread(values: list[float]) -> dict:
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "n": int(v.size)}  # fmt: skip


def _describe(cfg: CurveConfig, plan: Plan) -> dict:
    d = asdict(cfg)
    d["pairs"] = {t: asdict(cfg.pairs.get(t) or default_pairs(t)) for t in cfg.tasks}
    d["training"] = {t: asdict(cfg.training.get(t) or default_training(t)) for t in cfg.tasks}
    d["split"] = plan.split
    d["knob_counts"] = list(plan.knob_counts)
    d["generator_recipe"] = cfg.recipe or "tiny (built in)"
    return d


def split_sentence(split: dict) -> str:
    """Which split a table used, in words."""
    if split["kind"] == "dates":
        return (f"split: dates (no training scene shares an acquisition date with a test scene; "
                f"{len(split['dropped'])} training scene(s) left out for that, "
                f"{len(split['kept'])} kept)")  # fmt: skip
    if not split.get("dates_read", True):
        return "split: scenes (no scene on both sides; dates not read from the scene names)"
    return (f"split: scenes (no scene on both sides; {len(split['shared_dates'])} of the "
            f"{len(split['test_dates'])} test dates are also training dates)")  # fmt: skip


def _at(per: dict, n: int):
    """A count's entry as stored (int keys in memory, str after a JSON round trip)."""
    return per.get(n, per.get(str(n)))


def curve_tables(result: dict) -> list[tuple[str, list[str], list[list[str]], str]]:
    """The curve's tables as (title, header, rows, note after): per task the skill per count
    and set (mean ± std over replicates) and the gains over real alone; the generated noise's
    diversity per replicate."""
    tables = []
    for task, s in result["curve"].items():
        head = list(s["sets"])
        rows = [[str(n)] + [_ms(_at(s["sets"][name], n)) for name in head] for n in s["counts"]]
        tables.append((f"{task} ({s.get('skill_name', _skill_name(task))})",
                       ["real scenes", *head], rows, ""))  # fmt: skip
        gains = list(s["gain"])
        rows = [[str(n)] + [_gain(_at(s["gain"][name], n)) for name in gains]
                for n in s["counts"]]  # fmt: skip
        note = "adds skill beyond the spread up to: " + ", ".join(
            f"{k}: {v if v is not None else 'no count'}" for k, v in s["adds_up_to"].items()
        )
        tables.append((f"{task}: gain over real alone (same replicate; * beyond the spread)",
                       ["real scenes", *gains], rows, note))  # fmt: skip
    div = [r for r in result.get("replicates", []) if r.get("diversity")]
    if div:
        names = list(
            dict.fromkeys(k for r in div for k in r["diversity"] if k != "real_pairwise_rad")
        )
        head = ["real scenes", "replicate", "real tiles", "real pairwise (rad)"]
        for k in names:
            head += [f"{k}: pairwise / real's", f"{k}: nearest-training / held-out's"]
        rows = []
        for r in div:
            d = r["diversity"]
            row = [str(r["count"]), str(r["replicate"]), str(r.get("real_tiles", "")),
                   _f(d.get("real_pairwise_rad"))]  # fmt: skip
            for k in names:
                g = d.get(k, {})
                row += [_f(g.get("pairwise_ratio")), _f(g.get("nearest_training_ratio"))]
            rows.append(row)
        tables.append(("generated noise against each replicate's real tiles", head, rows,
                       "pairwise: mean distance between two tiles (means removed) over the real "
                       "tiles'; nearest-training: median distance to the nearest real training "
                       "tile over that of the held-out scenes' tiles (below 1: closer to the "
                       "training tiles than new scenes are)"))  # fmt: skip
    return tables


def describe_curve(result: dict) -> str:
    cfg = result["config"]
    return (f"{split_sentence(cfg['split'])}; generator: {cfg['generator_recipe']}, "
            f"{cfg['gen_steps']} steps per replicate; {cfg['draws']} replicates per count; "
            f"{cfg['n_train']} training pairs per set, tested on {cfg['n_test']} pairs of "
            f"{cfg['test_real']}.")  # fmt: skip


def markdown_curve(result: dict) -> str:
    """The curve's tables (:func:`curve_tables`) in Markdown."""
    lines = ["## Downstream skill against the number of real training scenes", "",
             describe_curve(result), "",
             "![skill against the number of real scenes](curve.png)", ""]  # fmt: skip
    for title, head, rows, note in curve_tables(result):
        lines += [f"### {title}", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines += ["", note, ""] if note else [""]
    return "\n".join(lines) + "\n"


def _ms(v) -> str:
    return "" if v is None else f"{v['mean']:.3f} ± {v['std']:.3f}"


def _gain(g) -> str:
    return "" if g is None else f"{g['mean']:+.3f} ± {g['std']:.3f}{' *' if g['adds'] else ''}"


def _skill_name(task: str) -> str:
    return {"recovery": "skill = 1 - RMSE / signal RMS", "detection": "ROC AUC",
            "unwrapping": "fraction of pixels within pi"}.get(task, "skill")  # fmt: skip


def _f(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) and math.isfinite(v) else "-"
