"""The offline scores on hand-built references, computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from explorer_ablation.offline.controls import CONTROL_LEVELS, control_values
from explorer_ablation.offline.scores import continuous_scores, discrete_scores
from explorer_ablation.offline.summary import bootstrap_interval
from explorer_pipeline.types import EpisodeRecord
from explorer_rundir.scenarios import Scenario

# two states, three actions. State 0: Q = (0, 1, 2), mean 1, advantages (-1, 0, 1), std sqrt(2/3);
# state 1: Q = (4, 1, 1), mean 2, advantages (2, -1, -1), std sqrt(2).
Q = np.array([[0.0, 1.0, 2.0], [4.0, 1.0, 1.0]])
SPREAD = (math.sqrt(2 / 3) + math.sqrt(2)) / 2


def test_uniform_scores_zero_everywhere():
    s = discrete_scores([1 / 3] * 3, Q)
    assert s["advantage"] == pytest.approx(0.0, abs=1e-12)
    assert s["greedy_mass"] == pytest.approx(1.0)
    assert s["kl_uniform"] == pytest.approx(0.0, abs=1e-12)


def test_one_hot_on_action_2_by_hand():
    s = discrete_scores([0.0, 0.0, 1.0], Q)
    # advantages of action 2: +1 in state 0, -1 in state 1 -> mean 0
    assert s["advantage"] == pytest.approx(0.0, abs=1e-12)
    # greedy actions: 2 in state 0, 0 in state 1 -> mass 1 and 0 -> mean 0.5, times n = 1.5
    assert s["greedy_mass"] == pytest.approx(1.5)
    assert s["kl_uniform"] == pytest.approx(math.log(3))


def test_mixed_distribution_by_hand():
    p = [0.5, 0.25, 0.25]
    s = discrete_scores(p, Q)
    # state 0: 0.5*-1 + 0.25*0 + 0.25*1 = -0.25; state 1: 0.5*2 - 0.25 - 0.25 = 0.5 -> mean 0.125
    assert s["score"] == s["advantage"] == pytest.approx(0.125 / SPREAD)
    # greedy mass: state 0 -> p[2] = 0.25, state 1 -> p[0] = 0.5 -> 0.375 * 3
    assert s["greedy_mass"] == pytest.approx(1.125)
    assert s["kl_uniform"] == pytest.approx(0.5 * math.log(1.5) + 2 * 0.25 * math.log(0.75))


def test_flat_reference_scores_zero_not_nan():
    s = discrete_scores([1.0, 0.0], np.ones((4, 2)))
    assert s["advantage"] == 0.0


def test_wrong_number_of_values_is_refused():
    with pytest.raises(ValueError, match="2 values, the reference 3 actions"):
        discrete_scores([0.5, 0.5], Q)


def quadratic_q(target: np.ndarray):
    """Q(s, a) = -|a - target(s)|^2: the reference prefers target(s)."""

    def q(states: np.ndarray, acts: np.ndarray) -> np.ndarray:
        idx = states[:, 0].astype(int)
        return -np.sum((acts - target[idx]) ** 2, axis=1)

    return q


def test_continuous_scores_by_hand():
    states = np.array([[0.0], [1.0]])
    pi = np.array([[0.0], [0.5]])
    pi_ref = np.array([[0.5], [0.5]])  # state 1: the learner already acts as the reference
    q = quadratic_q(pi_ref)
    q_pi = q(states, pi)  # -0.25, 0
    spread = np.array([1.0, 3.0])
    s = continuous_scores([0.5], states, pi, pi_ref, q_pi, spread, q)
    # moved: 0.5 (Q 0) and 1.0 (Q -0.25); gains 0.25 and -0.25 -> mean 0 over mean spread 2
    assert s["q_gain"] == pytest.approx(0.0)
    # cosines: +1 in state 0, 0 in state 1 (no direction) -> 0.5
    assert s["cosine"] == pytest.approx(0.5)
    s = continuous_scores([-0.5], states, pi, pi_ref, q_pi, spread, q)
    # moved: -0.5 (Q -1), 0 (Q -0.25): gains -0.75, -0.25 -> -0.5 / 2
    assert s["q_gain"] == pytest.approx(-0.25)
    assert s["cosine"] == pytest.approx(-0.5)
    zero = continuous_scores([0.0], states, pi, pi_ref, q_pi, spread, q)
    assert zero["q_gain"] == 0.0 and zero["cosine"] == 0.0


def test_continuous_bias_is_clipped_to_the_action_box():
    states, pi, pi_ref = np.array([[0.0]]), np.array([[0.9]]), np.array([[1.0]])
    q = quadratic_q(pi_ref)
    s = continuous_scores([0.5], states, pi, pi_ref, q(states, pi), np.array([1.0]), q)
    # clip(1.4) = 1.0 hits the target exactly: gain 0.01
    assert s["q_gain"] == pytest.approx(0.01)


def _scenario(arrays: dict[str, np.ndarray]) -> Scenario:
    record = EpisodeRecord(10.0, 10, "X-v0", 0)
    return Scenario("scenario-000", 100, record, (record,), arrays)


def test_discrete_controls_are_ordered_on_a_random_reference():
    rng = np.random.default_rng(3)
    for _ in range(20):
        q = rng.normal(size=(50, 4)) + rng.normal(size=4)
        scenario = _scenario({"states": np.zeros((50, 1)), "q_ref": q})
        scores = [discrete_scores(control_values(name, scenario, True), q)["score"] for name in CONTROL_LEVELS]
        assert scores == sorted(scores, reverse=True)
        assert scores[0] > 0 > scores[-1]
        assert scores[2] == pytest.approx(0.0, abs=1e-12)


def test_continuous_controls_point_towards_and_away_from_the_reference():
    pi = np.array([[0.0, 0.2], [0.1, -0.3]])
    pi_ref = np.array([[0.4, 0.0], [0.5, 0.1]])
    scenario = _scenario({"states": np.zeros((2, 1)), "pi": pi, "pi_ref": pi_ref})
    assert control_values("control-best", scenario, False) == pytest.approx((0.4, 0.1))
    assert control_values("control-bad", scenario, False) == pytest.approx((-0.2, -0.05))
    assert control_values("control-none", scenario, False) == (0.0, 0.0)


def test_bootstrap_interval_brackets_the_mean():
    values = [0.1, 0.4, 0.2, 0.9, 0.3, 0.5]
    low, high = bootstrap_interval(values)
    assert low < np.mean(values) < high
    assert bootstrap_interval([0.2, 0.2]) == (0.2, 0.2)
    assert bootstrap_interval([0.7]) == (0.7, 0.7)
