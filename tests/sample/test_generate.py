"""Generation from tiny trained runs: bad input, per-seed reproducibility, resume, process split,
physical units."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_run_config
from radardiff.data.dataset_file import DatasetFile
from radardiff.errors import ConfigError, RadarDiffError
from radardiff.sample import SampleOptions, denoise_batch, generate, load_run
from radardiff.sample.generate import physical_stats


@pytest.fixture(scope="module")
def run(trained_run):
    return load_run(trained_run)


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory):
    """A tiny class-conditional run on synthetic SAR (10 classes), trained in about 1 s."""
    from radardiff.data.synth import SAR_CLASSES, synthesize
    from radardiff.train import train

    d = tmp_path_factory.mktemp("labelled")
    data = synthesize("sar", 24, 16, d / "train.h5", seed=0)
    train(tiny_run_config(str(data), model={"num_classes": len(SAR_CLASSES)}), d / "run")
    return load_run(d / "run")


def opts(**kw) -> SampleOptions:
    return SampleOptions(**{"n": 7, "sampler": "ddim", "steps": 4, "batch_size": 3, **kw})


def read(path: Path) -> dict[str, np.ndarray]:
    with DatasetFile(path) as f:
        out = {"images": f.images(), "seeds": f.extra("seeds"), "stats": f.extra("norm_stats")}
        labels = f.labels()
        if labels is not None:
            out["labels"] = labels
        out["attrs"] = dict(f.attrs())
    return out


def one_line_error(exc_type, fn, *args, **kw) -> str:
    with pytest.raises(exc_type) as err:
        fn(*args, **kw)
    msg = str(err.value)
    assert msg and "\n" not in msg
    return msg


# ---- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"sampler": "nope"}, "unknown sampler 'nope'"),
        ({"sampler_options": {"colour": 1}}, "unknown option(s) colour"),
        ({"steps": 51}, "trained with T=50"),
        ({"guidance": 3.0}, "--guidance needs a class- or map-conditional model"),
        ({"classes": (0,)}, "--class given but the model is unconditional"),
        ({"n": 0}, "--n must be at least 1"),
        ({"batch_size": 0}, "--batch-size must be at least 1"),
    ],
)
def test_bad_request_unconditional(run, tmp_path, kw, message):
    msg = one_line_error(ConfigError, generate, run, opts(**kw), tmp_path / "x.h5")
    assert message in msg
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize(("classes", "bad"), [((0, 10), 10), ((-1,), -1)])
def test_class_out_of_range(labelled_run, tmp_path, classes, bad):
    msg = one_line_error(
        ConfigError, generate, labelled_run, opts(classes=classes), tmp_path / "x.h5"
    )
    assert f"--class {bad} is out of range" in msg and "0..9" in msg


def test_run_without_complete_checkpoint(trained_run, tmp_path):
    broken = tmp_path / "run"
    shutil.copytree(trained_run, broken)
    (broken / "checkpoints" / "latest").unlink()
    for ckpt in (broken / "checkpoints").glob("step_*"):
        shutil.rmtree(ckpt)
    msg = one_line_error(RadarDiffError, load_run, broken)
    assert "no complete checkpoint" in msg and str(broken) in msg
    msg = one_line_error(RadarDiffError, load_run, tmp_path / "missing")
    assert "missing" in msg


# ---- reproducibility, resume, processes --------------------------------------------------------


def test_sample_i_is_independent_of_batch_size(run, labelled_run):
    for r, sampler in ((run, "ddpm"), (labelled_run, "euler_ancestral")):
        o = opts(sampler=sampler)
        all5, lab5 = denoise_batch(r, o, np.arange(5))
        for i in (0, 3, 4):
            one, lab1 = denoise_batch(r, o, np.array([i]))
            # same noise draws; float32 kernels may sum in another order for another batch size
            scale = float(np.abs(all5[i]).max())
            np.testing.assert_allclose(one[0], all5[i], rtol=1e-4, atol=1e-5 * scale)
            if lab5 is not None:
                assert lab1[0] == lab5[i]
        again, _ = denoise_batch(r, o, np.arange(5))
        np.testing.assert_array_equal(again, all5)
        other, _ = denoise_batch(r, dataclasses.replace(o, seed=1), np.arange(5))
        assert not np.allclose(other, all5)


def test_interrupted_run_resumes_to_the_same_file(run, tmp_path):
    full = generate(run, opts(), tmp_path / "full.h5")
    assert full.n == 7

    class Stop(KeyboardInterrupt):
        pass

    def interrupt(done, total):
        if done >= 6:  # after two batches of 3
            raise Stop

    out = tmp_path / "resumed.h5"
    with pytest.raises(Stop):
        generate(run, opts(), out, on_progress=interrupt)
    assert not out.exists()
    assert len(list(out.with_name(out.name + ".parts").glob("part_*[0-9].npz"))) == 2
    result = generate(run, opts(), out)
    assert result.reused == 6
    a, b = read(tmp_path / "full.h5"), read(out)
    np.testing.assert_array_equal(b["seeds"], np.arange(7))  # exactly N, no gaps, no duplicates
    np.testing.assert_array_equal(b["images"], a["images"])
    np.testing.assert_array_equal(b["stats"], a["stats"])
    assert not out.with_name(out.name + ".parts").exists()


def test_other_request_does_not_reuse_parts(run, tmp_path):
    out = tmp_path / "o.h5"

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(run, opts(seed=5), out, on_progress=interrupt)
    result = generate(run, opts(), out)
    assert result.reused == 0
    np.testing.assert_array_equal(
        read(out)["images"], read(generate(run, opts(), tmp_path / "r.h5").path)["images"]
    )


@pytest.mark.parametrize("change", ["another run", "another checkpoint", "other weights"])
def test_parts_of_another_model_are_never_reused(trained_run, tmp_path, change, caplog):
    """The same arguments for another run, after `latest` moved, or with the raw weights instead
    of the EMA: the parts of the interrupted request are removed (with a notice), and the file
    holds only samples of the model asked for."""
    first = load_run(trained_run)
    other_dir = tmp_path / "other"
    shutil.copytree(trained_run, other_dir)
    if change == "another run":
        second = load_run(other_dir)
    elif change == "another checkpoint":
        (other_dir / "checkpoints" / "latest").write_text("step_0000002\n")
        first, second = load_run(other_dir, checkpoint=4), load_run(other_dir)
    else:
        second = load_run(trained_run, weights="model")
    out = tmp_path / "x.h5"

    def interrupt(done, total):
        if done >= 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(first, opts(), out, on_progress=interrupt)
    with caplog.at_level("WARNING"):
        result = generate(second, opts(), out)
    assert result.reused == 0 and "another request" in caplog.text
    fresh = generate(second, opts(), tmp_path / "fresh.h5").path
    np.testing.assert_array_equal(read(out)["images"], read(fresh)["images"])
    assert read(out)["attrs"]["checkpoint"] == str(second.checkpoint)


def test_process_split_merges_to_the_world_1_file(run, tmp_path):
    single = generate(run, opts(batch_size=2), tmp_path / "one.h5").path
    out = tmp_path / "two.h5"
    generate(run, opts(batch_size=2), out, rank=1, world=2, merge=False)
    assert not out.exists()
    generate(run, opts(batch_size=2), out, rank=0, world=2)
    a, b = read(single), read(out)
    for key in ("images", "seeds", "stats"):
        np.testing.assert_array_equal(a[key], b[key])
    # a different batch size gives the same samples too, up to the network's float round-off
    # (its matrix products are blocked by batch size), which x0 clipping can amplify ~10x
    c = read(generate(run, opts(batch_size=7), tmp_path / "b7.h5").path)
    scale = float(np.abs(a["images"]).max())
    np.testing.assert_allclose(c["images"], a["images"], rtol=1e-4, atol=1e-4 * scale)


# ---- physical units --------------------------------------------------------------------------


def test_h5_in_physical_units_with_seeds(run, tmp_path):
    o = opts(n=5, batch_size=5)
    got = read(generate(run, o, tmp_path / "s.h5").path)
    assert got["images"].shape == (5, 1, 16, 16) and got["images"].dtype == np.float32
    np.testing.assert_array_equal(got["seeds"], np.arange(5))
    attrs = got["attrs"]
    assert attrs["kind"] == "insar_noise" and attrs["units"] == "rad"
    assert attrs["sampler"] == "ddim" and int(attrs["steps"]) == 4 and int(attrs["seed"]) == 0
    # the statistics are rows of the training set's per-sample statistics
    pool = np.asarray(run.normalizer.sample_stats, np.float32)
    for row in got["stats"]:
        assert np.any(np.all(np.isclose(pool, row), axis=tuple(range(1, pool.ndim))))
    # and the images are the normaliser's inverse of the network output with those statistics
    y, _ = denoise_batch(run, o, np.arange(5))
    want = run.normalizer.inverse(y, got["stats"].astype(np.float64))
    np.testing.assert_allclose(got["images"], want, rtol=1e-5, atol=1e-5)


def test_labelled_output_stats_drawn_per_class(labelled_run, tmp_path):
    o = opts(n=12, batch_size=6, classes=(2, 7), sampler="dpmsolver++", steps=3)
    got = read(generate(labelled_run, o, tmp_path / "c.h5").path)
    np.testing.assert_array_equal(got["labels"], [2, 7] * 6)
    assert json.loads(got["attrs"]["class_names"])[2] == "micro_convective_cells"
    norm = labelled_run.normalizer
    pool, pool_labels = np.asarray(norm.sample_stats, np.float32), np.asarray(norm.sample_labels)
    for row, lab in zip(got["stats"], got["labels"], strict=True):
        match = np.all(np.isclose(pool, row), axis=tuple(range(1, pool.ndim)))
        assert match.any() and set(pool_labels[match]) == {lab}
    # physical_stats alone gives the same rows (sample i draws from (seed, i) only)
    again = physical_stats(labelled_run, o, np.arange(12), got["labels"])
    np.testing.assert_allclose(again, got["stats"], rtol=1e-6)


def test_guidance_changes_conditional_samples(labelled_run):
    base = opts(classes=(4,), sampler="ddim", steps=3)
    y1, _ = denoise_batch(labelled_run, base, np.arange(2))
    y3, _ = denoise_batch(labelled_run, dataclasses.replace(base, guidance=3.0), np.arange(2))
    y0, _ = denoise_batch(labelled_run, dataclasses.replace(base, guidance=0.0), np.arange(2))
    assert not np.allclose(y1, y3)
    # guidance 0 is the unconditional (null-label) model: independent of the class asked for
    y0b, _ = denoise_batch(
        labelled_run, dataclasses.replace(base, guidance=0.0, classes=(9,)), np.arange(2)
    )
    np.testing.assert_allclose(y0, y0b, rtol=1e-5, atol=1e-5)


def test_superresolution_run_is_refused_clearly(run, tmp_path):
    model = run.cfg.model.model_copy(update={"superres_low_size": 8})
    sr = dataclasses.replace(run, cfg=run.cfg.model_copy(update={"model": model}))
    msg = one_line_error(ConfigError, generate, sr, opts(), tmp_path / "x.h5")
    assert "super-resolution" in msg and str(run.run.root) in msg


def test_request_takes_the_recipes_sampler_options_for_its_own_sampler_only():
    from radardiff.config.schema import SampleConfig
    from radardiff.sample.generate import request

    sc = SampleConfig(
        sampler="dpmsolver++-hybrid", steps=20, options={"eta_min_t": 600}, clip="dynamic"
    )
    r = request(sc, 4)
    assert (r.sampler, r.steps, r.sampler_options, r.clip) == (
        "dpmsolver++-hybrid", 20, {"eta_min_t": 600}, "dynamic",
    )  # fmt: skip
    assert request(sc, 4, sampler_options={"eta": 0.5}).sampler_options == {
        "eta_min_t": 600, "eta": 0.5,
    }  # fmt: skip
    other = request(sc, 4, sampler="ddpm", steps=50, clip="none")
    assert (other.sampler, other.steps, other.sampler_options, other.clip) == (
        "ddpm", 50, {}, "none",
    )  # fmt: skip
    old = request(SampleConfig(sampler="ddim", eta=0.3), 2)  # the eta of older recipes
    assert old.sampler_options == {"eta": 0.3} and old.clip is None
    assert request(sc, 2, steps=0).steps == 0  # zero is not "the default": refused downstream


def test_zero_steps_and_batch_size_are_refused(trained_run, tmp_path):
    from radardiff.sample import SampleOptions, generate, load_run

    run = load_run(trained_run)
    with pytest.raises(ConfigError, match="--steps 0 is out of range"):
        generate(run, SampleOptions(n=2, sampler="ddim", steps=0), tmp_path / "a.h5")
    with pytest.raises(ConfigError, match="--batch-size must be at least 1"):
        generate(run, SampleOptions(n=2, sampler="ddim", steps=2, batch_size=0), tmp_path / "b.h5")
    assert not list(tmp_path.iterdir())


def test_samples_far_outside_the_training_range_are_reported(run, tmp_path, caplog, monkeypatch):
    """A broken model's samples (here: the network's output scaled 1e4, as a super-resolution
    run's +-5000 dB) are kept but reported with their seeds; normal samples are not."""
    import importlib
    import logging

    gen_mod = importlib.import_module("radardiff.sample.generate")

    with caplog.at_level(logging.WARNING, logger="radardiff"):
        generate(run, opts(n=2, sampler="ddim", steps=2), tmp_path / "ok.h5")
    assert "far outside" not in caplog.text
    real = gen_mod.denoise_batch

    def broken(*args, **kw):
        y, extra = real(*args, **kw)
        y = y.copy()
        y[1] *= 1e4
        return y, extra

    monkeypatch.setattr(gen_mod, "denoise_batch", broken)
    with caplog.at_level(logging.WARNING, logger="radardiff"):
        generate(run, opts(n=2, sampler="ddim", steps=2), tmp_path / "bad.h5")
    assert "1 of 2 samples (seeds 1) lie far outside the training data's range" in caplog.text
    assert len(DatasetFile(tmp_path / "bad.h5")) == 2


def test_cpu_sampling_runs_channels_last_with_the_same_samples(trained_run):
    """On the CPU the network samples in channels-last layout (measured faster there); the
    samples are those of the contiguous layout up to fp32 rounding."""
    import copy

    import torch

    from radardiff.sample.generate import Sampling

    run, o = load_run(trained_run), opts(n=4, batch_size=4)
    flat = dataclasses.replace(run, model=copy.deepcopy(run.model))
    fast = Sampling.of(run, o)
    assert fast.denoiser.channels_last
    convs = [m.weight for m in run.model.modules() if isinstance(m, torch.nn.Conv2d)]
    wide = [w for w in convs if w.shape[1] > 1 and w.shape[2] > 1]
    assert wide and all(w.is_contiguous(memory_format=torch.channels_last) for w in wide)
    assert not any(w.is_contiguous() for w in wide)
    plain = Sampling(
        fast.prepared, fast.denoiser.with_options(network=flat.model, channels_last=False)
    )
    idx = np.arange(4)
    a = denoise_batch(run, o, idx, sampling=fast)[0]
    b = denoise_batch(flat, o, idx, sampling=plain)[0]
    assert not np.array_equal(a, np.zeros_like(a))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())
