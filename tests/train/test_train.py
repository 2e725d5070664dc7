"""Training: exact resume, refusals, divergence, EMA, checkpoints, several processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_run_config, write_config
from radardiff.data.dataset_file import write_dataset
from radardiff.errors import ConfigError, RunDirError
from radardiff.train import TrainingDiverged, train
from radardiff.train.ema import EMA
from radardiff.train.loop import StepBatchSampler, lr_at

REPO = Path(__file__).resolve().parents[2]


def _weights(run: Path, which: str = "model") -> dict[str, torch.Tensor]:
    name = (run / "checkpoints" / "latest").read_text().strip()
    return load_file(run / "checkpoints" / name / which / "diffusion_pytorch_model.safetensors")


def _cfg(noise_files, **train):
    extra = {"train": {"deterministic": True, **train}}
    return tiny_run_config(str(noise_files[0]), str(noise_files[1]), **extra)


def test_resume_is_bit_identical(tmp_path, noise_files):
    """A run stopped after 2 steps and resumed to 4 ends with the weights of an unbroken run."""
    cfg = tiny_run_config(
        str(noise_files[0]),
        None,
        model={"dropout": 0.1},
        diffusion={
            "timestep_sampler": "loss_second_moment",
            "variance": "learned_range",
            "loss": "rescaled_mse",
        },
        train={"steps": 4, "checkpoint_every": 2, "deterministic": True},
    )
    train(cfg, tmp_path / "straight")
    half = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 2})})
    train(half, tmp_path / "resumed")
    train(cfg, tmp_path / "resumed", resume=True)
    for which in ("model", "ema"):
        a, b = _weights(tmp_path / "straight", which), _weights(tmp_path / "resumed", which)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (which, key)
    state_a = json.loads((tmp_path / "straight/checkpoints/step_0000004/state.json").read_text())
    state_b = json.loads((tmp_path / "resumed/checkpoints/step_0000004/state.json").read_text())
    assert state_a == state_b
    rows = [json.loads(x) for x in (tmp_path / "resumed/stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [2, 4]


def test_resume_refuses_a_different_architecture(tmp_path, noise_files):
    cfg = _cfg(noise_files, steps=2)
    train(cfg, tmp_path / "run")
    other = cfg.model_copy(update={"model": cfg.model.model_copy(update={"base_channels": 16})})
    with pytest.raises(RunDirError, match="cannot resume"):
        train(other, tmp_path / "run", resume=True)


def test_new_run_refuses_a_directory_with_checkpoints(trained_run, noise_files):
    with pytest.raises(RunDirError, match="already holds checkpoints"):
        train(_cfg(noise_files), trained_run)


def test_data_that_does_not_fit_the_model_is_refused(tmp_path, noise_files):
    two = tmp_path / "two.h5"
    write_dataset(
        two, np.random.default_rng(0).normal(size=(8, 2, 16, 16)), kind="generic", units=""
    )
    cfg = tiny_run_config(str(two))
    with pytest.raises(ConfigError, match="2 channel.*in_channels is 1"):
        train(cfg, tmp_path / "run")
    big = tmp_path / "big.h5"
    write_dataset(big, np.zeros((4, 1, 32, 32)), kind="generic", units="")
    with pytest.raises(ConfigError, match="32x32 but model.image_size is 16"):
        train(tiny_run_config(str(big)), tmp_path / "run2")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_nan_loss_stops_and_keeps_the_last_checkpoint(tmp_path, noise_files):
    cfg = _cfg(noise_files, steps=2, checkpoint_every=1)
    train(cfg, tmp_path / "run")
    before = _weights(tmp_path / "run")
    bad = cfg.model_copy(
        update={"train": cfg.train.model_copy(update={"steps": 4, "lr": float("inf")})}
    )
    with pytest.raises(TrainingDiverged, match=r"step \d+: .*(nan|not finite).*step_0000002"):
        train(bad, tmp_path / "run", resume=True)
    after = _weights(tmp_path / "run")
    assert (tmp_path / "run/checkpoints/latest").read_text().strip() == "step_0000002"
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_fresh_run_that_diverges_before_its_first_checkpoint_leaves_nothing(
    tmp_path, noise_files
):
    """No config.toml, normalizer.json, stats or tensorboard/ of a run that has nothing to
    resume; a folder that existed before keeps what it held."""
    cfg = _cfg(noise_files, steps=4, checkpoint_every=4, tensorboard=True)
    bad = cfg.model_copy(update={"train": cfg.train.model_copy(update={"lr": float("inf")})})
    with pytest.raises(TrainingDiverged):
        train(bad, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(TrainingDiverged):
        train(bad, tmp_path / "mine")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_checkpoints_keep_last_k_and_best(tmp_path, noise_files):
    cfg = _cfg(noise_files, steps=6, checkpoint_every=1, keep_last=2, val_every=1)
    train(cfg, tmp_path / "run")
    ck = tmp_path / "run" / "checkpoints"
    names = sorted(p.name for p in ck.glob("step_*"))
    best = (ck / "best").read_text().strip()
    assert names[-2:] == ["step_0000005", "step_0000006"]
    assert set(names) == {"step_0000005", "step_0000006", best}
    assert not list(ck.glob(".*tmp"))
    val = [json.loads(x) for x in (tmp_path / "run/stats.jsonl").read_text().splitlines()]
    val = [r for r in val if "val_loss" in r]
    assert len(val) == 6 and best == f"step_{min(val, key=lambda r: r['val_loss'])['step']:07d}"


def test_half_lives_the_warm_up_caps_to_the_end_are_named(tmp_path, noise_files, caplog):
    ema = EMA(torch.nn.Linear(1, 1), (2.0, 6.0, 16.0), warmup_ratio=0.05)
    assert ema.capped(96_000) == [6.0, 16.0]  # 0.05 x 96 kimg = 4.8 kimg
    assert ema.capped(400_000) == [] and EMA(torch.nn.Linear(1, 1), (16.0,), 0.0).capped(1) == []
    cfg = _cfg(noise_files, steps=2, ema_halflife_kimg=[0.01, 0.05], ema_warmup_ratio=0.05)
    with caplog.at_level("WARNING"):
        train(cfg, tmp_path / "run")  # 8 images: every half-life is over 0.4 images
    assert "train.ema_halflife_kimg 0.01, 0.05: longer than train.ema_warmup_ratio" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):  # one average shortened by the warm-up is what it is for
        train(_cfg(noise_files, steps=2, ema_halflife_kimg=[0.01]), tmp_path / "one")
    assert "ema_halflife_kimg" not in caplog.text


def test_ema_half_life_in_images():
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = EMA(model, (0.001,), warmup_ratio=0.0)  # half-life of 1 image
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model, images_seen=10, batch_images=2)  # two half-lives: 1 - 0.25
    assert ema.primary.weight.item() == pytest.approx(0.75)
    assert ema.beta(1000.0, images_seen=100, batch_images=10) == pytest.approx(0.5 ** (10 / 1000))
    warm = EMA(model, (1.0,), warmup_ratio=0.1)
    assert warm.beta(1000.0, images_seen=100, batch_images=10) == pytest.approx(0.5)


def test_batches_depend_on_step_not_on_history():
    s = StepBatchSampler(n=10, batch_size=4, seed=3)
    stream = [b for _, b in zip(range(5), iter(s), strict=False)]
    resumed = StepBatchSampler(n=10, batch_size=4, seed=3, start_step=3)
    assert next(iter(resumed)) == stream[3]
    flat = [i for b in stream[:5] for i in b]  # 20 draws = two permutations
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    r0 = StepBatchSampler(n=10, batch_size=2, seed=3, rank=0, world=2).batch_for(0)
    r1 = StepBatchSampler(n=10, batch_size=2, seed=3, rank=1, world=2).batch_for(0)
    assert r0 + r1 == StepBatchSampler(n=10, batch_size=4, seed=3).batch_for(0)


def test_augmented_batches_mirror_the_same_images_on_resume(tmp_path):
    """flips: the same images as without augmentation, each with a code 0-3 fixed by the step
    (a resumed run mirrors alike), all four used; the dataset serves exactly the mirrored image
    and mask; dihedral adds the transposes."""
    from radardiff.data.dataset_file import DatasetFile, write_dataset
    from radardiff.data.normalize import Normalizer
    from radardiff.data.torch_dataset import RadarDataset, mirror

    plain = StepBatchSampler(n=10, batch_size=4, seed=3)
    flips = StepBatchSampler(n=10, batch_size=4, seed=3, augment="flips")
    got = [flips.batch_for(k) for k in range(10)]
    assert [[i for i, _ in b] for b in got] == [plain.batch_for(k) for k in range(10)]
    assert {c for b in got for _, c in b} == {0, 1, 2, 3}
    assert (
        StepBatchSampler(n=10, batch_size=4, seed=3, start_step=7, augment="flips").batch_for(7)
        == got[7]
    )
    codes = {
        c for k in range(20) for _, c in StepBatchSampler(10, 4, 3, augment="dihedral").batch_for(k)
    }
    assert codes == set(range(8))
    a = np.arange(6.0).reshape(1, 2, 3)
    assert mirror(a, 1).tolist() == [[[2, 1, 0], [5, 4, 3]]]
    assert mirror(a, 2).tolist() == [[[3, 4, 5], [0, 1, 2]]]
    assert mirror(a, 4).tolist() == [[[0, 3], [1, 4], [2, 5]]]
    x = np.random.default_rng(0).normal(size=(3, 1, 4, 4)).astype(np.float32)
    x[1, 0, 0, 3] = np.nan
    f = DatasetFile(write_dataset(tmp_path / "d.h5", x, kind="generic", units=""))
    norm = Normalizer(method="none", channels=1)
    ds = RadarDataset(f, norm)
    b = ds.__getitems__([(1, 3), 2])
    want = x[1, :, ::-1, ::-1]
    assert np.array_equal(np.isnan(want), ~b["mask"][0].numpy().astype(bool))
    assert np.allclose(b["image"][0].numpy()[~np.isnan(want)], want[~np.isnan(want)])
    assert np.allclose(b["image"][1].numpy(), x[2])


def test_learning_rate_schedule():
    cfg = tiny_run_config(
        "x", train={"steps": 110, "warmup_steps": 10, "lr": 1.0, "lr_schedule": "cosine"}
    )
    assert lr_at(cfg, 0) == pytest.approx(0.1)
    assert lr_at(cfg, 9) == pytest.approx(1.0)
    assert lr_at(cfg, 60) == pytest.approx(0.5)
    assert lr_at(cfg, 110) == pytest.approx(0.0, abs=1e-12)


def test_two_processes_with_torchrun(tmp_path, noise_files):
    """torchrun --nproc_per_node 2 -m radardiff train: gloo on the CPU, one writer."""
    pytest.importorskip("torch.distributed.run")
    cfg = write_config(tmp_path / "c.toml", _cfg(noise_files, steps=2))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        "-m",
        "radardiff",
        "-q",
        "train",
        str(cfg),
        "--out",
        str(tmp_path / "run"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(x) for x in (tmp_path / "run/stats.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [2]  # one writer, not two
    assert train_rows[0]["images_seen"] == 2 * 2 * 4  # 2 steps x 2 processes x batch 4


@pytest.mark.parametrize(
    "model",
    [{"superres_low_size": 8, "superres_aug_max": 10}, {"range_conditioning": True}],
    ids=["superres", "range"],
)
def test_conditioned_models_train_and_validate(tmp_path, noise_files, model):
    cfg = tiny_run_config(
        str(noise_files[0]), str(noise_files[1]), model=model, train={"steps": 2, "val_every": 2}
    )
    train(cfg, tmp_path / "run")
    w = _weights(tmp_path / "run")
    in_ch = w["conv_in.weight"].shape[1]
    assert in_ch == (2 if "superres_low_size" in model else 1)
    assert any(k.startswith("class_embedding") for k in w)  # the scalar's embedding
    rows = [json.loads(x) for x in (tmp_path / "run/stats.jsonl").read_text().splitlines()]
    assert np.isfinite([r["val_loss"] for r in rows if "val_loss" in r]).all()


def test_conditioning_superres_input_is_the_degraded_image(noise_files):
    """Target and condition are framed by the low-resolution image's mid-point and half-range:
    the condition spans exactly [-1, 1], and c + h * target gives back x0."""
    from radardiff.diffusion import Denoiser, GaussianDiffusion
    from radardiff.train.step import batch_conditioning, target_and_condition

    cfg = tiny_run_config(
        str(noise_files[0]), model={"superres_low_size": 8, "superres_aug_max": 0}
    )
    x0 = torch.arange(16.0).repeat(16, 1)[None, None]  # a ramp along x, 0..15
    target, low = target_and_condition(cfg, x0)
    den = Denoiser(torch.nn.Identity(), cfg, 1)
    cond = batch_conditioning(den, GaussianDiffusion(cfg.diffusion), {}, torch.Generator(), low=low)
    extra = cond.extra
    assert cond.labels.tolist() == [0.0]  # no augmentation noise allowed
    pooled = torch.nn.functional.avg_pool2d(x0, 2)  # 0.5, 2.5, ..., 14.5
    c, h = 7.5, 7.0  # its mid-point and half-range
    want = torch.nn.functional.interpolate((pooled - c) / h, size=16, mode="bilinear")
    assert torch.allclose(extra, want)
    assert torch.allclose(c + h * target, x0)
    assert float(target.min()) == pytest.approx(-7.5 / 7) and float(target.max()) == pytest.approx(
        7.5 / 7
    )


def test_conditioning_combinations_are_refused():
    tiny_run_config("x", model={"num_classes": 3, "range_conditioning": True})  # allowed
    for other in ({"num_classes": 3}, {"range_conditioning": True}):
        with pytest.raises(ConfigError, match="cannot be combined"):
            tiny_run_config("x", model={"superres_low_size": 8, **other})
    with pytest.raises(ConfigError, match="must divide"):
        tiny_run_config("x", model={"superres_low_size": 5})


def test_validation_vlb_is_the_mean_term(tmp_path, noise_files):
    """val_vlb_term_bpd is the mean per-timestep term L_t (bits/dim) at the validation's
    timesteps: what `evaluate --likelihood-run` finds for those terms (another noise draw), and
    far from the whole bound, which the old name val_vlb_bpd suggested."""
    from radardiff.evaluate.likelihood import run_bits_per_dim
    from radardiff.train.validate import validation_timesteps

    cfg = _cfg(noise_files, steps=2, val_every=2, val_samples=16)
    train(cfg, tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run/stats.jsonl").read_text().splitlines()]
    val = next(r for r in rows if "val_loss" in r)
    assert "val_vlb_bpd" not in val
    full = run_bits_per_dim(tmp_path / "run", noise_files[1], n=16)
    ts = validation_timesteps(cfg.diffusion.timesteps)
    assert val["val_vlb_term_bpd"] == pytest.approx(float(full.terms[ts].mean()), rel=0.2)
    assert full.bits_per_dim > 5 * val["val_vlb_term_bpd"]


def test_hybrid_loss_validation_is_on_the_training_loss_scale(tmp_path, noise_files):
    """Validation timesteps are stratum midpoints (pinned here): the validation loss of a
    hybrid-loss (learned-variance) run estimates the training loss's mean over t, not a mean
    dominated by the t = 0 decoder term (~300x the training loss on a trained model with t = 0
    among 8 timesteps; this few-step run only bounds the ratio)."""
    from radardiff.train.validate import validation_timesteps

    assert validation_timesteps(1000).tolist() == [62, 187, 312, 437, 562, 687, 812, 937]
    assert validation_timesteps(4, 8).tolist() == [0, 1, 2, 3]
    cfg = tiny_run_config(
        str(noise_files[0]), str(noise_files[1]),
        diffusion={"variance": "learned_range", "loss": "mse"},  # + vlb_weight x L_vlb
        train={"steps": 6, "val_every": 6, "log_every": 6, "deterministic": True},
    )  # fmt: skip
    train(cfg, tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run/stats.jsonl").read_text().splitlines()]
    train_loss = next(r["loss"] for r in rows if "loss" in r)
    val_loss = next(r["val_loss"] for r in rows if "val_loss" in r)
    assert 0.2 < val_loss / train_loss < 5, (val_loss, train_loss)


def test_to_db_auto_converts_linear_backscatter_only(tmp_path):
    """auto: linear sigma0 is converted, dB is not; true on dB data is refused in one line
    (it would make every negative dB value no data)."""
    from radardiff.config import RunDir
    from radardiff.data.dataset_file import DatasetFile
    from radardiff.data.synth import synthesize
    from radardiff.errors import ConfigError
    from radardiff.train.rundir import normalizer_of

    lin = DatasetFile(synthesize("sar", 4, 16, tmp_path / "lin.h5", seed=0))
    db = DatasetFile(synthesize("sar", 4, 16, tmp_path / "db.h5", seed=0, params={"db": True}))
    run = RunDir(tmp_path / "run")
    for data, to_db, want in ((lin, "auto", True), (db, "auto", False), (lin, True, True)):
        cfg = tiny_run_config(str(data.path), data={"to_db": to_db})
        norm, _ = normalizer_of(run, cfg, data, False, None)
        assert norm.to_db is want
    with pytest.raises(ConfigError, match=r"db\.h5: data\.to_db converts linear intensity .* dB"):
        normalizer_of(run, tiny_run_config(str(db.path), data={"to_db": True}), db, False, None)
