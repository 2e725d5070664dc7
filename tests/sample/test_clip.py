"""x0 clipping: on by default for data normalised into [-1, 1], the same for every sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import fn_denoiser
from radardiff.config import DiffusionConfig
from radardiff.diffusion import make_sampler
from radardiff.diffusion.denoiser import clip_x0, x0_and_eps
from radardiff.sample import SampleOptions, load_run
from radardiff.sample.generate import clip_mode


def _sample(name, denoiser, steps=10, seeds=range(4)):
    prepared = make_sampler(name, denoiser.cfg.diffusion, steps)
    gens = [torch.Generator().manual_seed(i) for i in seeds]
    x = torch.randn(len(gens), 1, 4, 4, generator=torch.Generator().manual_seed(9))
    return prepared.run(denoiser.bind(), x, gens)


@pytest.mark.parametrize(
    "name",
    ["ddim", "ddpm", "dpmsolver++", "dpmsolver++-sde", "unipc", "heun", "euler", "euler_ancestral"],
)
def test_clipped_samplers_stay_in_range_with_a_wild_denoiser(name):
    wild = fn_denoiser(lambda x, t: torch.full_like(x, -50.0), timesteps=100)  # x0 far out
    out = _sample(name, wild.with_options(clip="static"))
    assert out.abs().max() <= 1.0 + 1e-4
    assert _sample(name, wild).abs().max() > 2.0


def test_dynamic_clipping_rescales_by_the_percentile():
    """Imagen's dynamic thresholding: s = max(1, quantile(|x0|, p)); clamp to [-s, s], / s."""
    x0 = torch.tensor([[[[0.5, -3.0, 2.0, 1.0]]], [[[0.1, 0.2, -0.3, 0.4]]]])
    got = clip_x0(x0, "dynamic", percentile=1.0)
    torch.testing.assert_close(got[0], x0[0] / 3.0)  # s = 3 (the largest |x0|)
    torch.testing.assert_close(got[1], x0[1])  # s = max(1, 0.4) = 1: unchanged
    half = clip_x0(x0, "dynamic", percentile=0.5)
    s = float(torch.quantile(x0[0].abs().flatten(), 0.5))  # 1.5
    torch.testing.assert_close(half[0], x0[0].clamp(-s, s) / s)


def test_clip_default_follows_the_normalisation(trained_run):
    run = load_run(trained_run)
    assert run.normalizer.method == "minmax_pm1"
    assert clip_mode(run, SampleOptions(n=1)) == "static"
    assert clip_mode(run, SampleOptions(n=1, clip="none")) == "none"
    assert clip_mode(run, SampleOptions(n=1, clip="dynamic")) == "dynamic"
    run.normalizer.method = "standardize"
    assert clip_mode(run, SampleOptions(n=1)) == "none"
    assert np.isfinite(run.normalizer.sample_stats).all()


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_clipped_denoiser_output_is_coherent(prediction):
    """After clipping, x0 is the clamped estimate and eps the one that x_t and that x0 imply."""
    g = torch.Generator().manual_seed(3)
    x_t, out = torch.randn(2, 1, 3, 3, generator=g) * 3, torch.randn(2, 1, 3, 3, generator=g) * 3
    den = fn_denoiser(lambda x, t: out, timesteps=100, prediction=prediction)
    t = torch.tensor(37.0)
    abar = torch.tensor(den.schedule.alphas_cumprod[37])
    raw_x0, _ = x0_and_eps(out, x_t, abar, prediction)
    res = den.with_options(clip="static")(x_t, t)
    torch.testing.assert_close(res.x0, raw_x0.clamp(-1, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(res.eps, (x_t - abar.sqrt() * res.x0) / (1 - abar).sqrt())
    torch.testing.assert_close(
        abar.sqrt() * res.x0 + (1 - abar).sqrt() * res.eps, x_t.to(res.x0.dtype)
    )


def test_clipped_ddim_follows_the_guided_diffusion_recursion():
    """DDIM (eta 0) with clipping: x_prev = sqrt(abar') x0c + sqrt(1 - abar') eps', eps'
    re-derived from the clipped x0 (diffusers' clip_sample would keep the raw eps)."""
    cfg = DiffusionConfig(timesteps=100, prediction="eps")
    prepared = make_sampler("ddim", cfg, 5)
    abar = torch.from_numpy(np.cumprod(1 - np.linspace(1e-4 * 10, 0.02 * 10, 100)))
    assert np.allclose(1.0 / (1.0 + prepared.sigmas[:-1] ** 2), abar.numpy()[[99, 79, 59, 39, 19]])
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    eps_fn = lambda x_t, t: 0.8 * x_t + 0.5  # noqa: E731 - pushes x0 out of range
    den = fn_denoiser(eps_fn, timesteps=100).with_options(clip="static")
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    got = prepared.run(den.bind(), x.clone(), gens)
    ref = x.double()
    ts = [round(float(t)) for t in prepared.model_times]
    for k, t in enumerate(ts):
        a, a_prev = abar[t], (abar[ts[k + 1]] if k + 1 < len(ts) else torch.tensor(1.0).double())
        x0 = ((ref - (1 - a).sqrt() * eps_fn(ref, t)) / a.sqrt()).clamp(-1, 1)
        eps = (ref - a.sqrt() * x0) / (1 - a).sqrt()
        ref = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    torch.testing.assert_close(got.double(), ref, atol=1e-4, rtol=0)
