r"""Radar-specific statistics: speckle (ENL, coefficient of variation) and wrapped phase.

Speckle
    For fully developed speckle in an L-look intensity image of a homogeneous area, the intensity
    is Gamma distributed with mean :math:`\mu` and variance :math:`\mu^2 / L`, so the equivalent
    number of looks :math:`\mathrm{ENL} = \mu^2 / \sigma^2` estimates L and the coefficient of
    variation :math:`\mathrm{CV} = \sigma / \mu = 1/\sqrt{\mathrm{ENL}}` (Oliver & Quegan 2004,
    Understanding Synthetic Aperture Radar Images, ch. 4). Both are computed on linear intensity;
    data in dB are converted with :math:`I = 10^{x/10}`.

Wrapped phase
    With :math:`W(\phi) = \operatorname{angle}(e^{i\phi}) \in (-\pi, \pi]`, the wrapped phase
    gradients are :math:`W(\phi_{y,x+1} - \phi_{y,x})` and :math:`W(\phi_{y+1,x} - \phi_{y,x})`.
    A residue is a 2x2 loop whose sum of wrapped differences, :math:`\oint = 2\pi q`, has
    :math:`q \ne 0` (Goldstein, Zebker & Werner 1988, Radio Science 23(4)); the residue density
    is the fraction of loops with all four pixels valid that are residues.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from radardiff.errors import DataError


def to_linear_intensity(values: np.ndarray, units: str) -> np.ndarray:
    """Linear intensity from SAR backscatter in ``units`` (dB values are converted)."""
    values = np.asarray(values, dtype=np.float64)
    return 10.0 ** (values / 10.0) if "db" in units.lower() else values


def enl(intensity: np.ndarray) -> float:
    r"""Equivalent number of looks :math:`\mu^2 / \sigma^2` of a homogeneous linear-intensity area.

    :math:`\sigma^2` is the sample variance (``ddof=1``); NaN pixels are ignored; a constant
    area gives infinity (Oliver & Quegan 2004, Understanding Synthetic Aperture Radar Images,
    ch. 4). Raises DataError with fewer than 2 finite values.
    """
    v = np.asarray(intensity, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size < 2:
        raise DataError(f"ENL needs at least 2 finite pixels, got {v.size}")
    var = v.var(ddof=1)
    return float(v.mean() ** 2 / var) if var > 0 else float("inf")


def coefficient_of_variation(intensity: np.ndarray) -> float:
    r"""Coefficient of variation :math:`\sigma / \mu` of linear intensity (NaN ignored).

    :math:`\sigma` with ``ddof=1``; :math:`1 / \sqrt{L}` for fully developed L-look speckle
    (Oliver & Quegan 2004, ch. 4). Raises DataError with fewer than 2 finite values.
    """
    v = np.asarray(intensity, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size < 2:
        raise DataError(
            f"the coefficient of variation needs at least 2 finite pixels, got {v.size}"
        )
    return float(v.std(ddof=1) / v.mean())


@dataclass(frozen=True)
class SpeckleStats:
    """Per-image speckle statistics, shape (B,).

    ``enl`` is the median over non-overlapping ``block`` x ``block`` windows of the windowed
    ENL (the median is robust to windows that straddle edges of heterogeneous scenes);
    ``cv`` is the coefficient of variation of the whole image.
    """

    enl: np.ndarray
    cv: np.ndarray


def speckle_stats(intensity: np.ndarray, block: int = 8) -> SpeckleStats:
    r"""Windowed ENL and whole-image CV of each linear-intensity image (B, H, W).

    .. math:: \mathrm{ENL}_b = \operatorname{median}_w \frac{\mu_w^2}{\sigma_w^2}, \qquad
              \mathrm{CV}_b = \frac{\sigma_b}{\mu_b},

    over the non-overlapping ``block`` x ``block`` windows :math:`w` of image :math:`b`
    (variances with ``ddof=1``, NaN ignored; a window of zero variance is left out). See
    :func:`enl` and :func:`coefficient_of_variation` for the references.

    Returns
    -------
    SpeckleStats
        ``enl`` and ``cv``, shape (B,); NaN for an image without valid windows or pixels.
    """
    z = np.asarray(intensity, dtype=np.float64)
    if z.ndim == 2:
        z = z[None]
    b, h, w = z.shape
    if h < block or w < block:
        raise DataError(f"speckle statistics need images of at least {block}x{block} pixels")
    hb, wb = h // block, w // block
    tiles = z[:, : hb * block, : wb * block].reshape(b, hb, block, wb, block)
    tiles = tiles.transpose(0, 1, 3, 2, 4).reshape(b, hb * wb, block * block)
    with np.errstate(invalid="ignore", divide="ignore"), _quiet():
        mu = np.nanmean(tiles, axis=2)
        var = np.nanvar(tiles, axis=2, ddof=1)
        enl_tiles = np.where(var > 0, mu**2 / var, np.nan)
        enl_img = np.nanmedian(enl_tiles, axis=1)
        flat = z.reshape(b, -1)
        cv = np.nanstd(flat, axis=1, ddof=1) / np.nanmean(flat, axis=1)
    return SpeckleStats(enl=enl_img, cv=cv)


def wrap(phase: np.ndarray) -> np.ndarray:
    """Wrap phases (radians) to (-pi, pi]."""
    return np.angle(np.exp(1j * np.asarray(phase, dtype=np.float64)))


@dataclass(frozen=True)
class PhaseStats:
    """Per-image wrapped-phase statistics, shape (B,).

    Attributes
    ----------
    grad_mean_abs_x, grad_mean_abs_y : mean absolute wrapped gradient along x / y (rad/px)
    grad_std_x, grad_std_y : standard deviation of the wrapped gradient along x / y (rad/px)
    residue_density : residues per valid 2x2 loop
    """

    grad_mean_abs_x: np.ndarray
    grad_mean_abs_y: np.ndarray
    grad_std_x: np.ndarray
    grad_std_y: np.ndarray
    residue_density: np.ndarray


def residues(phase: np.ndarray) -> np.ndarray:
    r"""Residue charge :math:`q \in \{-1, 0, 1\}` of each 2x2 loop, shape (..., H-1, W-1).

    :math:`q = \frac{1}{2\pi} \sum_{k=1}^4 W(\phi_{k+1} - \phi_k)` around the loop, rounded
    (Goldstein, Zebker & Werner 1988). The loop runs (y,x) -> (y,x+1) -> (y+1,x+1) -> (y+1,x)
    -> (y,x); NaN where a corner is NaN.
    """
    p = np.asarray(phase, dtype=np.float64)
    d1 = wrap(p[..., :-1, 1:] - p[..., :-1, :-1])
    d2 = wrap(p[..., 1:, 1:] - p[..., :-1, 1:])
    d3 = wrap(p[..., 1:, :-1] - p[..., 1:, 1:])
    d4 = wrap(p[..., :-1, :-1] - p[..., 1:, :-1])
    return np.rint((d1 + d2 + d3 + d4) / (2 * np.pi))


def phase_stats(phase: np.ndarray) -> PhaseStats:
    r"""Wrapped-gradient statistics and residue density of each phase image (B, H, W), radians.

    With :math:`W` the wrapping to :math:`(-\pi, \pi]`, the gradients are
    :math:`g_x = W(\phi_{y,x+1} - \phi_{y,x})` and :math:`g_y = W(\phi_{y+1,x} - \phi_{y,x})`;
    their mean absolute value and (population) standard deviation are reported per image, and
    the residue density is the fraction of 2x2 loops with all corners valid whose charge
    (:func:`residues`) is not 0 (Goldstein, Zebker & Werner 1988, Radio Science 23(4)).

    Returns
    -------
    PhaseStats
        Each field of shape (B,); NaN where an image has no valid gradient or loop.
    """
    p = np.asarray(phase, dtype=np.float64)
    if p.ndim == 2:
        p = p[None]
    if min(p.shape[-2:]) < 2:
        raise DataError("phase statistics need images of at least 2x2 pixels")
    gx = wrap(p[..., :, 1:] - p[..., :, :-1]).reshape(len(p), -1)
    gy = wrap(p[..., 1:, :] - p[..., :-1, :]).reshape(len(p), -1)
    q = residues(p).reshape(len(p), -1)
    with np.errstate(invalid="ignore", divide="ignore"), _quiet():
        valid = np.isfinite(q).sum(axis=1)
        density = np.where(valid > 0, (np.abs(np.nan_to_num(q)) > 0).sum(axis=1) / valid, np.nan)
        return PhaseStats(
            grad_mean_abs_x=np.nanmean(np.abs(gx), axis=1),
            grad_mean_abs_y=np.nanmean(np.abs(gy), axis=1),
            grad_std_x=np.nanstd(gx, axis=1),
            grad_std_y=np.nanstd(gy, axis=1),
            residue_density=density,
        )


@contextmanager
def _quiet():
    # All-NaN rows (images with no valid pixel) are expected and yield NaN on purpose.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
