"""DefaultSummariser: episode -> prompt variables. It runs on the pipeline thread and must never crash."""

from __future__ import annotations

import re

import numpy as np
import pytest

from explorer_pipeline.default_plugins.summariser import DefaultSummariser, describe_trend, sample_evenly
from explorer_pipeline.prompts import EPISODE_VARIABLES
from explorer_pipeline.types import ActionSpec, EpisodeRecord

#: what a summariser returns: every episode variable except the task ones (the pipeline adds them)
SUMMARY_KEYS = EPISODE_VARIABLES - {"task_title", "task_description"}


def record(actions=(), episode_return=1.0, index=0):
    return EpisodeRecord(episode_return=episode_return, length=len(actions), env_id="Test-v0",
                         episode_index=index, actions=tuple(actions))


def sampled(summary) -> list[str]:
    inner = summary["sampled_actions"].strip()
    assert inner.startswith("[") and inner.endswith("]")
    inner = inner[1:-1]
    if not inner:
        return []
    if inner.startswith("["):
        return re.findall(r"\[[^\]]*\]", inner)
    return [tok.strip() for tok in inner.split(",")]


# --------------------------------------------------------------------------- sampling


@pytest.mark.parametrize(("length", "m"), [(100, 5), (1000, 100), (101, 100), (7, 3), (10, 2), (2, 2)])
def test_sample_evenly_picks_m_evenly_spaced_actions(length, m):
    out = sample_evenly(list(range(length)), m)
    assert len(out) == m
    assert out[0] == 0 and out[-1] == length - 1
    assert out == sorted(set(out))  # strictly increasing: no action sampled twice
    gaps = np.diff(out)
    ideal = (length - 1) / (m - 1)
    assert np.all(np.abs(gaps - ideal) <= 1.0)


def test_sample_evenly_single_sample_takes_the_first_action():
    assert sample_evenly(list(range(10)), 1) == [0]


@pytest.mark.parametrize("length", [0, 1, 2, 5, 99, 100])
def test_sample_evenly_returns_everything_when_the_episode_is_short(length):
    assert sample_evenly(list(range(length)), 100) == list(range(length))


def test_sample_evenly_rejects_m_below_one():
    with pytest.raises(ValueError, match=">= 1"):
        sample_evenly([1, 2, 3], 0)


@pytest.mark.parametrize("kwargs", [{"m": 0}, {"window": 0}, {"m": -3}])
def test_summariser_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError, match=">= 1"):
        DefaultSummariser(**kwargs)


def test_m_sampled_actions_reach_the_prompt(discrete_spec):
    actions = [i % 4 for i in range(400)]
    summary = DefaultSummariser(m=10).summarise(record(actions), [], discrete_spec)
    assert summary["num_sampled"] == "10"
    expected = [str(actions[i]) for i in np.linspace(0, 399, 10).round().astype(int)]
    assert sampled(summary) == expected


# --------------------------------------------------------------------------- short episodes


@pytest.mark.parametrize("length", [0, 1, 2, 3, 99])
@pytest.mark.parametrize("m", [1, 5, 100])
def test_short_episodes_never_crash_discrete(length, m, discrete_spec):
    summary = DefaultSummariser(m=m).summarise(record([i % 4 for i in range(length)]), [], discrete_spec)
    assert set(summary) == SUMMARY_KEYS
    assert all(isinstance(v, str) for v in summary.values())
    assert summary["num_sampled"] == str(min(length, m))
    assert len(sampled(summary)) == min(length, m)
    assert summary["episode_length"] == str(length)


@pytest.mark.parametrize("length", [0, 1, 2, 50])
def test_short_episodes_never_crash_continuous(length):
    spec = ActionSpec.continuous([-1.0, -1.0], [1.0, 1.0])
    actions = [(0.1 * i, -0.1 * i) for i in range(length)]
    summary = DefaultSummariser(m=5).summarise(record(actions), [], spec)
    assert set(summary) == SUMMARY_KEYS
    assert summary["num_sampled"] == str(min(length, 5))


def test_empty_episode_says_so(discrete_spec):
    summary = DefaultSummariser().summarise(record([]), [], discrete_spec)
    assert summary["sampled_actions"] == "[]"
    assert summary["action_histogram"] == "no actions recorded"


# --------------------------------------------------------------------------- content


def test_continuous_actions_are_formatted_per_dimension():
    spec = ActionSpec.continuous([-1.0, -1.0], [1.0, 1.0], ["throttle", "steering"])
    actions = [(0.1, -0.5), (0.3, 0.2), (-1.0, 1.0)]
    summary = DefaultSummariser(m=10).summarise(record(actions), [], spec)
    assert summary["sampled_actions"] == "[[0.10, -0.50], [0.30, 0.20], [-1.00, 1.00]]"
    histogram = summary["action_histogram"]
    assert "throttle: mean -0.20" in histogram
    assert "steering: mean +0.23" in histogram
    assert summary["action_list"] == "0: throttle\n1: steering"
    assert summary["n_actions"] == "2"


def test_one_dimensional_continuous_actions_as_scalars(continuous_spec):
    summary = DefaultSummariser().summarise(record([0.5, -0.25]), [], continuous_spec)
    assert summary["sampled_actions"] == "[0.50, -0.25]"
    assert "mean +0.12" in summary["action_histogram"]


def test_numpy_integer_actions_are_formatted_as_ints(discrete_spec):
    summary = DefaultSummariser().summarise(record([np.int64(1), np.int32(3)]), [], discrete_spec)
    assert summary["sampled_actions"] == "[1, 3]"


def test_histogram_gives_each_actions_share(discrete_spec):
    summary = DefaultSummariser().summarise(record([0, 0, 0, 1]), [], discrete_spec)
    histogram = summary["action_histogram"]
    assert "0 (action 0): 75%" in histogram
    assert "1 (action 1): 25%" in histogram
    assert "2 (action 2): 0%" in histogram
    assert "3 (action 3): 0%" in histogram


def test_histogram_uses_labels():
    spec = ActionSpec.discrete(2, ["push left", "push right"])
    summary = DefaultSummariser().summarise(record([1, 1]), [], spec)
    assert summary["action_histogram"] == "0 (push left): 0%, 1 (push right): 100%"
    assert summary["action_list"] == "0: push left\n1: push right"


def test_episode_fields(discrete_spec):
    summary = DefaultSummariser().summarise(record([0, 1], episode_return=-12.345, index=41), [], discrete_spec)
    assert summary["episode_return"] == "-12.35"
    assert summary["episode_index"] == "41"
    assert summary["episode_length"] == "2"


def test_recent_returns_show_the_last_window_of_history(discrete_spec):
    history = [record([0], episode_return=float(i), index=i) for i in range(30)]
    summary = DefaultSummariser(window=5).summarise(history[-1], history, discrete_spec)
    assert summary["recent_returns"] == "25.0, 26.0, 27.0, 28.0, 29.0"
    assert summary["return_trend"].startswith("improving")


def test_recent_returns_without_history_show_the_episode(discrete_spec):
    summary = DefaultSummariser().summarise(record([0], episode_return=7.0), [], discrete_spec)
    assert summary["recent_returns"] == "7.0"
    assert summary["return_trend"].startswith("not enough episodes")


# --------------------------------------------------------------------------- trend words


@pytest.mark.parametrize(
    ("returns", "word"),
    [
        ([1, 2, 3, 4, 5], "improving"),
        ([10, 12, 15, 20, 30, 45], "improving"),
        ([5, 4, 3, 2, 1], "declining"),
        ([-10, -20, -35, -60], "declining"),
        ([3, 3, 3, 3], "flat"),
        ([100.0] * 10, "flat"),
        ([10, 0, 10, 0, 10, 0, 10, 0, 10], "flat"),
    ],
)
def test_trend_words(returns, word):
    text = describe_trend(returns)
    assert text.split()[0] == word
    assert f"over the last {len(returns)} episodes" in text


def test_trend_reports_the_slope():
    assert "+2.00 per episode" in describe_trend([0, 2, 4, 6])
    assert "-1.50 per episode" in describe_trend([3, 1.5, 0])


@pytest.mark.parametrize("returns", [[], [1.0], [1.0, 2.0]])
def test_too_few_episodes_for_a_trend(returns):
    assert describe_trend(returns) == "not enough episodes yet to tell a trend"
