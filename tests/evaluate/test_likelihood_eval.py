"""Bits/dim of a real file under a trained run, and its place in metrics.json."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from radardiff.config import EvalConfig
from radardiff.data.synth import synthesize
from radardiff.errors import DataError
from radardiff.evaluate.likelihood import run_bits_per_dim
from radardiff.evaluate.metrics import evaluate_files


@pytest.fixture(scope="module")
def full(trained_run, noise_files):
    return run_bits_per_dim(trained_run, noise_files[1], steps=None, n=6, batch_size=4)


def test_bits_per_dim_is_finite_and_all_steps_equal_none(full, trained_run, noise_files):
    T = 50  # tests/conftest.py tiny_run_config
    assert full.steps == T and full.n == 6
    assert np.array_equal(full.timesteps, np.arange(T))
    for v in (full.bits_per_dim, full.bits_per_dim_continuous, full.stderr, full.prior):
        assert math.isfinite(v)
    # the total is the prior plus the terms, in bits/dim
    assert full.bits_per_dim == pytest.approx(full.prior + full.terms.sum(), rel=1e-9)
    explicit = run_bits_per_dim(trained_run, noise_files[1], steps=T, n=6, batch_size=4)
    assert explicit.bits_per_dim == full.bits_per_dim
    assert explicit.bits_per_dim_continuous == full.bits_per_dim_continuous
    again = run_bits_per_dim(trained_run, noise_files[1], steps=None, n=6, batch_size=4)
    assert again.bits_per_dim == full.bits_per_dim  # seeded


def test_respaced_bound_keeps_k_trained_steps(trained_run, noise_files):
    r = run_bits_per_dim(trained_run, noise_files[1], steps=5, n=4)
    assert r.steps == 5 and r.timesteps[0] == 0 and r.timesteps[-1] == 49
    assert math.isfinite(r.bits_per_dim)


def test_metrics_json_gets_bits_per_dim(full, noise_files, tmp_path):
    cfg = EvalConfig(metrics=("ranges",), bootstrap=0)
    evaluate_files(noise_files[1], noise_files[0], cfg, tmp_path, likelihood=full)
    d = json.loads((tmp_path / "metrics.json").read_text())
    s = d["scalars"]
    assert s["bits_per_dim"] == pytest.approx(full.bits_per_dim)
    assert s["bits_per_dim_continuous"] == pytest.approx(full.bits_per_dim_continuous)
    assert s["bits_per_dim_steps"] == 50 and s["bits_per_dim_n"] == 6
    assert d["settings"]["likelihood_run"] == str(full.run_dir)
    plain = evaluate_files(noise_files[1], noise_files[0], cfg, tmp_path / "p")
    assert plain["scalars"]["bits_per_dim"] is None  # the key is always present


def test_misfitting_file_and_bad_steps_are_refused(trained_run, tmp_path):
    big = synthesize("insar_noise", 2, 32, tmp_path / "big.h5", seed=0)
    with pytest.raises(DataError, match="32x32 images, the run has 16x16") as err:
        run_bits_per_dim(trained_run, big, n=2)
    assert "\n" not in str(err.value)
    small = synthesize("insar_noise", 2, 16, tmp_path / "small.h5", seed=0)
    with pytest.raises(DataError, match="--likelihood-steps must be between 2 and 50"):
        run_bits_per_dim(trained_run, small, steps=51, n=2)
