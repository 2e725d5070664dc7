"""Sampling on radardiff's 3x3-convolution kernels (``--conv-kernels``, auto by default on a CPU
in fp32): the log says which, the samples are torch's up to float rounding and do not depend on
their batch, an impossible explicit choice is refused before anything is written."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from radardiff.accel import library as klib
from radardiff.accel import modules as kmod
from radardiff.data.dataset_file import DatasetFile
from radardiff.errors import ConfigError
from radardiff.sample import SampleOptions, denoise_batch, generate, load_run

OK, WHY = klib.available()
needs_kernel = pytest.mark.skipif(not OK, reason=f"the kernels cannot run here: {WHY}")


@pytest.fixture(scope="module")
def run(trained_run):
    return load_run(trained_run)


def opts(**kw) -> SampleOptions:
    return SampleOptions(**{"n": 5, "sampler": "ddim", "steps": 3, "batch_size": 5, **kw})


def _patched(run) -> int:
    return sum(type(m) is kmod.KernelConv2d for m in run.model.modules())


@needs_kernel
def test_sampling_uses_the_kernels_and_gives_torchs_samples(run, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="radardiff"):
        generate(run, opts(), tmp_path / "k.h5")
    assert "convolutions: radardiff's AVX2 kernels (3x3: Winograd" in caplog.text
    assert "(--conv-kernels = auto)" in caplog.text
    eligible = sum(kmod.eligible_conv(m) for m in run.model.modules())
    assert eligible > 0 and _patched(run) == eligible
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="radardiff"):
        generate(run, opts(conv_kernels="torch"), tmp_path / "t.h5")
    assert "convolutions: torch's (--conv-kernels = torch)" in caplog.text
    assert _patched(run) == 0
    k, t = (DatasetFile(tmp_path / f).images() for f in ("k.h5", "t.h5"))
    assert not np.array_equal(k, t)  # the kernels did run: not torch's rounding
    np.testing.assert_allclose(k, t, rtol=0, atol=1e-4 * np.abs(t).max())
    assert opts(conv_kernels="torch").signature() == opts().signature()


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2])
def test_a_sample_does_not_depend_on_its_batch(run, threads):
    """The Winograd kernel computes each image alone: on it, sample i is the same in any batch
    (torch's other layers too sum in an order that may depend on the batch, hence the tolerance
    rather than bit-equality). A batch of one image on two threads once came out all NaN."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _batch_independence(run)
    finally:
        torch.set_num_threads(before)


def _batch_independence(run):
    whole, _ = denoise_batch(run, opts(), np.arange(5))
    assert _patched(run) > 0
    for i in (0, 3):
        one, _ = denoise_batch(run, opts(batch_size=1), np.array([i]))
        np.testing.assert_allclose(one[0], whole[i], rtol=0, atol=1e-5 * np.abs(whole).max())


def test_an_impossible_explicit_choice_is_refused_before_any_file(run, tmp_path):
    out = tmp_path / "x.h5"
    with pytest.raises(ConfigError, match="--conv-kernels = radardiff cannot run: torch.compile"):
        generate(run, opts(compile=True, conv_kernels="radardiff"), out)
    with pytest.raises(ConfigError, match="--conv-kernels: one of auto, radardiff, torch"):
        generate(run, opts(conv_kernels="fast"), out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_option(run, tmp_path, capsys):
    from radardiff.cli.main import main

    out = tmp_path / "cli.h5"
    args = ["sample", str(run.run.root), "--n", "2", "--steps", "2", "--out", str(out)]
    main([*args, "--conv-kernels", "torch"])
    assert "wrote 2 samples" in capsys.readouterr().out
    with pytest.raises(SystemExit) as err:
        main([*args, "--conv-kernels", "fast"])
    assert err.value.code == 2
