r"""Distributions of pixel values and of per-sample ranges and standard deviations.

Distances are Wasserstein-1 (earth mover's) distances between empirical distributions,

.. math:: W_1(P, Q) = \int_{-\infty}^{\infty} |F_P(t) - F_Q(t)| \, dt,

in the physical units of the data (Villani 2009, Optimal Transport, ch. 6), computed by
:func:`scipy.stats.wasserstein_distance`. Unlike a histogram distance on rescaled images they
penalise wrong amplitudes as well as wrong shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import wasserstein_distance

from radardiff.errors import DataError


@dataclass(frozen=True)
class SampleSpread:
    """Per-sample range (max - min) and standard deviation of the valid pixels, shape (B,)."""

    range: np.ndarray
    std: np.ndarray


def sample_spread(images: np.ndarray) -> SampleSpread:
    r"""Range and (population) standard deviation of each sample's finite pixels.

    .. math:: r_b = \max_i x_{b,i} - \min_i x_{b,i}, \qquad
              s_b = \sqrt{\tfrac{1}{n_b} \textstyle\sum_i (x_{b,i} - \bar x_b)^2},

    over the :math:`n_b` finite pixels :math:`x_{b,i}` of sample :math:`b`.

    Parameters
    ----------
    images : ndarray, shape (B, ...)
        NaN marks missing pixels; a sample with no finite pixel gets NaN.

    Returns
    -------
    SampleSpread
        ``range`` and ``std``, shape (B,), in the units of ``images``.
    """
    z = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    ok = np.isfinite(z)
    has = ok.any(axis=1)
    hi = np.where(ok, z, -np.inf).max(axis=1)
    lo = np.where(ok, z, np.inf).min(axis=1)
    n = np.maximum(ok.sum(axis=1), 1)
    mu = np.where(ok, z, 0.0).sum(axis=1) / n
    var = np.where(ok, (z - mu[:, None]) ** 2, 0.0).sum(axis=1) / n
    return SampleSpread(
        range=np.where(has, hi - lo, np.nan), std=np.where(has, np.sqrt(var), np.nan)
    )


def w1(real: np.ndarray, fake: np.ndarray) -> float:
    r"""Wasserstein-1 distance between the finite values of two samples.

    .. math:: W_1(P, Q) = \int |F_P(t) - F_Q(t)| \, dt

    between their empirical distribution functions (Villani 2009, Optimal Transport, ch. 6),
    by :func:`scipy.stats.wasserstein_distance`. In the units of the input; 0 for identical
    distributions.
    """
    a = np.asarray(real, dtype=np.float64).ravel()
    b = np.asarray(fake, dtype=np.float64).ravel()
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        raise DataError("a Wasserstein distance needs at least 1 finite value in each set")
    return float(wasserstein_distance(a, b))


@dataclass(frozen=True)
class Histograms:
    """Normalised histograms (densities) of two sets on common bin edges."""

    bin_edges: np.ndarray
    real: np.ndarray
    fake: np.ndarray


def histograms(real: np.ndarray, fake: np.ndarray, bins: int = 100) -> Histograms:
    r"""Density histograms of the finite values of two sets on shared, equal-width edges.

    The edges span the 0.1 and 99.9 percentiles of the pooled values, so one outlier does not
    squeeze every other value into a single bin; values outside are not counted. Each histogram
    is a density, :math:`h_j = n_j / (n \, \Delta)` with :math:`\Delta` the bin width, as
    :func:`numpy.histogram` with ``density=True`` gives.

    Returns
    -------
    Histograms
        ``bin_edges`` (bins + 1,) and the two densities (bins,).
    """
    a = np.asarray(real, dtype=np.float64).ravel()
    b = np.asarray(fake, dtype=np.float64).ravel()
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        raise DataError("a histogram needs at least 1 finite value in each set")
    lo, hi = np.quantile(np.concatenate([a, b]), [0.001, 0.999])
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    ha, _ = np.histogram(a, edges, density=True)
    hb, _ = np.histogram(b, edges, density=True)
    return Histograms(bin_edges=edges, real=ha, fake=hb)
