"""The native solvers against exact answers: identities between them, their orders of
convergence on the probability-flow ODE of a Gaussian, the exact law under zero terminal SNR."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from test_samplers import (
    CONTRACT_STEPS,
    MU,
    S,
    TinyNet,
    assert_matches_gaussian,
    exact_model_fn,
    gaussian_samples,
)

from conftest import fn_denoiser
from radardiff.config.schema import DiffusionConfig
from radardiff.diffusion import SAMPLERS, Schedule, initial_noise
from radardiff.diffusion import solvers as so
from radardiff.diffusion.grids import at_noise_levels, grid_logsnr, grid_trailing

CFG = DiffusionConfig(timesteps=1000, prediction="v")
SCHEDULE = Schedule(CFG)


def run(solver, sigmas, net=None, seeds=(3, 4), shape=(2, 5, 5), **options):
    """``solver`` over ``sigmas`` with a stand-in network (TinyNet), in float64."""
    net = net or TinyNet().double()
    den = fn_denoiser(net, data_channels=shape[0], timesteps=1000, prediction="v")
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    x = initial_noise(gens, shape).double()
    fn = at_noise_levels(den.bind(), SCHEDULE, sigmas, x.device)
    return solver(fn, x, sigmas, gens, **options)


def euler_ve(denoise, x, sigmas, generators, ancestral=False):
    """Euler (ancestral) in the VE state y = x / a, written out as Karras et al. 2022 and
    k-diffusion's ``sample_euler(_ancestral)`` have it."""
    y = x * np.sqrt(1.0 + sigmas[0] ** 2)
    for sig, nxt in zip(sigmas[:-1], sigmas[1:], strict=True):
        x0 = denoise(y / np.sqrt(1.0 + sig**2), sig).x0
        up = nxt * np.sqrt(sig**2 - nxt**2) / sig if ancestral else 0.0
        down = np.sqrt(nxt**2 - up**2)
        y = y + (down - sig) * (y - x0) / sig
        if up > 0:
            y = y + up * so.noise_like(y, generators)
    return y


def test_first_order_solvers_are_one_update():
    """DDIM (eta 0), Euler and first-order DPM-Solver++ are the same step of the probability-flow
    ODE, in the VP state, the VE state and lambda (Karras et al. 2022, Table 1; Lu et al. 2022)."""
    g = grid_trailing(SCHEDULE, 9)
    ddim = run(so.sample_ddim, g)
    torch.testing.assert_close(run(euler_ve, g), ddim, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(run(so.sample_dpmpp, g, solver_order=1), ddim, rtol=1e-9, atol=1e-9)
    one = run(so.sample_dpmpp_singlestep, g, solver_order=1)
    torch.testing.assert_close(one, ddim, rtol=1e-9, atol=1e-9)


def test_ancestral_samplers_are_one_posterior():
    """DDPM with beta~, Euler ancestral and DDIM with eta = 1 draw from the same posterior with
    the same noise (Song et al. 2021, sec. 4.1)."""
    g = grid_trailing(SCHEDULE, 7)
    ddpm = run(so.sample_ddpm, g)
    torch.testing.assert_close(run(euler_ve, g, ancestral=True), ddpm, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(run(so.sample_ddim, g, eta=1.0), ddpm, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(run(so.sample_ddpm, g, variance="fixed_large"), ddpm)


def ode_endpoint_error(solver, steps: int) -> float:
    """Largest error of a solver's sample against the exact probability-flow map of N(MU, S^2)
    over a log-SNR grid: ``y -> MU + (y - MU) sqrt(S^2 + sigma^2) / sqrt(S^2 + sigma_0^2)`` to the
    grid's last level, then that level's exact x0 (the solver's last step)."""
    g = grid_logsnr(SCHEDULE, steps)
    net = exact_model_fn(CFG)
    y = run(solver, g, net, seeds=range(4), shape=(1, 8, 8))
    gens = [torch.Generator().manual_seed(s) for s in range(4)]
    y0 = initial_noise(gens, (1, 8, 8)).double() * np.sqrt(1.0 + g[0] ** 2)
    last = g[-2]
    y_end = MU + (y0 - MU) * np.sqrt(S**2 + last**2) / np.sqrt(S**2 + g[0] ** 2)
    want = MU + S**2 * (y_end - MU) / (S**2 + last**2)
    return float((y - want).abs().max())


@pytest.mark.parametrize(
    ("solver", "order"),
    [
        (so.sample_ddim, 1),
        (so.sample_heun, 2),
        (so.sample_dpmpp, 2),
        (partial(so.sample_dpmpp, solver_type="heun"), 2),
        (so.sample_dpmpp_singlestep, 2),
        (partial(so.sample_dpmpp_singlestep, solver_order=3), 3),
        (so.sample_unipc, 3),  # UniC raises UniP-2 by one (Zhao et al. 2023, Theorem 3.1)
        (partial(so.sample_unipc, solver_type="bh1"), 3),
    ],
    ids=[
        "ddim",
        "heun",
        "dpm++2m",
        "dpm++2m-heun",
        "dpm++2s",
        "dpm++3s",
        "unipc-2",
        "unipc-2-bh1",
    ],
)
def test_orders_of_convergence(solver, order):
    """Doubling the steps divides the error by about 2^order."""
    ratio = ode_endpoint_error(solver, 48) / ode_endpoint_error(solver, 96)
    assert 0.85 * 2**order < ratio < 1.25 * 2**order, ratio


def test_sde_solvers_keep_the_noise_per_sample():
    """eta > 0 draws from each sample's generator: a sample does not change with its batch."""
    g = grid_trailing(SCHEDULE, 6)
    both = run(so.sample_dpmpp, g, seeds=(3, 4), eta=1.0)
    torch.testing.assert_close(run(so.sample_dpmpp, g, seeds=(4,), eta=1.0)[0], both[1])
    assert not torch.allclose(both, run(so.sample_dpmpp, g, seeds=(3, 4)))
    above = run(so.sample_dpmpp, g, eta=1.0, eta_min_sigma=float(g[0]) * 1.001)
    torch.testing.assert_close(above, run(so.sample_dpmpp, g))  # a window above every level


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_zero_terminal_snr_gives_the_data_law(name):
    """abar = 0 at T - 1 (v-prediction): every sampler starts at its finite stand-in and still
    returns N(MU, S^2) over the exact denoiser."""
    steps = min(CONTRACT_STEPS[name], 500)
    y = gaussian_samples(name, steps, timesteps=1000, prediction="v", zero_terminal_snr=True)
    assert_matches_gaussian(y)
