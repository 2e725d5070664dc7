"""Golden values: every sampler on a fixed stand-in network, pinned.

The contract tests check what a sampler must do; these pin what each one does, so that a change
(of ours, or of torch) that moves any sampler's numbers fails here instead of drifting unseen. A
deliberate change updates the table with a note of why.

Set-up: v-prediction, T = 1000 linear, 8 steps with each sampler's default options, no clipping,
2 samples of (2, 4, 4) from seeds 1 and 2. Values: sum, sum of |x|, x[0, 0, 0, 0], x[1, 1, 3, 2].
Recorded with diffusers 0.42.1, torch 2.13.0 (CPU), when eight of the samplers were diffusers
schedulers; the native solvers that replaced them reproduce the table.
"""

from __future__ import annotations

import pytest
import torch

from conftest import fn_denoiser
from radardiff.diffusion import SAMPLERS, initial_noise, make_sampler

GOLDEN = {
    "ddpm": [13.45793, 49.63863, 1.132553, 0.202639],
    "ddim": [-7.271875, 60.351757, -0.189692, -0.793547],
    "dpmsolver++": [-7.622614, 66.366302, -0.29608, -0.800332],
    "dpmsolver++-sde": [17.079414, 59.337509, 1.145876, -0.218424],
    "dpmsolver++-singlestep": [-8.069235, 62.174469, -0.233487, -0.802637],
    "unipc": [-7.657465, 67.577461, -0.312933, -0.803531],
    "euler": [-7.27167, 60.350819, -0.189672, -0.793548],
    "euler_ancestral": [13.45793, 49.638641, 1.132553, 0.20264],
    "heun": [-9.364605, 71.48642, -0.378562, -0.854105],
    "dpmsolver++-hybrid": [17.079422, 59.337521, 1.145876, -0.218424],
    "restart": [-6.590044, 78.743729, 1.965075, -1.063765],
    "consistency": [6.716573, 34.71283, -0.165321, -1.090388],
}


class FixedNet:
    """A fixed, smooth stand-in for a trained network (no batch coupling)."""

    def __init__(self) -> None:
        self.w = torch.randn(2, 2, 3, 3, generator=torch.Generator().manual_seed(0)) * 0.3

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.conv2d(x.float(), self.w, padding=1)
        return torch.tanh(y) * 0.8 + 0.05 * torch.sin(t.view(-1, 1, 1, 1).float() / 50.0)


def test_every_sampler_has_golden_values():
    assert set(GOLDEN) == set(SAMPLERS)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_sampler_golden_values(name):
    den = fn_denoiser(FixedNet(), data_channels=2, timesteps=1000, prediction="v")
    prepared = make_sampler(name, den.cfg.diffusion, 8)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    y = prepared.run(den.bind(), initial_noise(gens, (2, 4, 4)), gens)
    got = [float(y.sum()), float(y.abs().sum()), float(y[0, 0, 0, 0]), float(y[1, 1, 3, 2])]
    assert got == pytest.approx(GOLDEN[name], rel=1e-4, abs=1e-4), f"{name}: {got}"
