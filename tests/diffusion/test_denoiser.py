"""The conditioned denoiser: parameterisations, continuous time, conditioning, guidance, and the
zero-terminal-SNR schedule it serves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import fn_denoiser, tiny_run_config
from radardiff.config.schema import DiffusionConfig
from radardiff.diffusion import Denoiser, Schedule, make_betas, x0_and_eps
from radardiff.errors import ConfigError


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_parameterisations_are_coherent(prediction):
    """Whatever the network predicts, x_t = a x0 + b eps, and v = a eps - b x0."""
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    out = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    abar = torch.tensor([0.9, 0.3, 1e-3], dtype=torch.float64)
    x0, eps = x0_and_eps(out, x_t, abar, prediction)
    a = abar.view(-1, 1, 1, 1)
    torch.testing.assert_close(a.sqrt() * x0 + (1 - a).sqrt() * eps, x_t)
    if prediction == "v":
        torch.testing.assert_close(a.sqrt() * eps - (1 - a).sqrt() * x0, out)
    else:
        torch.testing.assert_close({"eps": eps, "x0": x0}[prediction], out)


def test_denoiser_v_output_round_trips_through_v_prediction():
    g = torch.Generator().manual_seed(1)
    x_t, out = torch.randn(2, 1, 4, 4, generator=g), torch.randn(2, 1, 4, 4, generator=g)
    res = fn_denoiser(lambda x, t: out, timesteps=100, prediction="v")(x_t, torch.tensor(40.0))
    torch.testing.assert_close(res.v, out, atol=1e-5, rtol=0)


def test_continuous_abar_matches_the_schedule():
    """The tensor interpolation (no host round trip) is the schedule's own, exact at trained
    timesteps and for a respaced schedule at its kept ones."""
    s = Schedule(DiffusionConfig(timesteps=1000, schedule="cosine"))
    t = torch.tensor([0.0, 0.25, 17.5, 500.0, 998.9, 999.0], dtype=torch.float64)
    np.testing.assert_allclose(s.abar_at_tensor(t).numpy(), s.abar_at(t.numpy()), rtol=1e-12)
    np.testing.assert_allclose(s.abar_at([3, 700]), s.alphas_cumprod[[3, 700]], rtol=1e-12)
    r = s.respace([0, 250, 999])
    np.testing.assert_allclose(r.abar_at([250.0]), s.alphas_cumprod[[250]], rtol=1e-12)
    assert float(s.abar_at_tensor(torch.tensor(3.0))) == pytest.approx(s.alphas_cumprod[3])
    # sigma <-> t round trip
    ts = np.array([0.0, 10.3, 600.0, 999.0])
    np.testing.assert_allclose(s.time_at(np.exp(s.log_sigma_at(ts))), ts, atol=1e-9)


def test_zero_terminal_snr_schedule():
    """Lin et al. 2024: sqrt(abar) rescaled linearly to reach exactly 0 at T-1, unchanged at 0."""
    base = np.sqrt(np.cumprod(1 - make_betas("linear", 1000)))
    z = np.sqrt(np.cumprod(1 - make_betas("linear", 1000, zero_terminal_snr=True)))
    assert z[-1] == 0.0 and z[0] == pytest.approx(base[0], rel=1e-12)
    want = (base - base[-1]) * base[0] / (base[0] - base[-1])
    np.testing.assert_allclose(z, want, rtol=1e-9, atol=1e-12)
    s = Schedule(DiffusionConfig(zero_terminal_snr=True, prediction="v"))
    assert s.zero_terminal_snr and np.isfinite(s.log_sigmas).all()
    assert (np.diff(s.log_sigmas) > 0).all()  # the finite stand-in keeps sigma increasing
    with pytest.raises(ConfigError, match="zero_terminal_snr needs prediction"):
        tiny_run_config("x", diffusion={"zero_terminal_snr": True, "prediction": "eps"})


def test_zero_terminal_snr_v_model_denoises_pure_noise():
    """At zero SNR a v-prediction network gives x0 = -v and eps = x_t, with no division by 0."""
    den = fn_denoiser(lambda x, t: torch.full_like(x, 0.5), timesteps=100, prediction="v")
    den = den.with_options(
        schedule=Schedule(den.cfg.diffusion.model_copy(update={"zero_terminal_snr": True}))
    )
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    res = den(x, torch.tensor(99.0))
    assert torch.isfinite(res.x0).all()
    torch.testing.assert_close(res.x0, torch.full_like(x, -0.5), atol=2e-3, rtol=0)


def _class_denoiser(**options):
    cfg = tiny_run_config("x", model={"num_classes": 3})
    seen = []

    class Net(torch.nn.Module):
        def forward(self, x, t, class_labels=None):
            seen.append(class_labels.clone())
            # mean channel: the label itself; variance-free model (fixed_small)
            return type("O", (), {"sample": class_labels.float().view(-1, 1, 1, 1) + 0 * x})()

    return Denoiser(Net(), cfg, 1, **options), seen


def test_classifier_free_guidance_mixes_the_null_and_class_outputs():
    den, seen = _class_denoiser(guidance=3.0)
    cond = den.condition(torch.tensor([0, 2]))
    out = den.guided_output(torch.zeros(2, 1, 2, 2), torch.tensor(5.0), cond)
    assert seen[-1].tolist() == [0, 2, 3, 3]  # one doubled batch: classes, then the null class
    # null (3) + w (class - null): 3 + 3 (0 - 3) = -6, 3 + 3 (2 - 3) = 0
    assert out[:, 0, 0, 0].tolist() == [-6.0, 0.0]
    plain, _ = _class_denoiser()
    assert plain.guided_output(torch.zeros(2, 1, 2, 2), torch.tensor(5.0), cond)[
        :, 0, 0, 0
    ].tolist() == [0.0, 2.0]


def test_condition_builds_what_the_network_takes():
    den, _ = _class_denoiser()
    drop = torch.tensor([True, False])
    assert den.condition(torch.tensor([1, 2]), drop=drop).labels.tolist() == [3, 2]
    with pytest.raises(ConfigError, match="class-conditional"):
        den.condition()
    rng_cfg = tiny_run_config("x", model={"range_conditioning": True})
    with pytest.raises(ConfigError, match="range moments"):
        Denoiser(torch.nn.Identity(), rng_cfg, 1)
    rd = Denoiser(torch.nn.Identity(), rng_cfg, 1, range_moments=(0.0, 1.0))
    stats = torch.tensor([[[0.0, 10.0]]], dtype=torch.float64)  # log10 range 1 -> z = 1
    assert rd.condition(stats=stats).labels.tolist() == [600.0]
    sr = Denoiser(torch.nn.Identity(), tiny_run_config("x", model={"superres_low_size": 8}), 1)
    low = torch.zeros(1, 1, 16, 16)
    c = sr.condition(low=low, level=torch.tensor([4]))
    assert c.extra is low and c.labels.tolist() == [4.0]


def test_every_stage_calls_the_network_through_the_denoiser(noise_files, tmp_path, monkeypatch):
    """Training, validation, likelihood and sampling all go through Denoiser.network_output."""
    from radardiff.evaluate.likelihood import run_bits_per_dim
    from radardiff.sample import SampleOptions, generate, load_run
    from radardiff.train import train

    calls = []
    original = Denoiser.network_output

    def spy(self, x_t, t, cond=None):
        calls.append(x_t.shape[0])
        return original(self, x_t, t, *(() if cond is None else (cond,)))

    monkeypatch.setattr(Denoiser, "network_output", spy)
    cfg = tiny_run_config(str(noise_files[0]), str(noise_files[1]), train={"steps": 2})
    train(cfg, tmp_path / "run")
    trained = len(calls)
    assert trained >= 2 + 8  # two steps, then validation at 8 timesteps
    run = load_run(tmp_path / "run")
    generate(run, SampleOptions(n=2, sampler="ddim", steps=3), tmp_path / "s.h5")
    assert len(calls) == trained + 3
    run_bits_per_dim(tmp_path / "run", noise_files[1], steps=4, n=2)
    assert len(calls) == trained + 3 + 4
