"""Every algorithm trains end to end through the training loop, with a live explorer runtime."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from explorer_pipeline.cache import ExplorationCache
from explorer_pipeline.runtime import ExplorerRuntime
from tianshou_integration import (
    ALGORITHMS,
    DISCRETE_ALGOS,
    EnvStepCounter,
    EpisodeTap,
    build_setup,
    describe_env,
)
from tianshou_integration.algorithms import FastPrioritizedVectorReplayBuffer, FastVectorReplayBuffer
from tianshou_integration.callbacks import Callback
from tianshou_integration.config import ConfigError, make_config
from tianshou_integration.names import PIXEL_ALGOS
from tianshou_integration.training import train

from . import envs
from .helpers import FakeHandler

STEPS = 320


def small(algo: str, env_info, seed: int = 0, **settings):
    """The default preset shrunk so a run takes a second or two."""
    base = make_config(env_info.env_id, algo, describe=lambda _: env_info)
    hp = base.algorithm
    train_envs = base.train_envs if env_info.is_discrete else 1  # a 200-step Pendulum episode ends in a run
    return make_config(env_info.env_id, algo, {
        "seed": seed, "train_envs": train_envs, "network.hidden_sizes": [32, 32], "algorithm.batch_size": 32,
        "algorithm.learning_starts": 64, "eval.every": 160, "algorithm.collect_per_step": min(hp.collect_per_step, 32),
        "algorithm.updates_per_step": 0.25, "algorithm.random_warmup_steps": 64 if hp.random_warmup_steps else 0,
        "algorithm.epsilon.decay_steps": 200, "algorithm.buffer_size": max(4 * 501, train_envs * 501),
        "test_envs": 2, **settings}, describe=lambda _: env_info)


class Record(Callback):
    """A callback that hands training episodes and evaluations to plain functions."""

    def __init__(self, on_train_episode=None, on_eval=None):
        self._episode, self._eval = on_train_episode, on_eval

    def on_train_episode(self, env_step, episode_return):
        if self._episode is not None:
            self._episode(env_step, episode_return)

    def on_eval(self, env_step, mean_return):
        if self._eval is not None:
            self._eval(env_step, mean_return)


def params_of(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


# noisy-dqn has no epsilon-random draw to guide (test_baselines checks that it leaves the updates unused)
@pytest.mark.parametrize("algo", [a for a in ALGORITHMS if a != "noisy-dqn" and a not in PIXEL_ALGOS])
def test_algorithm_trains_with_guided_exploration(algo):
    env_id = "CartPole-v1" if algo in DISCRETE_ALGOS else "Pendulum-v1"
    info = describe_env(env_id)
    cache = ExplorationCache(info.spec)
    values = (0.3, 0.7) if info.is_discrete else (-0.2,)
    handler = FakeHandler(info.spec.update_kind, values)
    config = small(algo, info, seed=1)
    hp = config.algorithm
    counter = EnvStepCounter()
    setup = build_setup(config, info, cache=cache, counter=counter)
    before = params_of(setup.policy)
    with ExplorerRuntime(handler, cache) as runtime:
        tap = EpisodeTap(runtime, env_id, info.spec, mode="blocking", timeout_s=10.0, counter=counter)
        evals: list[tuple[int, float]] = []
        result = train(setup, steps=STEPS, eval_episodes=2, tap=tap, progress=False,
                       callback=Record(on_eval=lambda step, mean: evals.append((step, mean))))
    setup.close()
    assert not result.interrupted
    assert STEPS <= result.env_steps < STEPS + hp.collect_per_step + config.train_envs
    assert result.episodes == tap.episodes > 0
    assert result.gradient_steps > 0
    assert not torch.equal(before, params_of(setup.policy))  # the networks were updated
    assert math.isfinite(result.final_eval_return)
    assert evals == result.eval_history and evals[-1][0] == result.env_steps and len(evals) >= 2
    assert len(handler.records) == tap.episodes
    assert cache.current().values == values and cache.current().version == tap.episodes
    # blocking mode: update v is published when episode v-1 ends, and used from a later step on
    # (or never, when a newer one replaces it before the next exploratory step)
    applied = {v: cache.applied_at(v) for v in range(1, tap.episodes + 1)}
    assert any(at is not None for at in applied.values())
    assert all(at >= handler.records[v - 1].env_step for v, at in applied.items() if at is not None)
    if algo == "rainbow":
        assert isinstance(setup.buffer, FastPrioritizedVectorReplayBuffer)
    else:
        assert isinstance(setup.buffer, FastVectorReplayBuffer)
    assert setup.buffer.hasnull() is False


def test_baseline_without_cache_uses_tianshou_exploration():
    info = describe_env("Pendulum-v1")
    setup = build_setup(small("td3", info, test_envs=1), info, cache=None)
    from tianshou.exploration import GaussianNoise

    assert isinstance(setup.policy.exploration_noise, GaussianNoise)
    result = train(setup, steps=128, eval_episodes=1, progress=False)
    setup.close()
    assert result.env_steps >= 128 and result.gradient_steps > 0


def test_ctrl_c_stops_training_cleanly():
    envs.InterruptingCartPole.steps_taken = 0
    envs.InterruptingCartPole.BUDGET = 150
    info = describe_env("InterruptingCartPole-v0")
    setup = build_setup(small("dqn", info, test_envs=1), info, cache=ExplorationCache(info.spec))
    result = train(setup, steps=10_000, eval_episodes=1, progress=False)
    setup.close()
    assert result.interrupted
    assert 0 < result.env_steps <= 150
    assert result.final_eval_return is None


def test_default_buffer_holds_a_whole_episode_per_env():
    info = describe_env("MountainCarContinuous-v0")
    for algo in ("ddpg", "td3", "sac"):
        config = make_config(info.env_id, algo, {"algorithm.buffer_size": 10}, describe=lambda _: info)
        assert config.algorithm.buffer_size // config.train_envs >= info.max_episode_steps
    assert make_config(info.env_id, "sac", describe=lambda _: info).algorithm.noise.sigma == 0.0  # own actor explores


def test_epsilon_schedule_is_linear_then_flat():
    eps = make_config("CartPole-v1", "dqn").algorithm.epsilon
    assert eps.schedule == "linear"
    assert eps.at(0) == eps.start
    assert eps.at(eps.decay_steps // 2) == pytest.approx((eps.start + eps.end) / 2)
    assert eps.at(10 * eps.decay_steps) == eps.end


def test_bad_algorithm_env_pairs_are_rejected():
    with pytest.raises(ConfigError, match="algo: dqn needs discrete actions but Pendulum-v1 has continuous"):
        make_config("Pendulum-v1", "dqn")
    with pytest.raises(ConfigError, match="algo: td3 needs continuous actions but CartPole-v1 has discrete"):
        make_config("CartPole-v1", "td3")
    with pytest.raises(ConfigError, match="unknown algorithm"):
        make_config("CartPole-v1", "ppo")
    config = make_config("CartPole-v1", "dqn")
    with pytest.raises(ValueError, match="continuous actions"):
        build_setup(config, describe_env("Pendulum-v1"), cache=None)


def test_same_seed_same_run():
    info = describe_env("CartPole-v1")

    def run() -> list:
        setup = build_setup(small("dqn", info, seed=3, test_envs=1), info, cache=ExplorationCache(info.spec),
                            rng=np.random.default_rng(3))
        returns: list = []
        train(setup, steps=256, eval_episodes=1, progress=False,
              callback=Record(on_train_episode=lambda s, r: returns.append((s, r))))
        setup.close()
        return returns

    assert run() == run()



def test_discrete_observations_are_one_hot_and_train():
    """FrozenLake observes a cell index (``Discrete(16)``): the agent sees it one-hot, and the
    LLM's distribution over the four moves steers the draws when ε-greedy explores."""
    info = describe_env("FrozenLake-v1")
    assert info.obs_shape == (16,) and info.spec.n == 4
    obs = envs_reset_obs("FrozenLake-v1")
    assert obs.shape == (16,) and obs.sum() == 1 and obs[0] == 1  # the start cell is cell 0
    cache = ExplorationCache(info.spec)
    values = (0.05, 0.45, 0.45, 0.05)
    handler = FakeHandler(info.spec.update_kind, values)
    counter = EnvStepCounter()
    setup = build_setup(small("dqn", info, seed=1), info, cache=cache, counter=counter)
    returns: list[float] = []
    with ExplorerRuntime(handler, cache) as runtime:
        tap = EpisodeTap(runtime, "FrozenLake-v1", info.spec, mode="blocking", timeout_s=10.0, counter=counter)
        result = train(setup, steps=STEPS, eval_episodes=2, tap=tap, progress=False,
                       callback=Record(on_train_episode=lambda step, ret: returns.append(ret)))
    setup.close()
    assert result.episodes == tap.episodes > 0 and len(handler.records) == tap.episodes
    assert cache.current().values == values
    assert returns and set(returns) <= {0.0, 1.0}  # 1 at the goal, else 0


def envs_reset_obs(env_id: str) -> np.ndarray:
    from tianshou_integration.envs import make_env

    env = make_env(env_id)
    try:
        return env.reset(seed=0)[0]
    finally:
        env.close()
