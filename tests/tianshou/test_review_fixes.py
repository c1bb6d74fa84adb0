"""Defects a correctness review found (issue: the paper's whole comparison, "fix first"):
n-step C51/Rainbow targets, episode returns longer than the buffer, TD3's target action bounds,
the episode budget, and Atari frame max-pooling. Each test fails on the code before its fix."""

from __future__ import annotations

import cv2
import gymnasium as gym
import numpy as np
import pytest
import torch
from tianshou.algorithm import C51, TD3
from tianshou.algorithm.modelfree.c51 import C51Policy
from tianshou.algorithm.modelfree.ddpg import ContinuousDeterministicPolicy
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.data import Batch, ReplayBuffer
from tianshou.utils.net.common import Net
from tianshou.utils.net.continuous import ContinuousActorDeterministic, ContinuousCritic

from explorer_pipeline.types import ActionSpec
from tianshou_integration import EpisodeTap, build_setup, describe_env
from tianshou_integration.atari import make_atari_env, register_ale
from tianshou_integration.config import make_config
from tianshou_integration.continuous import BoundedTD3
from tianshou_integration.distributional import NStepC51, NStepRainbowDQN
from tianshou_integration.training import train

from .helpers import RecordingRuntime
from .test_tap import cartpole_policy, run_collector

# --------------------------------------------------------------------------- n-step C51 targets
ATOMS, V_MIN, V_MAX = 51, -10.0, 10.0
SUPPORT = np.linspace(V_MIN, V_MAX, ATOMS)


class PointMass(torch.nn.Module):
    """Z(s) is a point mass on atom ``int(s)`` for every action: the target's mean reveals which
    state the target network was asked about."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Linear(1, 1)  # the optimizer needs a parameter

    def forward(self, obs, state=None, info=None):
        atom = torch.as_tensor(np.asarray(obs), dtype=torch.long).reshape(-1)
        probs = torch.nn.functional.one_hot(atom, ATOMS).float()
        return probs[:, None, :].repeat(1, 2, 1), state


def episode_buffer(rewards: list[float], *, terminated: bool) -> ReplayBuffer:
    """One episode whose observation at step i is atom index 30 + i."""
    buffer = ReplayBuffer(64)
    n = len(rewards)
    for i, reward in enumerate(rewards):
        last = i == n - 1
        buffer.add(Batch(obs=np.array([30 + i]), act=0, rew=reward, terminated=last and terminated,
                         truncated=last and not terminated, obs_next=np.array([31 + i]), info={}))
    return buffer


def target_means(algorithm_cls, buffer: ReplayBuffer, indices: np.ndarray, n_step: int, gamma: float) -> np.ndarray:
    policy = C51Policy(model=PointMass(), action_space=gym.spaces.Discrete(2), num_atoms=ATOMS, v_min=V_MIN,
                       v_max=V_MAX)
    algorithm = algorithm_cls(policy=policy, optim=AdamOptimizerFactory(lr=1e-3), gamma=gamma,
                              n_step_return_horizon=n_step)
    batch = algorithm._preprocess_batch(buffer[indices], buffer, indices)
    with torch.no_grad():
        dist = algorithm._target_dist(batch).numpy()
    return dist @ SUPPORT  # the projection keeps the mean of a target inside [v_min, v_max]


def expected_target(rewards: list[float], t: int, n: int, gamma: float, terminated: bool) -> float:
    """r_t + ... + γ^(k-1) r_{t+k-1} + γ^k z(s_{t+k}), k = n or fewer at the episode's end."""
    k = min(n, len(rewards) - t)
    value = sum(gamma**j * rewards[t + j] for j in range(k))
    ended = t + k == len(rewards)
    if not (ended and terminated):
        value += gamma**k * SUPPORT[30 + t + k]
    return value


@pytest.mark.parametrize("terminated", [True, False])
@pytest.mark.parametrize("algorithm_cls", [NStepC51, NStepRainbowDQN])
def test_n_step_targets_bootstrap_from_the_state_n_steps_later(algorithm_cls, terminated):
    rewards = [0.5, -0.25, 1.0, 0.0, 0.75, -0.5, 0.25, 1.0]
    gamma, n = 0.9, 3
    buffer = episode_buffer(rewards, terminated=terminated)
    indices = np.arange(len(rewards))
    means = target_means(algorithm_cls, buffer, indices, n, gamma)
    expected = [expected_target(rewards, t, n, gamma, terminated) for t in indices]
    np.testing.assert_allclose(means, expected, atol=1e-5)


def test_tianshous_own_c51_bootstraps_from_the_wrong_state():
    """What the fix is for: the stock class evaluates Z one step ahead whatever n is."""
    rewards = [0.5, -0.25, 1.0, 0.0, 0.75, -0.5, 0.25, 1.0]
    buffer = episode_buffer(rewards, terminated=True)
    means = target_means(C51, buffer, np.array([0]), 3, 0.9)
    assert abs(means[0] - expected_target(rewards, 0, 3, 0.9, True)) > 0.1


def test_one_step_targets_are_unchanged():
    rewards = [0.5, -0.25, 1.0, 0.0]
    buffer = episode_buffer(rewards, terminated=True)
    indices = np.arange(len(rewards))
    np.testing.assert_allclose(target_means(NStepC51, buffer, indices, 1, 0.9),
                               target_means(C51, buffer, indices, 1, 0.9))


def test_rainbow_and_c51_are_built_with_the_fixed_classes():
    info = describe_env("CartPole-v1")
    for algo, cls in (("c51", NStepC51), ("rainbow", NStepRainbowDQN)):
        setup = build_setup(make_config("CartPole-v1", algo, {"train_envs": 1, "test_envs": 1},
                                        describe=lambda _: info), info, cache=None)
        try:
            assert isinstance(setup.algorithm, cls)  # the fast paths may use a subclass
        finally:
            setup.close()


# --------------------------------------------------------------------------- episode returns
def test_records_carry_whole_episode_returns_when_the_buffer_holds_less():
    """Sub-buffers of 16 steps; CartPole episodes under a random policy often run longer."""
    runtime = RecordingRuntime()
    tap = EpisodeTap(runtime, "CartPole-v1", ActionSpec.discrete(2))
    stats, wrapped = run_collector(cartpole_policy(), "CartPole-v1", tap, n_envs=2, n_step=800, buffer_per_env=16)
    records = runtime.submitted
    truth = sorted((sum(rews), len(rews)) for env in wrapped for _acts, rews in env.finished)
    assert any(length > 16 for _ret, length in truth)  # the case the fix is for happened
    assert sorted((r.episode_return, r.length) for r in records) == truth
    assert [r.episode_return for r in records] == stats.returns.tolist()  # the collector's own, in order
    # actions: at most the newest 16 steps (none when the length is a multiple of 16: Tianshou hands
    # the hook an empty episode batch then)
    assert all(len(r.actions) <= min(r.length, 16) for r in records)
    assert any(0 < len(r.actions) < r.length for r in records)


def test_tap_state_keeps_the_episodes_in_progress():
    runtime = RecordingRuntime()
    tap = EpisodeTap(runtime, "CartPole-v1", ActionSpec.discrete(2))
    run_collector(cartpole_policy(), "CartPole-v1", tap, n_envs=2, n_step=101)
    state = tap.get_state()
    assert state["open"] and state["episodes"] == tap.episodes
    assert sum(steps for _ret, steps in state["open"].values()) + sum(r.length for r in runtime.submitted) == 102
    other = EpisodeTap(None, "CartPole-v1", ActionSpec.discrete(2))
    other.set_state(state)
    assert other.get_state() == state


# --------------------------------------------------------------------------- TD3 target action
def td3(cls, policy_noise: float):
    torch.manual_seed(0)
    space = gym.spaces.Box(-2.0, 2.0, (2,), dtype=np.float32)
    actor = ContinuousActorDeterministic(preprocess_net=Net(state_shape=3, hidden_sizes=(16,)), action_shape=2,
                                         max_action=1.0)
    policy = ContinuousDeterministicPolicy(actor=actor, action_space=space)

    def critic():
        return ContinuousCritic(preprocess_net=Net(state_shape=3, action_shape=2, hidden_sizes=(16,), concat=True))

    optim = AdamOptimizerFactory(lr=1e-3)
    return cls(policy=policy, policy_optim=optim, critic=critic(), critic_optim=optim, critic2=critic(),
               critic2_optim=optim, policy_noise=policy_noise, noise_clip=0.5)


def test_td3_smoothed_target_actions_stay_within_the_bounds():
    obs = Batch(obs=np.random.default_rng(0).normal(size=(512, 3)).astype(np.float32) * 5, info=Batch())
    torch.manual_seed(1)
    plain = td3(TD3, 0.5)._target_q_compute_action(obs).act
    torch.manual_seed(1)
    bounded = td3(BoundedTD3, 0.5)._target_q_compute_action(obs).act
    assert plain.abs().max() > 1.0  # Tianshou's own leaves the range
    assert bounded.abs().max() <= 1.0
    inside = plain.abs() <= 1.0
    assert torch.equal(bounded[inside], plain[inside])  # the same draws, only clamped


def test_td3_is_built_bounded():
    info = describe_env("Pendulum-v1")
    setup = build_setup(make_config("Pendulum-v1", "td3", {"train_envs": 1, "test_envs": 1},
                                    describe=lambda _: info), info, cache=None)
    try:
        assert isinstance(setup.algorithm, BoundedTD3)
    finally:
        setup.close()


# --------------------------------------------------------------------------- episode budget
def test_training_stops_at_the_episode_cap():
    info = describe_env("CartPole-v1")
    config = make_config("CartPole-v1", "dqn", {"steps": 20_000, "episodes": 3, "train_envs": 1,
                                                "algorithm.collect_per_step": 1, "eval.every": 10_000_000,
                                                "eval.episodes": 1, "test_envs": 1}, describe=lambda _: info)
    setup = build_setup(config, info, cache=None)
    try:
        result = train(setup, progress=False)
    finally:
        setup.close()
    assert result.episodes == 3
    assert result.env_steps < 20_000
    assert result.final_eval_return is not None


def test_paper_preset_caps_episodes_and_seeds_with_one():
    expected = {"dqn": 500, "double-dqn": 500, "dueling-dqn": 800, "rainbow": 800}
    for algo, episodes in expected.items():
        config = make_config("ALE/Pong-v5", algo, preset="paper")
        assert (config.episodes, config.steps, config.seed) == (episodes, 310_000, 1), algo
    mujoco = make_config("Hopper-v5", "td3", preset="paper")
    assert (mujoco.episodes, mujoco.seed) == (1500, 1)
    assert make_config("CartPole-v1", "dqn", preset="paper").episodes is None


# --------------------------------------------------------------------------- Atari frames
def reference_frames(env_id: str, actions: list[int], seed: int, pool: bool = True) -> list[np.ndarray]:
    """What DQN preprocessing means: 4 frames per action, the last two max-pooled, grey, 84x84
    (``pool=False``: the last frame alone, what ALE's own frame skip returns)."""
    register_ale()
    raw = gym.make(env_id, frameskip=1, repeat_action_probability=0.0, obs_type="grayscale")
    raw.reset(seed=seed)
    frames = []
    for action in actions:
        seen = []
        for _ in range(4):
            obs, *_ = raw.step(action)
            seen.append(obs)
        pooled = np.maximum(seen[-2], seen[-1]) if pool else seen[-1]
        frames.append(cv2.resize(pooled, (84, 84), interpolation=cv2.INTER_AREA))
    raw.close()
    return frames


def test_atari_frames_are_max_pooled_over_the_last_two_of_four():
    env_id = "ALE/Freeway-v5"  # no FIRE press on reset: the reference needs no extra step
    actions = [int(a) for a in np.random.default_rng(0).integers(0, 3, size=60)]
    expected = reference_frames(env_id, actions, seed=3)
    env = make_atari_env(env_id, noop_max=0, repeat_action_probability=0.0)
    env.reset(seed=3)
    got = [env.step(a)[0][-1] for a in actions]
    env.close()
    assert all(np.array_equal(g, e) for g, e in zip(got, expected, strict=True))
    # moving sprites make pooling differ from the last frame alone: the test can tell them apart
    last_only = reference_frames(env_id, actions, seed=3, pool=False)
    assert not all(np.array_equal(g, e) for g, e in zip(got, last_only, strict=True))


def test_no_op_resets_count_frames_not_agent_steps():
    env = make_atari_env("ALE/Freeway-v5", noop_max=30, repeat_action_probability=0.0)
    frames = [env.reset(seed=s)[1]["episode_frame_number"] for s in range(12)]
    env.close()
    assert max(frames) <= 30
    assert len(set(frames)) > 1  # the number of no-ops is random


# --------------------------------------------------------------------------- replay sampling seeds
def sampled_positions(seed: int) -> list[int]:
    info = describe_env("CartPole-v1")
    config = make_config("CartPole-v1", "dqn", {"seed": seed, "train_envs": 1, "test_envs": 1},
                         describe=lambda _: info)
    setup = build_setup(config, info, cache=None)
    try:
        buffer = setup.buffer
        for i in range(300):
            buffer.add(Batch(obs=np.zeros((1, 4)), act=[0], rew=[1.0], terminated=[False],
                             truncated=[i % 50 == 49], obs_next=np.zeros((1, 4)), info=[{}]))
        return buffer.sample_indices(64).tolist()
    finally:
        setup.close()


def test_replay_positions_depend_on_the_seed():
    """With one training env Tianshou's sub-buffer draws every position from its own RandomState(42)."""
    assert sampled_positions(1) == sampled_positions(1)
    assert sampled_positions(1) != sampled_positions(2)
