"""Reference tasks (train, save, score) and the train-on-generated / test-on-real experiment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from radardiff.data.dataset_file import DatasetFile, write_dataset
from radardiff.data.pairs import NoiseSource, PairParams, write_pairs
from radardiff.data.synth import synthesize
from radardiff.errors import DataError
from radardiff.evaluate.downstream import (
    ExperimentConfig,
    calibrate_physics,
    run_experiment,
    score_saved,
    score_task,
)
from radardiff.evaluate.measures.skill import unwrapping_score
from radardiff.evaluate.measures.spectra import fit_powerlaw_white
from radardiff.evaluate.tasks import TaskConfig, load_pairs, predict, split, train_task
from radardiff.models.downstream import load_task

SP = 100.0


def _pairs(path, noise: list[Path], n, seed=0, **params) -> Path:
    src = NoiseSource([DatasetFile(p) for p in noise], SP)
    return write_pairs(src, n, path, seed, PairParams(**params))


@pytest.fixture(scope="module")
def noise(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("noise")
    quiet = {"turb_std": 0.2, "ramp_rad": 0.0, "strat_k": 0.0, "noise_std": 0.02}
    return {
        name: synthesize(
            "insar_noise", n, 16, d / f"{name}.h5", seed=seed, params=quiet, pixel_spacing_m=SP
        )  # fmt: skip
        for name, n, seed in (("train", 48, 0), ("test", 32, 1), ("gen", 48, 2), ("phys", 48, 3))
    }


def test_recovery_network_learns_the_deformation(noise, tmp_path):
    """Deformation of 5-20 mm (1-4.5 rad) on 0.2 rad noise: 150 steps recover most of it, far
    below the 'no deformation' error (fraction 1)."""
    tr = _pairs(tmp_path / "tr.h5", [noise["train"]], 256, peak_los_m=(0.005, 0.02))
    te = _pairs(tmp_path / "te.h5", [noise["test"]], 64, seed=9, peak_los_m=(0.005, 0.02))
    cfg = TaskConfig(task="recovery", steps=150, batch_size=16, val_every=50, width=8, levels=2)
    result = train_task(load_pairs(tr, "recovery"), cfg, tmp_path / "net")
    score = score_saved(tmp_path / "net", te)
    assert score["rmse_fraction"] < 0.5 and score["skill"] == pytest.approx(
        1 - score["rmse_fraction"]
    )
    assert score["units"] == "rad" and result.meta["best_step"] in (50, 100, 150)


def test_detection_network_separates_and_keeps_its_threshold(noise, tmp_path):
    kw = {"label": "presence", "wrap": True, "peak_los_m": (0.002, 0.05), "threshold_m": 0.01}
    tr = _pairs(tmp_path / "tr.h5", [noise["train"]], 256, **kw)
    te = _pairs(tmp_path / "te.h5", [noise["test"]], 128, seed=9, **kw)
    cfg = TaskConfig(task="detection", steps=120, batch_size=32, val_every=40, width=8, levels=2)
    result = train_task(load_pairs(tr, "detection"), cfg, tmp_path / "net")
    score = score_saved(tmp_path / "net", te)
    assert score["auc"] > 0.8 and score["threshold"] == result.meta["threshold"]
    assert score["n_present"] + score["n_absent"] == 128


def test_unwrapping_network_unwraps_fringes(noise, tmp_path):
    """Sources of 20-60 mm (4.5-13.4 rad, up to two fringes) on 0.2 rad noise, wrapped: the
    network's fields are within pi of the truth far more often than the wrapped input is."""
    kw = {"label": "unwrapped", "wrap": True, "peak_los_m": (0.02, 0.06)}
    tr = _pairs(tmp_path / "tr.h5", [noise["train"]], 256, **kw)
    te = _pairs(tmp_path / "te.h5", [noise["test"]], 64, seed=9, **kw)
    cfg = TaskConfig(task="unwrapping", steps=150, batch_size=16, val_every=50, width=8, levels=2)
    result = train_task(load_pairs(tr, "unwrapping"), cfg, tmp_path / "net")
    score = score_saved(tmp_path / "net", te)
    test = load_pairs(te, "unwrapping")
    as_is = unwrapping_score(test.inputs, test.targets, test.valid)
    assert score["within_pi"] > as_is.within_pi + 0.1 and score["rmse"] < 0.6 * as_is.rmse
    assert result.meta["scale"] > 1.0  # the truth's spread, not the wrapped input's
    with pytest.raises(DataError, match="no unwrapped truth"):
        load_pairs(_pairs(tmp_path / "rec.h5", [noise["train"]], 8), "unwrapping")


def test_unwrapping_loss_ignores_each_fields_constant():
    from radardiff.evaluate.tasks import _loss

    g = torch.Generator().manual_seed(0)
    out, target = torch.randn(3, 1, 8, 8, generator=g), torch.randn(3, 1, 8, 8, generator=g)
    valid = torch.ones_like(out, dtype=torch.bool)
    valid[0, 0, :4] = False
    target = torch.where(valid, target, torch.nan)
    shift = torch.tensor([5.0, -2.0, 40.0]).view(3, 1, 1, 1)
    a = _loss("unwrapping", out, target, valid)
    assert torch.isfinite(a) and torch.allclose(a, _loss("unwrapping", out + shift, target, valid))
    assert _loss("unwrapping", target.nan_to_num() + shift, target, valid) < 1e-10


def test_training_is_seeded_and_saving_round_trips(noise, tmp_path):
    tr = _pairs(tmp_path / "tr.h5", [noise["train"]], 64)
    p = load_pairs(tr, "recovery")
    cfg = TaskConfig(task="recovery", steps=6, batch_size=8, val_every=3, width=4, levels=2)
    a = train_task(p, cfg, tmp_path / "a")
    b = train_task(p, cfg)
    c = train_task(p, TaskConfig(**{**cfg.__dict__, "seed": 1}))
    for k, v in a.net.state_dict().items():
        assert torch.equal(v, b.net.state_dict()[k])
    assert any(not torch.equal(v, c.net.state_dict()[k]) for k, v in a.net.state_dict().items())
    net, meta = load_task(tmp_path / "a")
    np.testing.assert_array_equal(
        predict(net, meta, p.inputs[:5]), predict(a.net, a.meta, p.inputs[:5])
    )


def test_task_inputs_refused(noise, tmp_path):
    with pytest.raises(DataError, match="not a pairs file"):
        load_pairs(noise["train"], "recovery")
    rec = _pairs(tmp_path / "rec.h5", [noise["train"]], 8)
    with pytest.raises(DataError, match="no presence labels"):
        load_pairs(rec, "detection")
    with pytest.raises(DataError, match="empty training or validation"):
        split(8, 0.01, 0)
    with pytest.raises(DataError, match="for one class"):
        split(8, 0.25, 0, np.array([0] * 7 + [1]))
    tr, va = split(40, 0.25, 0, np.array([0] * 32 + [1] * 8))
    assert (va >= 32).sum() == 2 and va.size == 10 and np.intersect1d(tr, va).size == 0
    det = _pairs(tmp_path / "det.h5", [noise["train"]], 64, label="presence", wrap=True)
    cfg = TaskConfig(task="detection", steps=2, batch_size=4, val_every=1, width=4, levels=2)
    net = train_task(load_pairs(det, "detection"), cfg)
    with pytest.raises(DataError, match="wrapped inputs, but the network"):
        score_task(net.net, {**net.meta, "task": "recovery"}, rec)


def test_physics_calibration_recovers_the_generator():
    k = np.arange(1, 17) / 32
    beta, white = fit_powerlaw_white(k, 0.3 * k**-2.5 + 1.0)
    assert beta == pytest.approx(2.5, abs=0.05) and white == pytest.approx(1.0, rel=0.05)
    beta, white = fit_powerlaw_white(k, 0.3 * k**-3.0)
    assert beta == pytest.approx(3.0, abs=0.05) and white < 0.01 * 0.3 * 2**3


def test_physics_calibration_on_generated_tiles(tmp_path):
    truth = {"beta": 3.0, "turb_std": 0.8, "turb_std_spread": 0.2, "ramp_rad": 0.0,
             "strat_k": 0.0, "noise_std": 0.1}  # fmt: skip
    path = synthesize("insar_noise", 256, 32, tmp_path / "n.h5", seed=0, params=truth)
    fit = calibrate_physics(path)
    assert fit["beta"] == pytest.approx(3.0, abs=0.3)
    assert fit["noise_std"] == pytest.approx(0.1, abs=0.03)
    assert fit["turb_std"] == pytest.approx(0.8, rel=0.2)
    assert fit["turb_std_spread"] == pytest.approx(0.2, abs=0.06)


def _cfg(noise, **kw) -> ExperimentConfig:
    from radardiff.evaluate.downstream import default_pairs, default_training

    tiny = {"steps": 4, "batch_size": 8, "val_every": 2, "width": 4, "levels": 2,
            "val_fraction": 0.25}  # fmt: skip
    base = dict(
        train_real=str(noise["train"]), test_real=str(noise["test"]), generated=str(noise["gen"]),
        physics=str(noise["phys"]), seeds=(0, 1), n_train=64, n_test=40,
        pairs={t: default_pairs(t) for t in ("recovery", "detection")},
        training={t: default_training(t, **tiny) for t in ("recovery", "detection")},
    )  # fmt: skip
    return ExperimentConfig(**{**base, **kw})


def test_experiment_table_and_resume(noise, tmp_path):
    out = tmp_path / "exp"
    result = run_experiment(_cfg(noise), out)
    rows = result["results"]
    assert len(rows) == 2 * 4 * 2
    for task in ("recovery", "detection"):
        sets = result["summary"][task]["sets"]
        assert list(sets) == ["physics", "generated", "real", "real+generated"]
        mine = [r["skill"] for r in rows if r["task"] == task and r["set"] == "real"]
        assert sets["real"]["skill"]["mean"] == pytest.approx(np.mean(mine))
        assert sets["real"]["skill"]["std"] == pytest.approx(np.std(mine, ddof=1))
        crit = result["summary"][task]["criteria"]
        skill = {k: v["skill"]["mean"] for k, v in sets.items()}
        assert crit["generated_beats_physics"] == (skill["generated"] > skill["physics"])
    saved = json.loads((out / "downstream.json").read_text())
    assert saved["results"] == json.loads(json.dumps(rows))
    assert "| real+generated |" in (out / "downstream.md").read_text()
    # the noise sets' radar statistics against the training tiles, the held-out scenes for scale
    realism = result["noise_realism"]
    assert list(realism) == ["physics", "generated", "held-out scenes"]
    assert all(0 <= v["semivariogram_rel_error"] < 10 for v in realism.values())
    assert "| held-out scenes |" in (out / "downstream.md").read_text()
    # the mixed set draws from both noise files, the test pairs from the test scenes only
    mixed = json.loads(
        DatasetFile(out / "pairs" / "recovery_real_generated_s0.h5").attrs()["pairs"]
    )
    assert mixed["noise"] == [str(noise["train"]), str(noise["gen"])]
    test = json.loads(DatasetFile(out / "pairs" / "recovery_test.h5").attrs()["pairs"])
    assert test["noise"] == [str(noise["test"])] and test["masks"] is None
    # resume: nothing is trained or made again, and the scores are the same
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    again = run_experiment(_cfg(noise), out)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")} == stamps
    assert again["results"] == rows


def test_experiment_refuses_leaks(noise, tmp_path):
    with pytest.raises(DataError, match="the test scenes are the training scenes"):
        run_experiment(_cfg(noise, test_real=str(noise["train"])), tmp_path / "x")
    a = write_dataset(tmp_path / "a.h5", np.zeros((4, 1, 16, 16), np.float32),
                      kind="insar_unwrapped", units="rad", pixel_spacing_m=SP,
                      attrs={"items": json.dumps(["s1.tif", "s2.tif"])})  # fmt: skip
    b = write_dataset(tmp_path / "b.h5", np.zeros((4, 1, 16, 16), np.float32),
                      kind="insar_unwrapped", units="rad", pixel_spacing_m=SP,
                      attrs={"items": json.dumps(["s2.tif", "s3.tif"])})  # fmt: skip
    with pytest.raises(DataError, match="scenes also in .*s2.tif"):
        run_experiment(_cfg(noise, train_real=str(a), test_real=str(b)), tmp_path / "x")
    with pytest.raises(DataError, match="at least one seed"):
        run_experiment(_cfg(noise, seeds=()), tmp_path / "x")
    assert not (tmp_path / "x" / "downstream.json").exists()


def test_criteria_count_detection_skill_above_chance():
    from radardiff.evaluate.measures.skill import skill_criteria

    det = skill_criteria(
        {"physics": 0.6, "generated": 0.87, "real": 0.9, "real+generated": 0.95}, 0.5
    )
    assert det["generated_over_real"] == pytest.approx(0.87 / 0.9)  # 0.967: flattering
    assert det["generated_over_real_above_chance"] == pytest.approx(0.37 / 0.4)
    assert det["generated_reaches_90pct_of_real"] is True
    assert (
        skill_criteria({"generated": 0.85, "real": 0.9}, 0.5)["generated_reaches_90pct_of_real"]
        is False
    )
    rec = skill_criteria({"physics": 0.5, "generated": 0.4, "real": 0.5, "real+generated": 0.45})
    assert rec == {"generated_over_real": 0.8, "generated_reaches_90pct_of_real": False,
                   "generated_beats_physics": False, "real_plus_generated_beats_real": False}  # fmt: skip


def test_experiment_retrains_what_changed(noise, tmp_path):
    """A saved network is reused only for the same pairs and training config."""
    from radardiff.evaluate.downstream import default_training

    out = tmp_path / "exp"
    cfg = _cfg(noise, tasks=("recovery",), seeds=(0,))
    run_experiment(cfg, out)
    net = out / "nets" / "recovery_real_s0" / "model.safetensors"
    stamp = net.stat().st_mtime_ns
    longer = dict(cfg.training)
    longer["recovery"] = default_training("recovery", steps=5, batch_size=8, val_every=2,
                                          width=4, levels=2, val_fraction=0.25)  # fmt: skip
    run_experiment(_cfg(noise, tasks=("recovery",), seeds=(0,), training=longer), out)
    assert net.stat().st_mtime_ns != stamp
    stamp = net.stat().st_mtime_ns
    run_experiment(_cfg(noise, tasks=("recovery",), seeds=(0,), training=longer, n_train=72), out)
    assert net.stat().st_mtime_ns != stamp


def test_experiment_remakes_pairs_of_remade_noise(noise, tmp_path):
    import os
    import shutil

    gen = tmp_path / "gen.h5"
    shutil.copy(noise["gen"], gen)
    cfg = _cfg(noise, tasks=("recovery",), seeds=(0,), generated=str(gen))
    run_experiment(cfg, tmp_path / "exp")
    pairs = tmp_path / "exp" / "pairs" / "recovery_generated_s0.h5"
    stamp = pairs.stat().st_mtime_ns
    run_experiment(cfg, tmp_path / "exp")
    assert pairs.stat().st_mtime_ns == stamp
    os.utime(gen, ns=(stamp + 10**9, stamp + 10**9))  # the noise was made again
    net = tmp_path / "exp" / "nets" / "recovery_generated_s0" / "model.safetensors"
    net_stamp = net.stat().st_mtime_ns
    run_experiment(cfg, tmp_path / "exp")
    assert pairs.stat().st_mtime_ns != stamp and net.stat().st_mtime_ns != net_stamp


def test_run_noise_is_sampled_once(trained_run, tmp_path):
    """A run as noise source: sampled into the store, and a complete file of the same request
    is kept as it is (not sampled again)."""
    from radardiff.evaluate.downstream import noise_file

    store = tmp_path / "gen.h5"
    path = noise_file(str(trained_run), 6, store, sampler="ddim", steps=2)
    f = DatasetFile(path)
    assert f.info.n == 6 and f.attrs()["sampler"] == "ddim"
    stamp = store.stat().st_mtime_ns
    noise_file(str(trained_run), 6, store, sampler="ddim", steps=2)
    assert store.stat().st_mtime_ns == stamp
    noise_file(str(trained_run), 6, store, sampler="ddim", steps=3)  # another request
    assert store.stat().st_mtime_ns != stamp


def test_run_noise_compiled_is_the_eager_noise(trained_run, tmp_path, monkeypatch):
    """``downstream experiment --compile``: the run's network compiled (here by a backend that
    counts the graphs it is given and runs them eagerly) gives the eager tiles within float
    rounding, and its file answers the same request (compiling is not part of it)."""
    from radardiff.accel import compiled
    from radardiff.evaluate.downstream import noise_file

    graphs = []

    def backend(gm, example_inputs, **kwargs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    monkeypatch.setattr(compiled, "BACKEND", backend)
    how = {"sampler": "ddim", "steps": 2, "device": "cpu"}
    eager = DatasetFile(noise_file(str(trained_run), 5, tmp_path / "e.h5", **how)).images()
    assert not graphs
    store = tmp_path / "c.h5"
    made = DatasetFile(noise_file(str(trained_run), 5, store, compile=True, **how)).images()
    torch._dynamo.reset()
    assert graphs  # the compiled network made them
    np.testing.assert_allclose(made, eager, rtol=1e-5, atol=1e-5)
    stamp = store.stat().st_mtime_ns
    noise_file(str(trained_run), 5, store, **how)
    assert store.stat().st_mtime_ns == stamp
