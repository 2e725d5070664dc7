"""The downstream experiment over the amount of real data (radardiff.evaluate.curve)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from radardiff.data.dataset_file import DatasetFile, DatasetWriter
from radardiff.data.scenes import read_scenes
from radardiff.data.synth import synthesize
from radardiff.errors import ConfigError, DataError
from radardiff.evaluate.curve import CurveConfig, plan_curve, run_curve, summarise_curve
from radardiff.evaluate.downstream import default_training

SP = 100.0
TRAIN = ["a_20200101_20200113", "b_20200113_20200125", "c_20200206_20200218",
         "d_20200218_20200301"]  # fmt: skip
TEST = ["t_20200125_20200206", "u_20200301_20200313"]


def _scenes(path: Path, names: list[str], per: int, seed: int) -> Path:
    """A prepared-like file: ``per`` 16 px noise tiles for each scene, with its scene record."""
    x = DatasetFile(synthesize("insar_noise", per * len(names), 16, path.with_suffix(".src.h5"),
                               seed=seed, pixel_spacing_m=SP)).images()  # fmt: skip
    with DatasetWriter(path, (1, 16, 16), kind="insar_unwrapped", units="rad",
                       pixel_spacing_m=SP, extras={"scene": ((), "<i4")},
                       attrs={"items": json.dumps([f"{n}.tif" for n in names])}) as w:  # fmt: skip
        w.append(x, None, scene=np.repeat(np.arange(len(names)), per).astype(np.int32))
    return path


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("scenes")
    return _scenes(d / "train.h5", TRAIN, 12, 0), _scenes(d / "test.h5", TEST, 12, 1)


def _cfg(pool, **given) -> CurveConfig:
    return CurveConfig(pool=str(pool[0]), test_real=str(pool[1]), **{"counts": (1, 4), **given})


def test_plan_draws_replicates_and_refuses_bad_requests(pool):
    plan = plan_curve(_cfg(pool, draws=3, seeds=(0, 1, 2)))
    one = [r for r in plan.replicates if r.count == 1]
    every = [r for r in plan.replicates if r.count == 4]
    assert len({r.scenes for r in one}) == 3 and [r.seed for r in one] == [0, 1, 2]
    # all the scenes: one subset, the replicates differ by their seed
    assert {r.scenes for r in every} == {tuple(f"{n}.tif" for n in TRAIN)}
    assert [r.seed for r in every] == [0, 1, 2]
    # 3 of the 6 test dates are training dates: the date split keeps only scene a
    assert plan.split["kind"] == "scenes" and len(plan.split["shared_dates"]) == 3
    dates = plan_curve(_cfg(pool, counts=(1,), split="dates"))
    assert dates.pool == ["a_20200101_20200113.tif"]
    assert dates.split["dropped"] == [f"{n}.tif" for n in TRAIN[1:]]
    bad = {
        "a count must be at least 1": {"counts": (0, 1)},
        "5 scenes asked, but .* holds 4 training scenes": {"counts": (5,)},
        "2 scenes asked, but .* 1 training scenes left by --split dates": {"counts": (2,),
                                                                          "split": "dates"},
        "unknown knob 'fast'": {"knobs": ("fast",)},
        "--knob-counts": {"knobs": ("x4",), "knob_counts": (3,)},
    }  # fmt: skip
    for message, given in bad.items():
        with pytest.raises((ConfigError, DataError), match=message):
            plan_curve(_cfg(pool, **given))
    with pytest.raises(DataError, match="the test scenes are the training scenes"):
        plan_curve(CurveConfig(pool=str(pool[0]), test_real=str(pool[0]), counts=(1,)))


def test_summary_gains_and_where_they_exceed_the_spread():
    rows = []
    skill = {  # (count, replicate) -> (real, real+generated)
        (1, 0): (0.50, 0.60), (1, 1): (0.40, 0.52), (1, 2): (0.45, 0.56),
        (4, 0): (0.70, 0.71), (4, 1): (0.72, 0.70), (4, 2): (0.74, 0.75),
    }  # fmt: skip
    for (n, r), (real, both) in skill.items():
        for name, v in (("real", real), ("real+generated", both)):
            rows.append({"count": n, "replicate": r, "task": "recovery", "set": name, "skill": v})
    s = summarise_curve(rows)["recovery"]
    assert s["counts"] == [1, 4]
    assert s["sets"]["real"][1]["mean"] == pytest.approx(0.45)
    assert s["sets"]["real"][1]["std"] == pytest.approx(0.05)
    g1, g4 = s["gain"]["real+generated"][1], s["gain"]["real+generated"][4]
    assert g1["mean"] == pytest.approx(0.11) and g1["std"] == pytest.approx(0.01)
    assert g1["adds"] and not g4["adds"]  # 0.11 > 0.05; 0 at 4 scenes
    assert s["adds_up_to"] == {"real+generated": 1}


def _run(args, capsys) -> tuple[int, str]:
    from conftest import run_cli

    code, out, err = run_cli(args, capsys)
    return code, out + err


def test_curve_end_to_end_and_resume(pool, tmp_path, capsys):
    from conftest import tiny_run_config, write_config

    recipe = write_config(tmp_path / "recipe.toml", tiny_run_config("unused"))
    tasks = ("recovery", "detection", "unwrapping")
    train = {t: default_training(t, steps=4, val_every=2, batch_size=8, width=4, levels=2)
             for t in tasks}  # fmt: skip
    mine = tmp_path / "pool.h5"  # its own pool: the test re-dates it
    shutil.copy(pool[0], mine)
    pool = (mine, pool[1])
    cfg = _cfg(pool, counts=(1,), draws=1, seeds=(3,), recipe=str(recipe), gen_steps=2,
               n_noise=12, n_train=48, n_test=32, training=train, knobs=("x4",),
               sampling={"steps": 2})  # fmt: skip
    out = tmp_path / "curve"
    result = run_curve(cfg, out)
    rep = out / "curve" / "n01_r0"
    # the replicate's real tiles are its one scene's, its generator learned on them alone
    scene = read_scenes(rep / "real.h5")
    assert len(scene.names) == 1 and DatasetFile(rep / "real.h5").info.n == 12
    gen_cfg = (rep / "generator" / "config.toml").read_text()
    assert str((rep / "real.h5").resolve()) in gen_cfg and "seed = 3" in gen_cfg
    assert DatasetFile(rep / "noise_generated.h5").info.n == 12
    assert DatasetFile(rep / "noise_generated_x4.h5").info.n == 48
    sets = ["physics", "generated", "real", "real+generated", "real+generated (4x generated)"]
    for task in tasks:
        s = result["curve"][task]
        assert list(s["sets"]) == sets and s["counts"] == [1]
        real = [r["skill"] for r in result["results"] if r["task"] == task and r["set"] == "real"]
        assert s["sets"]["real"][1]["mean"] == pytest.approx(real[0])
    unw = [r for r in result["results"] if r["task"] == "unwrapping"]
    assert all(0 <= r["within_pi"] <= 1 and r["rmse"] > 0 for r in unw)
    x4 = json.loads(DatasetFile(rep / "downstream" / "pairs" /
                                "recovery_real_generated__4x_generated__s3.h5").attrs()["pairs"])  # fmt: skip
    assert x4["noise"] == [str(rep / "real.h5")] + [str(rep / "noise_generated_x4.h5")] * 4
    div = result["replicates"][0]["diversity"]["generated"]
    assert div["pairwise_ratio"] > 0 and div["nearest_training_ratio"] > 0
    saved = json.loads((out / "downstream.json").read_text())
    assert saved["config"]["split"]["kind"] == "scenes" and len(saved["results"]) == 15
    md = (out / "downstream.md").read_text()
    assert "split: scenes" in md and "### unwrapping" in md
    # resume: the generator and the networks are not made again
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    again = run_curve(cfg, out)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")} == stamps
    assert again["results"] == result["results"]
    # another recipe in the same folder is refused, not mixed in
    with pytest.raises(DataError, match="another recipe"):
        run_curve(_cfg(pool, counts=(1,), draws=1, seeds=(3,), recipe=str(recipe), gen_steps=3,
                       n_noise=12, n_train=48, n_test=32, training=train), out)  # fmt: skip
    # a pool made again after the replicate's tiles were taken from it is refused
    os.utime(mine, ns=(time.time_ns() + 10**9,) * 2)
    with pytest.raises(DataError, match="made from an older"):
        run_curve(cfg, out)
    # the report of the folder draws the curve
    code, text = _run(["report", out], capsys)
    assert code == 0, text
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "gain over real alone" in (out / "report" / "index.html").read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scene-counts", "0"], "a count must be at least 1"),
        (["--scene-counts", "9"], "9 scenes asked"),
        (["--scene-counts", "2", "--split", "dates"], "left by --split dates"),
        (["--scene-counts", "1", "--run", "x"], "no --run"),
        (["--n-noise", "0", "--generated", "x"], "--n-noise: at least 1"),
    ],
)
def test_cli_refuses_in_one_line_and_writes_nothing(pool, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    code, text = _run(["downstream", "experiment", "--train-real", pool[0], "--test-real",
                       pool[1], "--out", out, *args], capsys)  # fmt: skip
    errors = [ln for ln in text.splitlines() if ln.startswith("radardiff: error:")]
    assert code != 0 and len(errors) == 1 and message in errors[0], text
    assert not out.exists()
