"""FID, KID and improved precision/recall on feature arrays."""

import numpy as np
import pytest

from radardiff.errors import DataError
from radardiff.evaluate.measures.features import fid, frechet_distance, kid, precision_recall


def _reference_frechet(mu1, s1, mu2, s2):
    # Independent route: Tr (S1 S2)^1/2 = Tr (S1^1/2 S2 S1^1/2)^1/2, via symmetric eigensolvers.
    w, v = np.linalg.eigh(s1)
    r1 = v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T
    ev = np.linalg.eigvalsh(r1 @ s2 @ r1)
    return float(
        ((mu1 - mu2) ** 2).sum()
        + np.trace(s1)
        + np.trace(s2)
        - 2 * np.sqrt(np.clip(ev, 0, None)).sum()
    )


def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(500, 16))
    assert fid(x, x) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_matches_closed_form_for_gaussians():
    # Diagonal covariances: d^2 = |mu1 - mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expect = 1 + 0 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 1) ** 2
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expect, rel=1e-10)


def test_frechet_distance_matches_independent_reference_on_general_covariances():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8))
    y = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8)) + 0.5
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    assert fid(x, y) == pytest.approx(_reference_frechet(mu1, s1, mu2, s2), rel=1e-8)


def test_fid_of_sampled_gaussians_approaches_the_closed_form():
    rng = np.random.default_rng(2)
    x = rng.normal(0.0, 1.0, size=(20000, 2))
    y = rng.normal(1.0, 2.0, size=(20000, 2))
    assert fid(x, y) == pytest.approx(2 * 1.0 + 2 * (2 - 1) ** 2, rel=0.03)


def test_kid_matches_the_unbiased_definition():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(12, 4)), rng.normal(0.3, 1.0, size=(12, 4))

    def k(a, b):
        return (a @ b / 4 + 1) ** 3

    m = 12
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    res = kid(x, y, n_subsets=3, subset_size=100, rng=np.random.default_rng(0))
    assert res.subset_size == 12
    assert res.mean == pytest.approx(sxx + syy - 2 * sxy, rel=1e-10)
    assert res.std == pytest.approx(0.0, abs=1e-12)  # every subset is the whole set


def test_kid_is_near_zero_for_one_distribution_and_has_a_spread():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    res = kid(x, y, n_subsets=20, subset_size=100, rng=np.random.default_rng(1))
    assert abs(res.mean) < 3 * res.std + 1e-3 and res.std > 0
    far = kid(x, y + 3.0, n_subsets=5, subset_size=100, rng=np.random.default_rng(1))
    assert far.mean > 10 * res.std


def test_precision_recall_of_identical_sets_are_one():
    x = np.random.default_rng(5).normal(size=(200, 5))
    pr = precision_recall(x, x, k=3, block=64)
    assert (pr.precision, pr.recall, pr.k) == (1.0, 1.0, 3)


def test_precision_recall_hand_example():
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    # k = 1: every real radius is 1, so the real manifold is [-1, 4].
    # Fake radii: 3.2 and 3.6 -> 0.4; 10.0 and 10.5 -> 0.5.
    fake = np.array([[3.2], [3.6], [10.0], [10.5]])
    pr = precision_recall(real, fake, k=1)
    assert pr.precision == 0.5  # 3.2 and 3.6 lie within the real manifold
    assert pr.recall == 0.25  # only 3.0 lies within a fake ball (0.2 from 3.2)
    far = precision_recall(real, real + 100.0, k=1)
    assert (far.precision, far.recall) == (0.0, 0.0)


def test_too_few_samples_say_the_minimum():
    x = np.zeros((3, 2))
    with pytest.raises(DataError, match="at least 4 samples"):
        precision_recall(x, x, k=3)
    with pytest.raises(DataError, match="at least 2 samples"):
        fid(x[:1], x)
    with pytest.raises(DataError, match="dimensions differ"):
        fid(np.zeros((5, 2)), np.zeros((5, 3)))
