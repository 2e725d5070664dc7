"""Timestep samplers: uniform and loss-second-moment (Nichol and Dhariwal 2021, sec. 3.3)."""

import json
import math

import numpy as np
import pytest
import torch

from radardiff.diffusion.timesteps import (
    LossSecondMomentSampler,
    UniformSampler,
    make_timestep_sampler,
)
from radardiff.errors import ConfigError


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_uniform_sampler():
    s = make_timestep_sampler("uniform", 50)
    assert isinstance(s, UniformSampler) and not isinstance(s, LossSecondMomentSampler)
    t, w = s.sample(4000, gen())
    assert t.dtype == torch.long and t.min() >= 0 and t.max() <= 49
    assert (w == 1.0).all()
    counts = np.bincount(t.numpy(), minlength=50)
    assert counts.min() > 40 and counts.max() < 130  # ~80 each
    torch.testing.assert_close(s.sample(16, gen(3))[0], s.sample(16, gen(3))[0])
    assert s.state_dict() == {}


def test_unknown_sampler_name_is_refused():
    with pytest.raises(ConfigError, match="timestep_sampler = 'importance'"):
        make_timestep_sampler("importance", 10)


def filled(T=4, history=2):
    s = LossSecondMomentSampler(T, history=history, uniform_prob=0.1)
    # t = 0..3 get losses (1, 3), (2, 2), (0, 4), (5, 5), in an interleaved order
    s.update(np.array([0, 1, 2, 3]), np.array([1.0, 2.0, 0.0, 5.0]))
    assert not s.warmed_up()
    np.testing.assert_array_equal(s.weights(), np.full(T, 1 / T))  # uniform until warm
    s.update(np.array([3, 2, 1, 0]), np.array([5.0, 4.0, 2.0, 3.0]))
    return s


def test_loss_second_moment_weights_by_hand():
    s = filled()
    assert s.warmed_up()
    rms = np.array([math.sqrt((1 + 9) / 2), 2.0, math.sqrt(16 / 2), 5.0])
    hand = 0.9 * rms / rms.sum() + 0.1 / 4
    np.testing.assert_allclose(s.weights(), hand, rtol=1e-12)
    assert s.weights().sum() == pytest.approx(1.0)
    t, w = s.sample(8, gen())
    np.testing.assert_allclose(w.numpy(), 1 / (4 * hand[t.numpy()]), rtol=1e-6)


def test_history_is_a_ring_of_the_last_losses():
    s = filled()
    s.update(np.array([0, 0]), np.array([7.0, 8.0]))
    np.testing.assert_array_equal(s.losses[0], [7.0, 8.0])  # 1 and 3 pushed out, in order
    np.testing.assert_array_equal(s.counts, [2, 2, 2, 2])
    with pytest.raises(ValueError):
        s.update(np.array([4]), np.array([1.0]))
    with pytest.raises(ValueError):
        s.update(np.array([0, 1]), np.array([1.0]))


def test_importance_weights_keep_the_objective_unbiased():
    s = filled()
    L = np.array([1.0, 2.0, 4.0, 5.0])  # a per-timestep loss
    t, w = s.sample(200_000, gen(1))
    estimate = float((w.double() * torch.as_tensor(L)[t]).mean())
    assert estimate == pytest.approx(L.mean(), rel=0.01)
    # exactly, in expectation: sum_t p_t / (T p_t) L_t = mean(L)
    p = s.weights()
    assert float((p / (4 * p) * L).sum()) == pytest.approx(L.mean(), rel=1e-12)


def test_state_round_trips_exactly_through_json():
    rng = np.random.default_rng(0)
    a = LossSecondMomentSampler(100)
    for _ in range(150):  # past warm-up, with awkward floats
        t = rng.integers(0, 100, size=16)
        a.update(t, rng.random(16) * 1e-3 + np.pi)
    assert a.warmed_up()
    b = LossSecondMomentSampler(100)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    np.testing.assert_array_equal(b.losses, a.losses)
    np.testing.assert_array_equal(b.counts, a.counts)
    assert b.losses.tobytes() == a.losses.tobytes()
    ta, wa = a.sample(64, gen(7))
    tb, wb = b.sample(64, gen(7))
    assert torch.equal(ta, tb) and torch.equal(wa, wb)
    # both continue identically
    a.update(ta.numpy(), np.linspace(0, 1, 64))
    b.update(tb.numpy(), np.linspace(0, 1, 64))
    np.testing.assert_array_equal(a.weights(), b.weights())


def test_state_of_another_schedule_is_refused_and_empty_state_starts_fresh():
    a = LossSecondMomentSampler(10)
    with pytest.raises(ConfigError, match="T = 20"):
        LossSecondMomentSampler(20).load_state_dict(a.state_dict())
    b = LossSecondMomentSampler(10)
    b.load_state_dict({})  # e.g. a run that used the uniform sampler
    assert not b.warmed_up()
    UniformSampler(10).load_state_dict(a.state_dict())  # ignored
