"""Synthetic InSAR scenes: atmospheric noise, unwrapped deformation, wrapped interferograms.

Phase model (radians; Hanssen 2001, ch. 4)::

    phi(x) = phi_def(x) + phi_turb(x) + K h(x) + a x + b y + n(x)

- ``phi_def``: line-of-sight phase of an elastic source, ``-4 pi / lambda * u . s``
  (:mod:`radardiff.data.synth.elastic`; absent in ``insar_noise``);
- ``phi_turb``: turbulent tropospheric delay, a Gaussian random field with ``P(k) ~ k**-beta``
  (``beta`` = 8/3 by default, Kolmogorov-like; 5/3 to 3.5 are seen in real data), standard
  deviation log-normal around ``turb_std`` (rad);
- ``K h``: stratified delay, proportional to a synthetic topography ``h`` (a smooth power-law
  field, ``beta`` = ``topo_beta``, standard deviation ``topo_std_m``) with ``K`` uniform in
  +-``strat_k`` rad/m (0 disables it);
- ``a x + b y``: orbital ramp, gradients uniform in +-``ramp_rad / size`` rad/pixel, i.e. at
  most ``ramp_rad`` across the scene along each axis;
- ``n``: decorrelation noise, white Gaussian of standard deviation ``noise_std`` rad (unwrapped
  products), or, for wrapped interferograms, the phase of two correlated circular complex
  Gaussian images of coherence ``gamma`` (the exact interferometric phase statistics).

``insar_noise_dem`` (:func:`insar_noise_dem`) makes the stratified term the map relation to check:
a fractal DEM per scene, stored beside the phase, and ``phi = k_i (h - mean h) + phi_turb + ramp
+ n`` with ``k_i`` (rad/m) drawn per scene and stored, so a regression of phase on elevation has a
known answer.

Images are (N, 1, H, W) float32, row 0 to the North, column 0 to the West. Every generator draws
sample ``i`` from the stream ``default_rng([seed, i // 256])`` (see :func:`fields.iter_blocks`),
so a longer run with the same seed extends a shorter one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import gammaln, hyp2f1

from radardiff.data.synth.elastic import C_BAND_WAVELENGTH_M, los_phase, mogi, okada85
from radardiff.data.synth.fields import iter_blocks, powerlaw_field, ramp
from radardiff.errors import ConfigError

SOURCE_CLASSES = ["mogi", "okada", "none"]
_PI32 = np.nextafter(np.float32(np.pi), np.float32(0))  # largest float32 below pi


def _require(ok: bool, key: str, what: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"synth parameter '{key}' must be {what}, got {value!r}")


@dataclass(frozen=True)
class InsarNoiseParams:
    """Atmosphere, ramp and noise of an interferogram (see the module docstring).

    Ranges: ``beta`` 0-4; ``turb_std`` 0.1-10 rad; ``turb_std_spread`` 0-1 (sigma of log std);
    ``strat_k`` 0-0.02 rad/m (C band: 1 rad = 4.4 mm of delay); ``topo_std_m`` 0-1500;
    ``ramp_rad`` 0-20; ``noise_std`` 0-1 rad.
    """

    beta: float = 8.0 / 3.0
    turb_std: float = 1.0
    turb_std_spread: float = 0.5
    strat_k: float = 0.002
    topo_std_m: float = 300.0
    topo_beta: float = 3.5
    ramp_rad: float = 1.0
    noise_std: float = 0.1

    def __post_init__(self) -> None:
        _require(0.0 <= self.beta <= 6.0, "beta", "within [0, 6]", self.beta)
        for key in (
            "turb_std",
            "turb_std_spread",
            "strat_k",
            "topo_std_m",
            "ramp_rad",
            "noise_std",
        ):
            _require(getattr(self, key) >= 0, key, ">= 0", getattr(self, key))


def _atmosphere(n: int, size: int, rng: np.random.Generator, p: InsarNoiseParams) -> np.ndarray:
    """Turbulent + stratified delay + orbital ramp (n, size, size), without white noise."""
    std = p.turb_std * np.exp(p.turb_std_spread * rng.standard_normal(n))
    phi = powerlaw_field(n, size, p.beta, rng, std)
    if p.strat_k > 0 and p.topo_std_m > 0:
        topo = powerlaw_field(n, size, p.topo_beta, rng, p.topo_std_m)
        phi += rng.uniform(-p.strat_k, p.strat_k, size=(n, 1, 1)) * topo
    if p.ramp_rad > 0:
        phi += ramp(n, size, rng, p.ramp_rad / size)
    return phi


def insar_noise(
    n: int, size: int = 32, seed: int = 0, params: InsarNoiseParams | None = None, start: int = 0
) -> np.ndarray:
    """(n, 1, size, size) float32 atmospheric-noise interferograms in radians.

    ``phi = phi_turb + K h + ramp + n`` (module docstring); zero deformation. Each pixel is
    ``100 m`` nominally, but the model is scale free: ``beta`` fixes the shape of the spectrum.
    ``start`` (a multiple of 256) gives samples ``start .. start+n`` of the seed's sequence.
    """
    p = params or InsarNoiseParams()
    out = np.empty((n, 1, size, size), dtype=np.float32)
    for b in iter_blocks(n, seed, start):
        phi = _atmosphere(b.index.size, size, b.rng, p)
        if p.noise_std > 0:
            phi += p.noise_std * b.rng.standard_normal(phi.shape)
        out[b.out, 0] = phi
    return out


@dataclass(frozen=True)
class DeformationParams:
    """Elastic sources, acquisition geometry and atmosphere of the deformation generators.

    Geometry: the scene spans ``extent_m`` (pixel spacing ``extent_m / size``); incidence uniform
    in ``incidence_deg``; heading ascending (-10 deg) or descending (-170 deg), +-``heading_jitter``.

    Mogi: depth uniform in ``mogi_depth_m``; the volume change is set by the peak uplift
    ``|u_z| = (1 - nu) |dV| / (pi d**2)``, log-uniform in ``peak_uplift_m``, sign random.

    Okada: strike uniform 0-360, dip uniform in ``dip_deg``, rake uniform -180-180, length and
    width uniform in ``length_m`` / ``width_m``, top-edge depth uniform in ``top_depth_m``, slip
    log-uniform in ``slip_m``; opening uniform in [0, ``max_opening_m``].

    Sources are centred uniformly within the middle ``center_fraction`` of the scene.
    """

    extent_m: float = 12_800.0
    wavelength_m: float = C_BAND_WAVELENGTH_M
    incidence_deg: tuple[float, float] = (30.0, 46.0)
    heading_jitter: float = 5.0
    nu: float = 0.25
    center_fraction: float = 0.5
    mogi_depth_m: tuple[float, float] = (1_000.0, 5_000.0)
    peak_uplift_m: tuple[float, float] = (0.01, 0.2)
    dip_deg: tuple[float, float] = (15.0, 90.0)
    length_m: tuple[float, float] = (2_000.0, 8_000.0)
    width_m: tuple[float, float] = (1_000.0, 5_000.0)
    top_depth_m: tuple[float, float] = (200.0, 4_000.0)
    slip_m: tuple[float, float] = (0.05, 1.5)
    max_opening_m: float = 0.0
    atmosphere: InsarNoiseParams = field(default_factory=InsarNoiseParams)

    def __post_init__(self) -> None:
        _require(
            self.extent_m > 0 and self.wavelength_m > 0,
            "extent_m/wavelength_m",
            "> 0",
            (self.extent_m, self.wavelength_m),
        )
        _require(
            0 < self.center_fraction <= 1, "center_fraction", "in (0, 1]", self.center_fraction
        )
        _require(0 <= self.nu < 0.5, "nu", "in [0, 0.5)", self.nu)
        for key in (
            "incidence_deg",
            "mogi_depth_m",
            "peak_uplift_m",
            "dip_deg",
            "length_m",
            "width_m",
            "top_depth_m",
            "slip_m",
        ):
            lo, hi = getattr(self, key)
            _require(0 < lo <= hi, key, "an increasing pair of positive numbers", (lo, hi))
        _require(
            self.incidence_deg[1] < 90 and self.dip_deg[1] <= 90,
            "incidence_deg/dip_deg",
            "below 90 deg",
            (self.incidence_deg, self.dip_deg),
        )
        _require(self.max_opening_m >= 0, "max_opening_m", ">= 0", self.max_opening_m)


def _loguniform(rng: np.random.Generator, lo_hi: tuple[float, float], n: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(lo_hi[0]), np.log(lo_hi[1]), size=n))


def _grid(size: int, extent_m: float) -> tuple[np.ndarray, np.ndarray]:
    """(east, north) pixel-centre coordinates in metres, origin at the scene centre."""
    c = (np.arange(size) - (size - 1) / 2.0) * (extent_m / size)
    return c[None, :], -c[:, None]


def _deformation(
    labels: np.ndarray, size: int, rng: np.random.Generator, p: DeformationParams
) -> np.ndarray:
    """LOS phase (n, size, size) of the source given by each label (0 Mogi, 1 Okada, 2 none)."""
    n = labels.size
    inc = rng.uniform(*p.incidence_deg, size=(n, 1, 1))
    heading = np.where(rng.random((n, 1, 1)) < 0.5, -10.0, -170.0)
    heading = heading + rng.uniform(-p.heading_jitter, p.heading_jitter, size=(n, 1, 1))
    half = p.center_fraction * p.extent_m / 2.0
    x0, y0 = rng.uniform(-half, half, size=(2, n, 1, 1))
    east, north = _grid(size, p.extent_m)
    phi = np.zeros((n, size, size))
    # draw every parameter for every sample so the stream does not depend on the labels' mix
    depth = rng.uniform(*p.mogi_depth_m, size=(n, 1, 1))
    uplift = _loguniform(rng, p.peak_uplift_m, n).reshape(n, 1, 1)
    uplift *= np.where(rng.random((n, 1, 1)) < 0.5, -1.0, 1.0)
    dvol = uplift * np.pi * depth**2 / (1.0 - p.nu)
    strike = rng.uniform(0.0, 360.0, size=(n, 1, 1))
    dip = rng.uniform(*p.dip_deg, size=(n, 1, 1))
    rake = rng.uniform(-180.0, 180.0, size=(n, 1, 1))
    length = rng.uniform(*p.length_m, size=(n, 1, 1))
    width = rng.uniform(*p.width_m, size=(n, 1, 1))
    top = rng.uniform(*p.top_depth_m, size=(n, 1, 1))
    slip = _loguniform(rng, p.slip_m, n).reshape(n, 1, 1)
    opening = rng.uniform(0.0, p.max_opening_m, size=(n, 1, 1))
    m = labels == 0
    if m.any():
        u = mogi(east - x0[m], north - y0[m], depth[m], dvol[m], p.nu)
        phi[m] = los_phase(u, inc[m], heading[m], p.wavelength_m)
    for chunk in np.array_split(np.flatnonzero(labels == 1), max(1, (labels == 1).sum() // 16)):
        if chunk.size == 0:
            continue
        cdepth = top[chunk] + width[chunk] / 2.0 * np.sin(np.deg2rad(dip[chunk]))
        u = okada85(
            east - x0[chunk],
            north - y0[chunk],
            cdepth,
            strike[chunk],
            dip[chunk],
            length[chunk],
            width[chunk],
            rake[chunk],
            slip[chunk],
            opening[chunk],
            p.nu,
        )
        phi[chunk] = los_phase(u, inc[chunk], heading[chunk], p.wavelength_m)
    return phi


@dataclass
class DeformationScenes:
    """Output of :func:`insar_unwrapped` / :func:`insar_wrapped`; arrays (n, 1, size, size)."""

    images: np.ndarray  # float32 rad: unwrapped phase with noise, or wrapped phase
    labels: np.ndarray  # int64, index into SOURCE_CLASSES
    deformation: np.ndarray  # float32 rad: LOS phase of the source alone
    unwrapped: np.ndarray  # float32 rad: noise-free unwrapped phase (deformation + atmosphere)
    coherence: np.ndarray | None = None  # float32 in (0, 1), wrapped scenes only


def _clean_scene(index: np.ndarray, size: int, rng: np.random.Generator, p: DeformationParams):
    labels = index % len(SOURCE_CLASSES)  # classes cycle with the sample index: balanced counts
    dphi = _deformation(labels, size, rng, p)
    return labels, dphi, dphi + _atmosphere(labels.size, size, rng, p.atmosphere)


def insar_unwrapped(
    n: int, size: int = 128, seed: int = 0, params: DeformationParams | None = None, start: int = 0
) -> DeformationScenes:
    """Unwrapped interferograms of ground deformation plus atmosphere, ramp and noise (rad).

    ``phi = -4 pi / lambda * u(x) . s + phi_atm(x) + n(x)``, with ``u`` the surface displacement
    of a Mogi point source (label 0), of an Okada rectangular dislocation (label 1) or zero
    (label 2), ``s`` the ground-to-satellite unit vector, ``phi_atm`` as in :func:`insar_noise`
    and ``n`` white noise of ``params.atmosphere.noise_std``. Parameters and ranges:
    :class:`DeformationParams`. Labels cycle 0, 1, 2 with the sample index.
    """
    p = params or DeformationParams()
    out = _empty(n, size, with_coherence=False)
    for b in iter_blocks(n, seed, start):
        sl = b.out
        labels, dphi, clean = _clean_scene(b.index, size, b.rng, p)
        noise = p.atmosphere.noise_std * b.rng.standard_normal(clean.shape)
        out.labels[sl], out.deformation[sl, 0], out.unwrapped[sl, 0] = labels, dphi, clean
        out.images[sl, 0] = clean + noise
    return out


@dataclass(frozen=True)
class WrappedParams:
    """Coherence and looks of :func:`insar_wrapped`.

    Coherence: per scene, a mean uniform in ``coherence`` plus a smooth power-law field (beta 3)
    of standard deviation ``coherence_std``, clipped to [0.02, 0.99]. ``looks``: number of
    independent complex samples averaged per pixel (1-100).
    """

    coherence: tuple[float, float] = (0.3, 0.95)
    coherence_std: float = 0.1
    looks: int = 4
    deformation: DeformationParams = field(default_factory=DeformationParams)

    def __post_init__(self) -> None:
        lo, hi = self.coherence
        _require(0 <= lo <= hi < 1, "coherence", "a pair 0 <= lo <= hi < 1", self.coherence)
        _require(self.coherence_std >= 0, "coherence_std", ">= 0", self.coherence_std)
        _require(self.looks >= 1, "looks", ">= 1", self.looks)


def coherence_fields(
    n: int, size: int, rng: np.random.Generator, mean: tuple[float, float], std: float
) -> np.ndarray:
    """(n, size, size) coherence: a mean uniform in ``mean`` per scene plus a smooth power-law
    field (beta 3) of standard deviation ``std``, clipped to [0.02, 0.99]."""
    level = rng.uniform(*mean, size=(n, 1, 1))
    return np.clip(level + powerlaw_field(n, size, 3.0, rng, std), 0.02, 0.99)


def correlated_phase_noise(
    coherence: np.ndarray, looks: int, rng: np.random.Generator
) -> np.ndarray:
    """Interferometric phase noise of pixels with coherence ``gamma`` and ``looks`` looks.

    Two circular complex Gaussian images ``z1 = a``, ``z2 = gamma a + sqrt(1 - gamma**2) b``
    (``a``, ``b`` independent, unit variance) have correlation ``E[z1 z2*] = gamma``; the phase
    of ``sum_L z1 z2* / L`` follows the multi-look phase pdf of Lee et al. (1994)
    (:func:`phase_pdf`), centred on 0.
    """
    g = np.asarray(coherence, dtype=np.float32)
    s = np.sqrt(1.0 - g**2)
    re = np.zeros(g.shape, np.float32)
    im = np.zeros(g.shape, np.float32)
    # a z2* = g |a|^2 + sqrt(1 - g^2) a b*, in real float32 arithmetic one look at a time
    # (the common factor 1/2 of the unit-variance normalisation does not change the phase)
    for _ in range(looks):
        ar, ai, br, bi = rng.standard_normal((4, *g.shape), dtype=np.float32)
        re += g * (ar * ar + ai * ai) + s * (ar * br + ai * bi)
        im += s * (ai * br - ar * bi)
    return np.arctan2(im, re).astype(np.float64)


def wrap(phi: np.ndarray) -> np.ndarray:
    """Wrap to (-pi, pi] as float32 (clipped to the largest float32 below pi in magnitude)."""
    w = np.angle(np.exp(1j * np.asarray(phi, dtype=np.float64)))
    return np.clip(w, -_PI32, _PI32).astype(np.float32)


def insar_wrapped(
    n: int, size: int = 128, seed: int = 0, params: WrappedParams | None = None, start: int = 0
) -> DeformationScenes:
    """Wrapped interferograms with coherence-dependent phase noise, and their unwrapped truth.

    ``psi = W(phi_clean + eps)``, ``W`` the wrapping to (-pi, pi], ``phi_clean`` the noise-free
    phase of :func:`insar_unwrapped` (same seed, same scene), ``eps`` the phase of two
    correlated complex Gaussian images of coherence ``gamma(x)``
    (:func:`correlated_phase_noise`). ``unwrapped`` holds ``phi_clean`` and ``coherence`` holds
    ``gamma``, so (wrapped, unwrapped) pairs train phase unwrapping.
    """
    p = params or WrappedParams()
    out = _empty(n, size, with_coherence=True)
    for b in iter_blocks(n, seed, start):
        sl, rng = b.out, b.rng
        labels, dphi, clean = _clean_scene(b.index, size, rng, p.deformation)
        gamma = coherence_fields(labels.size, size, rng, p.coherence, p.coherence_std)
        eps = correlated_phase_noise(gamma, p.looks, rng)
        out.labels[sl], out.deformation[sl, 0], out.unwrapped[sl, 0] = labels, dphi, clean
        out.coherence[sl, 0] = gamma
        out.images[sl, 0] = wrap(clean + eps)
    return out


def _empty(n: int, size: int, with_coherence: bool) -> DeformationScenes:
    def f() -> np.ndarray:
        return np.empty((n, 1, size, size), dtype=np.float32)

    return DeformationScenes(
        images=f(),
        labels=np.empty(n, np.int64),
        deformation=f(),
        unwrapped=f(),
        coherence=f() if with_coherence else None,
    )


def phase_pdf(psi: np.ndarray, coherence: float, looks: int = 1) -> np.ndarray:
    """Multi-look interferometric phase pdf (Lee et al. 1994, eq. 19), centred on 0.

    ``p(psi) = Gamma(L + 1/2) (1 - g**2)**L b / (2 sqrt(pi) Gamma(L) (1 - b**2)**(L + 1/2))
    + (1 - g**2)**L / (2 pi) 2F1(L, 1; 1/2; b**2)``, ``b = g cos(psi)``. For L = 1 it reduces to
    ``(1 - g**2) / (2 pi (1 - b**2)) [1 + b arccos(-b) / sqrt(1 - b**2)]`` (Just & Bamler 1994).

    Lee, J.-S., Hoppel, K. W., Mango, S. A., Miller, A. R. (1994). Intensity and phase statistics
    of multilook polarimetric and interferometric SAR imagery. IEEE TGRS 32(5), 1017-1028.
    """
    g, L = float(coherence), int(looks)
    b = g * np.cos(np.asarray(psi, dtype=np.float64))
    one = 1.0 - g**2
    first = (
        np.exp(gammaln(L + 0.5) - gammaln(L))
        * one**L
        * b
        / (2.0 * np.sqrt(np.pi) * (1.0 - b**2) ** (L + 0.5))
    )
    return first + one**L / (2.0 * np.pi) * hyp2f1(L, 1.0, 0.5, b**2)


def phase_std(coherence: float, looks: int = 1, points: int = 20001) -> float:
    """Standard deviation (rad) of the interferometric phase noise, by integrating :func:`phase_pdf`."""
    psi = np.linspace(-np.pi, np.pi, points)
    pdf = phase_pdf(psi, coherence, looks)
    return float(np.sqrt(np.trapezoid(psi**2 * pdf, psi) / np.trapezoid(pdf, psi)))


@dataclass(frozen=True)
class TurbulenceParams(InsarNoiseParams):
    """:class:`InsarNoiseParams` without its own stratified term: ``insar_noise_dem`` puts the
    stratified delay on its DEM (``strat_k`` must stay 0; ``topo_*`` are unused). Turbulence
    and ramp are smaller by default: a scene of 32 px x 100 m holds little of their
    long-wavelength power (turbulent delays of 1-2 mm, 0.2-0.5 rad, over 3 km; Hanssen 2001,
    ch. 4), and an orbital ramp is a fraction of a radian across it."""

    turb_std: float = 0.3
    strat_k: float = 0.0
    ramp_rad: float = 0.3


@dataclass(frozen=True)
class DemNoiseParams:
    """DEM, stratified coefficient and atmosphere of :func:`insar_noise_dem`.

    DEM: a fractal surface (power-law field, ``P(k) ~ k**-topo_beta``; 2-D topography has
    ``beta`` about 3-4, fractal dimension ``(8 - beta) / 2`` of 2-2.5; Turcotte 1997, *Fractals
    and Chaos in Geology and Geophysics*)
    stretched to a peak-to-trough relief log-uniform in ``relief_m`` above a lowest point uniform
    in ``base_m`` (so elevations are never negative).

    Stratified delay: ``k ~ Normal(strat_rad_per_m, strat_std_rad_per_m)`` rad/m per scene. The
    tropospheric delay falls with height (scale height about 2 km wet, 8 km dry), and its change
    between two dates makes a phase ``4 pi / lambda * dL(h) / cos(theta)``; to first order in
    ``h`` that is ``k h``. At C band ``4 pi / lambda`` = 226 rad/m, so ``k`` = 1e-3 rad/m is
    4.4 mm of slant delay per km of height; a few mm to a few cm per km are observed (Doin et
    al. 2009, J. Appl. Geophys. 69, 35-50). The default mean of 1e-3 with a spread of 1e-3 gives
    most scenes one sign (a seasonal stack) and some the other; set the mean to 0 for random
    pairs.

    ``atmosphere``: turbulence, ramp and noise as in :func:`insar_noise`
    (:class:`TurbulenceParams`: 0.3 rad of turbulence, 0.3 rad of ramp by default). The
    stratified phase ``k std(h)`` (std(h) is about a fifth of the relief) is then comparable to
    the turbulence, as in real scenes: the slope of phase on elevation recovers ``k`` to about
    4e-4 rad/m (median, with a fitted ramp), better on high relief; less turbulence and more
    relief (``atmosphere.turb_std=0.2``, ``atmosphere.turb_std_spread=0.3``,
    ``relief_m=[500,2000]``) make the truth sharper (median error 1.5e-4 rad/m, estimate and
    truth correlated at 0.93-0.95).
    """

    relief_m: tuple[float, float] = (100.0, 2000.0)
    base_m: tuple[float, float] = (0.0, 1000.0)
    topo_beta: float = 3.5
    strat_rad_per_m: float = 1.0e-3
    strat_std_rad_per_m: float = 1.0e-3
    atmosphere: InsarNoiseParams = field(default_factory=TurbulenceParams)

    def __post_init__(self) -> None:
        lo, hi = self.relief_m
        _require(0 < lo <= hi, "relief_m", "an increasing pair of positive numbers", (lo, hi))
        lo, hi = self.base_m
        _require(0 <= lo <= hi, "base_m", "an increasing pair of numbers >= 0", (lo, hi))
        _require(0.0 <= self.topo_beta <= 6.0, "topo_beta", "within [0, 6]", self.topo_beta)
        _require(self.strat_std_rad_per_m >= 0, "strat_std_rad_per_m", ">= 0",
                 self.strat_std_rad_per_m)  # fmt: skip
        _require(self.atmosphere.strat_k == 0, "atmosphere.strat_k",
                 "0 (the stratified delay is strat_rad_per_m over the DEM)",
                 self.atmosphere.strat_k)  # fmt: skip


@dataclass
class DemNoiseScenes:
    """Output of :func:`insar_noise_dem`: phase and DEM (n, 1, size, size) float32, k (n,)."""

    images: np.ndarray  # rad
    dem: np.ndarray  # m
    strat_rad_per_m: np.ndarray  # the per-scene coefficient k


def fractal_dem(n: int, size: int, rng: np.random.Generator, p: DemNoiseParams) -> np.ndarray:
    """(n, size, size) elevations in metres: a power-law surface with its lowest point at the
    scene's base and its highest ``relief`` above it (:class:`DemNoiseParams`)."""
    relief = _loguniform(rng, p.relief_m, n).reshape(n, 1, 1)
    base = rng.uniform(*p.base_m, size=(n, 1, 1))
    f = powerlaw_field(n, size, p.topo_beta, rng)
    lo = f.min(axis=(1, 2), keepdims=True)
    span = f.max(axis=(1, 2), keepdims=True) - lo
    return base + relief * (f - lo) / np.where(span > 0, span, 1.0)


def insar_noise_dem(
    n: int, size: int = 32, seed: int = 0, params: DemNoiseParams | None = None, start: int = 0
) -> DemNoiseScenes:
    """Atmospheric-noise interferograms over a known DEM (rad), the DEM (m) and ``k`` (rad/m).

    ``phi = k (h - mean h) + phi_turb + ramp + n``: the stratified delay is exactly linear in
    the stored DEM ``h`` with the stored ``k``; the rest is :func:`insar_noise` without its own
    stratified term. The regression of ``phi`` on ``h`` estimates ``k``, with an error set by
    the turbulence that happens to correlate with the terrain.
    """
    p = params or DemNoiseParams()
    out = DemNoiseScenes(
        images=np.empty((n, 1, size, size), np.float32),
        dem=np.empty((n, 1, size, size), np.float32),
        strat_rad_per_m=np.empty(n, np.float32),
    )
    for b in iter_blocks(n, seed, start):
        k = b.index.size
        dem = fractal_dem(k, size, b.rng, p)
        coef = b.rng.normal(p.strat_rad_per_m, p.strat_std_rad_per_m, size=k)
        phi = coef[:, None, None] * (dem - dem.mean(axis=(1, 2), keepdims=True))
        phi += _atmosphere(k, size, b.rng, p.atmosphere)
        if p.atmosphere.noise_std > 0:
            phi += p.atmosphere.noise_std * b.rng.standard_normal(phi.shape)
        out.images[b.out, 0], out.dem[b.out, 0], out.strat_rad_per_m[b.out] = phi, dem, coef
    return out
