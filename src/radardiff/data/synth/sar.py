"""Synthetic SAR backscatter scenes: ten ocean / sea-ice classes with gamma speckle.

**These are analogues, not TenGeoP-SARwv data.** The ten classes mimic the geophysical phenomena
of the TenGeoP-SARwv data set (Wang et al. 2019; Sentinel-1 wave-mode vignettes, classes F to O)
with simple texture models; they are meant for testing pipelines, class-conditional training and
despeckling, not as a stand-in for the real data in any scientific claim.

Image model (linear normalised radar cross section, sigma0)::

    I(x) = m(x) * s(x),    s ~ Gamma(shape=L, scale=1/L)    (E s = 1, var s = 1/L)

``m`` is the class's mean backscatter texture and ``s`` multiplicative speckle of ``L`` looks
(fully developed speckle, Goodman 1976; Ulaby & Long 2014, ch. 5), independent between pixels.
``m`` is built on a background level ``sigma0_bar`` log-uniform in ``background_db`` and a weak
wind-roughness texture (power-law field, beta 3, 0.1 in log amplitude). Lengths below are in
pixels of a 128-pixel scene and scale with ``size / 128`` (a scene is about 20 km wide).

=====  =========================  ==============================================================
label  class (TenGeoP code)       mean texture ``m``
=====  =========================  ==============================================================
0      pure_ocean_waves (F)       swell: narrow-band field, wavelength 6-16 px, random direction,
                                  angular spread 10-25 deg, log-amplitude 0.2-0.5
1      wind_streaks (G)           streaks along the wind, spacing 8-24 px, elongated 6-10x,
                                  log-amplitude 0.15-0.4
2      micro_convective_cells (H) cellular pattern: |band-pass field|, cell size 12-32 px
3      rain_cells (I)             1-4 cells of radius 8-30 px: bright rim (+2 to +6 dB) around a
                                  damped core (-1 to -4 dB)
4      biological_slicks (J)      dark meandering filaments (zero set of a smooth field),
                                  -3 to -8 dB
5      sea_ice (K)                floes (threshold of a smooth field, concentration 0.3-0.9)
                                  +3 to +8 dB with strong texture, over darker water
6      icebergs (L)               1-6 bright elliptic targets, 1-4 px, +10 to +20 dB
7      low_wind_area (M)          a dark region (20-70 % of the scene), -6 to -15 dB, smooth edge
8      atmospheric_front (N)      a meandering line separating levels differing by 2-6 dB
9      oceanic_front (O)          a thin meandering line, +-2 to 4 dB, little step across it
=====  =========================  ==============================================================

Reference: Wang, C., Mouche, A., Tandeo, P. et al. (2019). A labelled ocean SAR imagery dataset
of ten geophysical phenomena from Sentinel-1 wave mode. Geoscience Data Journal 6(2), 105-115.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from radardiff.data.synth.fields import (
    filtered_noise,
    iter_blocks,
    powerlaw_field,
    rfft_wavenumbers,
)
from radardiff.errors import ConfigError

SAR_CLASSES = [
    "pure_ocean_waves",
    "wind_streaks",
    "micro_convective_cells",
    "rain_cells",
    "biological_slicks",
    "sea_ice",
    "icebergs",
    "low_wind_area",
    "atmospheric_front",
    "oceanic_front",
]
TENGEOP_CODES = dict(zip(SAR_CLASSES, "FGHIJKLMNO", strict=True))


@dataclass(frozen=True)
class SarParams:
    """``looks``: L of the gamma speckle (1-100); ``background_db``: range of the mean sigma0
    (dB); ``db``: store 10 log10(sigma0) instead of linear sigma0; ``store_clean``: write the
    speckle-free texture too (despeckling pairs)."""

    looks: int = 4
    background_db: tuple[float, float] = (-22.0, -8.0)
    db: bool = False
    store_clean: bool = False  # also write the speckle-free texture (extra "clean")

    def __post_init__(self) -> None:
        if self.looks < 1:
            raise ConfigError(f"synth parameter 'looks' must be >= 1, got {self.looks!r}")
        if not self.background_db[0] <= self.background_db[1]:
            raise ConfigError(
                f"synth parameter 'background_db' must be increasing, got {self.background_db!r}"
            )


def _db(x) -> np.ndarray:
    return 10.0 ** (np.asarray(x) / 10.0)


def _u(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return rng.uniform(lo, hi, size=(n, 1, 1))


def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) pixel coordinates centred on the scene, shape (1, size, size) each."""
    c = np.arange(size) - (size - 1) / 2.0
    return c[None, None, :] + 0 * c[None, :, None], c[None, :, None] + 0 * c[None, None, :]


def _directional_band(n, size, rng, wavelength, spread_deg, direction, radial_rel=0.15):
    """Narrow-band field: spectrum Gaussian around |k| = 1/wavelength and +-direction."""
    ky, kx = rfft_wavenumbers(size)
    k = np.sqrt(ky**2 + kx**2)[None]
    ang = np.arctan2(ky, kx)[None]
    k0 = 1.0 / wavelength
    d = np.angle(np.exp(2j * (ang - direction))) / 2.0  # +-direction are the same wave field
    amp = np.exp(-((k - k0) ** 2) / (2 * (radial_rel * k0) ** 2))
    amp = amp * np.exp(-(d**2) / (2 * np.deg2rad(spread_deg) ** 2))
    return filtered_noise(n, size, amp, rng, pad=1)


def _band(n, size, rng, wavelength, rel=0.4):
    ky, kx = rfft_wavenumbers(size)
    k = np.sqrt(ky**2 + kx**2)[None]
    k0 = 1.0 / wavelength
    return filtered_noise(n, size, np.exp(-((k - k0) ** 2) / (2 * (rel * k0) ** 2)), rng, pad=1)


def _scale(size: int, lo: float, hi: float, rng, n, floor: float = 3.0) -> np.ndarray:
    """Lengths drawn in 128-pixel units, scaled to ``size``, at least ``floor`` pixels."""
    return np.maximum(_u(rng, lo, hi, n) * size / 128.0, floor)


def _front_distance(n, size, rng) -> np.ndarray:
    """A signed 'distance' whose zero set is a meandering line across the scene (pixels)."""
    x, y = _coords(size)
    th = _u(rng, 0, np.pi, n)
    offset = _u(rng, -0.25, 0.25, n) * size
    meander = powerlaw_field(n, size, 4.0, rng, 1.0) * _u(rng, 0.03, 0.12, n) * size
    return x * np.cos(th) + y * np.sin(th) - offset + meander


def _ocean_waves(n, size, rng):
    wl = _scale(size, 6, 16, rng, n)
    f = _directional_band(n, size, rng, wl, _u(rng, 10, 25, n), _u(rng, 0, np.pi, n))
    return np.exp(_u(rng, 0.2, 0.5, n) * f)


def _wind_streaks(n, size, rng):
    spacing = _scale(size, 8, 24, rng, n)
    wind = _u(rng, 0, np.pi, n)
    ky, kx = rfft_wavenumbers(size)
    # streaks run along the wind: energy at wavenumbers across it, narrow along it
    along = kx * np.cos(wind) + ky * np.sin(wind)
    across = -kx * np.sin(wind) + ky * np.cos(wind)
    k0 = 1.0 / spacing
    elong = _u(rng, 6, 10, n)
    amp = np.exp(-(along**2) / (2 * (k0 / elong) ** 2)) * np.exp(
        -((np.abs(across) - k0) ** 2) / (2 * (0.5 * k0) ** 2)
    )
    streaks = filtered_noise(n, size, amp, rng, pad=1)
    return np.exp(_u(rng, 0.15, 0.4, n) * streaks)


def _convective_cells(n, size, rng):
    f = _band(n, size, rng, _scale(size, 12, 32, rng, n, floor=4.0))
    cells = np.abs(f)
    cells = (cells - cells.mean(axis=(1, 2), keepdims=True)) / cells.std(axis=(1, 2), keepdims=True)
    return np.exp(_u(rng, 0.3, 0.6, n) * cells)


def _rain_cells(n, size, rng):
    x, y = _coords(size)
    out = np.zeros((n, size, size))
    count = rng.integers(1, 5, size=n)
    rough = powerlaw_field(n, size, 3.0, rng, 0.15)
    for j in range(4):
        on = (count > j).reshape(n, 1, 1)
        cx, cy = _u(rng, -0.4, 0.4, n) * size, _u(rng, -0.4, 0.4, n) * size
        r = _scale(size, 8, 30, rng, n)
        rho = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) / r * (1.0 + rough)
        rim_db, core_db = _u(rng, 2, 6, n), _u(rng, 1, 4, n)
        out += on * (
            rim_db * np.exp(-((rho - 1.0) ** 2) / 0.08) - core_db * np.exp(-(rho**2) / 0.3)
        )
    return _db(out)


def _slicks(n, size, rng):
    s = powerlaw_field(n, size, 4.5, rng, 1.0)  # smooth, so the filaments meander
    mask = np.exp(-((s / _u(rng, 0.05, 0.15, n)) ** 2))
    return _db(-_u(rng, 3, 8, n) * mask)


def _row_quantile(f: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-field quantile ``q`` (n, 1, 1) of fields (n, H, W), as (n, 1, 1)."""
    flat = np.sort(f.reshape(f.shape[0], -1), axis=1)
    idx = np.clip((q.ravel() * (flat.shape[1] - 1)).astype(int), 0, flat.shape[1] - 1)
    return flat[np.arange(f.shape[0]), idx].reshape(-1, 1, 1)


def _sea_ice(n, size, rng):
    f = powerlaw_field(n, size, 3.0, rng, 1.0)
    conc = _u(rng, 0.3, 0.9, n)
    ice = f > _row_quantile(f, 1.0 - conc)
    texture = powerlaw_field(n, size, 2.0, rng, 1.0) * _u(rng, 0.3, 0.7, n)
    ridges = np.exp(-((powerlaw_field(n, size, 3.0, rng, 1.0) / 0.05) ** 2))
    level = np.where(ice, _u(rng, 3, 8, n) + 3.0 * ridges, -_u(rng, 0, 4, n))
    return _db(level) * np.exp(np.where(ice, texture, 0.0))


def _icebergs(n, size, rng):
    x, y = _coords(size)
    out = np.zeros((n, size, size))
    count = rng.integers(1, 7, size=n)
    for j in range(6):
        on = (count > j).reshape(n, 1, 1)
        cx, cy = _u(rng, -0.45, 0.45, n) * size, _u(rng, -0.45, 0.45, n) * size
        a = _scale(size, 1, 4, rng, n, floor=0.7)
        b = a * _u(rng, 0.4, 1.0, n)
        th = _u(rng, 0, np.pi, n)
        xr = (x - cx) * np.cos(th) + (y - cy) * np.sin(th)
        yr = -(x - cx) * np.sin(th) + (y - cy) * np.cos(th)
        inside = np.exp(-(((xr / a) ** 2 + (yr / b) ** 2) ** 2))
        out = np.maximum(out, on * _u(rng, 10, 20, n) * inside)
    return _db(out)


def _low_wind(n, size, rng):
    f = powerlaw_field(n, size, 4.5, rng, 1.0)
    frac = _u(rng, 0.2, 0.7, n)
    thresh = _row_quantile(f, 1.0 - frac)
    edge = 1.0 / (1.0 + np.exp(-(f - thresh) / _u(rng, 0.03, 0.15, n)))
    return _db(-_u(rng, 6, 15, n) * edge)


def _atmospheric_front(n, size, rng):
    d = _front_distance(n, size, rng)
    width = _u(rng, 1, 3, n)
    step = _u(rng, 2, 6, n) * np.where(rng.random((n, 1, 1)) < 0.5, -1.0, 1.0)
    line = _u(rng, 0, 3, n) * np.exp(-(d**2) / (2 * width**2))
    return _db(step / (1.0 + np.exp(-d / width)) + line)


def _oceanic_front(n, size, rng):
    d = _front_distance(n, size, rng)
    width = _u(rng, 0.7, 2.5, n)
    line = _u(rng, 2, 4, n) * np.where(rng.random((n, 1, 1)) < 0.5, -1.0, 1.0)
    step = _u(rng, -1.0, 1.0, n)
    return _db(line * np.exp(-(d**2) / (2 * width**2)) + step / (1.0 + np.exp(-d / width)))


_TEXTURES: list[Callable[[int, int, np.random.Generator], np.ndarray]] = [
    _ocean_waves,
    _wind_streaks,
    _convective_cells,
    _rain_cells,
    _slicks,
    _sea_ice,
    _icebergs,
    _low_wind,
    _atmospheric_front,
    _oceanic_front,
]


def gamma_speckle(shape: tuple[int, ...], looks: float, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative speckle of ``looks`` looks: Gamma(L, 1/L), mean 1, variance 1/L."""
    return rng.gamma(looks, 1.0 / looks, size=shape)


@dataclass
class SarScenes:
    """Output of :func:`sar_scenes`: arrays (n, 1, size, size) float32 and labels (n,)."""

    images: np.ndarray  # speckled sigma0 (linear) or its dB
    labels: np.ndarray  # int64, index into SAR_CLASSES
    clean: np.ndarray  # the speckle-free mean texture m, same units as images


def sar_scenes(
    n: int, size: int = 128, seed: int = 0, params: SarParams | None = None, start: int = 0
) -> SarScenes:
    """``n`` synthetic SAR backscatter scenes; labels cycle through the ten classes (module doc).

    ``images = m * s`` (linear sigma0) or ``10 log10(m * s)`` when ``params.db``. ``start`` (a
    multiple of 256) gives samples ``start .. start+n`` of the seed's sequence.
    """
    p = params or SarParams()
    out = SarScenes(
        images=np.empty((n, 1, size, size), np.float32),
        labels=np.empty(n, np.int64),
        clean=np.empty((n, 1, size, size), np.float32),
    )
    for b in iter_blocks(n, seed, start):
        sl, rng = b.out, b.rng
        labels = b.index % len(SAR_CLASSES)
        k = labels.size
        level = _db(rng.uniform(*p.background_db, size=(k, 1, 1)))
        mean = level * np.exp(powerlaw_field(k, size, 3.0, rng, 0.1))
        for c, texture in enumerate(_TEXTURES):
            idx = np.flatnonzero(labels == c)
            if idx.size:
                mean[idx] *= texture(idx.size, size, rng)
        noisy = mean * gamma_speckle(mean.shape, p.looks, rng)
        if p.db:
            mean, noisy = 10.0 * np.log10(mean), 10.0 * np.log10(noisy)
        out.images[sl, 0], out.labels[sl], out.clean[sl, 0] = noisy, labels, mean
    return out
