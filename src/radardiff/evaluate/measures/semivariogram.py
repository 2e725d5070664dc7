r"""Exact experimental semivariograms of gridded images through FFTs.

For an image :math:`z` with validity mask :math:`m` (1 where the pixel holds data, 0 where it is
NaN), the Matheron estimator at lag vector :math:`h` is

.. math::

    \gamma(h) = \frac{1}{2 N(h)} \sum_x m(x) m(x+h) \, (z(x+h) - z(x))^2,
    \qquad N(h) = \sum_x m(x) m(x+h).

Expanding the square gives three cross-correlations,
:math:`\mathrm{num}(h) = c(m, m z^2)(h) + c(m z^2, m)(h) - 2 c(m z, m z)(h)` and
:math:`N(h) = c(m, m)(h)`, with :math:`c(a, b)(h) = \sum_x a(x) b(x+h)`, each computed exactly by
FFT after zero padding to at least (2H - 1, 2W - 1) so that no lag wraps around (Marcotte 1996,
"Fast variogram computation with FFT", Computers & Geosciences 22(10)). The isotropic estimator
pools every pair whose separation :math:`|h|` falls into a distance bin (the same pooling as a
pair-based estimator such as scikit-gstat's ``Variogram(estimator="matheron")``); the directional
ones use the lags :math:`(0, k)` (along x, columns) and :math:`(k, 0)` (along y, rows).

Distance bins are centred on integer pixel lags: bin :math:`k` holds pairs with
:math:`k - 1/2 \le |h| < k + 1/2`, :math:`k = 1..L`. A pixel distance :math:`\sqrt{a^2+b^2}` never
equals :math:`k + 1/2`, so the bin assignment has no ties. Values stay in physical units unless
``standardize=True`` divides each image by its own standard deviation.

Cost: O(B H W log(H W)) against O(B (H W)^2) for a pair-based estimator.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft as sfft
import scipy.sparse as sp

from radardiff.errors import DataError


@dataclass(frozen=True)
class SemivariogramResult:
    """Per-image semivariograms of a batch.

    Attributes
    ----------
    lags_px : ndarray, shape (L,)
        Bin centres (isotropic) and lags (directional) in pixels: 1, 2, ..., L.
    gamma : ndarray, shape (B, L)
        Isotropic semivariance per image, in squared physical units; NaN where a bin has no pair.
    gamma_x, gamma_y : ndarray, shape (B, L)
        Directional semivariance along x (columns) and y (rows).
    npairs : ndarray, shape (B, L)
        Number of unordered pixel pairs in each isotropic bin.
    """

    lags_px: np.ndarray
    gamma: np.ndarray
    gamma_x: np.ndarray
    gamma_y: np.ndarray
    npairs: np.ndarray

    def lags_m(self, pixel_spacing_m: float | None) -> np.ndarray | None:
        """Lags in metres, or None when the pixel spacing is unknown."""
        return None if pixel_spacing_m is None else self.lags_px * float(pixel_spacing_m)


def bin_edges_px(max_lag: int) -> np.ndarray:
    """Upper distance-bin edges ``[1.5, 2.5, ..., max_lag + 0.5]`` (pixels).

    Passing these to a pair-based estimator that assigns ``d`` to the bin ``edges[i-1] <= d <
    edges[i]`` (``numpy.digitize``, as scikit-gstat does) reproduces this module's bins.
    """
    return np.arange(1, max_lag + 1, dtype=np.float64) + 0.5


def _fft_shape(h: int, w: int) -> tuple[int, int]:
    """Padded FFT shape: at least (2H - 1, 2W - 1), so that no lag wraps around."""
    return sfft.next_fast_len(2 * h - 1, real=True), sfft.next_fast_len(2 * w - 1, real=True)


@lru_cache(maxsize=16)
def _bin_matrix(max_lag: int) -> sp.csr_matrix:
    """Sparse (2L+1)^2 x L matrix taking the cropped lags -L..L (rows, columns) to the isotropic
    distance bins 1..L."""
    dy = np.arange(-max_lag, max_lag + 1)
    dist = np.hypot(dy[:, None], dy[None, :]).ravel()
    k = np.floor(dist + 0.5).astype(np.int64)  # bin k: k - 1/2 <= d < k + 1/2
    keep = (k >= 1) & (k <= max_lag)
    rows = np.nonzero(keep)[0]
    return sp.csr_matrix((np.ones(rows.size), (rows, k[keep] - 1)), shape=(dist.size, max_lag))


def _crop(corr: np.ndarray, max_lag: int) -> np.ndarray:
    """Lags -max_lag..max_lag of a circular correlation (B, H2, W2) -> (B, 2L+1, 2L+1)."""
    idx = np.r_[np.arange(-max_lag, 0), np.arange(0, max_lag + 1)]
    return corr[:, idx][:, :, idx]


def semivariogram(
    images: np.ndarray,
    *,
    max_lag: int | None = None,
    mask: np.ndarray | None = None,
    standardize: bool = False,
    workers: int = -1,
) -> SemivariogramResult:
    """Isotropic and directional Matheron semivariograms of each image, exactly, by FFT.

    Parameters
    ----------
    images : ndarray, shape (B, H, W) or (H, W)
        Values in physical units; NaN marks pixels with no data.
    max_lag : int, optional
        Largest lag / distance bin in pixels; default ``min(H, W) // 2``. Must be < min(H, W).
    mask : ndarray of bool, same shape as ``images``, optional
        Extra validity mask (True = use); combined with the finite-value mask.
    standardize : bool
        Divide each image by its own standard deviation first (off by default: amplitude errors
        are what the semivariogram should reveal).
    workers : int
        Threads for the FFTs (:mod:`scipy.fft` convention; -1 = all cores).

    Returns
    -------
    SemivariogramResult
        Semivariances in squared physical units (or unitless when standardised).

    References
    ----------
    Matheron, G. (1962). Traité de géostatistique appliquée. Marcotte, D. (1996). Fast variogram
    computation with FFT. Computers & Geosciences 22(10), 1175-1186.
    """
    z, max_lag = _checked(images, max_lag)
    z, m = _centred(z, mask, standardize)
    num, npair = _correlations(z, m, max_lag, workers)
    return _binned(num, npair, max_lag)


def _checked(images: np.ndarray, max_lag: int | None) -> tuple[np.ndarray, int]:
    """Images as float64 (B, H, W) and the largest lag, or the reason they do not qualify."""
    z = np.asarray(images, dtype=np.float64)
    if z.ndim == 2:
        z = z[None]
    if z.ndim != 3:
        raise ValueError(f"images must be (B, H, W) or (H, W), got shape {z.shape}")
    h, w = z.shape[1:]
    if min(h, w) < 2:
        raise DataError(f"a semivariogram needs images of at least 2x2 pixels, got {h}x{w}")
    max_lag = min(h, w) // 2 if max_lag is None else int(max_lag)
    if not 1 <= max_lag < min(h, w):
        raise DataError(f"max_lag={max_lag} must lie in [1, {min(h, w) - 1}] for {h}x{w} images")
    return z, max_lag


def _centred(
    z: np.ndarray, mask: np.ndarray | None, standardize: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The validity mask m (float, 1 = data) and the values minus each image's mean, zero where
    m is 0, divided by each image's standard deviation when ``standardize``."""
    m = np.isfinite(z)
    if mask is not None:
        m &= np.broadcast_to(np.asarray(mask, dtype=bool), z.shape)
    m = m.astype(np.float64)
    z = np.where(m > 0, z, 0.0)
    # Remove each image's mean: gamma is shift invariant, and centring avoids cancellation
    # between the large c(m, m z^2) and c(m z, m z) terms for values far from zero (e.g. dB).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        count = m.sum(axis=(1, 2), keepdims=True)
        mu = z.sum(axis=(1, 2), keepdims=True) / np.maximum(count, 1)
        z = (z - mu) * m
        if standardize:
            sd = np.sqrt((z**2).sum(axis=(1, 2), keepdims=True) / np.maximum(count, 1))
            z = z / np.where(sd > 0, sd, 1.0)
    return z, m


def _correlations(
    z: np.ndarray, m: np.ndarray, max_lag: int, workers: int
) -> tuple[np.ndarray, np.ndarray]:
    """num(h) and N(h) (module docstring) at lags -max_lag..max_lag: (B, 2L+1, 2L+1) each."""
    shape = _fft_shape(*z.shape[1:])
    fm = sfft.rfft2(m, s=shape, workers=workers)
    fz = sfft.rfft2(z, s=shape, workers=workers)
    fz2 = sfft.rfft2(z * z, s=shape, workers=workers)
    # c(a, b) = irfft(conj(A) B); c(m, m z^2) + c(m z^2, m) = irfft(2 Re(conj(M) Z2)).
    num = sfft.irfft2(
        2.0 * (fm.conj() * fz2).real - 2.0 * (fz.conj() * fz).real, s=shape, workers=workers
    )
    npair = sfft.irfft2((fm.conj() * fm).real, s=shape, workers=workers)
    # pair counts are integers; rounding drops the FFT round-off
    return _crop(num, max_lag), np.rint(_crop(npair, max_lag))


def _binned(num: np.ndarray, npair: np.ndarray, max_lag: int) -> SemivariogramResult:
    """gamma = num / (2 N), pooled over the isotropic distance bins, and along the two axes."""
    b, binmat = num.shape[0], _bin_matrix(max_lag)
    lags = np.arange(1, max_lag + 1)
    c = max_lag  # index of lag 0
    flat_num = num.reshape(b, -1) @ binmat
    flat_n = npair.reshape(b, -1) @ binmat
    with np.errstate(invalid="ignore", divide="ignore"):
        gamma = np.where(flat_n > 0, flat_num / (2.0 * flat_n), np.nan)
        nx, ny = npair[:, c, c + lags], npair[:, c + lags, c]
        gx = np.where(nx > 0, num[:, c, c + lags] / (2.0 * nx), np.nan)
        gy = np.where(ny > 0, num[:, c + lags, c] / (2.0 * ny), np.nan)
    # Each unordered pair appears at h and -h; N(h) over both counts it twice.
    return SemivariogramResult(
        lags_px=lags.astype(np.float64),
        gamma=np.asarray(gamma),
        gamma_x=gx,
        gamma_y=gy,
        npairs=np.asarray(flat_n) / 2.0,
    )


def semivariogram_rel_error(real: np.ndarray, fake: np.ndarray) -> float:
    r"""Mean relative error between two mean semivariograms over lags.

    .. math:: E = \frac{1}{|K|} \sum_{k \in K} \frac{|\gamma_f(k) - \gamma_r(k)|}{\gamma_r(k)},

    with :math:`K` the lags where both curves are finite and :math:`\gamma_r(k) > 0`. Unitless;
    0 for identical curves. Returns NaN when no lag qualifies.
    """
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    ok = np.isfinite(real) & np.isfinite(fake) & (real > 0)
    if not ok.any():
        return float("nan")
    return float(np.mean(np.abs(fake[ok] - real[ok]) / real[ok]))
