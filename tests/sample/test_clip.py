"""x0 clipping: on by default for data normalised into [-1, 1], configured per scheduler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radardiff.config import DiffusionConfig
from radardiff.diffusion import make_sampler, run_sampler
from radardiff.sample import SampleOptions, load_run
from radardiff.sample.generate import clips


@pytest.mark.parametrize("name", ["ddim", "ddpm", "dpmsolver++", "unipc", "heun"])
def test_clipped_samplers_stay_in_range_with_a_wild_denoiser(name):
    cfg = DiffusionConfig(timesteps=100)
    prepared = make_sampler(name, cfg, 10, clip=True)
    gens = [torch.Generator().manual_seed(i) for i in range(4)]
    x = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(9))
    wild = lambda x_t, t: torch.full_like(x_t, -50.0)  # noqa: E731 - eps far off: x0 far out
    out = run_sampler(prepared, wild, x, gens, 1, False)
    assert out.abs().max() <= 1.0 + 1e-4
    free = run_sampler(make_sampler(name, cfg, 10, clip=False), wild, x, gens, 1, False)
    assert free.abs().max() > 2.0


def test_clip_default_follows_the_normalisation(trained_run):
    run = load_run(trained_run)
    assert run.normalizer.method == "minmax_pm1"
    assert clips(run, SampleOptions(n=1)) is True
    assert clips(run, SampleOptions(n=1, clip=False)) is False
    run.normalizer.method = "standardize"
    assert clips(run, SampleOptions(n=1)) is False
    assert np.isfinite(run.normalizer.sample_stats).all()
