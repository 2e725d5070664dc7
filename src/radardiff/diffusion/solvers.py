"""Solvers: functions of one signature over a denoiser and a grid of noise levels.

Every solver is ``sample_*(denoise, x, sigmas, generators, **options) -> x0`` (k-diffusion's
``sample_*(model, x, sigmas, ...)``): ``sigmas`` is a grid of :mod:`radardiff.diffusion.grids`
(decreasing noise levels ending at 0), ``x`` unit Gaussian noise, the VP state at ``sigmas[0]``
(one row per generator), and ``denoise(x_t, sigma)`` the conditioned denoiser at noise level
sigma (:func:`radardiff.diffusion.grids.at_noise_levels`), which returns a coherent (x0, eps) pair
with guidance and x0 clipping applied: every solver takes both from it, so clipping is coherent
by construction. Every random draw of a stochastic solver comes from the sample's own generator,
so sample i does not depend on the batch it is in. The step that ends at sigma = 0 returns the
last x0 estimate: at abar = 1 every update (the DDPM posterior mean included) is x0 itself.

Notation: the VP state ``x = a x0 + s eps`` with ``a = 1 / sqrt(1 + sigma^2)`` (``sqrt(abar)``),
``s = sigma a`` (``sqrt(1 - abar)``), ``lambda = -log sigma`` (half the log-SNR); the VE state
``y = x / a = x0 + sigma eps`` of Karras et al. 2022, in which the probability-flow ODE is
``dy / dsigma = (y - x0) / sigma``.
"""

from __future__ import annotations

import numpy as np
import torch

from radardiff.diffusion.grids import SigmaDenoise


def _a(sigma: float) -> float:
    """sqrt(abar) = 1 / sqrt(1 + sigma^2)."""
    return float(1.0 / np.sqrt(1.0 + sigma * sigma))


def _s(sigma: float) -> float:
    """sqrt(1 - abar) = sigma / sqrt(1 + sigma^2)."""
    return float(sigma / np.sqrt(1.0 + sigma * sigma))


def step_generators(
    generators: list[torch.Generator], device: torch.device
) -> list[torch.Generator]:
    """The generators a stochastic solver's step noise comes from.

    On the CPU, the samples' own generators (which drew their initial noise). On a GPU, one
    generator per sample on the GPU, seeded from the sample's generator: drawing the step noise
    on the host and copying it would make every step wait for the GPU. Either way sample i's
    noise depends on its own seed only, not on the batch it is in.
    """
    if device.type == "cpu" or all(g.device == device for g in generators):
        return generators
    return [torch.Generator(device=device).manual_seed(g.initial_seed()) for g in generators]


def noise_like(x: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """One standard normal draw per sample from its own generator, on the device of ``x``."""
    gens = step_generators(generators, x.device)
    return torch.stack(
        [torch.randn(x.shape[1:], generator=g, device=g.device, dtype=x.dtype) for g in gens]
    ).to(x.device)


# ---- first order over abar: DDPM (Euler ancestral), DDIM (Euler) ------------------------------


def sample_ddpm(
    denoise: SigmaDenoise,
    x: torch.Tensor,
    sigmas: np.ndarray,
    generators: list[torch.Generator],
    variance: str = "fixed_small",
) -> torch.Tensor:
    """Ancestral DDPM: a draw from the posterior ``q(x' | x, x0)`` at each step.

    From abar to abar' at the next level, ``beta = 1 - abar / abar'``:

        x' = (sqrt(abar') beta x0 + sqrt(1 - beta) (1 - abar') x) / (1 - abar) + sqrt(v) z

    with ``v = beta~ = beta (1 - abar') / (1 - abar)`` (``fixed_small``), ``beta``
    (``fixed_large``) or, for ``learned_range``, ``exp(f log beta + (1 - f) log beta~)`` with
    ``f = (var + 1) / 2`` from the network's variance channels. Over a grid of trained timesteps
    this is the respaced process (see :mod:`radardiff.diffusion.grids`). With beta~ it is also
    Euler ancestral: in the VE state, an Euler step down to ``sigma_down = sigma'^2 / sigma`` and
    fresh noise ``sigma_up = sigma' sqrt(sigma^2 - sigma'^2) / sigma`` up to sigma'.

    References
    ----------
    Ho, Jain, Abbeel 2020, eq. 6-7; Nichol and Dhariwal 2021, eq. 15 (learned range); Crowson,
    k-diffusion, ``sample_euler_ancestral``.
    """
    for i in range(len(sigmas) - 1):
        sig, nxt = float(sigmas[i]), float(sigmas[i + 1])
        out = denoise(x, sig)
        x0 = out.x0.to(x.dtype)
        if nxt == 0.0:
            return x0
        # 1 - abar = s^2 and beta = (sig^2 - nxt^2) / (1 + sig^2): no cancellation at low noise
        beta = (sig * sig - nxt * nxt) / (1.0 + sig * sig)
        ratio = _s(nxt) ** 2 / _s(sig) ** 2  # (1 - abar') / (1 - abar)
        mean = _a(nxt) * beta / _s(sig) ** 2 * x0 + np.sqrt(1.0 - beta) * ratio * x
        small = max(beta * ratio, 1e-20)
        z = noise_like(x, generators)
        if variance == "learned_range" and out.var is not None:
            frac = (out.var.to(x.dtype) + 1.0) / 2.0
            x = mean + torch.exp(0.5 * (frac * np.log(beta) + (1.0 - frac) * np.log(small))) * z
        else:
            x = mean + float(np.sqrt(beta if variance == "fixed_large" else small)) * z
    return x


def sample_ddim(
    denoise: SigmaDenoise,
    x: torch.Tensor,
    sigmas: np.ndarray,
    generators: list[torch.Generator],
    eta: float = 0.0,
    eta_min_sigma: float = 0.0,
) -> torch.Tensor:
    """DDIM: ``x' = sqrt(abar') x0 + sqrt(1 - abar' - c^2) eps + c z`` with

        c = eta sqrt((1 - abar') / (1 - abar) (1 - abar / abar'))

    eta = 1 is the DDPM posterior with beta~ (:func:`sample_ddpm`), eta = 0 deterministic: Euler's
    method on the probability-flow ODE, ``y' = y + (sigma' - sigma) (y - x0) / sigma`` in the VE
    state ``y = x / sqrt(abar)``, written in x. ``eta`` applies at noise levels ``>=
    eta_min_sigma`` only.

    References
    ----------
    Song, Meng, Ermon 2021, "Denoising diffusion implicit models", eq. 12 and 14; Karras et al.
    2022, Table 1 (DDIM as Euler's method).
    """
    for i in range(len(sigmas) - 1):
        sig, nxt = float(sigmas[i]), float(sigmas[i + 1])
        out = denoise(x, sig)
        if nxt == 0.0:
            return out.x0.to(x.dtype)
        e = eta if sig >= eta_min_sigma else 0.0
        c2 = e * e * _s(nxt) ** 2 / _s(sig) ** 2 * (sig * sig - nxt * nxt) / (1.0 + sig * sig)
        x = _a(nxt) * out.x0.to(x.dtype) + float(np.sqrt(_s(nxt) ** 2 - c2)) * out.eps.to(x.dtype)
        if e > 0:
            x = x + float(np.sqrt(c2)) * noise_like(x, generators)
    return x


# ---- the probability-flow ODE in sigma: Heun, restart -------------------------------------------


def _x0_ve(denoise: SigmaDenoise, y: torch.Tensor, sigma: float) -> torch.Tensor:
    """x0 of the VE state ``y`` at ``sigma`` (the network sees the VP state ``a y``)."""
    return denoise(y * _a(sigma), sigma).x0.to(y.dtype)


def _heun_step(denoise: SigmaDenoise, y: torch.Tensor, sig: float, nxt: float) -> torch.Tensor:
    """One Heun step of ``dy/dsigma = (y - x0) / sigma`` from sig to nxt; Euler (x0) to 0."""
    x0 = _x0_ve(denoise, y, sig)
    if nxt == 0.0:
        return x0
    d = (y - x0) / sig
    y2 = y + (nxt - sig) * d
    d2 = (y2 - _x0_ve(denoise, y2, nxt)) / nxt
    return y + (nxt - sig) * 0.5 * (d + d2)


def sample_heun(
    denoise: SigmaDenoise, x: torch.Tensor, sigmas: np.ndarray, generators: list[torch.Generator]
) -> torch.Tensor:
    """Heun (2nd order) on the probability-flow ODE: an Euler step to ``y~``, then the mean of
    the slopes at both ends, ``y' = y + (sigma' - sigma) (d(y, sigma) + d(y~, sigma')) / 2`` with
    ``d = (y - x0) / sigma``; the step to sigma = 0 is Euler's. 2 network calls a step, 1 on the
    last.

    References
    ----------
    Karras et al. 2022, Algorithm 1 (deterministic sampling).
    """
    y = x * float(np.sqrt(1.0 + sigmas[0] ** 2))
    for i in range(len(sigmas) - 1):
        y = _heun_step(denoise, y, float(sigmas[i]), float(sigmas[i + 1]))
    return y


def sample_restart(
    denoise: SigmaDenoise,
    x: torch.Tensor,
    sigmas: np.ndarray,
    generators: list[torch.Generator],
    restart_min_sigma: float,
    restart_max_sigma: float,
    restarts: int = 1,
    restart_steps: int = 3,
) -> torch.Tensor:
    """Restart sampling: Heun on the probability-flow ODE, with ``restarts`` returns from
    ``restart_min_sigma`` up to ``restart_max_sigma`` by fresh noise, each followed by
    ``restart_steps`` Heun steps (geometric in sigma) back down.

    A return is ``y + sqrt(restart_max_sigma^2 - sigma^2) z``: the forward process's noise, which
    contracts the errors the ODE accumulated above (their Theorem 3). It starts where the main
    trajectory first reaches ``restart_min_sigma`` or below (on a grid too coarse for that, at its
    last level above 0).

    References
    ----------
    Xu et al. 2023, "Restart sampling for improving generative processes", Algorithm 1.
    """
    lo, hi = restart_min_sigma, restart_max_sigma
    inner = np.geomspace(hi, lo, restart_steps + 1)
    y = x * float(np.sqrt(1.0 + sigmas[0] ** 2))
    positive = [i for i in range(len(sigmas) - 1) if sigmas[i + 1] > 0]
    at = next((i for i in positive if sigmas[i + 1] <= lo), positive[-1] if positive else -1)
    for i in range(len(sigmas) - 1):
        nxt = float(sigmas[i + 1])
        y = _heun_step(denoise, y, float(sigmas[i]), nxt)
        if i == at and hi > nxt:
            for _ in range(restarts):
                y = y + float(np.sqrt(hi * hi - nxt * nxt)) * noise_like(y, generators)
                levels = np.append(inner[:-1], nxt)
                for k in range(len(levels) - 1):
                    y = _heun_step(denoise, y, float(levels[k]), float(levels[k + 1]))
    return y


# ---- exponential integrators in lambda: DPM-Solver++, UniPC -----------------------------------


def _dpmpp_update(
    x: torch.Tensor, x0s: list[torch.Tensor], sig: np.ndarray, eta: float, solver_type: str
) -> torch.Tensor:
    """One multistep DPM-Solver++ update of order ``len(x0s)`` (1-3) from ``sig[-2]`` to
    ``sig[-1]``; ``x0s`` are the estimates at ``sig[:-1]``, oldest first. See
    :func:`sample_dpmpp` for the formula."""
    lam = -np.log(sig)
    h = lam[-1] - lam[-2]
    c = (1.0 + eta) * h
    phi = float(-np.expm1(-c))  # 1 - e^{-c}
    a = _a(sig[-1])
    out = _s(sig[-1]) / _s(sig[-2]) * float(np.exp(-eta * h)) * x + a * phi * x0s[-1]
    if len(x0s) == 1:
        return out
    r0 = (lam[-2] - lam[-3]) / h
    d1 = (x0s[-1] - x0s[-2]) / float(r0)
    if len(x0s) == 2:
        return out + a * float(0.5 * phi if solver_type == "midpoint" else 1.0 - phi / c) * d1
    r1 = (lam[-3] - lam[-4]) / h  # third order (eta = 0): a quadratic through three estimates
    d1_prev = (x0s[-2] - x0s[-3]) / float(r1)
    d2 = (d1 - d1_prev) / float(r0 + r1)
    d1 = d1 + float(r0) * d2
    return out + a * float(1.0 - phi / h) * d1 + a * float(0.5 - (h - phi) / h**2) * d2


def sample_dpmpp(
    denoise: SigmaDenoise,
    x: torch.Tensor,
    sigmas: np.ndarray,
    generators: list[torch.Generator],
    solver_order: int = 2,
    solver_type: str = "midpoint",
    lower_order_final: bool = True,
    eta: float = 0.0,
    eta_min_sigma: float = 0.0,
) -> torch.Tensor:
    """Multistep DPM-Solver++ (data prediction), orders 1-3, with stochasticity ``eta``.

    From lambda to lambda' (``h = lambda' - lambda``, ``c = (1 + eta) h``), with the latest x0
    estimate and, from the second order, its difference to the previous one:

        x' = (s' / s) e^{-eta h} x + a' (1 - e^{-c}) x0 + a' k D1 + s' sqrt(1 - e^{-2 eta h}) z

    ``D1 = (x0 - x0_prev) / r``, ``r = h_prev / h``; ``k = (1 - e^{-c}) / 2`` (``midpoint``) or
    ``1 - (1 - e^{-c}) / c`` (``heun``). The third order (eta = 0) adds a second difference.
    Lower orders at the first steps (no history yet), at the last (which returns x0) and, with
    ``lower_order_final`` and fewer than 15 steps, at the one before. eta = 0 is
    DPM-Solver++(2M) on the probability-flow ODE, eta = 1 SDE-DPM-Solver++, in between a partial
    re-noising; eta applies at noise levels ``>= eta_min_sigma`` only: above, the noise
    decorrelates each sample from the initial noise whose errors a deterministic solver would
    carry; below, deterministic steps keep the fine detail that few large stochastic steps
    would smooth away.

    References
    ----------
    Lu et al. 2022, "DPM-Solver++", Algorithm 2 and sec. 5 (SDE variant); Lu et al. 2022,
    "DPM-Solver", Algorithm 3 (third order); k-diffusion's ``sample_dpmpp_2m_sde`` (eta).
    """
    if eta > 0 and solver_order > 2:
        raise ValueError("the third order is that of the ODE (eta = 0)")
    n = len(sigmas) - 1
    x0s: list[torch.Tensor] = []
    for i in range(n):
        sig, nxt = float(sigmas[i]), float(sigmas[i + 1])
        x0s = [*x0s[-2:], denoise(x, sig).x0.to(x.dtype)]
        if nxt == 0.0:
            return x0s[-1]
        order = min(solver_order, i + 1)
        if lower_order_final and n < 15 and i == n - 2:
            order = min(order, 2)  # stabler with few steps (as diffusers)
        e = eta if sig >= eta_min_sigma else 0.0
        x = _dpmpp_update(x, x0s[-order:], sigmas[i + 1 - order : i + 2], e, solver_type)
        if e > 0:
            h = np.log(sig / nxt)
            x = x + _s(nxt) * float(np.sqrt(-np.expm1(-2.0 * e * h))) * noise_like(x, generators)
    return x


def sample_dpmpp_singlestep(
    denoise: SigmaDenoise,
    x: torch.Tensor,
    sigmas: np.ndarray,
    generators: list[torch.Generator],
    solver_order: int = 2,
    lower_order_final: bool = True,
) -> torch.Tensor:
    """Singlestep DPM-Solver++ (midpoint), orders 1-3: the grid's steps in groups of
    ``solver_order``, each group one update from its first level, whose intermediate states come
    from the lower-order updates within it.

    At the k-th step of a group (order k, from the group's base x_b at lambda_b to lambda'):

        x' = (s' / s_b) x_b + a' (1 - e^{-h}) x0_b + a' k_k (x0 - x0_b) / r

    ``h = lambda' - lambda_b``, ``r = (lambda - lambda_b) / h`` for the latest estimate x0,
    ``k_2 = (1 - e^{-h}) / 2``, ``k_3 = 1 - (1 - e^{-h}) / h``. The last step returns x0, so
    ``lower_order_final`` changes nothing here (the reference forces it when the grid ends at 0).

    References
    ----------
    Lu et al. 2022, "DPM-Solver++", Algorithm 1 (DPM-Solver++(2S)) and its third-order analogue.
    """
    del lower_order_final  # accepted for the option's sake (see above)
    for i in range(len(sigmas) - 1):
        sig, nxt = float(sigmas[i]), float(sigmas[i + 1])
        x0 = denoise(x, sig).x0.to(x.dtype)
        if nxt == 0.0:
            return x0
        if i % solver_order == 0:  # a group starts: first order from here
            base, sig_b, x0_b = x, sig, x0
        lam_b, lam, lam_next = -np.log(sig_b), -np.log(sig), -np.log(nxt)
        h = lam_next - lam_b
        phi = float(-np.expm1(-h))
        a = _a(nxt)
        x = _s(nxt) / _s(sig_b) * base + a * phi * x0_b
        if i % solver_order:
            k = 0.5 * phi if i % solver_order == 1 else 1.0 - phi / h
            x = x + a * float(k * h / (lam - lam_b)) * (x0 - x0_b)
    return x


def _unipc_update(
    x: torch.Tensor,
    x0: torch.Tensor,
    sig: float,
    nxt: float,
    others: list[tuple[float, torch.Tensor]],
    solver_type: str,
) -> torch.Tensor:
    """One UniPC update of ``x`` from ``sig`` to ``nxt`` around the estimate ``x0`` at ``sig``,
    with ``others``: (noise level, x0 estimate) pairs of the other evaluations it uses.

        x' = (s' / s) x + a' (1 - e^{-h}) x0 - a' B(h) sum_k rho_k (x0_k - x0) / r_k

    ``r_k = (lambda_k - lambda) / h``; ``B(h) = -h`` (``bh1``) or ``e^{-h} - 1`` (``bh2``); rho
    solves ``sum_k rho_k r_k^(j-1) = -h phi_{j+1}(-h) j! / B(h)``, j = 1..len(others), with
    ``phi_1(z) = (e^z - 1) / z``, ``phi_{j+1}(z) = (phi_j(z) - 1/j!) / z``; with one other,
    rho = 1/2.
    """
    lam = -np.log(sig)
    hh = lam - (-np.log(nxt))  # -h
    h_phi_1 = float(np.expm1(hh))
    b_h = hh if solver_type == "bh1" else h_phi_1
    rks = np.array([(-np.log(s) - lam) / -hh for s, _ in others])
    b, h_phi_k, factorial = [], h_phi_1 / hh - 1.0, 1
    for j in range(1, len(rks) + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= j + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    # the reference's "simplified" second order: 1/2 in place of the 1x1 solution
    rhos = [0.5] if len(rks) == 1 else np.linalg.solve(np.vander(rks, increasing=True).T, b)
    a = _a(nxt)
    out = _s(nxt) / _s(sig) * x - a * h_phi_1 * x0
    for rho, rk, (_, x0_k) in zip(rhos, rks, others, strict=True):
        out = out - float(a * b_h * rho / rk) * (x0_k - x0)
    return out


def sample_unipc(
    denoise: SigmaDenoise,
    x: torch.Tensor,
    sigmas: np.ndarray,
    generators: list[torch.Generator],
    solver_order: int = 2,
    solver_type: str = "bh2",
    lower_order_final: bool = True,
) -> torch.Tensor:
    """UniPC multistep (data prediction), orders 1-3: each step's new estimate first corrects
    the state it was computed at (UniC, of one order more than the predictor that led there),
    then predicts the next (UniP, over the last ``solver_order`` estimates); see
    :func:`_unipc_update`. The corrected state is not evaluated again, so UniC costs no call.
    Lower orders at the first steps and, with ``lower_order_final``, towards the end.

    References
    ----------
    Zhao et al. 2023, "UniPC: a unified predictor-corrector framework for fast sampling of
    diffusion models", Algorithms 1-2 (B(h) variants bh1 and bh2).
    """
    n = len(sigmas) - 1
    hist: list[tuple[float, torch.Tensor]] = []  # (noise level, x0), newest last
    prev, order = x, 1  # the state and order of the last prediction
    for i in range(n):
        sig, nxt = float(sigmas[i]), float(sigmas[i + 1])
        x0 = denoise(x, sig).x0.to(x.dtype)
        if nxt == 0.0:
            return x0
        if hist:  # UniC: x (predicted from prev) corrected with its own estimate
            others = [*hist[len(hist) - order : -1], (sig, x0)]
            x = _unipc_update(prev, hist[-1][1], hist[-1][0], sig, others, solver_type)
        hist = [*hist, (sig, x0)][-solver_order:]
        order = min(solver_order, i + 1, n - i if lower_order_final else solver_order)
        prev = x
        x = _unipc_update(x, x0, sig, nxt, hist[len(hist) - order : -1], solver_type)
    return x


# ---- consistency models --------------------------------------------------------------------------


def sample_consistency(
    denoise: SigmaDenoise, x: torch.Tensor, sigmas: np.ndarray, generators: list[torch.Generator]
) -> torch.Tensor:
    """Multistep consistency sampling: ``x0 = f(x, sigma_k)``, then re-noise to the next level,
    ``x = a x0 + s z``, and map again.

    A consistency model maps a state at any noise level to the start of its ODE trajectory, so
    its x0 estimate is already a sample: one call at the largest noise level gives one. Each
    further step re-noises that sample with fresh noise and maps it back; the fresh noise
    restores the fine texture a one-call map loses. For a model that is not a consistency
    model this is a crude ancestral sampler.

    References
    ----------
    Song, Dhariwal, Chen, Sutskever 2023, "Consistency models", Algorithm 1.
    """
    for i in range(len(sigmas) - 1):
        sig = float(sigmas[i])
        if i > 0:
            x = _a(sig) * x + _s(sig) * noise_like(x, generators)
        x = denoise(x, sig).x0.to(x.dtype)
    return x
