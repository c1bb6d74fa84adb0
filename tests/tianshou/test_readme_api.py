"""The README's "Python API" section, run as written: a Tianshou DQN experiment whose policy is
the guided twin of Tianshou's (same arguments), with the explorer attached in a few lines,
guided by the scripted provider."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from tianshou.algorithm import DQN
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.data import Collector, VectorReplayBuffer
from tianshou.env import DummyVectorEnv
from tianshou.trainer import OffPolicyTrainerParams
from tianshou.utils.net.common import Net

from explorer_pipeline import ActionSpec, ExplorerConfig, open_explorer
from tianshou_integration import EpisodeTap, GuidedDQNPolicy, attach_discrete


def test_attach_the_explorer_to_a_dqn_experiment_built_by_hand(tmp_path):
    torch.manual_seed(0)
    env = gym.make("CartPole-v1")
    train_envs = DummyVectorEnv([lambda: gym.make("CartPole-v1") for _ in range(2)])
    test_envs = DummyVectorEnv([lambda: gym.make("CartPole-v1")])
    train_envs.seed(0)
    test_envs.seed(1)
    net = Net(state_shape=4, action_shape=2, hidden_sizes=(32,))
    buffer = VectorReplayBuffer(4000, len(train_envs))

    # --- the README's lines
    policy = GuidedDQNPolicy(model=net, action_space=env.action_space, eps_training=1.0, eps_inference=0.0)
    algorithm = DQN(policy=policy, optim=AdamOptimizerFactory(lr=1e-3), gamma=0.9, target_update_freq=50)
    spec = ActionSpec.discrete(env.action_space.n)
    config = ExplorerConfig(provider="scripted", provider_options={"reply": '{"probabilities": [0, 1]}'},
                            prompt_set="paper", every_k=1, sample_m=100, exchange_log=tmp_path / "ex.jsonl")
    with open_explorer(config, "CartPole-v1", spec, seed=0) as explorer:
        attach_discrete(policy, explorer.cache, np.random.default_rng(0))
        tap = EpisodeTap(explorer.runtime, "CartPole-v1", spec, mode="blocking", timeout_s=30)
        train_collector = Collector(algorithm, train_envs, buffer, exploration_noise=True,
                                    on_episode_done_hook=tap, on_step_hook=tap.on_step)
        test_collector = Collector(algorithm, test_envs)
        algorithm.run_training(OffPolicyTrainerParams(
            training_collector=train_collector, test_collector=test_collector, max_epochs=1,
            epoch_num_steps=600, collection_step_num_env_steps=10, update_step_num_gradient_steps_per_sample=0.1,
            test_step_num_episodes=1, batch_size=32, show_progress=False, test_in_training=False))
        stats = explorer.stats()

    assert stats["updates_published"] >= 1
    # eps_training = 1: every training action is exploratory; after the first update (blocking mode:
    # right after the first episode) they all follow the one-hot distribution
    actions = buffer.act[buffer.sample_indices(0)]  # every stored transition
    assert len(actions) >= 600
    assert np.mean(actions == 1) > 0.8
