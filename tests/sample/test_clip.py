"""x0 clipping: on by default for data normalised into [-1, 1], configured per scheduler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radardiff.config import DiffusionConfig
from radardiff.diffusion import make_sampler, run_sampler
from radardiff.sample import SampleOptions, load_run
from radardiff.sample.generate import clips


@pytest.mark.parametrize(
    "name", ["ddim", "ddpm", "dpmsolver++", "unipc", "heun", "euler", "euler_ancestral"]
)
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


@pytest.mark.parametrize("prediction", ["eps", "v", "sample"])
def test_clip_x0_gives_a_coherent_output(prediction):
    """The re-expressed output implies exactly the clipped x0 (and, for eps/v, the eps that x_t
    and that x0 imply)."""
    from radardiff.diffusion.samplers import clip_x0

    g = torch.Generator().manual_seed(3)
    x_t, out = torch.randn(2, 1, 3, 3, generator=g) * 3, torch.randn(2, 1, 3, 3, generator=g) * 3
    abar = torch.tensor(0.3)
    sa, s1 = abar.sqrt(), (1 - abar).sqrt()
    to_x0 = {
        "eps": lambda o: (x_t - s1 * o) / sa,
        "v": lambda o: sa * x_t - s1 * o,
        "sample": lambda o: o,
    }[prediction]
    new = clip_x0(out, x_t, abar, prediction)
    torch.testing.assert_close(to_x0(new), to_x0(out).clamp(-1, 1), atol=1e-5, rtol=0)
    if prediction == "eps":
        torch.testing.assert_close(new, (x_t - sa * to_x0(out).clamp(-1, 1)) / s1)


def test_clipped_ddim_follows_the_guided_diffusion_recursion():
    """DDIM (eta 0) with clipping: x_prev = sqrt(abar') x0c + sqrt(1 - abar') eps', eps'
    re-derived from the clipped x0 (diffusers' clip_sample would keep the raw eps)."""
    cfg = DiffusionConfig(timesteps=100)
    prepared = make_sampler("ddim", cfg, 5, clip=True)
    abar = torch.from_numpy(np.cumprod(1 - np.linspace(1e-4 * 10, 0.02 * 10, 100)))
    assert np.allclose(prepared.scheduler.alphas_cumprod.double().numpy(), abar.numpy())
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    eps_fn = lambda x_t, t: 0.8 * x_t + 0.5  # noqa: E731 - pushes x0 out of range
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    got = run_sampler(prepared, eps_fn, x.clone(), gens, 1, False)
    ref = x.double()
    ts = [int(t) for t in prepared.scheduler.timesteps]
    for k, t in enumerate(ts):
        a, a_prev = abar[t], (abar[ts[k + 1]] if k + 1 < len(ts) else torch.tensor(1.0).double())
        x0 = ((ref - (1 - a).sqrt() * eps_fn(ref, t)) / a.sqrt()).clamp(-1, 1)
        eps = (ref - a.sqrt() * x0) / (1 - a).sqrt()
        ref = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    torch.testing.assert_close(got.double(), ref, atol=1e-4, rtol=0)
