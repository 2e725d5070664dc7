"""radardiff's FID against a third-party implementation (torchmetrics), on the same features.

torchmetrics' ``FrechetInceptionDistance`` takes any ``nn.Module`` as its feature extractor; an
identity module hands it our feature arrays, so it computes the means, the unbiased covariances
and the distance itself (``Tr (S1 S2)^1/2`` from the eigenvalues of ``S1 S2``, where radardiff
uses ``scipy.linalg.sqrtm``). Nothing is downloaded. torchmetrics is an optional dev dependency;
without it these tests are skipped.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radardiff.evaluate.measures.features import fid

tm_fid = pytest.importorskip(
    "torchmetrics.image.fid",
    reason="torchmetrics (with lightning-utilities) is not installed: no third-party FID to "
    "compare with (pip install --no-deps torchmetrics lightning-utilities)",
)


class _Identity(torch.nn.Module):
    """Features in, the same features out; ``num_features`` spares torchmetrics a dummy image."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, x):
        return x


def _torchmetrics_fid(real: np.ndarray, fake: np.ndarray) -> float:
    metric = tm_fid.FrechetInceptionDistance(feature=_Identity(real.shape[1]))
    metric.update(torch.from_numpy(real), real=True)  # float64 in, float64 out
    metric.update(torch.from_numpy(fake), real=False)
    return float(metric.compute())


def _scale(real: np.ndarray, fake: np.ndarray) -> float:
    """Size of the terms FID is a difference of: |mu1 - mu2|^2 + Tr S1 + Tr S2. Round-off
    (and, for singular covariances, the square roots of zero eigenvalues) is relative to it."""
    diff = real.mean(0) - fake.mean(0)
    return float(diff @ diff + real.var(0, ddof=1).sum() + fake.var(0, ddof=1).sum())


def _features(rng, n: int, d: int, *, shift: float = 0.0, stretch: float = 1.0) -> np.ndarray:
    mix = np.random.default_rng(99).normal(size=(d, d)) / np.sqrt(d)  # shared correlations
    return stretch * rng.normal(size=(n, d)) @ mix + shift


# (n_real, n_fake, d): well above d, about d, and below d (rank-deficient covariances)
FULL_RANK = [(300, 200, 8), (500, 400, 64), (120, 150, 100)]
RANK_DEFICIENT = [(20, 30, 64), (10, 12, 128), (40, 40, 256), (2, 3, 16)]


@pytest.mark.parametrize(("n", "m", "d"), FULL_RANK, ids=lambda v: str(v))
def test_fid_matches_torchmetrics_on_full_rank_covariances(n, m, d):
    rng = np.random.default_rng(n + m + d)
    real = _features(rng, n, d)
    fake = _features(rng, m, d, shift=0.3, stretch=1.2)
    ours, ref = fid(real, fake), _torchmetrics_fid(real, fake)
    assert ref > 0.1  # a non-trivial distance
    assert ours == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize(("n", "m", "d"), RANK_DEFICIENT, ids=lambda v: str(v))
def test_fid_matches_torchmetrics_when_there_are_fewer_samples_than_dimensions(n, m, d):
    rng = np.random.default_rng(n + m + d)
    real = _features(rng, n, d)
    fake = _features(rng, m, d, shift=0.3, stretch=1.2)
    assert np.linalg.matrix_rank(np.cov(real, rowvar=False)) < d  # singular S1 and S1 S2
    ours, ref = fid(real, fake), _torchmetrics_fid(real, fake)
    # both take square roots of eigenvalues that are zero up to round-off (~1e-16 * scale),
    # which leaves errors of ~1e-8 * scale in either; far below any meaningful FID difference
    assert ours == pytest.approx(ref, rel=1e-7, abs=1e-7 * _scale(real, fake))


def test_fid_matches_torchmetrics_for_nearly_identical_rank_deficient_sets():
    rng = np.random.default_rng(7)
    real = _features(rng, 20, 64)
    for fake, what in (
        (real.copy(), "identical"),
        (real + 0.01 * rng.normal(size=real.shape), "near"),
    ):
        ours, ref = fid(real, fake), _torchmetrics_fid(real, fake)
        # radardiff clips round-off negatives to 0; torchmetrics may return -1e-8 * scale
        assert ours >= 0.0, what
        assert abs(ours - ref) <= 1e-7 * _scale(real, fake), (what, ours, ref)


def test_fid_matches_torchmetrics_with_dead_features_and_offsets():
    # ReLU-like features: many exact zeros, a block of always-dead units, a non-zero mean
    rng = np.random.default_rng(8)
    real = np.maximum(rng.normal(size=(80, 48)) - 0.5, 0.0) + 2.0
    fake = np.maximum(rng.normal(size=(90, 48)) - 0.7, 0.0) + 2.0
    real[:, :6] = fake[:, :6] = 0.0
    ours, ref = fid(real, fake), _torchmetrics_fid(real, fake)
    assert ours == pytest.approx(ref, rel=1e-7, abs=1e-9 * _scale(real, fake))
