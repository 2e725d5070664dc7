"""Confidence bands of a per-sample curve's mean over a set of samples.

Each evaluated set is a sample of images, so a curve such as a semivariogram or a power spectrum
is a random vector per image. Its mean over images is reported with a percentile bootstrap over
images (Efron & Tibshirani 1993, ch. 13): resample the images with replacement, recompute the mean
curve, and take the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles at every lag. With no
resamples requested, the band is the normal-approximation interval mean +/- z * SE, with
SE = s / sqrt(n) the standard error of the mean (s the sample standard deviation over images).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from radardiff.errors import DataError


@dataclass(frozen=True)
class Band:
    """Mean curve of a set and a pointwise confidence band for that mean.

    Attributes
    ----------
    mean, low, high : ndarray, shape (L,)
        Mean over samples (NaN-aware) and the band's lower and upper limits.
    method : str
        Human-readable description of the band, e.g. ``"95% percentile bootstrap over images
        (200 resamples)"``.
    """

    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    method: str


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    # A lag with no valid pairs in any image is NaN by design; silence numpy's warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=axis)


def mean_band(
    curves: np.ndarray,
    *,
    n_boot: int = 200,
    level: float = 0.95,
    rng: np.random.Generator | None = None,
) -> Band:
    r"""Mean of per-sample curves with a bootstrap (or standard-error) confidence band.

    The mean is :math:`\bar c(l) = \frac{1}{n_l} \sum_i c_i(l)` over the samples with a value
    at position :math:`l`. With ``n_boot > 0`` the band is the percentile bootstrap interval:
    the :math:`(1 \mp \text{level}) / 2` quantiles of the means of ``n_boot`` resamples of the
    samples with replacement (Efron & Tibshirani 1993, An Introduction to the Bootstrap,
    ch. 13); with ``n_boot = 0`` it is :math:`\bar c \pm z \, s / \sqrt{n_l}`, with
    :math:`z = \Phi^{-1}((1 + \text{level}) / 2)` and :math:`s` the sample standard deviation.

    Parameters
    ----------
    curves : ndarray, shape (N, L)
        One curve per sample; NaN where a sample has no value at that position.
    n_boot : int
        Bootstrap resamples over samples; 0 selects the standard-error interval.
    level : float
        Coverage of the pointwise band, in (0, 1).
    rng : numpy.random.Generator
        Source of the bootstrap draws (required for reproducibility when ``n_boot > 0``).

    Returns
    -------
    Band
        Mean, lower and upper limits of shape (L,), and a description of the band.
    """
    curves = np.asarray(curves, dtype=np.float64)
    if curves.ndim != 2:
        raise ValueError(f"curves must be (N, L), got shape {curves.shape}")
    n = curves.shape[0]
    if n < 2:
        raise DataError(f"a confidence band needs at least 2 samples, got {n}")
    mean = _nanmean(curves, 0)
    if n_boot > 0:
        low, high, method = _bootstrap_band(curves, n_boot, level, rng)
    else:
        low, high, method = _normal_band(curves, mean, level)
    return Band(mean=mean, low=np.asarray(low), high=np.asarray(high), method=method)


def _bootstrap_band(curves: np.ndarray, n_boot: int, level: float, rng) -> tuple:
    """Percentile bootstrap limits of the mean curve, and their description."""
    n = curves.shape[0]
    if rng is None:
        rng = np.random.default_rng(0)
    boots = np.empty((n_boot, curves.shape[1]))
    # Resample in chunks so memory stays O(chunk * N * L) whatever n_boot is.
    chunk = max(1, 2_000_000 // max(1, curves.size))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        boots[start:stop] = _nanmean(curves[idx], 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanquantile(boots, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return low, high, f"{100 * level:g}% percentile bootstrap over samples ({n_boot} resamples)"


def _normal_band(curves: np.ndarray, mean: np.ndarray, level: float) -> tuple:
    """Normal-approximation limits, mean +/- z SE, and their description."""
    counts = np.sum(np.isfinite(curves), axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        se = np.nanstd(curves, axis=0, ddof=1) / np.sqrt(counts)
    z = float(norm.ppf((1 + level) / 2))
    method = f"{100 * level:g}% normal interval: mean +/- {z:.3f} * standard error over samples"
    return mean - z * se, mean + z * se, method
