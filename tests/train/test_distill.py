"""Distillation (progressive and consistency): the targets, the stages, the student run, resume,
bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_run_config
from radardiff.config import RunDir
from radardiff.config.schema import DiffusionConfig
from radardiff.diffusion import DenoiserOutput, Schedule
from radardiff.diffusion.samplers import karras_sigmas
from radardiff.errors import ConfigError, RunDirError
from radardiff.models import load_run
from radardiff.train import train
from radardiff.train.distill import (
    consistency_grid,
    consistency_target,
    distill,
    distiller,
    pseudo_huber,
    student_config,
    two_step_target,
)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, noise_files) -> Path:
    """A tiny v-prediction run (T = 50), trained for a few steps."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    cfg = tiny_run_config(str(noise_files[0]), diffusion={"prediction": "v"})
    train(cfg, out)
    return out


def _cfg(teacher, **distill):
    opts = {"method": "progressive", "steps": 2, "teacher_steps": 8, "steps_per_stage": 2}
    return student_config(load_run(teacher), {**opts, **distill}, "student")


def _same_weights(a_run: Path, b_run: Path, step: int, folders: tuple[str, ...]) -> None:
    """The two runs' checkpoints of ``step`` hold the same weights, bit for bit, in each folder."""
    for which in folders:
        a, b = (
            load_file(run / "checkpoints" / f"step_{step:07d}" / which
                      / "diffusion_pytorch_model.safetensors")
            for run in (a_run, b_run)
        )  # fmt: skip
        assert all(torch.equal(a[k], b[k]) for k in a), which


def test_one_student_step_lands_where_two_teacher_steps_land():
    """DDIM from z with the target x~ (eps re-derived from it) reaches the teacher's z''."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    levels = [(0.3, 0.6), (0.5, 0.4), (0.8, 0.2)]
    coefs = [(torch.tensor(a**0.5), torch.tensor((1 - a) ** 0.5)) for a, _ in levels]

    def teacher(x, t):  # any denoiser: an arbitrary, coherent (x0, eps) pair
        a = torch.tensor(levels[int(t)][0])
        x0 = torch.tanh(x) * 0.7 + 0.1 * int(t)
        return DenoiserOutput(x0=x0, eps=(x - a.sqrt() * x0) / (1 - a).sqrt(), abar=a)

    target = two_step_target(teacher, z, (0, 1), coefs)
    (a_t, s_t), (a_m, s_m), (a_e, s_e) = coefs
    first = teacher(z, 0)
    mid = a_m * first.x0 + s_m * first.eps
    second = teacher(mid, 1)
    z_two = a_e * second.x0 + s_e * second.eps
    eps_one = (z - a_t * target) / s_t
    torch.testing.assert_close(a_e * target + s_e * eps_one, z_two)


def test_student_run_config(teacher):
    cfg = _cfg(teacher, steps_per_stage=3)
    d = cfg.distill
    assert d.stages == 2 and cfg.train.steps == 6  # 8 -> 4 -> 2
    assert d.teacher == str(teacher.resolve()) and d.teacher_checkpoint == "step_0000004"
    assert (cfg.sample.sampler, cfg.sample.steps) == ("ddim", 2)
    assert cfg.model == load_run(teacher).cfg.model and cfg.data.val is None
    set_cfg = student_config(
        load_run(teacher), {"method": "progressive", "steps": 2, "teacher_steps": 8},
        "s", ["distill.steps_per_stage=5", "train.batch_size=2"],
    )  # fmt: skip
    assert set_cfg.train.steps == 10 and set_cfg.train.batch_size == 2


def test_distillation_trains_stages_and_makes_a_normal_run(teacher, tmp_path):
    out = tmp_path / "student"
    cfg = _cfg(teacher)
    d = distiller(cfg, out)
    assert d.objective.student_steps(d) == 4
    d.run()
    assert d.objective.student_steps(d) == 2 and d.objective.stage(d) == 1
    # the teacher runs without gradients on the Winograd kernel where the student trains on them
    from radardiff.accel import library as klib
    from radardiff.accel import modules as kmod

    eligible = sum(kmod.eligible_conv(m) for m in d.objective.teacher.modules())
    patched = sum(type(m) is kmod.KernelConv2d for m in d.objective.teacher.modules())
    assert patched == (eligible if d.net.kernels else 0)
    assert d.net.kernels == klib.available()[0] and eligible > 0
    run = load_run(out)
    assert run.cfg.distill.method == "progressive"
    # the stage boundary: the teacher of stage 1 is stage 0's EMA student
    ck = out / "checkpoints" / "step_0000002"
    teacher_w = load_file(ck / "teacher" / "diffusion_pytorch_model.safetensors")
    ema_w = load_file(ck / "ema" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(teacher_w[k], ema_w[k]) for k in teacher_w)
    original = load_file(
        teacher / "checkpoints" / "step_0000004" / "ema" / "diffusion_pytorch_model.safetensors"
    )
    assert any(not torch.equal(teacher_w[k], original[k]) for k in teacher_w)
    rows = [json.loads(x) for x in (out / "stats.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == pytest.approx([1e-4 * 0.5, 1e-4 * 0.5])  # per-stage decay
    from radardiff.sample import SampleOptions, generate

    s = generate(run, SampleOptions(n=3, sampler="ddim", steps=2), tmp_path / "s.h5")
    from radardiff.data import DatasetFile

    with DatasetFile(s.path) as f:
        assert f.images().shape == (3, 1, 16, 16) and np.isfinite(f.images()).all()


def test_distillation_resumes_bit_identically(teacher, tmp_path):
    cfg = _cfg(teacher, steps_per_stage=2)
    distill(cfg, tmp_path / "straight")
    short = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 3})})
    distiller(short, tmp_path / "resumed").run()  # stopped mid stage 1
    distill(cfg, tmp_path / "resumed", resume=True)
    _same_weights(tmp_path / "straight", tmp_path / "resumed", 4, ("model", "ema", "teacher"))


def test_bad_distillation_input(teacher, noise_files, tmp_path):
    with pytest.raises(ConfigError, match="steps = 3 does not divide the teacher's 8 steps"):
        _cfg(teacher, steps=3)
    eps = tmp_path / "eps"
    train(tiny_run_config(str(noise_files[0]), diffusion={"prediction": "eps"}, train={"steps": 1}), eps)  # fmt: skip
    with pytest.raises(ConfigError, match="it predicts eps") as err:
        _cfg(eps)
    assert "\n" not in str(err.value)
    lv = tmp_path / "lv"
    train(tiny_run_config(str(noise_files[0]), diffusion={"prediction": "v", "variance": "learned_range"}, train={"steps": 1}), lv)  # fmt: skip
    with pytest.raises(ConfigError, match="its variance is learned"):
        _cfg(lv)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.toml").write_text("")
    with pytest.raises(RunDirError, match="no complete checkpoint"):
        _cfg(bare)
    student = tmp_path / "student"
    distill(_cfg(teacher), student)
    with pytest.raises(ConfigError, match="run it with radardiff distill"):
        train(load_run(student).cfg, tmp_path / "other")
    with pytest.raises(RunDirError, match="continue it with radardiff distill --resume"):
        train(tiny_run_config(str(noise_files[0]), diffusion={"prediction": "v"}), student, resume=True)  # fmt: skip
    with pytest.raises(RunDirError, match="continue it with radardiff train --resume"):
        distill(_cfg(teacher), teacher, resume=True)
    assert RunDir(teacher).latest_checkpoint().name == "step_0000004"


def test_cli_distill(teacher, tmp_path, capsys):
    from radardiff.cli.main import main

    out = tmp_path / "cli"
    main(["distill", str(teacher), "--out", str(out), "--steps", "4", "--teacher-steps", "8",
          "--steps-per-stage", "2"])  # fmt: skip
    assert "samples with ddim in 4 steps" in capsys.readouterr().out
    assert load_run(out).cfg.sample.steps == 4


def test_sampler_study_has_student_rows(teacher, noise_files, tmp_path):
    from radardiff.config import EvalConfig
    from radardiff.evaluate.study import study_samplers

    student = tmp_path / "st"
    distill(_cfg(teacher), student)
    res = study_samplers(
        teacher, ["ddpm"], [4], 2, noise_files[1], tmp_path / "study", batch_size=2,
        eval_cfg=EvalConfig(metrics=("semivariogram",), bootstrap=0), students=[student],
    )  # fmt: skip
    row = res.rows[-1]
    assert row["sampler"] == "student st (ddim)" and row["student"] == str(student)
    assert row["steps"] == 2 and row["nfe"] == 2 and row["semivariogram_rel_error"] is not None
    assert res.settings["students"] == [str(student)]


# ---- consistency distillation ----------------------------------------------------------------


def _cd_cfg(teacher, **distill):
    opts = {"method": "consistency", "steps": 2, "teacher_steps": 4, "steps_per_stage": 3}
    return student_config(load_run(teacher), {**opts, **distill}, "cd")


def test_consistency_grid_is_karras_levels_after_the_end():
    sched = Schedule(DiffusionConfig(timesteps=1000))
    grid = consistency_grid(sched, 6).numpy()
    assert grid[0] == -1.0 and grid[1] == pytest.approx(0.0) and grid[-1] == pytest.approx(999.0)
    assert len(grid) == 7 and (np.diff(grid) > 0).all()
    want = karras_sigmas(sched.sigma_min, sched.sigma_max, 6)[::-1]
    np.testing.assert_allclose(np.exp(sched.log_sigma_at(grid[1:])), want, rtol=1e-9)


def test_pseudo_huber():
    d = torch.tensor([0.0, 1e-5, 3.0, -3.0], dtype=torch.float64)
    got = pseudo_huber(d, 1e-3)
    assert got[0] == 0.0
    assert float(got[1]) == pytest.approx(1e-10 / 2e-3, rel=1e-3)  # d^2 / 2c below c
    assert float(got[2]) == pytest.approx(3.0 - 1e-3, rel=1e-6) and got[3] == got[2]


def _gaussian_pair(mu=0.3, s=0.5):
    """The ideal denoiser of N(mu, s^2) and its exact consistency function, VP, T = 1000."""
    sched = Schedule(DiffusionConfig(timesteps=1000))

    def coefs(t):
        ab = torch.from_numpy(sched.abar_at(t.numpy())).reshape(-1, 1, 1, 1)
        return ab.sqrt(), (1 - ab).sqrt()

    def teacher(z, t):
        a, b = coefs(t)
        x0 = mu + a * s * s * (z - a * mu) / (a * a * s * s + b * b)
        return DenoiserOutput(x0=x0, eps=(z - a * x0) / b, abar=a * a)

    def exact(z, t):
        a, b = coefs(t)
        return mu + (z / a - mu) * s / (s * s + (b / a) ** 2) ** 0.5

    return sched, coefs, teacher, exact


def test_consistency_target_of_an_exact_student_is_the_teachers_discretisation_error():
    """With the ideal denoiser as teacher, the exact consistency function differs from its own
    target only by one DDIM step's error, which shrinks as the grid is refined; a student that
    is not consistent (the denoiser's own x0) is far off its target."""
    sched, coefs, teacher, exact = _gaussian_pair()
    g = torch.Generator().manual_seed(0)

    def loss(student, intervals):
        grid = consistency_grid(sched, intervals)
        n = torch.randint(1, intervals + 1, (512,), generator=g)
        t_n, t_prev = grid[n], grid[n - 1]
        a, b = coefs(t_n)
        z = a * (0.3 + 0.5 * torch.randn(512, 1, 2, 2, generator=g, dtype=torch.float64))
        z = z + b * torch.randn(512, 1, 2, 2, generator=g, dtype=torch.float64)
        a_p, b_p = coefs(t_prev.clamp_min(0))
        end = (t_prev < 0).reshape(-1, 1, 1, 1)
        prev = (torch.where(end, torch.ones_like(a_p), a_p), torch.where(end, 0 * b_p, b_p))
        target = consistency_target(teacher, student, z, t_n, t_prev, prev)
        return float((student(z, t_n) - target).square().mean())

    coarse, fine = loss(exact, 8), loss(exact, 64)
    assert fine < coarse / 4 and fine < 1e-4
    assert loss(lambda z, t: teacher(z, t).x0, 64) > 100 * fine
    # the boundary: from the first level, the target is the teacher's x0 itself
    t1, t0 = torch.tensor([0.0]), torch.tensor([-1.0])
    z = torch.randn(1, 1, 2, 2, generator=g, dtype=torch.float64)
    got = consistency_target(teacher, exact, z, t1, t0, (torch.ones(()), torch.zeros(())))
    torch.testing.assert_close(got, teacher(z, t1).x0)


def test_consistency_student_run_config(teacher):
    cfg = _cd_cfg(teacher)
    assert cfg.distill.target_ema == 0.95
    assert cfg.distill.stages == 1 and cfg.train.steps == 3
    assert (cfg.sample.sampler, cfg.sample.steps) == ("consistency", 2)
    default = student_config(load_run(teacher), {"method": "consistency", "steps": 3}, "cd")
    assert default.distill.teacher_steps == 64 and default.sample.steps == 3  # any step count


def test_consistency_distillation_makes_a_normal_run_and_resumes(teacher, tmp_path):
    cfg = _cd_cfg(teacher)
    distill(cfg, tmp_path / "straight")
    run = load_run(tmp_path / "straight")
    assert run.cfg.distill.method == "consistency"
    rows = [json.loads(x) for x in (tmp_path / "straight" / "stats.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in rows)
    original = load_file(
        teacher / "checkpoints" / "step_0000004" / "ema" / "diffusion_pytorch_model.safetensors"
    )
    student_w = load_file(
        tmp_path / "straight/checkpoints/step_0000003/model/diffusion_pytorch_model.safetensors"
    )
    assert any(not torch.equal(student_w[k], original[k]) for k in student_w)  # it learned
    short = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 2})})
    distiller(short, tmp_path / "resumed").run()
    distill(cfg, tmp_path / "resumed", resume=True)
    target_w = load_file(
        tmp_path / "straight/checkpoints/step_0000003/target/diffusion_pytorch_model.safetensors"
    )
    # the target network trails the student: between the start and the student's weights
    assert any(not torch.equal(target_w[k], original[k]) for k in target_w)
    assert any(not torch.equal(target_w[k], student_w[k]) for k in target_w)
    _same_weights(tmp_path / "straight", tmp_path / "resumed", 3, ("model", "ema", "target"))
    from radardiff.data import DatasetFile
    from radardiff.sample import SampleOptions, generate

    s = generate(run, SampleOptions(n=3, sampler="consistency", steps=2), tmp_path / "s.h5")
    with DatasetFile(s.path) as f:
        assert f.images().shape == (3, 1, 16, 16) and np.isfinite(f.images()).all()


def test_bad_consistency_input(teacher, noise_files, tmp_path):
    eps = tmp_path / "eps"
    train(tiny_run_config(str(noise_files[0]), diffusion={"prediction": "eps"}, train={"steps": 1}), eps)  # fmt: skip
    with pytest.raises(
        ConfigError, match="cannot be distilled by consistency distillation: it predicts eps"
    ):
        _cd_cfg(eps)
    lv = tmp_path / "lv"
    train(tiny_run_config(str(noise_files[0]), diffusion={"prediction": "v", "variance": "learned_range"}, train={"steps": 1}), lv)  # fmt: skip
    with pytest.raises(ConfigError, match="its variance is learned"):
        _cd_cfg(lv)
    from radardiff.cli.main import main

    with pytest.raises(SystemExit) as err:
        main(["distill", str(teacher), "--out", str(tmp_path / "x"), "--method", "latent"])
    assert err.value.code != 0 and not (tmp_path / "x").exists()


def test_consistency_without_target_network(teacher, tmp_path):
    """target_ema = 0: the student itself is the target; no target network is kept."""
    cfg = student_config(
        load_run(teacher),
        {"method": "consistency", "steps": 1, "teacher_steps": 4, "steps_per_stage": 2},
        "cd0",
        ["distill.target_ema=0"],
    )
    d = distiller(cfg, tmp_path / "cd0")
    assert d.objective.target is None
    d.run()
    assert not (tmp_path / "cd0" / "checkpoints" / "step_0000002" / "target").exists()


def test_consistency_distillation_of_a_class_conditional_teacher(tmp_path):
    """Classes (with the teacher's guidance) go through consistency distillation: the student
    is class-conditional, samples per class, and its samples depend on the class."""
    from radardiff.data.synth import SAR_CLASSES, synthesize
    from radardiff.sample import SampleOptions, generate

    data = synthesize("sar", 24, 16, tmp_path / "sar.h5", seed=0)
    cfg = tiny_run_config(
        str(data), model={"num_classes": len(SAR_CLASSES)}, diffusion={"prediction": "v"}
    )
    train(cfg, tmp_path / "teacher")
    student = student_config(
        load_run(tmp_path / "teacher"),
        {"method": "consistency", "steps": 2, "teacher_steps": 4, "steps_per_stage": 2,
         "guidance": 2.0},
        "cd",
    )  # fmt: skip
    distill(student, tmp_path / "cd")
    run = load_run(tmp_path / "cd")
    assert run.cfg.model.num_classes == len(SAR_CLASSES) and run.cfg.distill.guidance == 2.0
    a = generate(
        run, SampleOptions(n=2, sampler="consistency", steps=2, classes=(1,)), tmp_path / "a.h5"
    )
    b = generate(
        run, SampleOptions(n=2, sampler="consistency", steps=2, classes=(7,)), tmp_path / "b.h5"
    )
    from radardiff.data import DatasetFile

    with DatasetFile(a.path) as fa, DatasetFile(b.path) as fb:
        assert fa.labels().tolist() == [1, 1] and fb.labels().tolist() == [7, 7]
        assert not np.allclose(fa.images(), fb.images())


def test_a_student_keeps_its_teacher_and_resumes_after_the_teachers_checkpoint_is_gone(
    teacher, tmp_path
):
    """A teacher still training rotates its checkpoints (keep_last) and once deleted the one a
    student had pinned: the student keeps that checkpoint's network inside its own run."""
    import shutil

    own = tmp_path / "teacher"
    shutil.copytree(teacher, own)
    cfg = _cd_cfg(own)
    distill(cfg, tmp_path / "straight")
    short = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 2})})
    distiller(short, tmp_path / "resumed").run()
    kept = tmp_path / "resumed" / "teacher_run"
    assert (kept / "checkpoints" / cfg.distill.teacher_checkpoint / "manifest.json").is_file()
    shutil.rmtree(own / "checkpoints" / cfg.distill.teacher_checkpoint)  # the rotation
    distill(cfg, tmp_path / "resumed", resume=True)
    _same_weights(tmp_path / "straight", tmp_path / "resumed", 3, ("model", "ema", "target"))
