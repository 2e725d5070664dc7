r"""Synthetic SAR scenes over a known label map: water, land and ships (``sar_map``).

Each scene comes with its per-pixel label map (0 water, 1 land, 2 ship), and the backscatter
distribution of each label is a known one, so that per-label statistics of generated images can
be checked against analytic values.

Label map
    Land is where a smooth power-law field (``beta`` = 4: meandering coasts) exceeds its
    ``1 - f`` quantile, the land fraction ``f`` uniform in ``land_fraction``; a share
    ``all_water`` of the scenes has no land. Ships: 0 to ``max_ships`` per scene, centred on
    water pixels (none where there is no water).

Backscatter (linear intensity, sigma0; speckle ``s ~ Gamma(L, 1/L)``, mean 1, independent
between pixels; Oliver & Quegan 2004, ch. 4-5)

    ======  ===================================================================================
    water   ``I = m_w t_w s``: level ``m_w`` uniform in ``water_db`` per scene, a weak smooth
            wind texture ``t_w = exp(sigma g - sigma**2 / 2)`` (``g`` a unit power-law field,
            ``beta`` 3, ``sigma`` = ``water_texture``): near-Gamma.
    land    ``I = m_l tau s``: level uniform in ``land_db``, ``tau ~ Gamma(nu, 1/nu)`` with
            ``nu`` uniform in ``land_texture`` per scene (a K distribution), correlated over
            ``texture_corr_px`` pixels (a Gaussian field mapped to Gamma quantiles: the
            marginal stays exactly Gamma).
    ship    water plus a point target ``m_w c G(x)`` (the incoherent sum of clutter and one
            dominant scatterer, whose intensity is not speckled): contrast ``c`` uniform in
            ``ship_db`` above the water level, ``G`` an elliptical Gaussian main lobe of full
            width at half maximum 1-3 px along a random heading (0.4-1 of that across, at
            least 1 px). Side lobes are left out (windowed processing puts them 30-40 dB
            down). The label covers the pixels where the target adds at least a tenth of the
            water mean: the blob a detector would outline, from a few pixels to about 90.
    ======  ===================================================================================

Analytic truths of a scene (``psi`` the digamma function; the log-cumulants ``k2``, ``k3`` of
``log I`` as in :func:`radardiff.evaluate.measures.sar.gamma_log_cumulants` and
:func:`~radardiff.evaluate.measures.sar.k_log_cumulants`):

- water: ``ENL = 1 / ((1 + 1/L) exp(sigma**2) - 1)`` (``L`` for ``sigma`` = 0),
  ``k2 = psi'(L) + sigma**2``, ``k3 = psi''(L)``, mean ``m_w``;
- land: ``ENL = 1 / ((1 + 1/L)(1 + 1/nu) - 1) < L``, ``k2 = psi'(L) + psi'(nu)``,
  ``k3 = psi''(L) + psi''(nu)``, mean ``m_l``;
- ship: peaks ``c`` (15-30 dB) above the water level.

Images are (N, 1, H, W) float32, linear or dB (``db``); the label map is stored as the map channel
``land_cover``, the per-scene ``nu``, water and land levels (dB) as the extras ``land_texture``,
``water_db`` and ``land_db``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from radardiff.data.synth.fields import (
    filtered_noise,
    iter_blocks,
    powerlaw_field,
    rfft_wavenumbers,
)
from radardiff.data.synth.sar import _row_quantile, gamma_speckle
from radardiff.errors import ConfigError

LAND_COVER = ("water", "land", "ship")
WATER, LAND, SHIP = range(3)
SHIP_LABEL_FLOOR = 0.1  # a ship pixel: the target adds this share of the water mean or more


@dataclass(frozen=True)
class SarMapParams:
    """Parameters of :func:`sar_map` (module docstring). Ranges are (low, high) pairs drawn
    uniformly per scene; ``looks`` 1-100, ``land_texture`` > 0 (Gamma shape ``nu``; smaller is
    more textured), ``texture_corr_px`` >= 0 (0: independent texture), ``water_texture`` >= 0
    (std of the log wind texture), ``max_ships`` 0-20, ``all_water`` in [0, 1]."""

    looks: int = 4
    water_db: tuple[float, float] = (-23.0, -17.0)
    land_db: tuple[float, float] = (-10.0, -6.0)
    land_texture: tuple[float, float] = (4.0, 10.0)
    texture_corr_px: float = 1.0
    water_texture: float = 0.05
    land_fraction: tuple[float, float] = (0.05, 0.95)
    all_water: float = 0.15
    max_ships: int = 6
    ship_db: tuple[float, float] = (15.0, 30.0)
    db: bool = False

    def __post_init__(self) -> None:
        checks = [
            (self.looks >= 1, "looks", ">= 1"),
            (self.land_texture[0] > 0, "land_texture", "positive"),
            (self.texture_corr_px >= 0, "texture_corr_px", ">= 0"),
            (self.water_texture >= 0, "water_texture", ">= 0"),
            (self.land_fraction[0] >= 0 and self.land_fraction[1] <= 1, "land_fraction",
             "within [0, 1]"),
            (0 <= self.all_water <= 1, "all_water", "within [0, 1]"),
            (0 <= self.max_ships <= 20, "max_ships", "within 0-20"),
        ]  # fmt: skip
        for key in ("water_db", "land_db", "land_texture", "land_fraction", "ship_db"):
            lo, hi = getattr(self, key)
            checks.append((lo <= hi, key, "an increasing pair"))
        for ok, key, what in checks:
            if not ok:
                raise ConfigError(
                    f"synth parameter '{key}' must be {what}, got {getattr(self, key)!r}"
                )


@dataclass
class SarMapScenes:
    """Output of :func:`sar_map`: images and label maps (n, 1, size, size) float32, and the
    per-scene truths (n,) float32."""

    images: np.ndarray  # sigma0, linear or dB
    land_cover: np.ndarray  # class index into LAND_COVER
    land_texture: np.ndarray  # nu of the land's Gamma texture
    water_db: np.ndarray
    land_db: np.ndarray


def _u(rng: np.random.Generator, lo_hi: tuple[float, float], n: int) -> np.ndarray:
    return rng.uniform(*lo_hi, size=(n, 1, 1))


def _land_mask(n: int, size: int, rng: np.random.Generator, p: SarMapParams) -> np.ndarray:
    f = powerlaw_field(n, size, 4.0, rng)
    frac = _u(rng, p.land_fraction, n)
    frac = np.where(rng.random((n, 1, 1)) < p.all_water, 0.0, frac)
    return (f > _row_quantile(f, 1.0 - frac)) & (frac > 0)


def _gamma_texture(
    n: int, size: int, rng: np.random.Generator, nu: np.ndarray, corr: float
) -> np.ndarray:
    """Gamma(nu, 1/nu) texture, mean 1, correlated over ``corr`` pixels: a Gaussian field (a
    Gaussian kernel of std ``corr``) through the normal then the inverse Gamma cdf."""
    ky, kx = rfft_wavenumbers(2 * size)
    g = filtered_noise(n, size, np.exp(-2 * np.pi**2 * corr**2 * (ky**2 + kx**2)), rng)
    u = np.clip(special.ndtr(g), 1e-12, 1 - 1e-12)
    return special.gammaincinv(nu, u) / nu


def _ships(water: np.ndarray, rng: np.random.Generator, p: SarMapParams) -> np.ndarray:
    """(n, size, size) sum of the ships' main lobes ``c G(x)`` (in units of the water level)."""
    n, size = water.shape[0], water.shape[-1]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cum = np.cumsum(water.reshape(n, -1), axis=1)
    count = rng.integers(0, p.max_ships + 1, size=n)
    out = np.zeros(water.shape)
    # every ship's numbers are drawn for every scene: the stream does not depend on the maps
    for j in range(p.max_ships):
        pick, dx, dy, head = rng.random((4, n))
        fwhm = rng.uniform(1.0, 3.0, size=n)
        # at least 1 px across: a narrower lobe could fall between pixel centres and vanish
        width = np.maximum(fwhm * rng.uniform(0.4, 1.0, size=n), 1.0)
        contrast = 10.0 ** (rng.uniform(*p.ship_db, size=n) / 10.0)
        at = np.argmax(cum >= np.floor(pick * cum[:, -1])[:, None] + 1, axis=1)
        cy, cx = at // size + dy - 0.5, at % size + dx - 0.5
        on = (count > j) & (cum[:, -1] > 0)
        th = np.pi * head[:, None, None]
        ex, ey = xx - cx[:, None, None], yy - cy[:, None, None]
        a = (ex * np.cos(th) + ey * np.sin(th)) / (fwhm / 2.3548)[:, None, None]
        b = (-ex * np.sin(th) + ey * np.cos(th)) / (width / 2.3548)[:, None, None]
        out += (on * contrast)[:, None, None] * np.exp(-0.5 * (a**2 + b**2))
    return out


def sar_map(
    n: int, size: int = 64, seed: int = 0, params: SarMapParams | None = None, start: int = 0
) -> SarMapScenes:
    """``n`` speckled scenes of water, textured land and ships, with their label maps (module
    docstring). ``start`` (a multiple of 256) gives samples ``start .. start+n`` of the seed's
    sequence."""
    p = params or SarMapParams()
    f32 = np.float32
    out = SarMapScenes(np.empty((n, 1, size, size), f32), np.empty((n, 1, size, size), f32),
                       np.empty(n, f32), np.empty(n, f32), np.empty(n, f32))  # fmt: skip
    for b in iter_blocks(n, seed, start):
        k, rng = b.index.size, b.rng
        land = _land_mask(k, size, rng, p)
        water_db, land_db, nu = (_u(rng, r, k) for r in (p.water_db, p.land_db, p.land_texture))
        wind = powerlaw_field(k, size, 3.0, rng, p.water_texture)
        tau = _gamma_texture(k, size, rng, nu, p.texture_corr_px)
        ships = _ships(~land, rng, p)
        m_w = 10.0 ** (water_db / 10.0)
        water = m_w * np.exp(wind - p.water_texture**2 / 2)  # mean m_w
        clutter = np.where(land, 10.0 ** (land_db / 10.0) * tau, water)
        image = clutter * gamma_speckle(clutter.shape, p.looks, rng) + m_w * ships
        labels = np.where(ships >= SHIP_LABEL_FLOOR, SHIP, np.where(land, LAND, WATER))
        out.images[b.out, 0] = 10.0 * np.log10(image) if p.db else image
        out.land_cover[b.out, 0] = labels
        out.land_texture[b.out], out.water_db[b.out], out.land_db[b.out] = (
            nu.ravel(), water_db.ravel(), land_db.ravel())  # fmt: skip
    return out
