r"""Radially averaged power spectral density of images, a distance between two sets, and a
power-law fit.

For an image :math:`z` of H x W pixels with validity mask :math:`m` (n valid pixels), the
periodogram of the mean-removed, zero-filled image is

.. math:: P(f) = \frac{|\mathcal{F}[m (z - \bar z)](f)|^2}{n},

in squared physical units per (cycle/pixel)^2 times pixel^2 (so that :math:`\sum_f P(f) / (HW)`
equals the variance of the valid pixels, Parseval). It is averaged over annuli of radial
frequency :math:`|f| = \sqrt{f_x^2 + f_y^2}` in cycles per pixel, with bins of width
:math:`1 / \max(H, W)` centred on :math:`k / \max(H, W)`, :math:`k = 1..\lfloor \max(H,W)/2
\rfloor` (DC excluded). Missing pixels act as a multiplicative window; their effect is the
same for both sets when their masks are alike. Reference: Welch/Bartlett periodogram, e.g.
Percival & Walden (1993), Spectral Analysis for Physical Applications, ch. 6.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class PSDResult:
    """Radially averaged PSD per image.

    Attributes
    ----------
    freq_cycles_per_px : ndarray, shape (K,)
        Bin centres in cycles per pixel.
    psd : ndarray, shape (B, K)
        Radially averaged power per image (NaN for an image with no valid pixel).
    """

    freq_cycles_per_px: np.ndarray
    psd: np.ndarray


@lru_cache(maxsize=16)
def _radial_bins(h: int, w: int):
    size = max(h, w)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    k = np.floor(np.hypot(fy, fx) * size + 0.5).astype(np.int64).ravel()
    nbins = size // 2
    keep = (k >= 1) & (k <= nbins)
    rows = np.nonzero(keep)[0]
    mat = sp.csr_matrix((np.ones(rows.size), (rows, k[keep] - 1)), shape=(h * w, nbins))
    counts = np.asarray(mat.sum(axis=0)).ravel()
    return np.arange(1, nbins + 1) / size, mat, counts


def radial_frequencies(height: int, width: int) -> np.ndarray:
    """Centres (cycles per pixel) of the radial bins :func:`radial_psd` uses for this size."""
    return _radial_bins(int(height), int(width))[0].copy()


def radial_psd(images: np.ndarray) -> PSDResult:
    r"""Radially averaged periodogram of each image (NaN-aware, physical units).

    .. math:: P(f) = \frac{|\mathcal{F}[m (z - \bar z)](f)|^2}{n},

    averaged over the annuli of radial frequency described in the module docstring (Percival &
    Walden 1993, Spectral Analysis for Physical Applications, ch. 6).

    Parameters
    ----------
    images : ndarray, shape (B, H, W) or (H, W)
        NaN marks pixels with no data.

    Returns
    -------
    PSDResult
        Bin centres (K,) in cycles per pixel and the power per image (B, K).
    """
    z = np.asarray(images, dtype=np.float64)
    if z.ndim == 2:
        z = z[None]
    b, h, w = z.shape
    m = np.isfinite(z)
    n = m.sum(axis=(1, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mu = np.nansum(z, axis=(1, 2)) / np.maximum(n, 1)
    zc = np.where(m, z - mu[:, None, None], 0.0)
    power = np.abs(np.fft.fft2(zc)) ** 2 / np.maximum(n, 1)[:, None, None]
    freq, mat, counts = _radial_bins(h, w)
    with np.errstate(invalid="ignore", divide="ignore"):
        psd = (power.reshape(b, -1) @ mat) / counts
    psd[n == 0] = np.nan
    return PSDResult(freq_cycles_per_px=freq, psd=np.asarray(psd))


def psd_log_rmse(real: np.ndarray, fake: np.ndarray) -> float:
    r"""Root-mean-square difference of log10 mean PSDs over frequency bins.

    .. math:: D = \sqrt{\frac{1}{|K|}\sum_{k\in K} (\log_{10} P_f(k) - \log_{10} P_r(k))^2},

    over bins :math:`K` where both are finite and positive. In decades; 0 for identical spectra.
    """
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    ok = np.isfinite(real) & np.isfinite(fake) & (real > 0) & (fake > 0)
    if not ok.any():
        return float("nan")
    return float(np.sqrt(np.mean((np.log10(fake[ok]) - np.log10(real[ok])) ** 2)))


def fit_powerlaw_white(k: np.ndarray, psd: np.ndarray) -> tuple[float, float]:
    r"""Exponent and white level of a power law plus white noise fitted to a radial spectrum.

    .. math::

        P(k) = A k^{-\beta} + N, \qquad
        (\beta, N) = \arg\min \sum_k \left(\log P(k) - \log(A k^{-\beta} + N)\right)^2,

    over the bins with :math:`k > 0` and :math:`P(k) > 0`: :math:`\beta` on a grid of step 0.05
    in [0, 6], :math:`N` on 50 fractions in [0, 0.98] of :math:`\min P`, and for each pair
    :math:`\log A` the mean of :math:`\log(P - N) + \beta \log k` (the least-squares
    intercept of the power law alone). Power laws describe the spectra of atmospheric delay in
    interferograms (Hanssen 2001, Radar Interferometry: Data Interpretation and Error Analysis);
    the white level stands for pixel noise.

    Returns
    -------
    (beta, N) : tuple of float
        The exponent (unitless) and the white level (units of ``psd``).
    """
    k, p = np.asarray(k, np.float64), np.asarray(psd, np.float64)
    ok = (k > 0) & (p > 0)
    k, p = k[ok], p[ok]
    logp, logk = np.log(p), np.log(k)
    best = (np.inf, 0.0, 0.0)
    for noise in p.min() * np.linspace(0.0, 0.98, 50):
        rest = np.log(p - noise)
        for beta in np.arange(0.0, 6.0001, 0.05):
            log_a = np.mean(rest + beta * logk)
            model = np.log(np.exp(log_a - beta * logk) + noise)
            err = float(np.sum((logp - model) ** 2))
            if err < best[0]:
                best = (err, float(beta), float(noise))
    return best[1], best[2]
