r"""Feature-based distances between two sets: FID, KID, improved precision and recall.

All functions take feature arrays of shape (N, D) (one row per image, from any extractor) and
are pure: no I/O, no model. Random subsets come from an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from radardiff.errors import DataError

log = logging.getLogger(__name__)


def _as_features(x: np.ndarray, name: str, minimum: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise DataError(f"{name} features must be (N, D), got shape {x.shape}")
    if x.shape[0] < minimum:
        raise DataError(f"{name} features: need at least {minimum} samples, got {x.shape[0]}")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{name} features contain NaN or infinite values")
    return x


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    r"""Fréchet (2-Wasserstein) distance between two Gaussians.

    .. math:: d^2 = \|\mu_1 - \mu_2\|^2 + \operatorname{Tr}\big(\Sigma_1 + \Sigma_2
              - 2 (\Sigma_1 \Sigma_2)^{1/2}\big)

    (Dowson & Landau 1982; Heusel et al. 2017, "GANs trained by a two time-scale update rule").
    The matrix square root is :func:`scipy.linalg.sqrtm`; when it is not finite (singular
    product) ``eps`` is added to both diagonals, and round-off imaginary parts are dropped
    (a warning is logged when they are not negligible).
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise DataError(
            f"Fréchet distance: shapes do not match ({mu1.shape}, {s1.shape}, "
            f"{mu2.shape}, {s2.shape})"
        )
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.all(np.isfinite(covmean)):
        offset = np.eye(s1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.max(np.abs(covmean.imag))
        if imag > 1e-3 * max(1.0, np.max(np.abs(covmean.real))):
            log.warning(
                "Fréchet distance: sqrtm has an imaginary part of %.3g; using the real part", imag
            )
        covmean = covmean.real
    diff = mu1 - mu2
    return float(max(0.0, diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean)))


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet Inception(-style) Distance between two feature sets (N, D).

    Means and unbiased covariances (``ddof=1``) of each set, then :func:`frechet_distance`
    (Heusel et al. 2017, "GANs trained by a two time-scale update rule"). Needs at least 2
    samples per set; a reliable value needs N well above D.
    """
    a = _as_features(real, "real", 2)
    b = _as_features(fake, "fake", 2)
    if a.shape[1] != b.shape[1]:
        raise DataError(f"feature dimensions differ: real {a.shape[1]}, fake {b.shape[1]}")
    return frechet_distance(
        a.mean(0),
        np.atleast_2d(np.cov(a, rowvar=False)),
        b.mean(0),
        np.atleast_2d(np.cov(b, rowvar=False)),
    )


@dataclass(frozen=True)
class KIDResult:
    """Kernel Inception Distance: mean and standard deviation of unbiased MMD^2 over subsets."""

    mean: float
    std: float
    n_subsets: int
    subset_size: int


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    m = x.shape[0]
    n = y.shape[0]
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def kid(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    n_subsets: int = 100,
    subset_size: int = 1000,
    rng: np.random.Generator | None = None,
) -> KIDResult:
    r"""Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs").

    Unbiased estimator of the squared MMD with the cubic polynomial kernel
    :math:`k(x, y) = (x^\top y / D + 1)^3`,

    .. math:: \widehat{\mathrm{MMD}}^2 = \frac{1}{m(m-1)}\sum_{i\ne j} k(x_i, x_j)
              + \frac{1}{m(m-1)}\sum_{i\ne j} k(y_i, y_j) - \frac{2}{m^2}\sum_{i,j} k(x_i, y_j),

    on ``n_subsets`` random subsets of size ``min(subset_size, N_real, N_fake)`` drawn without
    replacement; returns their mean and standard deviation. Can be slightly negative.
    """
    a = _as_features(real, "real", 2)
    b = _as_features(fake, "fake", 2)
    if a.shape[1] != b.shape[1]:
        raise DataError(f"feature dimensions differ: real {a.shape[1]}, fake {b.shape[1]}")
    if n_subsets < 1:
        raise DataError(f"KID needs at least 1 subset, got n_subsets={n_subsets}")
    rng = np.random.default_rng(0) if rng is None else rng
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise DataError(f"KID needs subsets of at least 2 samples, got subset_size={m}")
    vals = np.array(
        [
            _mmd2_unbiased(
                a[rng.choice(a.shape[0], m, replace=False)],
                b[rng.choice(b.shape[0], m, replace=False)],
            )
            for _ in range(n_subsets)
        ]
    )
    return KIDResult(
        mean=float(vals.mean()), std=float(vals.std()), n_subsets=n_subsets, subset_size=m
    )


@dataclass(frozen=True)
class PrecisionRecall:
    """Improved precision and recall (fractions in [0, 1]) and the k used."""

    precision: float
    recall: float
    k: int


def _sq_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.maximum(d, 0.0)


def _knn_radii(x: np.ndarray, k: int, block: int) -> np.ndarray:
    """Squared distance from each row of x to its k-th nearest other row."""
    out = np.empty(x.shape[0])
    for s in range(0, x.shape[0], block):
        d = _sq_dists(x[s : s + block], x)
        # column k of the sorted row: index 0 is the point itself (distance 0)
        out[s : s + block] = np.partition(d, k, axis=1)[:, k]
    return out


def _coverage(manifold: np.ndarray, radii: np.ndarray, probes: np.ndarray, block: int) -> float:
    inside = np.zeros(probes.shape[0], dtype=bool)
    for s in range(0, probes.shape[0], block):
        d = _sq_dists(probes[s : s + block], manifold)
        inside[s : s + block] = np.any(d <= radii[None, :], axis=1)
    return float(inside.mean())


def precision_recall(
    real: np.ndarray, fake: np.ndarray, *, k: int = 3, block: int = 1024
) -> PrecisionRecall:
    r"""Improved precision and recall (Kynkäänniemi et al. 2019, NeurIPS).

    The real manifold is the union of balls around each real feature with radius its distance to
    its k-th nearest real neighbour; likewise for the fake manifold.
    precision = fraction of fake samples inside the real manifold (fidelity);
    recall = fraction of real samples inside the fake manifold (coverage).
    Memory is bounded by ``block`` rows of pairwise distances at a time.
    """
    if k < 1:
        raise DataError(f"precision/recall: k must be >= 1, got {k}")
    a = _as_features(real, "real", k + 1)
    b = _as_features(fake, "fake", k + 1)
    if a.shape[1] != b.shape[1]:
        raise DataError(f"feature dimensions differ: real {a.shape[1]}, fake {b.shape[1]}")
    ra = _knn_radii(a, k, block)
    rb = _knn_radii(b, k, block)
    return PrecisionRecall(
        precision=_coverage(a, ra, b, block), recall=_coverage(b, rb, a, block), k=k
    )
