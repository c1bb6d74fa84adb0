"""The episode tap: correct records from real vector envs, blocking and async submission, and it
never raises into the collector."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from tianshou.data import Batch, Collector, VectorReplayBuffer
from tianshou.env import DummyVectorEnv
from tianshou.utils.net.common import Net
from tianshou.utils.torch_utils import policy_within_training_step

from explorer_pipeline.cache import ExplorationCache
from explorer_pipeline.runtime import ExplorerRuntime
from explorer_pipeline.types import ActionSpec
from tianshou_integration import EpisodeTap, GuidedDQNPolicy

from .helpers import FakeHandler, RecordingRuntime


class RecordingEnv(gym.Wrapper):
    """Keeps, per instance, the (action, reward) list of each finished episode."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.finished: list[tuple[list, list]] = []
        self._acts: list = []
        self._rews: list = []

    def reset(self, **kwargs):
        self._acts, self._rews = [], []
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, rew, term, trunc, info = self.env.step(action)
        self._acts.append(np.array(action, copy=True))
        self._rews.append(float(rew))
        if term or trunc:
            self.finished.append((self._acts, self._rews))
        return obs, rew, term, trunc, info


def cartpole_policy(eps: float = 1.0) -> GuidedDQNPolicy:
    torch.manual_seed(0)
    net = Net(state_shape=4, action_shape=2, hidden_sizes=(16,))
    return GuidedDQNPolicy(model=net, action_space=gym.spaces.Discrete(2), eps_training=eps)


def run_collector(policy, env_id: str, tap: EpisodeTap, n_envs: int, n_step: int, buffer_per_env: int = 600):
    wrapped: list[RecordingEnv] = []

    def make():
        env = RecordingEnv(gym.make(env_id))
        wrapped.append(env)
        return env

    envs = DummyVectorEnv([make for _ in range(n_envs)])
    envs.seed(0)
    collector = Collector(policy, envs, VectorReplayBuffer(buffer_per_env * n_envs, n_envs), exploration_noise=True,
                          on_episode_done_hook=tap, on_step_hook=tap.on_step)
    collector.reset()
    with policy_within_training_step(policy):
        stats = collector.collect(n_step=n_step)
    envs.close()
    return stats, wrapped


def test_records_match_the_episodes_of_every_vector_env():
    runtime = RecordingRuntime()
    spec = ActionSpec.discrete(2)
    tap = EpisodeTap(runtime, "CartPole-v1", spec)
    policy = cartpole_policy()
    stats, wrapped = run_collector(policy, "CartPole-v1", tap, n_envs=3, n_step=600)
    records = runtime.submitted
    assert len(records) == stats.n_collected_episodes == tap.episodes > 10
    assert [r.episode_index for r in records] == list(range(len(records)))
    assert sorted(r.episode_return for r in records) == sorted(stats.returns.tolist())
    assert sorted(r.length for r in records) == sorted(stats.lens.tolist())
    truth = sorted((tuple(int(a) for a in acts), sum(rews)) for env in wrapped for acts, rews in env.finished)
    got = sorted((r.actions, r.episode_return) for r in records)
    assert got == truth
    for r in records:
        assert r.env_id == "CartPole-v1"
        assert r.length == len(r.actions)
        assert all(type(a) is int for a in r.actions)
    # env_step is the counter at the episode's last step: non-decreasing, within the collected steps
    steps = [r.env_step for r in records]
    assert steps == sorted(steps) and steps[0] > 0 and steps[-1] <= tap.counter.value == stats.n_collected_steps


def test_continuous_actions_are_tuples_of_floats_in_normalised_units():
    from tianshou.algorithm.modelfree.ddpg import ContinuousDeterministicPolicy
    from tianshou.utils.net.continuous import ContinuousActorDeterministic

    from tianshou_integration import GuidedGaussianNoise

    env = gym.make("Pendulum-v1")
    cache = ExplorationCache(ActionSpec.continuous([-2.0], [2.0]))
    net = Net(state_shape=3, hidden_sizes=(16,))
    actor = ContinuousActorDeterministic(preprocess_net=net, action_shape=1, max_action=1.0)
    policy = ContinuousDeterministicPolicy(actor=actor, action_space=env.action_space,
                                           exploration_noise=GuidedGaussianNoise(cache, 2.0, np.random.default_rng(0)))
    runtime = RecordingRuntime()
    tap = EpisodeTap(runtime, "Pendulum-v1", cache.spec)
    _, wrapped = run_collector(policy, "Pendulum-v1", tap, n_envs=2, n_step=400, buffer_per_env=250)
    assert len(runtime.submitted) == 2
    for record in runtime.submitted:
        assert record.length == 200 == len(record.actions)
        assert all(isinstance(a, tuple) and len(a) == 1 and type(a[0]) is float for a in record.actions)
        values = np.array(record.actions)
        assert values.min() >= -1.0 and values.max() <= 1.0  # sigma 2 noise, clipped like the env's input
        assert np.isclose(values, 1.0).any() or np.isclose(values, -1.0).any()
    # the env received exactly these actions, scaled to [-2, 2]
    env_actions = sorted(tuple(np.round(np.concatenate(acts), 5)) for e in wrapped for acts, _ in e.finished)
    recorded = sorted(tuple(np.round(np.array(r.actions)[:, 0] * 2.0, 5)) for r in runtime.submitted)
    assert env_actions == recorded


def test_tap_never_raises_into_the_collector():
    runtime = RecordingRuntime(raise_on_submit=True)
    tap = EpisodeTap(runtime, "CartPole-v1", ActionSpec.discrete(2),
                     on_record=[lambda record: 1 / 0])
    stats, _ = run_collector(cartpole_policy(), "CartPole-v1", tap, n_envs=2, n_step=200)
    assert stats.n_collected_episodes > 0
    assert tap.errors == 2 * stats.n_collected_episodes  # the callback and the runtime, each time
    # a batch it cannot read: logged and counted, nothing raised, nothing returned
    assert tap(Batch(obs=np.zeros(3))) is None
    assert tap(object()) is None
    assert tap.errors == 2 * stats.n_collected_episodes + 2


def test_blocking_mode_waits_with_the_timeout():
    runtime = RecordingRuntime(wait_result=None)  # every wait "times out"
    tap = EpisodeTap(runtime, "CartPole-v1", ActionSpec.discrete(2), mode="blocking", timeout_s=3.5)
    stats, _ = run_collector(cartpole_policy(), "CartPole-v1", tap, n_envs=2, n_step=100)
    assert runtime.submitted == []
    assert len(runtime.waited) == stats.n_collected_episodes > 0
    assert all(timeout == 3.5 for _, timeout in runtime.waited)
    assert tap.blocking_timeouts == len(runtime.waited)
    with pytest.raises(ValueError):
        EpisodeTap(runtime, "CartPole-v1", ActionSpec.discrete(2), mode="sometimes")  # type: ignore[arg-type]


def test_updates_from_a_real_runtime_reach_the_policy():
    """Blocking mode with a fake handler: after the first episode every exploratory action is action 1."""
    spec = ActionSpec.discrete(2)
    cache = ExplorationCache(spec)
    handler = FakeHandler("distribution", (0.0, 1.0))
    policy = cartpole_policy(eps=1.0)
    tap = EpisodeTap(None, "CartPole-v1", spec, mode="blocking", timeout_s=10.0)
    policy.attach_explorer(cache, np.random.default_rng(0), tap.counter)
    with ExplorerRuntime(handler, cache) as runtime:
        tap.runtime = runtime
        run_collector(policy, "CartPole-v1", tap, n_envs=1, n_step=150)
        stats = runtime.stats.as_dict()
    assert stats["updates_published"] == tap.episodes == len(handler.records) > 1
    assert cache.current().values == (0.0, 1.0)
    applied = cache.applied_at(1)
    assert applied is not None and applied == handler.records[0].env_step
    # every action after the first update took effect is 1 (eps = 1: all actions are exploratory)
    later = [a for r in handler.records[1:] for a in r.actions]
    assert later and set(later) == {1}


def test_async_mode_never_waits_for_a_slow_pipeline():
    class SlowHandler(FakeHandler):
        async def handle(self, record, history, version):
            import asyncio

            await asyncio.sleep(2.0)
            return await super().handle(record, history, version)

    spec = ActionSpec.discrete(2)
    cache = ExplorationCache(spec)
    tap = EpisodeTap(None, "CartPole-v1", spec)
    with ExplorerRuntime(SlowHandler("distribution", (0.5, 0.5)), cache) as runtime:
        tap.runtime = runtime
        run_collector(cartpole_policy(), "CartPole-v1", tap, n_envs=2, n_step=400)
    stats = runtime.stats.as_dict()  # after close: every submitted episode has been taken in
    # ~20 episodes finished while the first request was still sleeping: the collector went on, and
    # the waiting requests were replaced by newer ones (newest wins) instead of queueing up
    assert tap.episodes > 10
    assert stats["episodes_seen"] == tap.episodes
    assert stats["dropped_stale"] > 0
    assert stats["llm_requests"] < tap.episodes
