"""Gaussian random fields with power-law spectra, the building block of the InSAR generators."""

from __future__ import annotations

import numpy as np


def radial_wavenumber(size: int) -> np.ndarray:
    """|k| in cycles per pixel on the (size, size) FFT grid."""
    f = np.fft.fftfreq(size)
    return np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)


def powerlaw_field(
    n: int, size: int, beta: float, rng: np.random.Generator, std: np.ndarray | float = 1.0
) -> np.ndarray:
    """``n`` zero-mean Gaussian fields of shape (size, size) with power spectrum ``P(k) ~ k**-beta``.

    White Gaussian noise is filtered in Fourier space by ``k**(-beta/2)`` (the k = 0 term set to
    zero, so every field has zero mean), then each field is scaled to the standard deviation
    ``std`` (a scalar or one value per field). Periodic boundaries, as any FFT synthesis.

    Parameters
    ----------
    beta : spectral exponent, 0 (white) to about 4 (very smooth). Kolmogorov turbulence gives
        8/3 for the 2-D delay in the intermediate scale range (Hanssen 2001, ch. 4).
    """
    k = radial_wavenumber(size)
    k[0, 0] = np.inf  # removes the mean; inf**(-beta/2) = 0
    amp = k ** (-beta / 2.0)
    white = rng.standard_normal((n, size, size))
    field = np.fft.ifft2(np.fft.fft2(white) * amp).real
    field -= field.mean(axis=(1, 2), keepdims=True)
    field /= field.std(axis=(1, 2), keepdims=True) + 1e-300
    return field * np.reshape(std, (-1, 1, 1))


def ramp(n: int, size: int, rng: np.random.Generator, max_gradient: float) -> np.ndarray:
    """Planar orbital ramps ``a x + b y`` with a, b uniform in +-max_gradient (units per pixel)."""
    a, b = rng.uniform(-max_gradient, max_gradient, size=(2, n, 1, 1))
    y, x = np.mgrid[0:size, 0:size] - (size - 1) / 2.0
    return a * x + b * y
