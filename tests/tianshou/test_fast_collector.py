"""The training collector's lean loop (tianshou_integration.fast_collector) does what Tianshou's does.

Two identical seeded setups collect the same steps (random warm-up, then the policy with exploration
noise, episodes ending and envs resetting on the way), one with Tianshou's ``Collector``, one with
``FastCollector``: the replay buffers, the statistics, the hooks' calls and the collector state a
checkpoint saves must be equal. Nothing here times anything.
"""

from __future__ import annotations

import numpy as np
import pytest
from tianshou.data import Batch, Collector, CollectStats
from tianshou.utils.torch_utils import policy_within_training_step

from tianshou_integration import fast
from tianshou_integration.algorithms import build_setup
from tianshou_integration.config import resolve
from tianshou_integration.envs import describe_env
from tianshou_integration.fast_collector import FastCollector
from tianshou_integration.tianshou_state import collector_state

CASES = {"dqn": "CartPole-v1", "td3": "Pendulum-v1", "sac": "Pendulum-v1", "rainbow": "CartPole-v1"}


class Recorder:
    """Both hooks, recording what they are given."""

    def __init__(self) -> None:
        self.steps: list[tuple] = []
        self.episodes: list[tuple] = []

    def on_step(self, action_batch, rollout_batch) -> None:
        self.steps.append((action_batch.act.copy(), rollout_batch.rew.copy(), rollout_batch.done.copy(),
                           rollout_batch.info.env_id.copy(), rollout_batch.obs_next.copy()))

    def __call__(self, episode) -> None:
        self.episodes.append((len(episode), episode.rew.sum(), episode.act.copy()))


def collect(algo: str, cls: type[Collector], monkeypatch) -> tuple:
    monkeypatch.setenv(fast.ENV_VAR, "1")
    config = resolve(overrides=[(("env",), CASES[algo], "test"), (("algo",), algo, "test"),
                                (("seed",), 3, "test"), (("train_envs",), 3, "test"),
                                (("network", "hidden_sizes"), [16, 16], "test")])
    setup = build_setup(config, describe_env(CASES[algo]), cache=None)
    recorder = Recorder()
    collector = cls(setup.algorithm, setup.train_envs, setup.buffer, exploration_noise=True,
                    on_episode_done_hook=recorder, on_step_hook=recorder.on_step)
    collector.reset()
    stats = []
    with policy_within_training_step(setup.policy), fast.acting():
        stats.append(collector.collect(n_step=60, random=True))
        for _ in range(5):
            stats.append(collector.collect(n_step=120))
    return setup.buffer, stats, recorder, collector


def equal(a, b) -> bool:
    if isinstance(a, Batch | dict):
        return sorted(a.keys()) == sorted(b.keys()) and all(equal(a[k], b[k]) for k in a.keys())  # noqa: SIM118
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.mark.parametrize("algo", list(CASES))
def test_fast_collector_fills_the_buffer_and_calls_the_hooks_as_tianshous(monkeypatch, algo):
    theirs = collect(algo, Collector, monkeypatch)
    ours = collect(algo, FastCollector, monkeypatch)
    (buffer_t, stats_t, hooks_t, collector_t), (buffer_o, stats_o, hooks_o, collector_o) = theirs, ours
    assert len(buffer_o) == len(buffer_t) == 60 + 5 * 120
    assert equal(buffer_o._meta, buffer_t._meta)
    assert equal(list(buffer_o.last_index), list(buffer_t.last_index))
    assert hooks_t.episodes, "no episode ended: the reset path went untested"
    assert equal(hooks_o.steps, hooks_t.steps) and equal(hooks_o.episodes, hooks_t.episodes)
    for s_o, s_t in zip(stats_o, stats_t, strict=True):
        assert s_o.n_collected_steps == s_t.n_collected_steps
        assert s_o.n_collected_episodes == s_t.n_collected_episodes
        assert equal(s_o.returns, s_t.returns) and equal(s_o.lens, s_t.lens)
    assert (collector_o.collect_step, collector_o.collect_episode) == (collector_t.collect_step,
                                                                       collector_t.collect_episode)
    state_o, state_t = collector_state(collector_o), collector_state(collector_t)
    assert equal(state_o, state_t)


def test_fast_collector_runs_tianshous_loop_on_the_plain_path_and_for_episodes(monkeypatch):
    _, _, _, collector = collect("dqn", FastCollector, monkeypatch)
    calls = []
    monkeypatch.setattr(Collector, "_collect", lambda self, **kw: calls.append(kw) or CollectStats())
    collector.collect(n_episode=3)
    monkeypatch.setenv(fast.ENV_VAR, "0")
    collector.collect(n_step=3)
    assert [c["n_episode"] for c in calls] == [3, None] and [c["n_step"] for c in calls] == [None, 3]


@pytest.mark.parametrize("infos", [
    [{"env_id": np.int64(0)}, {"env_id": np.int64(1)}],
    [{"env_id": np.int64(0), "lives": 5, "ok": True, "x": 0.5}, {"env_id": np.int64(1), "lives": 4, "ok": False,
                                                                 "x": 1.5}],
])
def test_flat_info_batch_equals_the_step_batchs_own_conversion(monkeypatch, infos):
    monkeypatch.setenv(fast.ENV_VAR, "1")
    array = np.array(infos, dtype=object)
    assert equal(fast.flat_info_batch(array), Batch(info=array.copy()).info)


def test_flat_info_batch_declines_what_it_cannot_build(monkeypatch):
    monkeypatch.setenv(fast.ENV_VAR, "1")
    assert fast.flat_info_batch(np.array([{"a": 1}, {}], dtype=object)) is None
    assert fast.flat_info_batch(np.array([{"a": {"b": 1}}, {"a": {"b": 2}}], dtype=object)) is None
    assert fast.flat_info_batch(np.array([{"a": 1}, {"a": 2.0}], dtype=object)) is None
    monkeypatch.setenv(fast.ENV_VAR, "0")
    assert fast.flat_info_batch(np.array([{"a": 1}, {"a": 2}], dtype=object)) is None
