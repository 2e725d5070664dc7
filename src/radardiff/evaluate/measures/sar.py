r"""What a SAR user judges backscatter by: speckle, texture, spatial correlation, bright targets.

All statistics are of **linear intensity** :math:`I` (power; dB values are converted by the
driver with :math:`I = 10^{x/10}`), per image.

Homogeneous windows and the ENL
    Speckle statistics are defined on homogeneous areas, so windows are found automatically. An
    image is cut into non-overlapping ``w`` x ``w`` windows; a window is homogeneous when the
    means of its four quadrants agree with its own mean within the scatter speckle alone gives
    them:

    .. math:: \max_q \left| \frac{\bar I_q}{\bar I} - 1 \right| \le
              z \, \frac{\mathrm{CV}}{\sqrt{n_q / c}}, \qquad
              c = (1 + 2\rho_x)(1 + 2\rho_y),

    with :math:`\mathrm{CV}` the window's coefficient of variation, :math:`n_q` the pixels of a
    quadrant, :math:`\rho_{x,y}` the speckle's lag-1 autocorrelations (speckle correlated by
    processing carries fewer independent looks; :math:`c` is the variance inflation of a mean
    over an AR(1)-like field; :math:`\rho` is estimated inside the windows, first the lower
    quartile over all windows, then the median over those found homogeneous, and capped at
    :data:`MAX_RHO`) and :math:`z = 3`. An edge or a ramp inside a
    window moves a quadrant's mean by more than speckle does and rejects it. On the homogeneous
    windows the equivalent number of looks is :math:`\mathrm{ENL} = \mu^2/\sigma^2` and the
    coefficient of variation :math:`\sigma/\mu` (Oliver and Quegan 2004, *Understanding Synthetic
    Aperture Radar Images*, ch. 4; Lee and Pottier 2009, ch. 4), their median over windows the
    image's value. With fewer than :data:`MIN_WINDOWS` homogeneous windows the image's ENL is not
    measurable (NaN).

Mellin log-cumulants (the texture diagram)
    :math:`\tilde\kappa_1 = E[\log I]`, :math:`\tilde\kappa_2 = \mathrm{Var}[\log I]`,
    :math:`\tilde\kappa_3 = E[(\log I - \tilde\kappa_1)^3]` (Nicolas 2002; Tison et al. 2004,
    IEEE TGRS 42(10)). Fully developed L-look speckle (Gamma intensity) sits on the curve
    :math:`(\tilde\kappa_3, \tilde\kappa_2) = (\psi''(L), \psi'(L))`; a K-distributed field
    (Gamma texture of shape :math:`\nu` under L-look speckle) at
    :math:`(\psi''(L) + \psi''(\nu), \psi'(L) + \psi'(\nu))`, off the curve: texture raises
    :math:`\tilde\kappa_2`.

Autocorrelation
    :math:`\rho(k) = \frac{E[(I_{p} - \mu)(I_{p+k} - \mu)]}{\sigma^2}` along x (columns) and y
    (rows) at lags 1-3, inside each window (where the scene's own structure is small), its median
    over the homogeneous windows: zero for independent speckle, positive where processing
    (oversampling, multilooking) correlated it. The lag-1 values, first as the median over all
    windows, also give the variance inflation :math:`c` of the homogeneity test.

Bright point targets
    Per image, the peak :math:`\max 10\log_{10} I` in dB and its contrast over its 8 neighbours,
    :math:`10\log_{10} I_{peak} - 10\log_{10} \overline{I}_{8}`: a point target's main lobe
    against its side lobes and clutter.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import special

MIN_WINDOWS = 2
HOMOGENEITY_Z = 3.0
# the largest lag-1 speckle correlation the homogeneity test allows for. Oversampled products
# correlate their speckle strongly (Sentinel-1 IW GRDH: about 0.74 along range); a window's own
# structure (an edge, a ramp) also looks like correlation and would make the test accept it, so
# the estimate is capped here. With 64-pixel quadrants of such speckle (about 10 independent
# looks each) the test rejects an edge of about 5 dB and more, not a 3 dB one.
MAX_RHO = 0.8
LAGS = 3


@dataclass(frozen=True)
class SarStats:
    """Per-image SAR statistics of linear intensity, shape (B,) unless said.

    ``enl``, ``cv``, ``acf_x``, ``acf_y``: medians over the image's homogeneous windows (NaN
    with fewer than :data:`MIN_WINDOWS`), the last two (B, 3) autocorrelations at lags 1-3;
    ``windows``: how many homogeneous windows it has (and ``tested``: how many were tested);
    ``k1``, ``k2``, ``k3``: the image's log-cumulants; ``peak_db``, ``peak_contrast_db``: the
    brightest pixel in dB and its contrast over its 8 neighbours in dB.
    """

    enl: np.ndarray
    cv: np.ndarray
    windows: np.ndarray
    tested: np.ndarray
    k1: np.ndarray
    k2: np.ndarray
    k3: np.ndarray
    acf_x: np.ndarray
    acf_y: np.ndarray
    peak_db: np.ndarray
    peak_contrast_db: np.ndarray


def gamma_log_cumulants(looks: float) -> tuple[float, float]:
    """(k2, k3) of L-look Gamma intensity: (psi'(L), psi''(L)) (Nicolas 2002)."""
    return float(special.polygamma(1, looks)), float(special.polygamma(2, looks))


def k_log_cumulants(looks: float, texture: float) -> tuple[float, float]:
    """(k2, k3) of a K-distributed intensity: L-look speckle on a Gamma texture of shape
    ``texture`` (nu): (psi'(L) + psi'(nu), psi''(L) + psi''(nu)) (Tison et al. 2004)."""
    k2, k3 = gamma_log_cumulants(looks)
    return k2 + float(special.polygamma(1, texture)), k3 + float(special.polygamma(2, texture))


def log_cumulants(intensity: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image (k1, k2, k3) of ``log I`` over its finite, positive pixels; (B, H, W) in."""
    z = np.asarray(intensity, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(np.isfinite(z) & (z > 0), np.log(np.where(z > 0, z, 1.0)), np.nan)
        flat = logs.reshape(z.shape[0], -1)
        k1 = np.nanmean(flat, axis=1)
        dev = flat - k1[:, None]
        k2 = np.nanmean(dev**2, axis=1)
        k3 = np.nanmean(dev**3, axis=1)
    return k1, k2, k3


def window_autocorrelation(windows: np.ndarray, lags: int = LAGS) -> tuple[np.ndarray, np.ndarray]:
    """The normalised autocorrelation of intensity inside each window (B, n, w, w), along x
    (columns) and y (rows) at lags 1..``lags``: two (B, n, lags) arrays. Within a window the
    scene's own structure is small, so this measures the speckle's correlation."""
    t = np.asarray(windows, dtype=np.float64)
    flat = t.reshape(*t.shape[:2], -1)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        d = t - np.nanmean(flat, axis=2)[..., None, None]
        var = np.nanvar(flat, axis=2)
        out = []
        for axis in (3, 2):  # x: along columns, y: along rows
            rows = []
            for k in range(1, lags + 1):
                a = np.take(d, np.arange(d.shape[axis] - k), axis=axis)
                b = np.take(d, np.arange(k, d.shape[axis]), axis=axis)
                rows.append(np.nanmean((a * b).reshape(*t.shape[:2], -1), axis=2) / var)
            out.append(np.stack(rows, axis=2))
    return out[0], out[1]


def _windows(z: np.ndarray, w: int) -> np.ndarray:
    """Non-overlapping w x w windows of (B, H, W): (B, n_windows, w, w)."""
    b, h, wd = z.shape
    hb, wb = h // w, wd // w
    t = z[:, : hb * w, : wb * w].reshape(b, hb, w, wb, w).transpose(0, 1, 3, 2, 4)
    return t.reshape(b, hb * wb, w, w)


def homogeneous_windows(
    windows: np.ndarray, rho1: np.ndarray, z: float = HOMOGENEITY_Z
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per window of each image (B, n, w, w): its ENL, its CV and whether it is homogeneous (see
    the module docstring); ``rho1`` (B, 2): the images' speckle correlations at lag 1 along x, y."""
    t = np.asarray(windows, dtype=np.float64)
    half = t.shape[-1] // 2
    with np.errstate(invalid="ignore", divide="ignore"):
        flat = t.reshape(*t.shape[:2], -1)
        mu = np.nanmean(flat, axis=2)
        sd = np.nanstd(flat, axis=2, ddof=1)
        cv = sd / mu
        quads = np.stack([np.nanmean(t[..., a : a + half, c : c + half].reshape(*t.shape[:2], -1), axis=2)
                          for a in (0, half) for c in (0, half)], axis=2)  # fmt: skip
        rho = np.clip(np.nan_to_num(rho1, nan=0.0), 0.0, MAX_RHO)
        inflate = ((1 + 2 * rho[:, 0]) * (1 + 2 * rho[:, 1]))[:, None]
        limit = z * cv / np.sqrt(half * half / inflate)
        spread = np.nanmax(np.abs(quads / mu[..., None] - 1.0), axis=2)
        ok = np.isfinite(flat).all(axis=2) & (mu > 0) & (sd > 0) & (spread <= limit)
    return mu**2 / sd**2, cv, ok


def _median_where(values: np.ndarray, ok: np.ndarray, enough: np.ndarray) -> np.ndarray:
    """Median over axis 1 of ``values`` where ``ok`` (trailing axes kept), NaN where not
    ``enough`` windows."""
    mask = ok.reshape(ok.shape + (1,) * (values.ndim - ok.ndim))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows without a window: NaN
        med = np.nanmedian(np.where(mask, values, np.nan), axis=1)
    return np.where(enough.reshape(enough.shape + (1,) * (med.ndim - 1)), med, np.nan)


def bright_targets(intensity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image the brightest pixel in dB and its contrast over the mean of its 8 neighbours
    (dB); the border pixels are not candidates (their neighbourhood is incomplete)."""
    z = np.asarray(intensity, dtype=np.float64)
    inner = z[:, 1:-1, 1:-1]
    filled = np.where(np.isfinite(inner), inner, -np.inf)
    flat = filled.reshape(z.shape[0], -1)
    idx = np.argmax(flat, axis=1)
    rows, cols = np.unravel_index(idx, inner.shape[1:])
    peak = flat[np.arange(z.shape[0]), idx]
    hood = np.stack([z[np.arange(z.shape[0]), rows + 1 + dy, cols + 1 + dx]
                     for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx], axis=1)  # fmt: skip
    with np.errstate(divide="ignore", invalid="ignore"):
        peak_db = 10 * np.log10(peak)
        contrast = peak_db - 10 * np.log10(np.nanmean(hood, axis=1))
    return np.where(np.isfinite(peak_db), peak_db, np.nan), contrast


def sar_stats(intensity: np.ndarray, window: int = 16) -> SarStats:
    """The SAR statistics of each linear-intensity image of (B, H, W) (module docstring); the
    window side is ``window``, or the largest even side fitting four windows in a smaller image."""
    z = np.asarray(intensity, dtype=np.float64)
    if z.ndim == 2:
        z = z[None]
    w = min(window, max(4, (min(z.shape[1:]) // 2) // 2 * 2))
    t = _windows(z, w)
    wx, wy = window_autocorrelation(t)
    lag1 = np.stack([wx[..., 0], wy[..., 0]], axis=2)  # (B, n, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        # first the windows least touched by structure, then the homogeneous ones found with it
        rho1 = np.nanpercentile(lag1, 25, axis=1)
        enl_w, cv_w, ok = homogeneous_windows(t, rho1)
        count = ok.sum(axis=1)
        rho_ok = np.nanmedian(np.where(ok[..., None], lag1, np.nan), axis=1)
        rho1 = np.where((count >= MIN_WINDOWS)[:, None], rho_ok, rho1)
        enl_w, cv_w, ok = homogeneous_windows(t, rho1)
    count = ok.sum(axis=1)
    enough = count >= MIN_WINDOWS
    enl, cv = _median_where(enl_w, ok, enough), _median_where(cv_w, ok, enough)
    acf_x, acf_y = _median_where(wx, ok, enough), _median_where(wy, ok, enough)
    k1, k2, k3 = log_cumulants(z)
    peak_db, contrast = bright_targets(z)
    return SarStats(enl=enl, cv=cv, windows=count, tested=np.full(len(z), ok.shape[1]),
                    k1=k1, k2=k2, k3=k3, acf_x=acf_x, acf_y=acf_y, peak_db=peak_db,
                    peak_contrast_db=contrast)  # fmt: skip


def polarisation_ratio_db(vv: np.ndarray, vh: np.ndarray) -> np.ndarray:
    """The co- to cross-polarisation ratio in dB, ``10 log10(I_VV / I_VH)``, per pixel (finite
    values only, flattened)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = 10 * np.log10(np.asarray(vv, np.float64) / np.asarray(vh, np.float64))
    r = r.ravel()
    return r[np.isfinite(r)]
