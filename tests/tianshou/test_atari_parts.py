"""Atari building blocks with real ALE games: preprocessing and labels, the Q-networks, and the
frame replay buffers (storage, stacking, reward clipping, lost lives, memory)."""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from tianshou.algorithm import RainbowDQN
from tianshou.algorithm.modelfree.c51 import C51Policy
from tianshou.algorithm.modelfree.dqn import DiscreteQLearningPolicy
from tianshou.algorithm.modelfree.qrdqn import QRDQNPolicy
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.data import Batch, Collector, VectorReplayBuffer
from tianshou.env import DummyVectorEnv
from tianshou.utils.net.discrete import NoisyLinear
from tianshou.utils.torch_utils import policy_within_training_step

from explorer_pipeline.errors import UsageError
from explorer_pipeline.types import ActionSpec
from tianshou_integration.atari import FireOnReset, action_labels, is_atari, make_atari_env, register_ale
from tianshou_integration.frame_buffer import FrameReplayBuffer, PrioritizedFrameReplayBuffer, make_replay_buffer
from tianshou_integration.networks import ATARI_Q_ALGOS, ResampledNoisyLinear, build_atari_q_network
from tianshou_integration.tap import EpisodeTap

FRAME = 84 * 84  # bytes of one grey frame


# --------------------------------------------------------------------------- helpers
class Recorder(gym.Wrapper):
    """Keeps each step as the env returned it: (obs, obs_next, reward, terminated, truncated,
    life_lost, first step after a reset)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.steps: list[tuple[np.ndarray, np.ndarray, float, bool, bool, bool, bool]] = []
        self._obs: np.ndarray | None = None
        self._first = False

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._obs, self._first = obs, True
        return obs, info

    def step(self, action):
        obs, rew, term, trunc, info = self.env.step(action)
        life_lost = bool(info.get("life_lost", False))
        self.steps.append((self._obs, obs, float(rew), bool(term), bool(trunc), life_lost, self._first))
        self._obs, self._first = obs, False
        return obs, rew, term, trunc, info


class Frames(gym.Env):
    """Tiny 2×2 frames whose value encodes (env, episode, step); reward 5 per step.

    Episodes last ``length`` steps; ``info["life_lost"]`` is True at step ``life_at``.
    """

    def __init__(self, uid: int = 0, length: int = 7, life_at: int = 3, reward: float = 5.0) -> None:
        self.uid, self.length, self.life_at, self.reward = uid, length, life_at, reward
        self.observation_space = gym.spaces.Box(0, 255, (2, 2), np.uint8)
        self.action_space = gym.spaces.Discrete(2)
        self.episode, self.t = -1, 0

    def _obs(self) -> np.ndarray:
        return np.full((2, 2), (self.uid * 100 + self.episode * 10 + self.t) % 256, np.uint8)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return self._obs(), {"life_lost": False}

    def step(self, action):
        self.t += 1
        return self._obs(), self.reward, self.t >= self.length, False, {"life_lost": self.t == self.life_at}


class FlatQ(torch.nn.Module):
    """A linear Q-network over flattened stacked frames, for the tiny env."""

    def __init__(self, in_dim: int = 16, n: int = 2) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(in_dim, n)

    def forward(self, obs, state=None, info=None):
        x = torch.as_tensor(obs, dtype=torch.float32).reshape(len(obs), -1)
        return self.linear(x), state


def frames_collector(buffer, n_envs: int = 2, hook=None, **env_kwargs):
    recorders = [Recorder(gym.wrappers.FrameStackObservation(Frames(uid=u, **env_kwargs), 4)) for u in range(n_envs)]
    envs = DummyVectorEnv([lambda r=r: r for r in recorders])
    policy = DiscreteQLearningPolicy(model=FlatQ(), action_space=gym.spaces.Discrete(2))
    collector = Collector(policy, envs, buffer, on_episode_done_hook=hook)
    collector.reset()
    return collector, recorders


def compare_with_truth(buffer, recorders) -> tuple[set[int], int, int]:
    """Compare every stored transition with what the env returned.

    Rewards and terminal flags must match exactly (a lost life is terminal for learning);
    obs/obs_next are compared and counted. Assumes each env stepped once per collector step, so
    env ``b``'s step ``t`` sits in slot ``b * S + t % S``. Returns (slots whose obs or obs_next
    differ, slots that match, matching first steps of episodes).
    """
    size = buffer.maxsize // buffer.buffer_num
    wrong: set[int] = set()
    right = starts = 0
    for b, rec in enumerate(recorders):
        steps = rec.steps[-size:]
        first = len(rec.steps) - len(steps)
        slots = np.array([b * size + t % size for t in range(first, len(rec.steps))])
        got = buffer[slots]
        rew = np.array([s[2] for s in steps])
        assert np.array_equal(got.raw_rew, rew)
        assert np.array_equal(got.rew, np.sign(rew) if buffer.clip_rewards else rew)
        assert np.array_equal(got.terminated, [s[3] or s[5] for s in steps])
        same = np.array(
            [np.array_equal(got.obs[r], s[0]) and np.array_equal(got.obs_next[r], s[1]) for r, s in enumerate(steps)]
        )
        wrong |= set(slots[~same].tolist())
        right += int(same.sum())
        starts += int(sum(same[r] and s[6] for r, s in enumerate(steps)))
    return wrong, right, starts


# --------------------------------------------------------------------------- environments
def test_is_atari_knows_ales_namespace():
    assert is_atari("ALE/Breakout-v5") and is_atari("ALE/Pong-v5")
    assert not is_atari("CartPole-v1") and not is_atari("BreakoutNoFrameskip-v4")


def test_register_ale_is_idempotent_and_names_the_extra_when_ale_py_is_missing(monkeypatch):
    register_ale()
    register_ale()
    assert "ALE/Pong-v5" in gym.registry
    register_ale.cache_clear()
    monkeypatch.setitem(sys.modules, "ale_py", None)  # makes `import ale_py` fail
    try:
        with pytest.raises(UsageError, match=r"pip install 'llm-explorer\[atari\]'"):
            register_ale()
    finally:
        register_ale.cache_clear()
    with pytest.raises(UsageError, match="not an Atari id"):
        make_atari_env("CartPole-v1")


def test_observations_are_four_stacked_grey_84x84_uint8_frames_four_frames_apart():
    env = make_atari_env("ALE/Pong-v5")
    assert env.observation_space.shape == (4, 84, 84) and env.observation_space.dtype == np.uint8
    obs, info = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert all(np.array_equal(obs[0], obs[k]) for k in range(4))  # padded with the reset frame
    ale = env.unwrapped.ale
    assert ale.getFloat("repeat_action_probability") == pytest.approx(0.25)  # v5's sticky actions kept
    frame = info["episode_frame_number"]
    for _ in range(3):
        new, *_, info = env.step(0)
        assert np.array_equal(new[:-1], obs[1:])  # the stack slides by one frame per step
        assert info["episode_frame_number"] == frame + 4  # 4 frames per step (the wrapper's skip), no more
        frame, obs = info["episode_frame_number"], new
    assert ale.getInt("frame_skip") == 1  # ALE itself does not skip: the wrapper pools the last two frames
    reset_frame = obs[0]
    changed = False
    for _ in range(30):  # the round starts within about 60 frames of a reset: the picture changes
        obs, *_ = env.step(0)
        changed = changed or not np.array_equal(obs[-1], reset_frame)
    assert changed
    env.close()


def test_fire_reset_starts_breakout_and_is_only_used_where_the_game_has_fire():
    breakout = make_atari_env("ALE/Breakout-v5", noop_max=0, repeat_action_probability=0.0)
    freeway = make_atari_env("ALE/Freeway-v5", noop_max=0, repeat_action_probability=0.0)

    def wrappers(env):
        while isinstance(env, gym.Wrapper):
            yield type(env)
            env = env.env

    assert FireOnReset in set(wrappers(breakout)) and FireOnReset not in set(wrappers(freeway))
    _, info = breakout.reset(seed=0)
    assert info["episode_frame_number"] == 4  # one FIRE step of 4 frames
    assert freeway.reset(seed=0)[1]["episode_frame_number"] == 0
    # with FIRE pressed the ball is in play, so doing nothing loses a life ...
    lives = [breakout.step(0)[4]["lives"] for _ in range(150)]
    assert min(lives) < 5
    # ... without it the ball is never launched
    register_ale()
    plain = gym.wrappers.AtariPreprocessing(
        gym.make("ALE/Breakout-v5", repeat_action_probability=0.0), noop_max=0, frame_skip=1
    )
    plain.reset(seed=0)
    assert {plain.step(0)[4]["lives"] for _ in range(150)} == {5}
    for env in (breakout, freeway, plain):
        env.close()


def test_labels_are_ales_action_meanings():
    assert action_labels("ALE/Breakout-v5") == ("NOOP", "FIRE", "RIGHT", "LEFT")
    env = gym.make("ALE/Pong-v5")
    assert action_labels("ALE/Pong-v5") == tuple(env.unwrapped.get_action_meanings())
    assert len(action_labels("ALE/Pong-v5")) == env.action_space.n == 6
    env.close()
    spec = ActionSpec.discrete(4, labels=action_labels("ALE/Breakout-v5"))
    assert spec.labels == ("NOOP", "FIRE", "RIGHT", "LEFT")


def test_life_loss_is_signalled_without_ending_the_game():
    env = make_atari_env("ALE/Breakout-v5", noop_max=0, repeat_action_probability=0.0, terminal_on_life_loss=True)
    _, info = env.reset(seed=0)
    assert info["life_lost"] is False
    lost = []
    for _ in range(150):
        _, _, term, trunc, info = env.step(0)
        assert not (term or trunc)
        lost.append(info["life_lost"])
    assert sum(lost) >= 1 and info["lives"] == 5 - sum(lost)
    assert "life_lost" not in make_atari_env("ALE/Breakout-v5").reset(seed=0)[1]
    env.close()


# --------------------------------------------------------------------------- networks
SHAPES = {
    "dqn": (3, 4),
    "double-dqn": (3, 4),
    "dueling-dqn": (3, 4),
    "c51": (3, 4, 51),
    "qrdqn": (3, 4, 200),
    "rainbow": (3, 4, 51),
    "noisy-dqn": (3, 4),
    "rnd-dqn": (3, 4),
    "icm-dqn": (3, 4),
}


def _policy_for(algo: str, net, n: int):
    space = gym.spaces.Discrete(n)
    if algo in ("c51", "rainbow"):
        return C51Policy(model=net, action_space=space, num_atoms=51, v_min=-10.0, v_max=10.0)
    if algo == "qrdqn":
        return QRDQNPolicy(model=net, action_space=space)
    return DiscreteQLearningPolicy(model=net, action_space=space)


@pytest.mark.parametrize("algo", ATARI_Q_ALGOS)
def test_each_network_gives_what_its_policy_expects(algo):
    torch.manual_seed(0)
    net = build_atari_q_network(algo, (4, 84, 84), 4, device=torch.device("cpu"))
    obs = np.random.default_rng(0).integers(0, 256, (3, 4, 84, 84), dtype=np.uint8)
    out, state = net(obs)
    assert tuple(out.shape) == SHAPES[algo] and state is None
    if algo in ("c51", "rainbow"):
        assert torch.allclose(out.sum(-1), torch.ones(3, 4), atol=1e-5) and (out >= 0).all()
    policy = _policy_for(algo, net, 4)
    policy.eval()
    act = policy(Batch(obs=obs, info=Batch())).act
    assert act.shape == (3,) and set(np.asarray(act).tolist()) <= {0, 1, 2, 3}


def test_networks_scale_uint8_frames_inside():
    net = build_atari_q_network("dqn", (4, 84, 84), 4)
    seen = []
    net.torso.convs[0].register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    net(np.full((1, 4, 84, 84), 255, np.uint8))
    assert seen[0].dtype == torch.float32 and float(seen[0].max()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no Atari network"):
        build_atari_q_network("ppo", (4, 84, 84), 4)


def test_the_torso_scales_uint8_in_place_to_the_same_values_and_leaves_float_input_alone():
    torso = build_atari_q_network("dqn", (4, 84, 84), 4).torso
    frames = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    seen = []
    torso.convs[0].register_forward_hook(lambda _m, args, _out: seen.append(args[0].clone()))
    torso(frames)
    assert torch.equal(seen[0], frames.float() / 255.0)  # bit for bit the out-of-place scaling
    floats = frames.float()
    before = floats.clone()
    torso(floats)  # a float tensor is scaled too, into a new tensor
    assert torch.equal(floats, before) and torch.equal(seen[1], before / 255.0)


def test_dueling_heads_have_the_dueling_form():
    torch.manual_seed(0)
    net = build_atari_q_network("dueling-dqn", (4, 84, 84), 5)
    obs = np.random.default_rng(1).integers(0, 256, (2, 4, 84, 84), dtype=np.uint8)
    with torch.no_grad():
        q, _ = net(obs)
        hidden = net.torso(torch.as_tensor(obs))
        adv, value = net.advantage(hidden), net.value(hidden)
    assert torch.allclose(q, value + adv - adv.mean(dim=1, keepdim=True), atol=1e-6)


def test_rainbow_noise_differs_between_calls_in_train_mode_and_not_in_eval_mode():
    torch.manual_seed(0)
    net = build_atari_q_network("rainbow", (4, 84, 84), 4, noisy_std=0.5)
    noisy = [m for m in net.modules() if isinstance(m, NoisyLinear)]
    assert len(noisy) == 4 and all(isinstance(m, ResampledNoisyLinear) and m.sigma == 0.5 for m in noisy)
    obs = np.random.default_rng(2).integers(0, 256, (2, 4, 84, 84), dtype=np.uint8)
    net.train()
    with torch.no_grad():
        first, second = net(obs)[0], net(obs)[0]
    assert not torch.allclose(first, second)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(obs)[0], net(obs)[0])
    other = build_atari_q_network("rainbow", (4, 84, 84), 4, noisy_std=0.1)
    assert {m.sigma for m in other.modules() if isinstance(m, NoisyLinear)} == {0.1}


# --------------------------------------------------------------------------- frame buffers
def test_breakout_frames_are_stored_once_and_stacked_back_exactly():
    """Real Breakout, 2 envs, sub-buffers of 300 that wrap; lost lives are terminal for learning."""
    size, n_envs = 600, 2
    buffer = make_replay_buffer(size, n_envs, frame_stack=4, clip_rewards=True)
    recorders = [Recorder(make_atari_env("ALE/Breakout-v5", terminal_on_life_loss=True)) for _ in range(n_envs)]
    envs = DummyVectorEnv([lambda r=r: r for r in recorders])
    envs.seed(0)
    net = build_atari_q_network("dqn", (4, 84, 84), 4)
    collector = Collector(DiscreteQLearningPolicy(model=net, action_space=envs.action_space[0]), envs, buffer)
    collector.reset()
    stats = collector.collect(n_step=900, random=True)

    assert buffer._meta.obs.shape == (size, 84, 84) and buffer._meta.obs.dtype == np.uint8  # one frame each
    assert "obs_next" not in buffer._meta.get_keys()
    wrong, right, starts = compare_with_truth(buffer, recorders)  # also checks rewards and terminal flags
    assert len(wrong) <= 2 * 3 and right == size - len(wrong)  # all but the oldest few of each sub-buffer
    assert starts >= 2  # episode starts (stacks padded with the first frame) included
    sampled = buffer.sample_indices(4000)
    assert not set(sampled.tolist()) & wrong  # transitions missing earlier frames are never sampled
    batch, _ = buffer.sample(32)
    assert batch.obs.shape == batch.obs_next.shape == (32, 4, 84, 84)
    assert batch.obs.dtype == batch.obs_next.dtype == np.uint8
    one = buffer[int(sampled[0])]
    assert one.obs.shape == (4, 84, 84)
    # lost lives were stored as terminal (checked above), yet the collector's episodes are whole games
    assert sum(s[5] and not s[3] for r in recorders for s in r.steps) > 0
    games = []
    for rec in recorders:
        ends = [t for t, s in enumerate(rec.steps) if s[3] or s[4]]
        games += [b - a for a, b in zip([-1, *ends], ends, strict=False)]
    # (a game longer than a sub-buffer is read back as its newest size/n_envs - 1 steps)
    assert sorted(stats.lens.tolist()) == sorted(min(g, size // n_envs - 1) for g in games) and min(games) > 50
    scores = []
    for rec in recorders:
        ends = [t for t, s in enumerate(rec.steps) if s[3] or s[4]]
        scores += [sum(s[2] for s in rec.steps[a + 1 : b + 1]) for a, b in zip([-1, *ends], ends, strict=False)]
    assert sorted(stats.returns.tolist()) == sorted(scores)  # unclipped game scores
    envs.close()


@pytest.mark.parametrize("prioritized", [False, True])
def test_rewards_are_clipped_for_learning_and_returns_stay_unclipped(prioritized):
    episodes = []
    buffer = make_replay_buffer(40, 2, frame_stack=4, clip_rewards=True, prioritized=prioritized)
    assert isinstance(buffer, PrioritizedFrameReplayBuffer if prioritized else FrameReplayBuffer)
    tap = EpisodeTap(None, "Frames", ActionSpec.discrete(2))

    def hook(episode):
        episodes.append(episode)
        return tap(episode)

    collector, recorders = frames_collector(buffer, hook=hook)
    stats = collector.collect(n_step=30, random=True)
    assert stats.n_collected_episodes == 4
    assert stats.returns.tolist() == [35.0] * 4 and stats.lens.tolist() == [7] * 4  # 7 steps of reward 5
    assert set(buffer.rew[buffer.sample_indices(0)].tolist()) == {1.0}  # what n-step targets read
    # the episode the collector hands to hooks is the whole game, with both kinds of reward
    assert [len(e) for e in episodes] == [7] * 4
    assert all(e.rew.sum() == 7.0 and e.raw_rew.sum() == 35.0 for e in episodes)
    assert tap.episodes == 4 and tap.last_record.length == 7 and len(tap.last_record.actions) == 7
    # a life lost at step 3 is terminal for learning, yet frames stack across it as the env did
    assert buffer.terminated[2] and not buffer.truncated[2] and buffer.terminated[6]
    wrong, right, starts = compare_with_truth(buffer, recorders)
    assert not wrong and right == 30 and starts == 6


def test_n_step_returns_stop_at_a_lost_life():
    buffer = make_replay_buffer(40, 1, frame_stack=4, clip_rewards=True)
    collector, _ = frames_collector(buffer, n_envs=1)
    collector.collect(n_step=7, random=True)
    # Tianshou walks n steps with buffer.next, which stops at the lost life (slot 2, terminal)
    assert buffer.next(buffer.next(np.array([1]))).tolist() == [2]
    assert buffer.next(np.array([3])).tolist() == [4]  # the game itself goes on


def test_plain_observations_without_frame_stacking():
    buffer = make_replay_buffer(40, 2, clip_rewards=True)
    collector, recorders = frames_collector(buffer)
    stats = collector.collect(n_step=20, random=True)
    assert buffer._meta.obs.shape == (40, 4, 2, 2) and buffer._meta.obs_next.shape == (40, 4, 2, 2)
    assert stats.returns.tolist() == [35.0, 35.0] and set(buffer.rew[:10].tolist()) == {1.0}
    wrong, right, _ = compare_with_truth(buffer, recorders)
    assert not wrong and right == 20
    assert buffer.hasnull() is False


def test_a_collector_reset_mid_episode_cuts_the_episode_cleanly():
    buffer = make_replay_buffer(40, 2, frame_stack=4)
    collector, recorders = frames_collector(buffer)
    collector.collect(n_step=10, random=True)  # 5 steps per env, mid-episode
    collector.reset_env()
    stats = collector.collect(n_step=14, random=True)  # 7 more: one whole new episode each
    assert buffer.truncated[4] and buffer.done[4] and buffer.truncated[24]  # the cut steps
    assert stats.lens.tolist() == [7, 7] and stats.returns.tolist() == [35.0, 35.0]
    wrong, right, starts = compare_with_truth(buffer, recorders)
    assert not wrong and right == 24 and starts == 4


def test_the_oldest_transitions_of_a_full_sub_buffer_are_not_sampled():
    buffer = make_replay_buffer(10, 1, frame_stack=4)
    collector, recorders = frames_collector(buffer, n_envs=1, length=100, life_at=0)
    collector.collect(n_step=25, random=True)  # one long episode, the buffer wrapped twice
    wrong, right, _ = compare_with_truth(buffer, recorders)
    oldest = 25 % 10
    assert wrong == {oldest, (oldest + 1) % 10, (oldest + 2) % 10} and right == 7
    assert not set(buffer.sample_indices(2000).tolist()) & wrong


def test_prioritized_frame_buffer_trains_rainbow_on_breakout():
    torch.manual_seed(0)
    buffer = make_replay_buffer(400, 2, frame_stack=4, clip_rewards=True, prioritized=True)
    envs = DummyVectorEnv([lambda: make_atari_env("ALE/Breakout-v5") for _ in range(2)])
    envs.seed(1)
    net = build_atari_q_network("rainbow", (4, 84, 84), 4)
    policy = C51Policy(model=net, action_space=envs.action_space[0], num_atoms=51, v_min=-10.0, v_max=10.0)
    algorithm = RainbowDQN(
        policy=policy, optim=AdamOptimizerFactory(lr=1e-4), n_step_return_horizon=3, target_update_freq=50
    )
    collector = Collector(algorithm, envs, buffer, exploration_noise=True)
    collector.reset()
    collector.collect(n_step=100, random=True)
    before = buffer.weight[np.arange(len(buffer))].copy()
    with policy_within_training_step(policy):
        stats = algorithm.update(buffer=buffer, sample_size=16)
    assert np.isfinite(stats.loss)
    assert not np.allclose(buffer.weight[np.arange(len(buffer))], before)  # priorities were updated
    envs.close()


def test_a_100k_frame_buffer_holds_about_0_7_gb_of_frames_instead_of_2_8():
    stacked = np.zeros((2, 4, 84, 84), np.uint8)
    one_step = Batch(
        obs=stacked,
        act=np.zeros(2, int),
        rew=np.zeros(2),
        terminated=np.zeros(2, bool),
        truncated=np.zeros(2, bool),
        obs_next=stacked,
        info=Batch(),
    )
    plain = VectorReplayBuffer(100, 2)
    plain.add(one_step)
    plain_obs_per_step = plain._meta.obs.nbytes / plain.maxsize
    assert plain_obs_per_step == 4 * FRAME  # Tianshou's default layout: 2.8 GB of obs for 100k ...
    assert (plain_obs_per_step + plain._meta.obs_next.nbytes / plain.maxsize) * 100_000 > 5.6e9  # ... plus obs_next

    for size in (10_000, 100_000):
        buffer = make_replay_buffer(size, 2, frame_stack=4, clip_rewards=True)
        buffer.add(one_step)
        assert buffer._meta.obs.nbytes == size * FRAME  # 70.6 MB, 705.6 MB
        total = sum(v.nbytes for v in buffer._meta.__dict__.values() if isinstance(v, np.ndarray))
        assert total < size * FRAME * 1.05
        del buffer
