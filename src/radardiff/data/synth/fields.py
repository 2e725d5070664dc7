"""Gaussian random fields with prescribed spectra, the building block of every generator.

A stationary Gaussian field with power spectral density ``P(k)`` is synthesised by filtering
white Gaussian noise in Fourier space with the amplitude ``sqrt(P(k))`` (e.g. Hanssen 2001,
sec. 4.7; Lohman & Simons 2005). FFT synthesis gives periodic fields: by default the field is made
on a grid ``pad`` times larger and cropped, so that opposite edges of a scene are not correlated
(a periodic field would teach a generative model a wrap-around that real scenes do not have).

The analysis helpers (:func:`radial_psd`, :func:`spectral_slope`) estimate the radially averaged
periodogram with a Hann taper, which keeps the leakage of a cropped (non-periodic) field below
``k**-beta`` for ``beta`` up to about 4.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft

BLOCK = 256  # samples per random stream: sample i depends only on (seed, i), not on n


@dataclass
class Block:
    """One random stream's share of a generator call: output rows, global indices, generator."""

    out: slice
    index: np.ndarray
    rng: np.random.Generator


def iter_blocks(n: int, seed: int, start: int = 0, block: int = BLOCK) -> Iterator[Block]:
    """Split samples ``start .. start+n`` into fixed blocks, stream ``default_rng([seed, b])`` each.

    Sample ``i`` depends only on ``(seed, i)``: the first ``m`` samples of a run with ``n > m``
    are those of a run with ``n = m`` (exactly when ``m`` is a multiple of ``block``; otherwise
    every whole block matches), and a file can be generated in chunks (``start`` a multiple of
    ``block``) with the same result as in one go.
    """
    if start % block:
        raise ValueError(f"start={start} must be a multiple of the block size {block}")
    for first in range(start, start + n, block):
        stop = min(first + block, start + n)
        yield Block(
            slice(first - start, stop - start),
            np.arange(first, stop),
            np.random.default_rng([seed, first // block]),
        )


def rfft_wavenumbers(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(ky, kx) in cycles per pixel on the ``rfft2`` grid of a (size, size) image, broadcastable."""
    return np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :]


def radial_wavenumber(size: int) -> np.ndarray:
    """|k| in cycles per pixel on the full (size, size) FFT grid."""
    f = np.fft.fftfreq(size)
    return np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)


def filtered_noise(
    n: int, size: int, amplitude: np.ndarray, rng: np.random.Generator, pad: int = 2
) -> np.ndarray:
    """``n`` Gaussian fields (n, size, size), zero mean and unit standard deviation each.

    Parameters
    ----------
    amplitude : (size*pad, size*pad//2+1) or (n, ...) array, the square root of the wanted power
        spectrum on the ``rfft2`` grid of the padded image (see :func:`rfft_wavenumbers`).
    pad : the field is synthesised on a (size*pad)^2 periodic grid and its top-left corner kept.
    """
    m = size * pad
    # float32 throughout: the scenes are stored as float32 and this halves the time
    white = rng.standard_normal((n, m, m), dtype=np.float32)
    spec = sfft.rfft2(white, workers=-1) * np.asarray(amplitude, dtype=np.float32)
    field = sfft.irfft2(spec, s=(m, m), workers=-1)[:, :size, :size].astype(np.float64)
    field -= field.mean(axis=(1, 2), keepdims=True)
    std = field.std(axis=(1, 2), keepdims=True)
    return field / np.where(std > 0, std, 1.0)


def powerlaw_amplitude(size: int, beta: float, pad: int = 2, k_min: float = 0.0) -> np.ndarray:
    """``k**(-beta/2)`` on the rfft grid of a (size*pad)^2 image; 0 at k = 0.

    ``k_min`` (cycles per pixel) flattens the spectrum below it, an outer scale of turbulence.
    """
    ky, kx = rfft_wavenumbers(size * pad)
    k = np.sqrt(ky**2 + kx**2)
    amp = np.zeros_like(k)
    amp[k > 0] = np.maximum(k[k > 0], k_min) ** (-beta / 2.0)
    return amp


def powerlaw_field(
    n: int,
    size: int,
    beta: float,
    rng: np.random.Generator,
    std: np.ndarray | float = 1.0,
    pad: int = 2,
) -> np.ndarray:
    """``n`` zero-mean Gaussian fields of shape (size, size) with power spectrum ``P(k) ~ k**-beta``.

    Each field is scaled to the standard deviation ``std`` (a scalar or one value per field).

    Parameters
    ----------
    beta : spectral exponent, 0 (white) to about 4 (very smooth). Kolmogorov turbulence gives
        ``8/3`` for the 2-D delay in the intermediate scale range (Hanssen 2001, ch. 4); 5/3 at
        scales larger than the effective height of the wet troposphere.
    pad : 2 (default) gives non-periodic fields; 1 gives periodic ones (exact periodogram).
    """
    field = filtered_noise(n, size, powerlaw_amplitude(size, beta, pad), rng, pad)
    return field * np.reshape(np.asarray(std, dtype=np.float64), (-1, 1, 1))


def ramp(n: int, size: int, rng: np.random.Generator, max_gradient: float) -> np.ndarray:
    """Planar orbital ramps ``a x + b y`` (n, size, size), a, b uniform in +-max_gradient per pixel.

    Coordinates are centred on the scene, so a ramp has zero mean.
    """
    a, b = rng.uniform(-max_gradient, max_gradient, size=(2, n, 1, 1))
    y, x = np.mgrid[0:size, 0:size] - (size - 1) / 2.0
    return a * x + b * y


@dataclass
class RadialPSD:
    """Radially averaged power spectral density: ``k`` in cycles per pixel, ``psd`` per bin."""

    k: np.ndarray
    psd: np.ndarray


def radial_psd(fields: np.ndarray, taper: bool = True) -> RadialPSD:
    """Radially averaged periodogram of (n, H, W) square fields, averaged over the n fields.

    ``P(k) = < |FFT(w * (f - mean f))|^2 > / sum(w^2)`` binned in rings of width one frequency
    step; the abscissa of a ring is the mean |k| of its pixels. ``w`` is a 2-D Hann taper when
    ``taper`` (for non-periodic fields), else 1.
    """
    f = np.asarray(fields, dtype=np.float64)
    f = f.reshape(-1, *f.shape[-2:])
    size = f.shape[-1]
    f = f - f.mean(axis=(1, 2), keepdims=True)
    w = np.outer(np.hanning(size), np.hanning(size)) if taper else np.ones((size, size))
    power = (np.abs(np.fft.fft2(f * w)) ** 2).mean(axis=0) / (w**2).sum()
    k = radial_wavenumber(size)
    ring = np.rint(k * size).astype(int)
    nbins = size // 2 + 1
    sel = (ring > 0) & (ring < nbins)
    counts = np.bincount(ring[sel], minlength=nbins)[1:]
    psd = np.bincount(ring[sel], power[sel], minlength=nbins)[1:] / np.maximum(counts, 1)
    kk = np.bincount(ring[sel], k[sel], minlength=nbins)[1:] / np.maximum(counts, 1)
    return RadialPSD(k=kk, psd=psd)


def spectral_slope(
    fields: np.ndarray, k_min: float = 0.1, k_max: float = 0.45, taper: bool = True
) -> float:
    """Exponent ``beta`` of ``P(k) ~ k**-beta`` by least squares on log P vs log k in a k band."""
    r = radial_psd(fields, taper=taper)
    sel = (r.k >= k_min) & (r.k <= k_max) & (r.psd > 0)
    slope = np.polyfit(np.log(r.k[sel]), np.log(r.psd[sel]), 1)[0]
    return float(-slope)
