"""Conditioned sampling: super-resolution (from a file and as a cascade), range conditioning
at a drawn or requested amplitude, alone and beside class labels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import tiny_run_config
from radardiff.data.dataset_file import DatasetFile, write_dataset
from radardiff.diffusion.schedule import make_betas
from radardiff.errors import ConfigError
from radardiff.models import range_embedding_value, upsample
from radardiff.models.conditioning import log_range_moments
from radardiff.sample import SampleOptions, generate, load_run
from radardiff.sample.generate import batch_conditions, generate_cascade, lowres_path


def _train(tmp, name, path, **sections):
    from radardiff.train import train

    train(tiny_run_config(str(path), **sections), tmp / name)
    return load_run(tmp / name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 16 px super-resolution run (8 -> 16), an 8 px low-resolution run, a range-conditioned
    run, and low-resolution images (all tiny, a few training steps each)."""
    from radardiff.data.synth import synthesize

    d = tmp_path_factory.mktemp("cond")
    hi = synthesize("insar_noise", 16, 16, d / "hi.h5", seed=0)
    lo = synthesize("insar_noise", 16, 8, d / "lo.h5", seed=1)
    with DatasetFile(hi) as f:  # three classes, each with its own range (x1, x4, x16)
        imgs = f.images().astype(np.float64)
    labels = np.arange(len(imgs)) % 3
    scaled = imgs * 4.0 ** labels[:, None, None, None]
    write_dataset(d / "classes.h5", scaled, labels, kind="insar_noise", units="rad")
    small = {"image_size": 8, "attention_resolutions": [4]}
    return {
        "sr": _train(d, "sr", hi, model={"superres_low_size": 8, "superres_aug_max": 10}),
        "sr_std": _train(
            d,
            "sr_std",
            hi,
            data={"normalization": "standardize"},
            model={"superres_low_size": 8, "superres_aug_max": 10},
        ),
        "low": _train(d, "low", lo, model=small),
        "range": _train(d, "range", hi, model={"range_conditioning": True}),
        "class_range": _train(
            d, "class_range", d / "classes.h5", model={"range_conditioning": True, "num_classes": 3}
        ),
        "low_file": lo,
        "dir": d,
    }


def opts(**kw) -> SampleOptions:
    return SampleOptions(**{"n": 5, "sampler": "ddim", "steps": 3, "batch_size": 2, **kw})


class Spy(torch.nn.Module):
    """The run's network, recording what it is called with."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, x, t, class_labels=None):
        self.calls.append((x.clone(), None if class_labels is None else class_labels.clone()))
        return self.model(x, t, class_labels=class_labels)


def spied(run):
    return dataclasses.replace(run, model=Spy(run.model))


# ---- super-resolution from a file ----------------------------------------------------------


@pytest.mark.parametrize("key", ["sr", "sr_std"])
def test_superres_sees_the_framed_condition_and_returns_to_its_units(runs, key, tmp_path):
    """The network gets [x_t, upsampled framed condition] and the noise level; the output's
    statistics are the low-resolution images' own, so it lands in their physical range."""
    run = spied(runs[key])
    low = DatasetFile(runs["low_file"])
    o = opts(condition=str(runs["low_file"]))
    out = generate(run, o, tmp_path / "sr.h5").path
    with DatasetFile(out) as f:
        images, stats = f.images(), f.extra("norm_stats")
    assert images.shape == (5, 1, 16, 16) and np.isfinite(images).all()
    want = run.normalizer.transform(low.images(np.arange(5)))
    np.testing.assert_allclose(stats, want.stats, rtol=1e-6)
    # the condition channel of the first call: framed to span exactly [-1, 1], upsampled
    x, labels = run.model.calls[0]
    v = torch.from_numpy(want.images[:2]).float()
    lo_, hi_ = v.amin(dim=(2, 3), keepdim=True), v.amax(dim=(2, 3), keepdim=True)
    framed = (v - (hi_ + lo_) / 2) / ((hi_ - lo_) / 2)
    torch.testing.assert_close(x[:, 1:], upsample(framed, 16), atol=1e-5, rtol=0)
    assert labels.tolist() == [0.0, 0.0]  # sr_noise 0


def test_superres_frame_is_undone_exactly(runs):
    """With a network that predicts x0 = 0 in the condition's frame, the output is the frame's
    mid-point c, in network space, for a normalisation whose frame is not the identity."""
    from radardiff.sample.generate import denoise_batch

    run = runs["sr_std"]
    o = opts(n=2, condition=str(runs["low_file"]))
    cond = batch_conditions(run, o, np.arange(2))
    c, h = cond.frame
    assert not torch.allclose(h, torch.ones_like(h))  # standardised: a real frame

    betas = make_betas(run.cfg.diffusion.schedule, run.cfg.diffusion.timesteps)
    abar = torch.from_numpy(np.cumprod(1 - betas)).float()

    v_pred = run.cfg.diffusion.prediction == "v"
    assert v_pred or run.cfg.diffusion.prediction == "eps"

    class X0Zero(torch.nn.Module):  # the x0 estimate is 0: eps = x_t / sqrt(1 - abar),
        def __init__(self):  # v = sqrt(abar) eps
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, t, class_labels=None):
            a = abar[t.round().long().clamp(0, len(abar) - 1)].view(-1, 1, 1, 1)
            eps = x[:, :1] / (1 - a).sqrt()
            return type("O", (), {"sample": a.sqrt() * eps if v_pred else eps})()

    y, _ = denoise_batch(dataclasses.replace(run, model=X0Zero()), o, np.arange(2), cond)
    np.testing.assert_allclose(y, np.broadcast_to(c.numpy(), y.shape), atol=1e-4)


def test_superres_noise_level_reaches_the_network(runs, tmp_path):
    run = spied(runs["sr"])
    generate(run, opts(n=2, condition=str(runs["low_file"]), sr_noise=7), tmp_path / "a.h5")
    x, labels = run.model.calls[0]
    assert labels.tolist() == [7.0, 7.0]
    clean = batch_conditions(runs["sr"], opts(n=2, condition=str(runs["low_file"])), np.arange(2))
    assert not torch.allclose(x[:, 1:], clean.low)  # the condition was noised


def test_superres_bad_input(runs, tmp_path):
    sr, low_file = runs["sr"], str(runs["low_file"])
    cases = [
        (sr, opts(), "needs low-resolution images"),
        (sr, opts(condition=low_file, sr_noise=11), "--sr-noise must be in 0..10"),
        (sr, opts(condition=low_file, n=17), "holds only 16 images"),
        (sr, opts(condition=str(tmp_path / "none.h5")), "not found"),
        (runs["low"], opts(condition=low_file), "need a super-resolution run"),
    ]
    hi_file = runs["dir"] / "hi.h5"
    cases.append((sr, opts(condition=str(hi_file)), "super-resolution run takes (1, 8, 8)"))
    for run, o, msg in cases:
        with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")) as err:
            generate(run, o, tmp_path / "x.h5")
        assert "\n" not in str(err.value)
    assert not (tmp_path / "x.h5").exists()


# ---- cascade --------------------------------------------------------------------------------


def test_cascade_conditions_sample_i_on_low_sample_i_and_reuses_stage_one(runs, tmp_path):
    out = tmp_path / "cascade.h5"
    low_opts = opts(n=4, seed=3)
    first, second = generate_cascade(runs["low"], low_opts, runs["sr"], opts(seed=3), out)
    assert first.path == lowres_path(out) and first.path.is_file()
    with DatasetFile(first.path) as f:
        low_images = f.images()
    with DatasetFile(second.path) as f:
        images, stats, attrs = f.images(), f.extra("norm_stats"), f.attrs()
    assert low_images.shape == (4, 1, 8, 8) and images.shape == (4, 1, 16, 16)
    # each output's statistics are its own low-resolution sample's min and max
    np.testing.assert_allclose(stats[:, 0, 0], low_images.min(axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(stats[:, 0, 1], low_images.max(axis=(1, 2, 3)), rtol=1e-5)
    assert attrs["condition"] == str(first.path)
    # run again: stage one is reused as it is, stage two gives the same file
    again_first, again = generate_cascade(runs["low"], low_opts, runs["sr"], opts(seed=3), out)
    assert again_first.reused == 4 and again_first.seconds == 0.0
    with DatasetFile(again.path) as f:
        np.testing.assert_array_equal(f.images(), images)


def test_cascade_reuses_stage_one_under_auto_precision(runs, tmp_path):
    """``auto`` is signed as the precision it resolves to, so the finished first stage is
    recognised as this very request."""
    out = tmp_path / "cascade.h5"
    low_opts = opts(n=4, seed=3, mixed_precision="auto")
    generate_cascade(runs["low"], low_opts, runs["sr"], opts(seed=3), out)
    again_first, _ = generate_cascade(runs["low"], low_opts, runs["sr"], opts(seed=3), out)
    assert again_first.reused == 4 and again_first.seconds == 0.0


def test_cascade_parts_of_another_first_stage_are_not_reused(runs, tmp_path):
    """An interrupted second stage's parts belong to the first stage that made its condition."""
    out = tmp_path / "c.h5"

    def stop_in_stage_two(done, total):
        if done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_cascade(runs["low"], opts(n=4), runs["sr"], opts(), out, stop_in_stage_two)
    assert out.with_name(out.name + ".parts").is_dir()
    other = opts(n=4, steps=2)  # another first stage, written to the same low-res file
    _, second = generate_cascade(runs["low"], other, runs["sr"], opts(), out)
    assert second.reused == 0


def test_cascade_refuses_mismatched_runs(runs, tmp_path):
    with pytest.raises(ConfigError, match="makes 16 px images"):
        generate_cascade(runs["range"], opts(), runs["sr"], opts(), tmp_path / "c.h5")
    with pytest.raises(ConfigError, match="needs a super-resolution run"):
        generate_cascade(runs["low"], opts(), runs["range"], opts(), tmp_path / "c.h5")
    with pytest.raises(ConfigError, match="--sr-noise"):
        generate_cascade(runs["low"], opts(), runs["sr"], opts(sr_noise=99), tmp_path / "c.h5")
    assert not lowres_path(tmp_path / "c.h5").exists()  # refused before stage one ran


def test_cascade_cli(runs, tmp_path, capsys):
    from radardiff.cli.main import main

    out = tmp_path / "cli.h5"
    args = ["sample", str(runs["sr"].run.root), "--cascade", str(runs["low"].run.root)]
    main([*args, "--n", "3", "--out", str(out), "--steps", "2", "--low-steps", "2"])
    assert "low-resolution samples" in capsys.readouterr().out
    with DatasetFile(out) as f:
        assert f.images().shape == (3, 1, 16, 16)
    with pytest.raises(SystemExit) as err:
        main([*args, "--low-res", str(runs["low_file"]), "--n", "2", "--out", str(out)])
    assert err.value.code != 0


# ---- range conditioning ---------------------------------------------------------------------


def test_range_conditioned_run_samples_at_drawn_ranges(runs, tmp_path):
    run = spied(runs["range"])
    out = generate(run, opts(n=3), tmp_path / "r.h5").path
    with DatasetFile(out) as f:
        stats = f.extra("norm_stats")
    moments = log_range_moments(torch.as_tensor(run.normalizer.sample_stats))
    want = range_embedding_value(torch.as_tensor(stats[:2]).double(), *moments).float()
    torch.testing.assert_close(run.model.calls[0][1], want)


def test_range_conditioned_run_samples_at_a_requested_amplitude(runs, tmp_path):
    run = spied(runs["range"])
    amp = 0.05
    out = generate(run, opts(n=3, amplitude=amp), tmp_path / "a.h5").path
    with DatasetFile(out) as f:
        images, stats = f.images(), f.extra("norm_stats")
    np.testing.assert_allclose(stats[:, 0, 1] - stats[:, 0, 0], amp, rtol=1e-5)
    spread = images.max(axis=(1, 2, 3)) - images.min(axis=(1, 2, 3))
    assert (spread <= amp * (1 + 1e-4)).all()  # x0 clipped to [-1, 1]: inside [lo, hi]
    moments = log_range_moments(torch.as_tensor(run.normalizer.sample_stats))
    z = (np.log10(amp) - moments[0]) / moments[1]
    want = 500 + 100 * np.clip(z, -4, 4)
    np.testing.assert_allclose(run.model.calls[0][1].numpy(), want, rtol=1e-5)


def test_class_and_range_share_the_embedding(runs, tmp_path):
    """Beside class labels the network gets (class, range value) per sample, each range drawn
    from its own class's training ranges, and both change its output."""
    run = spied(runs["class_range"])
    assert type(run.model.model.class_embedding).__name__ == "ConditionEmbedding"
    out = generate(run, opts(n=6, batch_size=6, classes=[0, 1, 2]), tmp_path / "c.h5").path
    with DatasetFile(out) as f:
        stats, labels = f.extra("norm_stats"), f.labels()
    assert labels.tolist() == [0, 1, 2, 0, 1, 2]
    packed = run.model.calls[0][1]
    assert packed.shape == (6, 2)
    assert packed[:, 0].tolist() == [0.0, 1.0, 2.0, 0.0, 1.0, 2.0]
    moments = log_range_moments(torch.as_tensor(run.normalizer.sample_stats))
    want = range_embedding_value(torch.as_tensor(stats).double(), *moments).float()
    torch.testing.assert_close(packed[:, 1], want)
    pool = run.normalizer.sample_stats
    for k in range(3):  # each class's ranges come from that class's tiles
        mine = pool[run.normalizer.sample_labels == k][:, 0]
        for s in stats[labels == k][:, 0]:
            assert np.isclose(mine, s).all(axis=1).any()
    net, x, t = run.model.model, torch.zeros(2, 1, 16, 16), torch.tensor([10, 10])
    with torch.no_grad():
        base = net(x, t, class_labels=torch.tensor([[1.0, 500.0]] * 2)).sample
        other_range = net(x, t, class_labels=torch.tensor([[1.0, 700.0]] * 2)).sample
        other_class = net(x, t, class_labels=torch.tensor([[2.0, 500.0]] * 2)).sample
    assert not torch.allclose(base, other_range) and not torch.allclose(base, other_class)


def test_guidance_keeps_the_range_beside_the_null_class(runs):
    from radardiff.diffusion.denoiser import Denoiser

    run = spied(runs["class_range"])
    den = Denoiser.from_run(run, guidance=2.0)
    cond = den.condition(torch.tensor([0, 2]), stats=torch.tensor([[[0.0, 1.0]], [[0.0, 3.0]]]))
    den.guided_output(torch.zeros(2, 1, 16, 16), torch.tensor([5, 5]), cond)
    labels = run.model.calls[-1][1]
    assert labels[:, 0].tolist() == [0.0, 2.0, 3.0, 3.0]  # conditional, then the null class
    torch.testing.assert_close(labels[2:, 1], labels[:2, 1])  # the same range both times
    assert labels[0, 1] != labels[1, 1]


def test_joint_embedding_reloads_exactly_and_refuses_damage(runs, tmp_path):
    """The checkpoint loads with its embedding's weights (diffusers' from_pretrained alone
    drops them); a weight file without them is refused in one line."""
    import shutil

    from diffusers import UNet2DModel
    from safetensors.torch import load_file, save_file

    from radardiff.errors import RunDirError
    from radardiff.models import load_model

    ema = runs["class_range"].checkpoint / "ema"
    state = load_file(next(ema.glob("*.safetensors")))
    model = load_model(ema)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)
    plain = UNet2DModel.from_pretrained(ema)
    assert not any(k.startswith("class_embedding.") for k in plain.state_dict())
    broken = tmp_path / "broken"
    shutil.copytree(ema, broken)
    path = next(broken.glob("*.safetensors"))
    save_file({k: v for k, v in state.items() if "scalars.range.linear_2" not in k}, path)
    with pytest.raises(RunDirError, match="cannot load model"):
        load_model(broken)


def test_joint_embedding_survives_export(runs, tmp_path):
    """An exported class + range model (half precision) samples like its run, and its card
    says how to load it."""
    from radardiff.models.export import export_run

    run = runs["class_range"]
    folder = export_run(run.run.root, tmp_path / "cr", "cr", half=True)
    assert "load_model(" in (folder / "README.md").read_text()
    again = load_run(folder)
    x, t = torch.randn(3, 1, 16, 16), torch.tensor([5, 20, 40])
    labels = torch.tensor([[0.0, 450.0], [1.0, 500.0], [2.0, 620.0]])
    with torch.no_grad():
        a = run.model(x, t, class_labels=labels).sample
        b = again.model(x, t, class_labels=labels).sample
    assert float((a - b).abs().max()) < 0.02 * float(a.abs().max())
    assert float((a - b).abs().max()) > 0  # the half-precision weights, not the run's


def test_amplitude_bad_input(runs, tmp_path):
    with pytest.raises(ConfigError, match="range_conditioning"):
        generate(runs["low"], opts(amplitude=1.0), tmp_path / "x.h5")
    with pytest.raises(ConfigError, match="positive"):
        generate(runs["range"], opts(amplitude=-1.0), tmp_path / "x.h5")


def test_lowres_labels_are_carried_to_the_output(runs, tmp_path):
    labelled = runs["dir"] / "labelled_lo.h5"
    with DatasetFile(runs["low_file"]) as f:
        imgs = f.images()
    write_dataset(
        labelled,
        imgs,
        np.arange(16) % 3,
        kind="insar_noise",
        units="rad",
        class_names=["a", "b", "c"],
    )
    out = generate(runs["sr"], opts(n=4, condition=str(labelled)), tmp_path / "l.h5").path
    with DatasetFile(out) as f:
        assert f.labels().tolist() == [0, 1, 2, 0]
