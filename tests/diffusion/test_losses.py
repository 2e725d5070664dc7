"""Training losses on fixed inputs against numbers computed by hand (math, not the library)."""

import math

import pytest
import torch

from radardiff.config.schema import DiffusionConfig
from radardiff.diffusion.gaussian import GaussianDiffusion, masked_mean
from radardiff.errors import ConfigError

T = 100


def linear_beta(t, T=T):
    scale = 1000 / T
    return scale * (1e-4 + (0.02 - 1e-4) * t / (T - 1))


def abar(t):
    return math.prod(1 - linear_beta(s) for s in range(t + 1))


def hand_posterior(t):
    """(coef_x0, coef_xt, beta~_t, beta_t) of q(x_{t-1} | x_t, x_0) for the linear schedule."""
    b, ab, ab_prev = linear_beta(t), abar(t), abar(t - 1) if t > 0 else 1.0
    return (
        b * math.sqrt(ab_prev) / (1 - ab),
        (1 - ab_prev) * math.sqrt(1 - b) / (1 - ab),
        b * (1 - ab_prev) / (1 - ab),
        b,
    )


def hand_kl(m1, v1, m2, v2):
    return 0.5 * (math.log(v2 / v1) + v1 / v2 + (m1 - m2) ** 2 / v2 - 1)


def scalar(v):
    return torch.tensor([[[[v]]]], dtype=torch.float32)


def diffusion(**kw):
    return GaussianDiffusion(DiffusionConfig(timesteps=T, **{"prediction": "eps", **kw}))


# one pixel at t = 40: x0 = 0.5, eps = -1.2, the network says eps_hat = 0.3 (and v_var = 0.4)
X0, EPS, EPS_HAT, V_VAR, TT = 0.5, -1.2, 0.3, 0.4, 40


def one_pixel(d, extra_channels=()):
    t = torch.tensor([TT])
    x0, noise = scalar(X0), scalar(EPS)
    x_t = d.q_sample(x0, t, noise)
    out = torch.cat([scalar(EPS_HAT), *[scalar(c) for c in extra_channels]], dim=1)
    return out.requires_grad_(True), x0, x_t, t, noise


def hand_terms(variance):
    c1, c2, post_var, beta = hand_posterior(TT)
    ab = abar(TT)
    x_t = math.sqrt(ab) * X0 + math.sqrt(1 - ab) * EPS
    x0_hat = (x_t - math.sqrt(1 - ab) * EPS_HAT) / math.sqrt(ab)
    true_mean, model_mean = c1 * X0 + c2 * x_t, c1 * x0_hat + c2 * x_t
    if variance == "fixed_small":
        model_var = post_var
    elif variance == "fixed_large":
        model_var = beta
    else:
        frac = (V_VAR + 1) / 2
        model_var = math.exp(frac * math.log(beta) + (1 - frac) * math.log(post_var))
    kl_bits = hand_kl(true_mean, post_var, model_mean, model_var) / math.log(2)
    return (EPS_HAT - EPS) ** 2, kl_bits


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_mse_loss_and_vlb_of_a_fixed_variance_model(variance):
    d = diffusion(variance=variance)
    lt = d.training_losses(*one_pixel(d))
    mse, kl = hand_terms(variance)
    assert lt.mse.item() == pytest.approx(mse, rel=1e-6)
    assert lt.loss.item() == pytest.approx(mse, rel=1e-6)  # fixed variance: no VLB term
    assert lt.vlb.item() == pytest.approx(kl, rel=1e-4)


@pytest.mark.parametrize(
    ("loss", "vlb_weight", "factor"),
    [("mse", 0.001, 1.0), ("rescaled_mse", 0.001, T / 1000), ("rescaled_mse", 0.01, 0.01 * T)],
)
def test_hybrid_loss_with_learned_range_variance(loss, vlb_weight, factor):
    d = diffusion(variance="learned_range", loss=loss, vlb_weight=vlb_weight)
    lt = d.training_losses(*one_pixel(d, [V_VAR]))
    mse, kl = hand_terms("learned_range")
    assert lt.vlb.item() == pytest.approx(kl, rel=1e-4)
    assert lt.loss.item() == pytest.approx(mse + factor * kl, rel=1e-5)


@pytest.mark.parametrize(("loss", "factor"), [("kl", 1.0), ("rescaled_kl", T)])
@pytest.mark.parametrize("variance", ["fixed_small", "learned_range"])
def test_kl_losses(loss, factor, variance):
    d = diffusion(variance=variance, loss=loss)
    extra = [V_VAR] if variance == "learned_range" else []
    lt = d.training_losses(*one_pixel(d, extra))
    _, kl = hand_terms(variance)
    assert lt.loss.item() == pytest.approx(factor * kl, rel=1e-4)


def test_vlb_trains_only_the_variance_in_the_hybrid_loss():
    d = diffusion(variance="learned_range", loss="rescaled_mse")
    out, x0, x_t, t, noise = one_pixel(d, [V_VAR])
    d.training_losses(out, x0, x_t, t, noise).loss.sum().backward()
    # d/d eps_hat of the loss is that of the MSE alone: 2 (eps_hat - eps)
    assert out.grad[0, 0].item() == pytest.approx(2 * (EPS_HAT - EPS), rel=1e-6)
    assert out.grad[0, 1].abs().item() > 0
    # with the kl loss the mean is trained by the VLB
    d = diffusion(variance="learned_range", loss="kl")
    out, x0, x_t, t, noise = one_pixel(d, [V_VAR])
    d.training_losses(out, x0, x_t, t, noise).loss.sum().backward()
    assert out.grad[0, 0].abs().item() > 0


def test_decoder_nll_at_t0_discretized_and_bin_edges():
    d = diffusion(variance="fixed_small")
    t = torch.tensor([0, 0])
    x0 = torch.tensor([0.2, 1.0]).reshape(2, 1, 1, 1)
    noise = torch.tensor([0.7, -0.4]).reshape(2, 1, 1, 1)
    x_t = d.q_sample(x0, t, noise)
    eps_hat = torch.tensor([0.1, 0.3]).reshape(2, 1, 1, 1)
    lt = d.training_losses(eps_hat, x0, x_t, t, noise)
    ab = abar(0)
    sigma = math.sqrt(hand_posterior(1)[2])  # fixed_small at t = 0: beta~_0 clipped to beta~_1

    def cdf(z):
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))

    expected = []
    for i, (x, e) in enumerate([(0.2, 0.1), (1.0, 0.3)]):
        mean = (x_t[i].item() - math.sqrt(1 - ab) * e) / math.sqrt(ab)  # mu~_0 = x0_hat
        lo, hi = (x - 1 / 255 - mean) / sigma, (x + 1 / 255 - mean) / sigma
        p = 1 - cdf(lo) if x > 0.999 else cdf(hi) - cdf(lo)  # the top bin extends to +inf
        expected.append(-math.log(p) / math.log(2))
    assert lt.vlb.tolist() == pytest.approx(expected, rel=1e-4)


def test_every_parameterisation_recovers_x0_from_its_exact_target():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 2, 3, 3, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 10, 50, 99])
    for pred in ("eps", "v", "x0"):
        d = diffusion(prediction=pred)
        x_t = d.q_sample(x0, t, noise)
        torch.testing.assert_close(
            d.predict_x0(d.target(x0, t, noise), x_t, t), x0, atol=2e-4, rtol=0
        )
        # a perfect mean gives KL 0 at t > 0 with the posterior variance
        vlb = d.training_losses(d.target(x0, t, noise), x0, x_t, t, noise).vlb
        assert vlb[1:].abs().max().item() < 1e-3
    # v = sqrt(abar) eps - sqrt(1 - abar) x0 by hand
    d = diffusion(prediction="v")
    ab = abar(50)
    v = d.target(x0, t, noise)[2]
    torch.testing.assert_close(v, math.sqrt(ab) * noise[2] - math.sqrt(1 - ab) * x0[2])


@pytest.mark.parametrize("pred", ["eps", "v", "x0"])
def test_min_snr_weights(pred):
    gamma = 5.0
    d = diffusion(prediction=pred, min_snr_gamma=gamma)
    t = torch.tensor([0, 20, 60, 99])
    w = d.mse_weight(t)
    for i, ti in enumerate(t.tolist()):
        snr = abar(ti) / (1 - abar(ti))
        hand = {
            "eps": min(snr, gamma) / snr,
            "v": min(snr, gamma) / (snr + 1),
            "x0": min(snr, gamma),
        }
        assert w[i].item() == pytest.approx(hand[pred], rel=1e-5)
    # the weighted loss equals min(SNR, gamma) ||x0 - x0_hat||^2 whatever the parameterisation
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 1, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    x_t = d.q_sample(x0, t, noise)
    out = d.target(x0, t, noise) + 0.1 * torch.randn(x0.shape, generator=g)
    loss = d.training_losses(out, x0, x_t, t, noise).loss
    x0_err = ((d.predict_x0(out, x_t, t) - x0) ** 2).mean(dim=(1, 2, 3))
    snr = d.snr[t].float()
    torch.testing.assert_close(loss, snr.clamp(max=gamma) * x0_err, rtol=1e-3, atol=1e-7)
    assert diffusion(prediction=pred).mse_weight(t).tolist() == [1.0] * 4


@pytest.mark.parametrize("variance", ["fixed_small", "learned_range"])
@pytest.mark.parametrize("loss", ["mse", "rescaled_mse", "kl"])
@pytest.mark.parametrize("junk", [float("nan"), 1e6])
def test_masked_loss_ignores_masked_pixels(variance, loss, junk):
    d = diffusion(variance=variance, loss=loss)
    k = d.out_channels_factor
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(3, 2, 4, 6, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 30, 99])
    out = torch.randn(3, 2 * k, 4, 6, generator=g)
    mask = torch.zeros(3, 2, 4, 6, dtype=torch.bool)
    mask[..., :4] = True  # the last two columns hold no data
    x_t = d.q_sample(x0, t, noise)
    ref = d.training_losses(out[..., :4], x0[..., :4], x_t[..., :4], t, noise[..., :4])

    def spoil(a):
        a = a.clone()
        a[..., 4:] = junk
        return a

    out_j = spoil(out).requires_grad_(True)
    got = d.training_losses(out_j, spoil(x0), spoil(x_t), t, spoil(noise), mask)
    for name in ("loss", "mse", "vlb"):
        torch.testing.assert_close(getattr(got, name), getattr(ref, name), rtol=1e-6, atol=1e-7)
    got.loss.sum().backward()
    assert torch.isfinite(out_j.grad).all()
    assert (out_j.grad[..., 4:] == 0).all()


def test_masked_mean_with_a_channel_broadcast_mask():
    x = torch.arange(8.0).reshape(1, 2, 2, 2)
    mask = torch.tensor([[[[True, False], [False, True]]]])
    assert masked_mean(x, mask).item() == pytest.approx((0 + 3 + 4 + 7) / 4)
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0


@pytest.mark.parametrize("t", [0, 1, 37, 99])
def test_learned_range_variance_lies_between_posterior_variance_and_beta(t):
    d = diffusion(variance="learned_range")
    v = torch.linspace(-1, 1, 21).reshape(1, 21, 1, 1)
    out = torch.cat([torch.zeros_like(v), v], dim=1)
    tt = torch.tensor([t])
    var = d.model_log_variance(out, tt, 21).exp().flatten()
    lo = hand_posterior(max(t, 1))[2]  # beta~_0 = 0 is clipped to beta~_1
    hi = linear_beta(t)
    assert lo < hi
    assert var[0].item() == pytest.approx(lo, rel=1e-6)
    assert var[-1].item() == pytest.approx(hi, rel=1e-6)
    assert (var >= lo * (1 - 1e-6)).all() and (var <= hi * (1 + 1e-6)).all()
    assert (var.diff() > 0).all()  # monotone in v


def test_fixed_large_variance_is_beta_with_beta_tilde_1_at_t0():
    d = diffusion(variance="fixed_large")
    out = torch.zeros(3, 1, 1, 1)
    var = d.model_log_variance(out, torch.tensor([0, 1, 50]), 1).exp().flatten()
    hand = [hand_posterior(1)[2], linear_beta(1), linear_beta(50)]
    assert var.tolist() == pytest.approx(hand, rel=1e-6)


def test_wrong_number_of_output_channels_is_refused():
    d = diffusion(variance="learned_range")
    out, x0, x_t, t, noise = one_pixel(d)
    with pytest.raises(ConfigError, match="must output 2 channels"):
        d.training_losses(out, x0, x_t, t, noise)
