"""Progressive distillation: the target, the stages, the student run, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_run_config
from radardiff.config import RunDir
from radardiff.diffusion import DenoiserOutput
from radardiff.errors import ConfigError, RunDirError
from radardiff.models import load_run
from radardiff.train import train
from radardiff.train.distill import (
    ProgressiveDistiller,
    distill,
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
    d = ProgressiveDistiller(cfg, out)
    assert d.student_steps() == 4
    d.run()
    assert d.student_steps() == 2 and d.stage == 1
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
    ProgressiveDistiller(short, tmp_path / "resumed").run()  # stopped mid stage 1
    distill(cfg, tmp_path / "resumed", resume=True)
    for which in ("model", "ema", "teacher"):
        a = load_file(
            tmp_path
            / f"straight/checkpoints/step_0000004/{which}/diffusion_pytorch_model.safetensors"
        )
        b = load_file(
            tmp_path
            / f"resumed/checkpoints/step_0000004/{which}/diffusion_pytorch_model.safetensors"
        )
        assert all(torch.equal(a[k], b[k]) for k in a), which


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
    assert "samples with DDIM in 4 steps" in capsys.readouterr().out
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
