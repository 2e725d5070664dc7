"""VLB terms and bits/dim against closed forms.

The Gaussian toy: x0 ~ N(MU, S^2) independently per pixel. Then every conditional of the forward
chain is Gaussian, the exact denoiser is E[x0 | x_t] = MU + a S^2 (x_t - a MU) / (a^2 S^2 + b^2)
(a = sqrt(abar), b^2 = 1 - abar), and the true reverse step q(x_{t-1} | x_t) is
N(mu~_t(x_t, E[x0 | x_t]), beta~_t + c1_t^2 Var[x0 | x_t]). A model equal to it has, in expectation,
L_t = 1/2 log(1 + c1^2 Var / beta~) (t > 0), continuous decoder 1/2 log(2 pi e Var[x0 | x_1]),
and a total bound of exactly H(N(MU, S^2)) + KL(q(x_T) || N(0, 1)), for the full chain or any
respaced sub-chain ending at T-1.
"""

import math

import numpy as np
import pytest
import torch

from radardiff.config.schema import DiffusionConfig
from radardiff.diffusion.gaussian import GaussianDiffusion
from radardiff.diffusion.likelihood import bits_per_dim, dataset_bits_per_dim
from radardiff.diffusion.schedule import spaced_timesteps
from radardiff.diffusion.vlb import (
    discretized_gaussian_log_likelihood,
    normal_kl,
    prior_bpd,
    vlb_terms,
)

MU, S, T = 0.3, 0.4, 50
LN2 = math.log(2)


def trained_abar(T=T):
    scale = 1000 / T
    betas = scale * (1e-4 + (0.02 - 1e-4) * np.arange(T) / (T - 1))
    return np.cumprod(1 - betas)


def chain(abar):
    """Per kept step k: beta_k, beta~_k, c1_k and Var[x0 | x_k] of the Gaussian toy."""
    prev = np.append(1.0, abar[:-1])
    beta = 1 - abar / prev
    post = beta * (1 - prev) / (1 - abar)
    c1 = beta * np.sqrt(prev) / (1 - abar)
    var_x0 = S**2 * (1 - abar) / (abar * S**2 + 1 - abar)
    return beta, post, c1, var_x0


def expected_bits(abar):
    """(E[L_k] per kept step with the continuous decoder, E[prior]) in bits."""
    beta, post, c1, var_x0 = chain(abar)
    terms = np.empty(len(abar))
    terms[0] = 0.5 * math.log(2 * math.pi * math.e * var_x0[0])
    terms[1:] = 0.5 * np.log1p(c1[1:] ** 2 * var_x0[1:] / post[1:])
    a_T = abar[-1]
    prior = 0.5 * (a_T * (MU**2 + S**2) + (1 - a_T) - 1 - math.log(1 - a_T))
    return terms / LN2, prior / LN2


def exact_model(abar_trained, kept):
    """The exact reverse process of the Gaussian toy on the chain `kept` (eps-prediction, learned
    range variance), called like a network with trained timesteps."""
    abar = abar_trained[kept]
    beta, post, c1, var_x0 = chain(abar)
    reverse_var = post + c1**2 * var_x0
    min_log = np.log(np.append(post[1] if len(post) > 1 else beta[0], post[1:]))
    frac = (np.log(reverse_var) - min_log) / (np.log(beta) - min_log)
    index = {int(t): k for k, t in enumerate(kept)}
    seen = []

    def model_fn(x_t, t):
        seen.append(int(t[0]))
        k = torch.tensor([index[int(ti)] for ti in t])
        a = torch.as_tensor(np.sqrt(abar), dtype=x_t.dtype)[k].reshape(-1, 1, 1, 1)
        b = (1 - a**2).sqrt()
        e_x0 = MU + a * S**2 * (x_t - a * MU) / (a**2 * S**2 + b**2)
        eps_hat = (x_t - a * e_x0) / b
        v = torch.as_tensor(2 * frac - 1, dtype=x_t.dtype)[k].reshape(-1, 1, 1, 1)
        return torch.cat([eps_hat, v.expand_as(eps_hat)], dim=1)

    return model_fn, seen


def toy_data(shape=(16, 1, 64, 64), dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return MU + S * torch.randn(shape, generator=g, dtype=dtype)


def learned_diffusion():
    return GaussianDiffusion(
        DiffusionConfig(timesteps=T, variance="learned_range", prediction="eps")
    )


def test_closed_form_of_the_toy_is_self_consistent():
    """Sum of the expected terms = H(N(MU, S^2)) + KL(q(x_T) || N(0, 1)) (the test's own algebra)."""
    abar = trained_abar()
    entropy = 0.5 * math.log(2 * math.pi * math.e * S**2)
    a_T = abar[-1]
    var_T = a_T * S**2 + 1 - a_T
    kl_T = 0.5 * (var_T + a_T * MU**2 - 1 - math.log(var_T))
    for kept in (np.arange(T), spaced_timesteps(T, 10)):
        terms, prior = expected_bits(abar[kept])
        assert terms.sum() + prior == pytest.approx((entropy + kl_T) / LN2, rel=1e-9)


@pytest.mark.parametrize("steps", [None, 10])
def test_bits_per_dim_of_the_exact_denoiser_equals_entropy_plus_prior_kl(steps):
    d = learned_diffusion()
    abar = trained_abar()
    kept = np.arange(T) if steps is None else spaced_timesteps(T, steps)
    model_fn, seen = exact_model(abar, kept)
    x0 = toy_data()
    r = bits_per_dim(model_fn, d, x0, steps=steps, generator=torch.Generator().manual_seed(1))
    terms, prior = expected_bits(abar[kept])
    # the network is called with the trained timesteps, last first
    assert seen == list(kept[::-1])
    np.testing.assert_array_equal(r.timesteps.numpy(), kept)
    total = r.total_continuous.mean().item()
    stderr = r.total_continuous.std().item() / math.sqrt(x0.shape[0])
    assert abs(total - (terms.sum() + prior)) < 4 * stderr + 1e-4
    assert stderr < 0.01
    # each term: Monte Carlo mean over 65536 pixels against its expectation
    got = r.terms.mean(dim=0).numpy().copy()
    got[0] = r.decoder_continuous.mean().item()
    np.testing.assert_allclose(got, terms, rtol=0.02, atol=2e-3)
    # the prior of each sample, exactly, from its own mean of x0^2
    a_T = trained_abar()[-1]
    x0_sq = (x0**2).mean(dim=(1, 2, 3))
    hand = 0.5 * (a_T * x0_sq + (1 - a_T) - 1 - math.log(1 - a_T)) / LN2
    torch.testing.assert_close(r.prior, hand, rtol=1e-9, atol=0)
    assert r.prior.mean().item() == pytest.approx(prior, rel=0.05)


def test_per_term_kl_of_the_exact_posterior_mean_is_the_variance_kl():
    """Model mean = true posterior mean mu~(x_t, x0) exactly: L_t = KL of the variances alone."""
    d = learned_diffusion()
    beta, post, _, _ = chain(trained_abar())
    x0 = toy_data((4, 1, 8, 8))
    t = torch.tensor([1, 17, 30, T - 1])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3), dtype=x0.dtype)
    x_t = d.q_sample(x0, t, noise)
    v = torch.tensor([-1.0, -0.3, 0.5, 1.0], dtype=x0.dtype).reshape(4, 1, 1, 1)
    out = torch.cat([noise, v.expand_as(x0)], dim=1)  # eps_hat = eps: x0_hat = x0
    got = vlb_terms(d, out, x0, x_t, t, detach_mean=False)
    for i, ti in enumerate(t.tolist()):
        frac = (v[i].item() + 1) / 2
        model_var = math.exp(frac * math.log(beta[ti]) + (1 - frac) * math.log(post[ti]))
        r = post[ti] / model_var
        hand = 0.5 * (-math.log(r) + r - 1) / LN2
        assert got[i].item() == pytest.approx(hand, rel=1e-6, abs=1e-12)
    assert got[0].item() == pytest.approx(0.0, abs=1e-12)  # v = -1: the posterior variance itself


def test_respaced_bits_per_dim_with_all_steps_equals_the_full_computation():
    d = GaussianDiffusion(DiffusionConfig(timesteps=40, variance="learned_range", prediction="v"))
    x0 = toy_data((3, 2, 5, 5), dtype=torch.float32)
    mask = torch.ones(x0.shape, dtype=torch.bool)
    mask[0, :, :2] = False

    def model_fn(x_t, t):
        return torch.cat(
            [0.3 * torch.tanh(x_t) + 1e-3 * t.reshape(-1, 1, 1, 1), torch.tanh(x_t)], 1
        )

    full = bits_per_dim(model_fn, d, x0, mask, generator=torch.Generator().manual_seed(5))
    again = bits_per_dim(
        model_fn, d, x0, mask, steps=list(range(40)), generator=torch.Generator().manual_seed(5)
    )
    for name in ("total", "total_continuous", "prior", "terms", "decoder_continuous", "x0_mse"):
        torch.testing.assert_close(getattr(again, name), getattr(full, name), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(full.total, full.prior + full.terms.sum(1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        full.total_continuous - full.total, full.decoder_continuous - full.terms[:, 0]
    )


def test_dataset_bits_per_dim_averages_samples():
    d = learned_diffusion()
    kept = spaced_timesteps(T, 8)
    model_fn, _ = exact_model(trained_abar(), kept)
    x0 = toy_data((6, 1, 8, 8))
    batches = [x0[:4], (x0[4:], None)]
    res = dataset_bits_per_dim(
        model_fn, d, batches, steps=8, generator=torch.Generator().manual_seed(0)
    )
    one = bits_per_dim(model_fn, d, x0, steps=8, generator=torch.Generator().manual_seed(9))
    assert res.n_samples == 6 and res.terms.shape == (8,)
    np.testing.assert_array_equal(res.timesteps, kept)
    assert res.total == pytest.approx(one.total.mean().item(), abs=0.2)
    assert res.prior == pytest.approx(one.prior.mean().item(), rel=1e-9)


def test_prior_bpd_by_hand():
    d = GaussianDiffusion(DiffusionConfig(timesteps=T, prediction="eps"))
    x0 = torch.tensor([0.0, 0.7, -1.0], dtype=torch.float64).reshape(3, 1, 1, 1)
    a = trained_abar()[-1]
    hand = [0.5 * (a * x**2 + (1 - a) - 1 - math.log(1 - a)) / LN2 for x in (0.0, 0.7, -1.0)]
    assert prior_bpd(d, x0).tolist() == pytest.approx(hand, rel=1e-9)


def test_normal_kl_by_hand():
    m1, v1, m2, v2 = 0.3, 0.5, -0.2, 2.0
    hand = 0.5 * (math.log(v2 / v1) + v1 / v2 + (m1 - m2) ** 2 / v2 - 1)
    got = normal_kl(
        *(torch.tensor(x, dtype=torch.float64) for x in (m1, math.log(v1), m2, math.log(v2)))
    )
    assert got.item() == pytest.approx(hand, rel=1e-12)


@pytest.mark.parametrize("z", [-30.0, -12.0, -3.0, 0.0, 0.4, 3.0, 12.0, 30.0])
def test_discretized_likelihood_is_accurate_in_both_tails(z):
    """log(Phi(hi) - Phi(lo)) against erfc, which keeps full precision in the tails."""
    sigma = 0.01
    x = torch.tensor(0.2, dtype=torch.float64)
    mean = x - z * sigma
    log_s = torch.tensor(math.log(sigma), dtype=torch.float64)
    got = discretized_gaussian_log_likelihood(x, mean, log_s)
    lo, hi = (z * sigma - 1 / 255) / sigma, (z * sigma + 1 / 255) / sigma
    if lo > 0:
        p = 0.5 * (math.erfc(lo / math.sqrt(2)) - math.erfc(hi / math.sqrt(2)))
    else:
        p = 0.5 * (math.erfc(-hi / math.sqrt(2)) - math.erfc(-lo / math.sqrt(2)))
    assert got.item() == pytest.approx(math.log(p), rel=1e-9)
    # in float32 too (training), away from underflow of the mass itself
    got32 = discretized_gaussian_log_likelihood(x.float(), mean.float(), log_s.float())
    assert torch.isfinite(got32)
    assert got32.item() == pytest.approx(math.log(p), rel=1e-3, abs=1e-3)
