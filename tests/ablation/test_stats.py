"""The report's estimators against values computed independently here (plain numpy and counting)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from explorer_ablation.stats import (
    iqm,
    iqm_estimate,
    mean_band,
    performance_profile,
    poi_estimate,
    probability_of_improvement,
)


def numpy_iqm(values) -> float:
    """Mean of the middle half: drop floor(n/4) values from each end of the sorted scores."""
    x = np.sort(np.ravel(values))
    cut = int(len(x) * 0.25)
    return float(x[cut:len(x) - cut].mean())


def counted_poi(xs_per_env, ys_per_env) -> float:
    """Average over envs of (#pairs x > y + 0.5 #ties) / #pairs."""
    per_env = []
    for xs, ys in zip(xs_per_env, ys_per_env, strict=True):
        wins = sum(1.0 if x > y else 0.5 if x == y else 0.0 for x, y in itertools.product(xs, ys))
        per_env.append(wins / (len(xs) * len(ys)))
    return sum(per_env) / len(per_env)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 9, 12, 13])
def test_iqm_matches_numpy(n: int):
    rng = np.random.default_rng(n)
    values = rng.normal(size=n)
    assert iqm(values) == pytest.approx(numpy_iqm(values))


def test_iqm_of_strata_is_the_iqm_of_all_runs_and_its_interval_brackets_it():
    per_env = [[0.1, 0.4, 0.35, 0.9], [0.0, 0.2, 0.3, 0.25, 1.0]]
    est = iqm_estimate(per_env, seed=1)
    assert est.value == pytest.approx(numpy_iqm(per_env[0] + per_env[1]))
    assert est.has_interval and est.low <= est.value <= est.high
    assert min(per_env[0] + per_env[1]) <= est.low and est.high <= max(per_env[0] + per_env[1])
    assert iqm_estimate(per_env, seed=1) == est  # seeded: reproducible


def test_stratified_bootstrap_resamples_within_each_environment():
    # env A's runs are all 0, env B's all 1: any resample within strata keeps half zeros, half ones,
    # so the IQM's interval collapses to a point; an unstratified bootstrap would not.
    est = iqm_estimate([[0.0] * 4, [1.0] * 4], seed=0)
    assert (est.value, est.low, est.high) == (0.5, 0.5, 0.5)


def test_no_interval_from_a_single_run():
    est = iqm_estimate([[0.3]], seed=0)
    assert est.value == pytest.approx(0.3) and not est.has_interval
    assert math.isnan(iqm_estimate([]).value)


@pytest.mark.parametrize("case", [
    ([[1, 2, 3]], [[0, 2, 5]]),
    ([[1, 1]], [[1, 1]]),
    ([[5, 6], [0.1, 0.2, 0.3]], [[1, 7, 7], [0.2, 0.2]]),
    ([[10.0, 20.0]], [[1.0, 2.0]]),
])
def test_probability_of_improvement_matches_a_direct_count(case):
    xs, ys = case
    assert probability_of_improvement(xs, ys) == pytest.approx(counted_poi(xs, ys))
    assert probability_of_improvement(ys, xs) == pytest.approx(1 - counted_poi(xs, ys))


def test_probability_of_improvement_interval():
    rng = np.random.default_rng(3)
    xs = [list(rng.normal(1.0, 1, 6)), list(rng.normal(0.5, 1, 5))]
    ys = [list(rng.normal(0.0, 1, 6)), list(rng.normal(0.0, 1, 7))]
    est = poi_estimate(xs, ys, seed=0)
    assert est.value == pytest.approx(counted_poi(xs, ys))
    assert 0 <= est.low <= est.value <= est.high <= 1
    # environments where one arm has no run are left out
    assert probability_of_improvement([[1.0], []], [[0.0], [2.0]]) == pytest.approx(1.0)


def test_performance_profile_counts_runs_above_each_threshold():
    per_env = [[0.0, 0.5, 1.0], [0.2, 0.8]]
    taus = np.array([-0.1, 0.0, 0.3, 0.5, 0.9, 1.0])
    profile, low, high = performance_profile(per_env, taus, seed=0)
    everything = np.array(per_env[0] + per_env[1])
    expected = [np.count_nonzero(everything > tau) / everything.size for tau in taus]
    assert profile == pytest.approx(expected)
    assert np.all(low <= profile + 1e-12) and np.all(profile <= high + 1e-12)


def test_learning_curve_band():
    curves = np.array([[0.0, 1.0, 2.0], [2.0, 3.0, 4.0], [1.0, 2.0, 3.0]])
    mean, low, high = mean_band(curves, seed=0)
    assert mean == pytest.approx([1.0, 2.0, 3.0])
    assert np.all(low <= mean) and np.all(mean <= high)
    one = mean_band(curves[:1])
    assert np.isnan(one[1]).all()
