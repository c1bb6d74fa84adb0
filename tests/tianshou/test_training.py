"""Every algorithm trains end to end through the training loop, with a live explorer runtime."""

from __future__ import annotations

import math
from dataclasses import replace

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
    default_hyperparams,
    describe_env,
)
from tianshou_integration.algorithms import FastPrioritizedVectorReplayBuffer, FastVectorReplayBuffer
from tianshou_integration.training import train

from . import envs
from .helpers import FakeHandler

STEPS = 320


def small(algo: str, env_info):
    """Default hyperparameters shrunk so a run takes a second or two."""
    hp = default_hyperparams(algo, env_info)
    if not env_info.is_discrete:  # one env, so that a 200-step Pendulum episode ends within the run
        hp = replace(hp, num_train_envs=1)
    return replace(hp, hidden=(32, 32), batch_size=32, learning_starts=64, eval_every=160,
                   collect_per_step=min(hp.collect_per_step, 32), updates_per_step=0.25,
                   random_warmup_steps=64 if hp.random_warmup_steps else 0, eps_decay_steps=200,
                   buffer_size=max(4 * 501, hp.num_train_envs * 501))


def params_of(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_algorithm_trains_with_guided_exploration(algo):
    env_id = "CartPole-v1" if algo in DISCRETE_ALGOS else "Pendulum-v1"
    info = describe_env(env_id)
    cache = ExplorationCache(info.spec)
    values = (0.3, 0.7) if info.is_discrete else (-0.2,)
    handler = FakeHandler(info.spec.update_kind, values)
    hp = small(algo, info)
    counter = EnvStepCounter()
    setup = build_setup(algo, info, cache=cache, seed=1, hp=hp, eval_envs=2, counter=counter)
    before = params_of(setup.policy)
    with ExplorerRuntime(handler, cache) as runtime:
        tap = EpisodeTap(runtime, env_id, info.spec, mode="blocking", timeout_s=10.0, counter=counter)
        evals: list[tuple[int, float]] = []
        result = train(setup, steps=STEPS, eval_episodes=2, tap=tap, progress=False,
                       on_eval=lambda step, mean: evals.append((step, mean)))
    setup.close()
    assert not result.interrupted
    assert STEPS <= result.env_steps < STEPS + hp.collect_per_step + hp.num_train_envs
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
    setup = build_setup("td3", info, cache=None, seed=0, hp=small("td3", info), eval_envs=1)
    from tianshou.exploration import GaussianNoise

    assert isinstance(setup.policy.exploration_noise, GaussianNoise)
    result = train(setup, steps=128, eval_episodes=1, progress=False)
    setup.close()
    assert result.env_steps >= 128 and result.gradient_steps > 0


def test_ctrl_c_stops_training_cleanly():
    envs.InterruptingCartPole.steps_taken = 0
    envs.InterruptingCartPole.BUDGET = 150
    info = describe_env("InterruptingCartPole-v0")
    setup = build_setup("dqn", info, cache=ExplorationCache(info.spec), seed=0, hp=small("dqn", info), eval_envs=1)
    result = train(setup, steps=10_000, eval_episodes=1, progress=False)
    setup.close()
    assert result.interrupted
    assert 0 < result.env_steps <= 150
    assert result.final_eval_return is None


def test_default_buffer_holds_a_whole_episode_per_env():
    info = describe_env("MountainCarContinuous-v0")
    for algo in ("ddpg", "td3", "sac"):
        hp = default_hyperparams(algo, info)
        assert hp.buffer_size // hp.num_train_envs >= info.max_episode_steps
    assert default_hyperparams("sac", info).sigma == 0.0  # SAC explores with its own actor


def test_epsilon_schedule_is_linear_then_flat():
    hp = default_hyperparams("dqn", describe_env("CartPole-v1"))
    assert hp.eps_at(0) == hp.eps_start
    assert hp.eps_at(hp.eps_decay_steps // 2) == pytest.approx((hp.eps_start + hp.eps_end) / 2)
    assert hp.eps_at(10 * hp.eps_decay_steps) == hp.eps_end


def test_bad_algorithm_env_pairs_are_rejected():
    with pytest.raises(ValueError, match="continuous actions"):
        build_setup("dqn", describe_env("Pendulum-v1"), cache=None)
    with pytest.raises(ValueError, match="discrete actions"):
        build_setup("td3", describe_env("CartPole-v1"), cache=None)
    with pytest.raises(ValueError, match="unknown algorithm"):
        build_setup("ppo", describe_env("CartPole-v1"), cache=None)


def test_same_seed_same_run():
    info = describe_env("CartPole-v1")

    def run() -> list:
        setup = build_setup("dqn", info, cache=ExplorationCache(info.spec), seed=3, hp=small("dqn", info),
                            rng=np.random.default_rng(3), eval_envs=1)
        returns: list = []
        train(setup, steps=256, eval_episodes=1, progress=False, on_train_episode=lambda s, r: returns.append((s, r)))
        setup.close()
        return returns

    assert run() == run()
