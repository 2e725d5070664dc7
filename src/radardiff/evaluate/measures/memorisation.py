r"""Memorisation: are generated samples copies of training images?

A model trained on a small real set can return its training images. For each generated sample,
the distance to its nearest training image is set against the same distance for real images of
the training distribution that the model did not see (held back from the training set):

.. math:: r = \frac{\operatorname{median}_g \min_t d(g, t)}
                   {\operatorname{median}_h \min_t d(h, t)},

with :math:`g` the generated samples, :math:`h` the held-back images and :math:`t` the training
images the model saw. :math:`r \approx 1`: generated samples are as far from the training set as
new real images are; :math:`r \ll 1`: copies (or near-copies). The distance is Euclidean between
images standardised one by one (each channel to zero mean and unit variance over its finite
pixels, no data set to 0), so that it compares patterns, not levels that a normalisation
removes anyway (Meehan et al. 2020, "A non-parametric test to detect data-copying in generative
models", use the same nearest-neighbour comparison against held-out data).
``near_copy_fraction`` is the share of generated samples closer to the training set than the
5th percentile of the held-back images' distances: about 0.05 when there is no copying.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEAR_COPY_PERCENTILE = 5.0


def standardised(images: np.ndarray) -> np.ndarray:
    """Each image's channels to zero mean and unit variance over their finite pixels (no data
    and constant channels to 0), flattened: (N, C*H*W) float64."""
    x = np.asarray(images, dtype=np.float64)
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    finite = np.isfinite(flat)
    count = np.maximum(finite.sum(axis=2, keepdims=True), 1)
    z = np.where(finite, flat, 0.0)
    mean = z.sum(axis=2, keepdims=True) / count
    var = (np.where(finite, z - mean, 0.0) ** 2).sum(axis=2, keepdims=True) / count
    scale = np.where(var > 0, np.sqrt(var), 1.0)
    return np.where(finite, (z - mean) / scale, 0.0).reshape(x.shape[0], -1)


def nearest_distances(queries: np.ndarray, reference: np.ndarray, block: int = 256) -> np.ndarray:
    """Euclidean distance from each row of ``queries`` (Q, D) to its nearest row of
    ``reference`` (R, D): :math:`\\|q\\|^2 + \\|t\\|^2 - 2 q \\cdot t`, in blocks of queries."""
    q = np.asarray(queries, dtype=np.float64)
    t = np.asarray(reference, dtype=np.float64)
    t2 = (t * t).sum(axis=1)
    out = np.empty(len(q))
    for s in range(0, len(q), block):
        qb = q[s : s + block]
        d2 = (qb * qb).sum(axis=1)[:, None] + t2[None, :] - 2.0 * qb @ t.T
        out[s : s + block] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out


@dataclass(frozen=True)
class Memorisation:
    """``ratio``: median nearest-training distance of the generated samples over that of the
    held-back images (1: no copying; near 0: copies); ``near_copy_fraction``: share of generated
    samples closer than the held-back images' 5th percentile; the distances themselves."""

    ratio: float
    near_copy_fraction: float
    fake_median: float
    heldout_median: float
    fake_distances: np.ndarray
    heldout_distances: np.ndarray


def memorisation(fake: np.ndarray, train: np.ndarray, heldout: np.ndarray) -> Memorisation:
    """The memorisation of ``fake`` (N, C, H, W) samples of a model trained on ``train`` (M, C,
    H, W), against ``heldout`` (K, C, H, W) real images of the same distribution the model did
    not see (see the module docstring)."""
    reference = standardised(train)
    d_fake = nearest_distances(standardised(fake), reference)
    d_held = nearest_distances(standardised(heldout), reference)
    held_median = float(np.median(d_held))
    threshold = float(np.percentile(d_held, NEAR_COPY_PERCENTILE))
    return Memorisation(
        ratio=float(np.median(d_fake)) / held_median if held_median > 0 else float("nan"),
        near_copy_fraction=float(np.mean(d_fake < threshold)),
        fake_median=float(np.median(d_fake)),
        heldout_median=held_median,
        fake_distances=d_fake,
        heldout_distances=d_held,
    )


def mean_pairwise_distance(images: np.ndarray, max_n: int = 512, seed: int = 0) -> float:
    """The mean distance between two different images of a set (N, C, H, W): the RMS difference
    over the pixels valid in both, each image's mean over its own valid pixels removed first (an
    interferogram's zero is arbitrary), so it is in the images' units and holes neither add nor
    remove distance; over ``max_n`` images drawn with ``seed`` when there are more (pairs without
    a common valid pixel are left out). A generator's samples that are too alike (a model
    trained on few scenes that collapses onto them) have a smaller one than the real images."""
    x = np.asarray(images, dtype=np.float64)
    if len(x) > max_n:
        x = x[np.sort(np.random.default_rng([seed, 6]).choice(len(x), max_n, replace=False))]
    flat = x.reshape(len(x), -1)
    m = np.isfinite(flat).astype(np.float64)
    z = np.where(m > 0, flat, 0.0)
    z = (z - z.sum(axis=1, keepdims=True) / np.maximum(m.sum(axis=1, keepdims=True), 1)) * m
    sq = z * z
    common = m @ m.T
    d2 = sq @ m.T + m @ sq.T - 2.0 * z @ z.T  # sum over the common valid pixels of (a - b)**2
    pair = ~np.eye(len(z), dtype=bool) & (common > 0)
    if not pair.any():
        raise ValueError("the mean pairwise distance needs two images with common valid pixels")
    return float(np.mean(np.sqrt(np.maximum(d2[pair], 0.0) / common[pair])))
