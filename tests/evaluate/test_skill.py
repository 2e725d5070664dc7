"""Skill scores of the downstream tasks against analytic truths and brute force."""

from __future__ import annotations

import numpy as np
import pytest

from radardiff.evaluate.measures.memorisation import mean_pairwise_distance
from radardiff.evaluate.measures.skill import (
    accuracy,
    best_threshold,
    detection_score,
    recovery_score,
    roc_auc,
    unwrapping_score,
)


def _auc_pairs(s, y):
    pos, neg = s[y == 1], s[y == 0]
    d = pos[:, None] - neg[None, :]
    return ((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size


def test_auc_analytic_cases():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), y) == 1.0
    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), y) == 0.0
    assert roc_auc(np.ones(4), y) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(np.ones(3), np.ones(3))


def test_auc_equals_the_pair_count_with_ties(rng):
    s = rng.integers(0, 6, 300).astype(float)  # many ties
    y = (rng.random(300) < 0.3 + 0.08 * s).astype(int)
    assert roc_auc(s, y) == pytest.approx(_auc_pairs(s, y), abs=1e-12)


def test_best_threshold_reaches_the_brute_force_maximum(rng):
    s = rng.normal(size=200)
    y = (s + rng.normal(scale=0.8, size=200) > 0.3).astype(int)
    t = best_threshold(s, y)
    brute = max(accuracy(s, y, c) for c in np.concatenate([s, [s.max() + 1]]))
    assert accuracy(s, y, t) == pytest.approx(brute)
    # separable data: the threshold falls between the classes
    t2 = best_threshold(np.array([0.0, 1.0, 3.0, 4.0]), np.array([0, 0, 1, 1]))
    assert t2 == 2.0
    d = detection_score(np.array([0.0, 1.0, 3.0, 4.0]), np.array([0, 0, 1, 1]), t2)
    assert (d.auc, d.accuracy, d.n_present, d.n_absent) == (1.0, 1.0, 2, 2)


def test_recovery_score_analytic():
    target = np.zeros((2, 1, 4, 4))
    target[:, 0, :2] = 2.0  # RMS over all pixels: sqrt(0.5 * 4) = sqrt(2)
    valid = np.ones_like(target, bool)
    perfect = recovery_score(target, target, valid)
    assert perfect.rmse == 0 and perfect.skill == 1 and perfect.n == 2
    zero = recovery_score(np.zeros_like(target), target, valid)
    assert zero.rmse == pytest.approx(np.sqrt(2)) and zero.fraction == pytest.approx(1.0)
    assert zero.skill == pytest.approx(0.0)
    off = recovery_score(target + 0.5, target, valid)
    assert off.rmse == pytest.approx(0.5) and off.fraction == pytest.approx(0.5 / np.sqrt(2))
    # an error where there is no data does not count
    bad = target.copy()
    bad[0, 0, 3, 3] = 1e6
    valid[0, 0, 3, 3] = False
    assert recovery_score(bad, target, valid).rmse == 0


def test_unwrapping_score_is_blind_to_a_constant_and_counts_pi_errors():
    rng = np.random.default_rng(0)
    truth = rng.normal(0.0, 5.0, (3, 1, 8, 8))
    valid = np.ones_like(truth, bool)
    same = unwrapping_score(truth + 7.3, truth, valid)  # any constant: a perfect unwrapping
    assert same.within_pi == same.skill == 1.0 and same.rmse < 1e-12 and same.n == 3
    # a 2 pi jump on a quarter of every field: after the mean error (pi / 2) is removed, the
    # quarter is off by 3 pi / 2 and the rest by pi / 2
    pred = truth.copy()
    pred[:, :, :2, :] += 2 * np.pi
    s = unwrapping_score(pred, truth, valid)
    assert s.within_pi == pytest.approx(0.75)
    assert s.rmse == pytest.approx(np.pi * np.sqrt(0.75))
    # no data and NaN truth are left out
    valid[:, :, :2, :] = False
    assert unwrapping_score(pred, np.where(valid, truth, np.nan), valid).within_pi == 1.0


def test_mean_pairwise_distance_in_the_images_units():
    a = np.where(np.indices((4, 4)).sum(axis=0) % 2 == 0, 1.0, -1.0)[None]
    x = np.stack([a + 5.0, -a - 2.0])  # each image's mean is removed: distance |2a| = 2
    assert mean_pairwise_distance(x) == pytest.approx(2.0)
    assert mean_pairwise_distance(np.stack([a, a, a])) == pytest.approx(0.0, abs=1e-6)
    # holes: the distance is over the pixels valid in both, each mean over its own valid pixels
    holed = x.copy()
    holed[0, 0, :2] = np.nan  # the first image keeps its lower half, still +-1 around 5
    assert mean_pairwise_distance(holed) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        mean_pairwise_distance(x[:1])
