"""The private Tianshou attributes checkpoints rely on exist on freshly built real objects.

:mod:`tianshou_integration.tianshou_state` is the only module that touches them. When a Tianshou
release renames or drops one, these tests fail by name, instead of a resumed run quietly
computing something else than an uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tianshou.algorithm import DQN, SAC, TD3
from tianshou.data import Collector, VectorReplayBuffer

from tianshou_integration import tianshou_state
from tianshou_integration.algorithms import build_setup
from tianshou_integration.config import make_config
from tianshou_integration.envs import describe_env


def built(env_id: str, algo: str):
    config = make_config(env_id, algo, {"explorer.provider": "none", "network.hidden_sizes": [16, 16],
                                        "train_envs": 2})
    return build_setup(config, describe_env(env_id), cache=None)


@pytest.fixture(scope="module")
def dqn():
    return built("CartPole-v1", "dqn")


def test_the_collector_has_the_fields_of_episodes_in_progress(dqn):
    collector = Collector(dqn.algorithm, dqn.train_envs, dqn.buffer, exploration_noise=True)
    collector.reset()
    for name in tianshou_state.COLLECTOR_FIELDS:
        assert hasattr(collector, name), f"Tianshou's Collector has no {name} any more"
    state = tianshou_state.collector_state(collector)
    assert state["_pre_collect_obs_RO"].shape == (2, 4)  # two envs, CartPole's four numbers


def test_the_replay_buffers_private_attributes_exist(dqn):
    buffer = dqn.buffer
    assert isinstance(buffer, VectorReplayBuffer)
    for name in tianshou_state.VECTOR_BUFFER_ATTRIBUTES:
        assert hasattr(buffer, name), f"Tianshou's VectorReplayBuffer has no {name} any more"
    assert len(buffer.buffers) == 2 and len(buffer._offset) == 2
    for holder in (buffer, *buffer.buffers):
        for name in tianshou_state.BUFFER_ATTRIBUTES:
            assert hasattr(holder, name), f"Tianshou's {type(holder).__name__} has no {name} any more"
    assert isinstance(buffer._random_state, np.random.RandomState)


def test_the_buffers_sampler_is_seeded_saved_and_restored(dqn):
    buffer = dqn.buffer
    tianshou_state.seed_sampler(buffer, 123)
    saved = tianshou_state.sampler_state(buffer)
    first = buffer._random_state.randint(1 << 30, size=5)
    tianshou_state.restore_sampler(buffer, saved)
    assert np.array_equal(buffer._random_state.randint(1 << 30, size=5), first)


def test_a_collected_buffer_is_detached_linked_and_cut(dqn):
    collector = Collector(dqn.algorithm, dqn.train_envs, dqn.buffer, exploration_noise=True)
    collector.reset()
    collector.collect(n_step=30, random=True)
    buffer = dqn.buffer
    assert tianshou_state.buffer_nbytes(buffer) > 0
    with tianshou_state.children_detached(buffer):
        assert all(len(child._meta.get_keys()) == 0 for child in buffer.buffers)
    assert all(len(child._meta.get_keys()) > 0 for child in buffer.buffers)
    tianshou_state.link_children(buffer)
    tianshou_state.cut_open_episodes(buffer)
    for offset, child in zip(buffer._offset, buffer.buffers, strict=True):
        last = int(offset + (child._insertion_idx - 1) % child.maxsize)
        assert buffer._meta.done[last]
        assert child._ep_len == 0 and child._ep_start_idx == child._insertion_idx


@pytest.mark.parametrize(("env_id", "algo", "cls"), [("CartPole-v1", "dqn", DQN), ("Pendulum-v1", "td3", TD3),
                                                     ("Pendulum-v1", "sac", SAC)])
def test_the_algorithms_counters_are_found_and_restored(env_id, algo, cls):
    setup = built(env_id, algo)
    assert isinstance(setup.algorithm, cls)
    counters = tianshou_state.ALGORITHM_COUNTERS[cls.__name__]
    state = tianshou_state.algorithm_state(setup.algorithm)
    for name in counters:
        assert name in state["scalars"][""], f"Tianshou's {cls.__name__} has no counter {name} any more"
    if algo == "sac":
        assert "alpha:_optim" in state["optimizers"], "Tianshou's AutoAlpha keeps its optimiser elsewhere now"
    other = built(env_id, algo)
    for name in counters:
        setattr(other.algorithm, name, 7)
    with torch.no_grad():
        for p in setup.algorithm.parameters():
            p.add_(1.0)
    state = tianshou_state.algorithm_state(setup.algorithm)
    tianshou_state.restore_algorithm(other.algorithm, state)
    for name in counters:
        assert getattr(other.algorithm, name) == getattr(setup.algorithm, name)
    for a, b in zip(setup.algorithm.parameters(), other.algorithm.parameters(), strict=True):
        assert torch.equal(a, b)
