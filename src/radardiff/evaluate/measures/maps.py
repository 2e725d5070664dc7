r"""Measures of how images follow their per-pixel maps: phase on elevation, backscatter per label.

Phase on elevation
    The stratified tropospheric delay makes an interferogram's phase linear in elevation to first
    order, :math:`\phi = a + k h (+ c x + d y) + \varepsilon` (Hanssen 2001, *Radar
    Interferometry*, sec. 4.7; Doin et al. 2009, J. Appl. Geophys. 69, 35-50). :math:`k` (rad/m)
    is estimated per image by ordinary least squares over its valid pixels; with ``ramp`` a plane
    in the pixel coordinates is fitted jointly, so an orbital ramp is not read as a slope when
    the terrain rises to one side (Frisch-Waugh: :math:`\phi` and :math:`h` are both freed of
    the plane and :math:`k = \sum \tilde h \tilde\phi / \sum \tilde h^2`). The turbulent delay
    that happens to correlate with the terrain is what errs the estimate.

Backscatter per label
    For each class of a label map, the statistics of linear intensity :math:`I` over that class's
    pixels: its level (:math:`10 \log_{10} \bar I` and the mean of :math:`10 \log_{10} I`),
    the equivalent number of looks :math:`\mathrm{ENL} = \bar I^2 / s_I^2` and the log-cumulants
    :math:`\tilde\kappa_2, \tilde\kappa_3` of :math:`\log I` (Nicolas 2002; Tison et al. 2004;
    :mod:`.sar`). L-look Gamma speckle has :math:`\mathrm{ENL} = L`,
    :math:`(\tilde\kappa_2, \tilde\kappa_3) = (\psi'(L), \psi''(L))`; a K distribution (texture
    of shape :math:`\nu`) has :math:`\mathrm{ENL} = 1/((1 + 1/L)(1 + 1/\nu) - 1) < L` and
    :math:`(\psi'(L) + \psi'(\nu), \psi''(L) + \psi''(\nu))`
    (:func:`.sar.gamma_log_cumulants`, :func:`.sar.k_log_cumulants`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from radardiff.evaluate.measures.sar import log_cumulants

MIN_LABEL_PIXELS = 50


@dataclass(frozen=True)
class ElevationFit:
    """Per-image fit of phase on elevation, shape (B,) each. ``slope`` in rad per metre,
    ``intercept`` the phase at zero elevation (at the scene centre with ``ramp``), ``r2`` the
    share of the phase variance the fit explains, ``n_valid`` the pixels used; NaN where the
    image has too few valid pixels or too little relief."""

    slope: np.ndarray
    intercept: np.ndarray
    r2: np.ndarray
    n_valid: np.ndarray


def _as_stack(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[None] if x.ndim == 2 else x.reshape(-1, *x.shape[-2:])


def _fit_basis(v: np.ndarray, w: np.ndarray, basis: list[np.ndarray]) -> np.ndarray:
    """Weighted least-squares coefficients (B, P) of ``v`` (B, N) on the columns ``basis``."""
    g = np.stack([np.stack([np.sum(w * a * c, axis=1) for c in basis], -1) for a in basis], -2)
    r = np.stack([np.sum(w * a * v, axis=1) for a in basis], axis=-1)
    # pinv: a sample without valid pixels (or on one line) gets coefficients, not an error
    return np.einsum("bij,bj->bi", np.linalg.pinv(g), r)


def _apply(coef: np.ndarray, basis: list[np.ndarray]) -> np.ndarray:
    return sum(coef[:, i : i + 1] * b for i, b in enumerate(basis))


def elevation_regression(
    phase: np.ndarray,
    dem: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    ramp: bool = False,
    min_pixels: int = 16,
    min_relief_m: float = 1.0,
) -> ElevationFit:
    r"""Least-squares slope of phase on elevation, per image.

    Parameters
    ----------
    phase : (B, H, W) or (H, W) unwrapped phase (rad); non-finite values are no data.
    dem : elevations (m) of the same shape, or one (H, W) DEM for every image.
    valid : optional boolean mask, broadcastable to ``phase``: pixels to use (on top of finite
        phase and elevation).
    ramp : also fit a plane :math:`c x + d y` in pixel coordinates (centred on the scene).
    min_pixels : fewer valid pixels give NaN.
    min_relief_m : a standard deviation of elevation (about the plane, with ``ramp``) below
        this gives NaN: a flat scene has no slope to measure.

    Returns
    -------
    ElevationFit
        :math:`k = \sum_p \tilde h_p \tilde\phi_p / \sum_p \tilde h_p^2` with
        :math:`\tilde\cdot` the residual about the mean (or the plane), the intercept
        :math:`a` of :math:`\phi - k h`, and
        :math:`R^2 = 1 - \sum(\tilde\phi - k\tilde h)^2 / \sum(\phi - \bar\phi)^2`.

    References
    ----------
    Doin, M.-P. et al. (2009). Corrections of stratified tropospheric delays in SAR
    interferometry: validation with global atmospheric models. J. Appl. Geophys. 69(1), 35-50.
    """
    phi = _as_stack(phase)
    h = np.broadcast_to(_as_stack(dem), phi.shape)
    ok = np.isfinite(phi) & np.isfinite(h)
    if valid is not None:
        ok &= np.broadcast_to(np.asarray(valid, dtype=bool), phi.shape)
    b, size_y, size_x = phi.shape
    w = ok.reshape(b, -1).astype(np.float64)
    phi = np.where(ok, phi, 0.0).reshape(b, -1)
    h = np.where(ok, h, 0.0).reshape(b, -1)
    basis = [np.ones((1, size_y * size_x))]
    if ramp:
        y, x = np.mgrid[0:size_y, 0:size_x] - np.array([size_y - 1, size_x - 1])[:, None, None] / 2
        basis += [x.reshape(1, -1), y.reshape(1, -1)]
    n = w.sum(axis=1)
    rh = (h - _apply(_fit_basis(h, w, basis), basis)) * w
    rphi = (phi - _apply(_fit_basis(phi, w, basis), basis)) * w
    shh = np.sum(rh * rh, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.sum(rh * rphi, axis=1) / shh
        intercept = _fit_basis(phi - slope[:, None] * h, w, basis)[:, 0]
        mean = np.sum(w * phi, axis=1) / n
        r2 = 1.0 - np.sum((rphi - slope[:, None] * rh) ** 2, axis=1) / np.sum(
            w * (phi - mean[:, None]) ** 2, axis=1
        )
    bad = (n < max(min_pixels, len(basis) + 1)) | ~(shh > n * min_relief_m**2)
    nan = np.float64(np.nan)
    return ElevationFit(
        slope=np.where(bad, nan, slope),
        intercept=np.where(bad, nan, intercept),
        r2=np.where(bad, nan, r2),
        n_valid=n.astype(np.int64),
    )


@dataclass(frozen=True)
class LabelStats:
    """The backscatter statistics of one class (:func:`per_label_sar_stats`).

    Set-level values (floats; NaN when not measurable, ``reason`` then says why): ``pixels``
    of the class in all; ``samples`` with at least ``min_pixels`` of it (the measurable ones);
    ``mean_db`` = 10 log10 of the mean intensity and ``db_mean`` = the mean of 10 log10 I, over
    every pixel of the class; ``enl`` the median of the per-sample ENLs; ``k2``, ``k3`` the
    pixel-weighted means of the per-sample log-cumulants. Per-sample arrays (B,), NaN where a
    sample has fewer than ``min_pixels``: ``sample_pixels``, ``sample_mean_db``,
    ``sample_enl``, ``sample_k2``, ``sample_k3``.
    """

    name: str
    pixels: int
    samples: int
    mean_db: float
    db_mean: float
    enl: float
    k2: float
    k3: float
    reason: str | None
    sample_pixels: np.ndarray
    sample_mean_db: np.ndarray
    sample_enl: np.ndarray
    sample_k2: np.ndarray
    sample_k3: np.ndarray


def _per_sample(x: np.ndarray, enough: np.ndarray) -> tuple[np.ndarray, ...]:
    """Mean, variance (ddof 1), k2, k3 of each sample of ``x`` (NaN outside the class) where
    ``enough``; NaN elsewhere (never an empty-slice warning)."""
    mean, var, k2, k3 = np.full((4, len(x)), np.nan)
    if enough.any():
        xs = x[enough]
        flat = xs.reshape(len(xs), -1)
        mean[enough], var[enough] = np.nanmean(flat, axis=1), np.nanvar(flat, axis=1, ddof=1)
        _, k2[enough], k3[enough] = log_cumulants(xs)
    return mean, var, k2, k3


def _class_stats(z: np.ndarray, mask: np.ndarray, name: str, min_pixels: int) -> LabelStats:
    count = mask.sum(axis=(1, 2))
    enough = count >= min_pixels
    mean, var, k2, k3 = _per_sample(np.where(mask, z, np.nan), enough)
    values, total = z[mask], int(count.sum())
    level, shape = total >= min_pixels, bool(enough.any())
    reason = None
    if not level:
        reason = f"{name}: {total} pixel(s) in all, fewer than {min_pixels}"
    elif not shape:
        reason = f"{name}: no sample holds {min_pixels} pixels (ENL, k2, k3 not measurable)"
    enl = mean**2 / var  # NaN where not enough, like k2 and k3
    w = count[enough]
    return LabelStats(
        name=name,
        pixels=total,
        samples=int(enough.sum()),
        mean_db=float(10 * np.log10(values.mean())) if level else np.nan,
        db_mean=float(np.mean(10 * np.log10(values))) if level else np.nan,
        enl=float(np.median(enl[enough])) if shape else np.nan,
        k2=float(np.average(k2[enough], weights=w)) if shape else np.nan,
        k3=float(np.average(k3[enough], weights=w)) if shape else np.nan,
        reason=reason,
        sample_pixels=count.astype(np.int64),
        sample_mean_db=10 * np.log10(mean),
        sample_enl=enl,
        sample_k2=k2,
        sample_k3=k3,
    )


def per_label_sar_stats(
    intensity: np.ndarray,
    label_map: np.ndarray,
    classes: Sequence[str],
    min_pixels: int = MIN_LABEL_PIXELS,
) -> dict[str, LabelStats]:
    r"""Backscatter statistics of each class of a label map: level, ENL, log-cumulants.

    Parameters
    ----------
    intensity : (B, H, W) or (H, W) linear intensity (convert dB with :math:`10^{x/10}`);
        non-finite or non-positive values are no data.
    label_map : class indices ``0 .. K-1`` of the same shape (floats allowed; NaN: no label).
    classes : the K class names, the keys of the result in this order.
    min_pixels : a sample with fewer pixels of a class does not measure that class's ENL and
        log-cumulants; a set with fewer in all does not measure its level either.

    Returns
    -------
    dict of str to LabelStats
        One entry per class. Levels pool every pixel of the class over the set, the level being
        what is compared. ENL and log-cumulants are computed within each sample (each scene has
        its own mean level, and pooling scenes would count the spread of levels as texture),
        then combined: :math:`\mathrm{ENL}_b = \bar I_b^2 / s_{I,b}^2` by its median over the
        measurable samples, :math:`\tilde\kappa_{2,3}` by their mean weighted by pixel count
        (the pooled within-sample cumulants).

    References
    ----------
    Oliver, C., Quegan, S. (2004). *Understanding Synthetic Aperture Radar Images*, ch. 4-5.
    Tison, C., Nicolas, J.-M., Tupin, F., Maitre, H. (2004). A new statistical model for Markovian
    classification of urban areas in high-resolution SAR images. IEEE TGRS 42(10), 2046-2057.
    """
    z = _as_stack(intensity)
    lab = np.broadcast_to(_as_stack(label_map), z.shape)
    data = np.isfinite(z) & (z > 0) & np.isfinite(lab)
    return {
        name: _class_stats(z, data & (lab == k), name, min_pixels) for k, name in enumerate(classes)
    }
