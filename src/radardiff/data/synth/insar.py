"""Synthetic InSAR atmospheric-noise scenes.

The interferometric phase of a scene without deformation is dominated by the troposphere
(Hanssen 2001): a turbulent delay, spatially correlated with a power-law spectrum, plus a
stratified delay proportional to topography, plus an orbital ramp and decorrelation noise::

    phi(x) = phi_turb(x) + K * h(x) + a x + b y + n(x)      [radians]

- ``phi_turb``: Gaussian random field, ``P(k) ~ k**-beta`` (``beta`` = 8/3 by default,
  Kolmogorov-like), standard deviation log-normal around ``turb_std`` (about 0.3 to 3 rad);
- ``h``: synthetic topography, a smooth power-law field (beta 3.5) of standard deviation
  ``topo_std_m`` metres; ``K`` in rad/m drawn uniformly in +-``strat_k`` (0 disables);
- ramp gradients uniform in +-``ramp_gradient`` rad/pixel;
- ``n``: white Gaussian decorrelation noise of standard deviation ``noise_std`` rad.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radardiff.data.synth.fields import powerlaw_field, ramp


@dataclass(frozen=True)
class InsarNoiseParams:
    beta: float = 8.0 / 3.0
    turb_std: float = 1.0
    turb_std_spread: float = 0.5  # sigma of log(std)
    strat_k: float = 0.002  # rad per metre
    topo_std_m: float = 300.0
    ramp_gradient: float = 0.02  # rad per pixel
    noise_std: float = 0.1


def insar_noise(
    n: int, size: int = 32, seed: int = 0, params: InsarNoiseParams | None = None
) -> np.ndarray:
    """(n, 1, size, size) float32 atmospheric-noise interferograms in radians."""
    p = params or InsarNoiseParams()
    rng = np.random.default_rng(seed)
    std = p.turb_std * np.exp(p.turb_std_spread * rng.standard_normal(n))
    phi = powerlaw_field(n, size, p.beta, rng, std)
    if p.strat_k > 0:
        topo = powerlaw_field(n, size, 3.5, rng, p.topo_std_m)
        phi += rng.uniform(-p.strat_k, p.strat_k, size=(n, 1, 1)) * topo
    if p.ramp_gradient > 0:
        phi += ramp(n, size, rng, p.ramp_gradient)
    if p.noise_std > 0:
        phi += p.noise_std * rng.standard_normal(phi.shape)
    return phi[:, None].astype(np.float32)
