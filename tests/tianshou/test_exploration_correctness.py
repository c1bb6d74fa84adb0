"""Exploration does what it claims on real Tianshou collectors and gymnasium envs.

* DDPG / TD3 / SAC store in the replay buffer the action the environment executed (normalised,
  so inside ``[-1, 1]``), with the LLM cache and with Tianshou's own noise, however large the bias.
* Rainbow's noisy layers explore while collecting for training (fresh noise, different
  Q-values and actions) and are switched off for greedy evaluation (deterministic).
"""

from __future__ import annotations

import itertools
import re

import gymnasium as gym
import numpy as np
import pytest
import torch
from tianshou.algorithm import DDPG, SAC, TD3, RainbowDQN
from tianshou.algorithm.modelfree.c51 import C51Policy
from tianshou.algorithm.modelfree.ddpg import ContinuousDeterministicPolicy
from tianshou.algorithm.modelfree.dqn import DiscreteQLearningPolicy
from tianshou.algorithm.modelfree.sac import SACPolicy
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.data import Batch, Collector, VectorReplayBuffer
from tianshou.env import DummyVectorEnv
from tianshou.exploration import GaussianNoise
from tianshou.utils.net.common import Net
from tianshou.utils.net.continuous import ContinuousActorDeterministic, ContinuousActorProbabilistic, ContinuousCritic
from tianshou.utils.net.discrete import NoisyLinear
from tianshou.utils.torch_utils import policy_within_training_step

from explorer_pipeline.cache import ExplorationCache
from explorer_pipeline.types import ActionSpec, ExplorationUpdate
from tianshou_integration import build_setup, describe_env
from tianshou_integration.config import make_config
from tianshou_integration.continuous import (
    ClipNoisyActionMixin,
    ClippedContinuousDeterministicPolicy,
    GuidedSACPolicy,
    attach_continuous,
    store_executed_actions,
)
from tianshou_integration.discrete import GuidedC51Policy, enable_noisy_collection
from tianshou_integration.training import prepare_policy, train

BIAS = 0.9
SIGMA = 0.5  # with the bias: about 40 % of the noisy action components fall outside [-1, 1]
N_ENVS = 2


# --------------------------------------------------------------------------- continuous
class RecordingEnv(gym.Wrapper):
    """Keeps a copy of every action the environment is stepped with."""

    def __init__(self, env: gym.Env, log: list[np.ndarray]) -> None:
        super().__init__(env)
        self.log = log

    def step(self, action):
        self.log.append(np.array(action, dtype=np.float64, copy=True))
        return super().step(action)


def recording_envs(env_id: str, n: int = N_ENVS) -> tuple[DummyVectorEnv, list[list[np.ndarray]]]:
    logs: list[list[np.ndarray]] = [[] for _ in range(n)]
    envs = DummyVectorEnv([lambda log=log: RecordingEnv(gym.make(env_id), log) for log in logs])
    envs.seed(0)
    return envs, logs


def bias_cache(space: gym.spaces.Box, bias: float = BIAS) -> ExplorationCache:
    n = int(np.prod(space.shape))
    cache = ExplorationCache(ActionSpec.continuous(space.low.tolist(), space.high.tolist()))
    cache.publish(ExplorationUpdate(1, "bias", (bias,) * n))
    return cache


def critic(env: gym.Env) -> ContinuousCritic:
    net = Net(state_shape=env.observation_space.shape, action_shape=env.action_space.shape, hidden_sizes=(16,),
              concat=True)
    return ContinuousCritic(preprocess_net=net)


def build_algorithm(algo: str, env: gym.Env, noise=None, *, stock: bool = False):
    """A real DDPG / TD3 / SAC with a small network and the package's clipping policy class
    (``stock``: Tianshou's own policy class)."""
    torch.manual_seed(0)
    space = env.action_space
    net = Net(state_shape=env.observation_space.shape, hidden_sizes=(16,))
    optim = AdamOptimizerFactory(lr=1e-3)
    if algo == "sac":
        actor = ContinuousActorProbabilistic(preprocess_net=net, action_shape=space.shape, unbounded=True)
        policy = (SACPolicy if stock else GuidedSACPolicy)(actor=actor, exploration_noise=noise, action_space=space)
        return SAC(policy=policy, policy_optim=optim, critic=critic(env), critic_optim=optim, critic2=critic(env),
                   critic2_optim=optim)
    actor = ContinuousActorDeterministic(preprocess_net=net, action_shape=space.shape, max_action=1.0)
    cls = ContinuousDeterministicPolicy if stock else ClippedContinuousDeterministicPolicy
    policy = cls(actor=actor, exploration_noise=noise, action_space=space)
    common = dict(policy=policy, policy_optim=optim, critic=critic(env), critic_optim=optim)
    if algo == "ddpg":
        return DDPG(**common)
    return TD3(**common, critic2=critic(env), critic2_optim=optim)


def collect(algorithm, env_id: str, n_step: int = 600, random_steps: int = 0):
    """Collect with exploration noise; return (stored actions, executed actions) per env, in step order."""
    envs, logs = recording_envs(env_id)
    buffer = VectorReplayBuffer(N_ENVS * 1000, N_ENVS)
    collector = Collector(algorithm, envs, buffer, exploration_noise=True)
    collector.reset()
    with policy_within_training_step(algorithm.policy):
        if random_steps:
            collector.collect(n_step=random_steps, random=True)
        collector.collect(n_step=n_step)
    envs.close()
    stored = [np.asarray(sub.act[: len(sub)], dtype=np.float64) for sub in buffer.buffers]
    executed = [np.stack(log) for log in logs]
    return stored, executed


def assert_stored_is_executed(policy, stored, executed) -> None:
    for acts, env_acts in zip(stored, executed, strict=True):
        assert len(acts) == len(env_acts) > 0
        assert acts.min() >= -1.0 and acts.max() <= 1.0
        # what the env got is what the stored action maps to, and the stored action is its inverse
        np.testing.assert_allclose(policy.map_action(acts), env_acts, rtol=0, atol=1e-6)
        np.testing.assert_allclose(policy.map_action_inverse(env_acts), acts, rtol=0, atol=1e-5)


@pytest.mark.parametrize("algo", ["ddpg", "td3", "sac"])
@pytest.mark.parametrize("env_id", ["Pendulum-v1", "MountainCarContinuous-v0"])
def test_stored_action_is_the_executed_one_with_the_llm_cache(algo, env_id):
    env = gym.make(env_id)
    algorithm = build_algorithm(algo, env)
    noise = attach_continuous(algorithm.policy, bias_cache(env.action_space), sigma=SIGMA,
                              rng=np.random.default_rng(0))
    assert isinstance(algorithm.policy, ClipNoisyActionMixin)
    stored, executed = collect(algorithm, env_id, random_steps=100)
    assert_stored_is_executed(algorithm.policy, stored, executed)
    everything = np.concatenate(stored)
    # the bias really pushed many actions past the bound: they are stored at the bound
    assert np.mean(everything >= 1.0) > 0.2
    assert noise.cache.applied_at(1) is not None


@pytest.mark.parametrize("algo", ["ddpg", "td3", "sac"])
def test_stored_action_is_the_executed_one_with_tianshous_gaussian_noise(algo):
    env = gym.make("Pendulum-v1")
    algorithm = build_algorithm(algo, env, GaussianNoise(mu=BIAS, sigma=SIGMA))
    assert prepare_policy(algorithm.policy) is algorithm.policy  # what the training loop does
    stored, executed = collect(algorithm, "Pendulum-v1")
    assert_stored_is_executed(algorithm.policy, stored, executed)
    assert np.mean(np.concatenate(stored) >= 1.0) > 0.2


def test_stock_tianshou_stores_actions_the_env_never_executed():
    """Why the mixin exists: Tianshou 2.0.1 stores the unclipped noisy action."""
    env = gym.make("Pendulum-v1")
    algorithm = build_algorithm("td3", env, GaussianNoise(mu=BIAS, sigma=SIGMA), stock=True)
    stored, executed = collect(algorithm, "Pendulum-v1", n_step=200)
    everything = np.concatenate(stored)
    assert everything.max() > 1.0
    assert np.abs(np.concatenate(executed)).max() <= 2.0  # Pendulum's torque bound


def test_store_executed_actions_checks_and_changes_nothing():
    env = gym.make("Pendulum-v1")
    algorithm = build_algorithm("ddpg", env, GaussianNoise(sigma=0.1))
    policy = algorithm.policy
    assert store_executed_actions(policy) is policy and type(policy) is ClippedContinuousDeterministicPolicy
    batch = Batch(obs=np.zeros((3, 3), dtype=np.float32), info=Batch())
    noisy = policy.add_exploration_noise(np.array([[0.5], [0.95], [-0.99]]), batch)
    assert noisy.min() >= -1.0 and noisy.max() <= 1.0
    with pytest.raises(TypeError, match="needs a policy with exploration noise"):
        store_executed_actions(object())  # type: ignore[arg-type]


@pytest.mark.parametrize("algo", ["ddpg", "sac"])
def test_a_stock_policy_that_would_store_unexecuted_actions_is_refused(algo):
    env = gym.make("Pendulum-v1")
    algorithm = build_algorithm(algo, env, GaussianNoise(sigma=0.1), stock=True)
    stock = type(algorithm.policy)
    with pytest.raises(TypeError, match=f"got {stock.__name__}: construct (Clipped|Guided)"):
        prepare_policy(algorithm.policy)  # what the training loop does first
    assert type(algorithm.policy) is stock  # never changed into another class


def test_a_stock_policy_with_tanh_bounds_stores_what_the_env_executes_and_passes():
    """With tanh bounding ``map_action_inverse`` recovers the stored action: no clipping class needed."""
    env = gym.make("Pendulum-v1")
    torch.manual_seed(0)
    actor = ContinuousActorDeterministic(preprocess_net=Net(state_shape=3, hidden_sizes=(16,)), action_shape=1,
                                         max_action=1.0)
    policy = ContinuousDeterministicPolicy(actor=actor, exploration_noise=GaussianNoise(sigma=0.1),
                                           action_space=env.action_space, action_bound_method="tanh")
    assert store_executed_actions(policy) is policy and type(policy) is ContinuousDeterministicPolicy


@pytest.mark.parametrize("algo", ["ddpg", "td3", "sac"])
@pytest.mark.parametrize("with_cache", [True, False], ids=["llm-cache", "stock-noise"])
def test_training_loop_buffer_holds_only_executed_actions(algo, with_cache):
    """End to end through build_setup and train: the buffer after warm-up holds no out-of-range action."""
    info = describe_env("Pendulum-v1")
    config = make_config("Pendulum-v1", algo, {
        "network.hidden_sizes": [16, 16], "algorithm.batch_size": 16, "train_envs": 1, "test_envs": 1,
        "algorithm.learning_starts": 32, "algorithm.random_warmup_steps": 32, "algorithm.collect_per_step": 8,
        "algorithm.updates_per_step": 0.25, "eval.every": 1000, "eval.episodes": 1, "algorithm.buffer_size": 1000,
        "algorithm.noise.sigma": SIGMA, "algorithm.noise.units": "normalized"}, describe=lambda _: info)
    cache = bias_cache(gym.make("Pendulum-v1").action_space) if with_cache else None
    setup = build_setup(config, info, cache=cache)
    if not with_cache:
        setup.policy.set_exploration_noise(GaussianNoise(mu=BIAS, sigma=SIGMA))
    result = train(setup, steps=240, eval_episodes=1, progress=False)
    setup.close()
    assert not result.interrupted
    assert len(setup.buffer.buffers) == 1  # one training env: the transitions lie in step order
    acts = setup.buffer.act[: len(setup.buffer)]
    after_warmup = acts[config.algorithm.random_warmup_steps:]
    assert acts.min() >= -1.0 and acts.max() <= 1.0
    assert np.mean(after_warmup >= 1.0) > 0.2  # clipped at the bound, not stored beyond it


# --------------------------------------------------------------------------- Rainbow noisy nets
N_ATOMS = 11


def rainbow(cache: ExplorationCache | None = None, eps: float = 0.0, policy_cls: type = GuidedC51Policy,
            noisy_std: float = 0.5) -> RainbowDQN:
    """A Rainbow like the project's builder: C51 policy, dueling heads made of NoisyLinear layers."""
    torch.manual_seed(0)

    def noisy(x: int, y: int) -> NoisyLinear:
        return NoisyLinear(x, y, noisy_std)

    head = {"linear_layer": noisy, "hidden_sizes": (32,)}
    net = Net(state_shape=4, action_shape=2, hidden_sizes=(32,), softmax=True, num_atoms=N_ATOMS,
              dueling_param=(head, dict(head)))
    policy = policy_cls(model=net, action_space=gym.spaces.Discrete(2), num_atoms=N_ATOMS, v_min=0.0, v_max=50.0,
                        eps_training=eps, eps_inference=0.0)
    if cache is not None:
        policy.attach_explorer(cache, np.random.default_rng(0))
    return RainbowDQN(policy=policy, optim=AdamOptimizerFactory(lr=1e-3), n_step_return_horizon=3,
                      target_update_freq=10)


class Probe:
    """Records, for every forward pass of the policy's model: NoisyLinear train flags, the noise, the output."""

    def __init__(self, policy) -> None:
        self.layers = [m for m in policy.model.modules() if isinstance(m, NoisyLinear)]
        assert len(self.layers) >= 2
        self.modes: list[bool] = []
        self.noise: list[torch.Tensor] = []
        self.logits: list[torch.Tensor] = []
        self.handles = [
            self.layers[0].register_forward_pre_hook(self._before),
            policy.model.register_forward_hook(self._after),
        ]

    def _before(self, module, args) -> None:
        self.modes.append(all(layer.training for layer in self.layers))
        self.noise.append(module.eps_q.detach().clone())

    def _after(self, module, args, output) -> None:
        self.logits.append(output[0].detach().clone())

    def clear(self) -> None:
        self.modes.clear()
        self.noise.clear()
        self.logits.clear()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def cartpole_collector(algorithm, n_envs: int = 1) -> tuple[Collector, DummyVectorEnv]:
    envs = DummyVectorEnv([lambda: gym.make("CartPole-v1") for _ in range(n_envs)])
    return Collector(algorithm, envs, VectorReplayBuffer(2000, n_envs), exploration_noise=True), envs


def collect_cartpole(collector: Collector, envs: DummyVectorEnv, policy, training: bool, n_step: int = 60):
    """Collect from the same seeded start; return (observations, actions) in step order."""
    envs.seed(3)
    collector.reset()
    with policy_within_training_step(policy, enabled=training):
        collector.collect(n_step=n_step)
    buffer = collector.buffer.buffers[0]
    return np.array(buffer.obs[: len(buffer)]), np.array(buffer.act[: len(buffer)])


def mean_weight_logits(policy, obs: np.ndarray) -> torch.Tensor:
    was_training = policy.training
    policy.eval()
    try:
        with torch.no_grad():
            return policy.model(torch.as_tensor(obs, dtype=torch.float32))[0]
    finally:
        policy.train(was_training)


@pytest.mark.parametrize("with_cache", [False, True], ids=["no-cache", "llm-cache"])
def test_rainbow_training_collection_explores_with_noisy_layers(with_cache):
    cache = None
    if with_cache:
        cache = ExplorationCache(ActionSpec.discrete(2))
        cache.publish(ExplorationUpdate(1, "distribution", (0.5, 0.5)))
    algorithm = rainbow(cache, eps=0.0)  # epsilon off: any randomness comes from the noisy layers
    policy = algorithm.policy
    collector, envs = cartpole_collector(algorithm)
    probe = Probe(policy)
    mode_before = [layer.training for layer in probe.layers]

    obs1, act1 = collect_cartpole(collector, envs, policy, training=True)
    logits1, noise1, modes1 = list(probe.logits), list(probe.noise), list(probe.modes)
    probe.clear()
    obs2, act2 = collect_cartpole(collector, envs, policy, training=True)
    logits2 = list(probe.logits)
    envs.close()

    assert all(modes1) and len(modes1) == len(obs1)  # every collection forward ran the noisy layers in train mode
    assert [layer.training for layer in probe.layers] == mode_before  # and their modes were restored
    np.testing.assert_array_equal(obs1[0], obs2[0])  # same start...
    assert not torch.allclose(logits1[0], logits2[0])  # ...different Q-distributions: fresh noise
    assert all(not torch.equal(a, b) for a, b in itertools.pairwise(noise1))  # new noise on every step
    # the noise changes decisions: the noisy greedy action differs from the mean-weight one on some states
    q_noisy = (torch.cat(logits1) * policy.support).sum(-1).argmax(-1).numpy()
    q_mean = (mean_weight_logits(policy, obs1) * policy.support).sum(-1).argmax(-1).numpy()
    np.testing.assert_array_equal(q_noisy, act1)  # eps 0: the executed action is the noisy greedy one
    assert np.any(q_noisy != q_mean)
    assert not np.array_equal(act1, act2)
    probe.remove()


def test_rainbow_evaluation_is_deterministic_and_uses_mean_weights():
    algorithm = rainbow(eps=0.5)  # eps_training is not used outside a training step
    policy = algorithm.policy
    collector, envs = cartpole_collector(algorithm)
    probe = Probe(policy)
    collect_cartpole(collector, envs, policy, training=True)  # some noisy collection first
    probe.clear()
    obs1, act1 = collect_cartpole(collector, envs, policy, training=False)
    logits1, modes1 = list(probe.logits), list(probe.modes)
    probe.clear()
    obs2, act2 = collect_cartpole(collector, envs, policy, training=False)
    logits2 = list(probe.logits)
    envs.close()

    assert not any(modes1)
    np.testing.assert_array_equal(obs1, obs2)
    np.testing.assert_array_equal(act1, act2)
    assert all(torch.equal(a, b) for a, b in zip(logits1, logits2, strict=True))
    torch.testing.assert_close(torch.cat(logits1), mean_weight_logits(policy, obs1))
    probe.remove()


def test_stock_rainbow_policy_collects_without_noise_and_is_refused():
    """Why the mixin exists: Tianshou's collector runs the policy in eval mode (mean weights)."""
    algorithm = rainbow(eps=0.0, policy_cls=C51Policy)
    policy = algorithm.policy
    collector, envs = cartpole_collector(algorithm)
    probe = Probe(policy)
    collect_cartpole(collector, envs, policy, training=True, n_step=10)
    envs.close()
    assert probe.modes and not any(probe.modes)
    probe.remove()
    with pytest.raises(TypeError, match="got C51Policy: construct GuidedC51Policy instead"):
        prepare_policy(policy)  # what the training loop does first
    with pytest.raises(TypeError, match=re.escape("`class NoisyMyPolicy(NoisyCollectionMixin, MyPolicy): pass`")):
        enable_noisy_collection(policy)
    assert type(policy) is C51Policy  # never changed into another class
    guided = rainbow(eps=0.0).policy
    assert enable_noisy_collection(guided) is guided and type(guided) is GuidedC51Policy


def test_a_stock_dqn_policy_without_noisy_layers_needs_nothing():
    net = Net(state_shape=4, action_shape=2, hidden_sizes=(8,))
    policy = DiscreteQLearningPolicy(model=net, action_space=gym.spaces.Discrete(2))
    assert prepare_policy(policy) is policy and type(policy) is DiscreteQLearningPolicy


def test_guided_draws_are_unchanged_with_noisy_layers():
    """Epsilon-greedy keeps its meaning: with eps 1 every action comes from the cached distribution."""
    cache = ExplorationCache(ActionSpec.discrete(2))
    cache.publish(ExplorationUpdate(1, "distribution", (0.0, 1.0)))
    algorithm = rainbow(cache, eps=1.0)
    collector, envs = cartpole_collector(algorithm, n_envs=2)
    collector.reset()
    with policy_within_training_step(algorithm.policy):
        collector.collect(n_step=100)
    envs.close()
    acts = collector.buffer[collector.buffer.sample_indices(0)].act
    assert len(acts) == 100 and set(acts.tolist()) == {1}


def test_rainbow_updates_and_target_network_are_untouched():
    """Gradient updates run in train mode: the mixin adds no noise draw there, RainbowDQN samples its own."""
    algorithm = rainbow(eps=0.1)
    policy = algorithm.policy
    collector, envs = cartpole_collector(algorithm)
    collect_cartpole(collector, envs, policy, training=True, n_step=200)
    envs.close()
    probe = Probe(policy)
    with policy_within_training_step(policy):
        algorithm.update(buffer=collector.buffer, sample_size=32)
    # RainbowDQN samples once before the update; every forward pass of the update saw that same noise
    assert probe.modes and all(probe.modes)
    assert all(torch.equal(n, probe.noise[0]) for n in probe.noise)
    probe.remove()


def test_training_loop_rainbow_explores_noisily_and_evaluates_greedily():
    """End to end through build_setup and train: noisy layers on for training collection, off for evaluation."""
    info = describe_env("CartPole-v1")
    config = make_config("CartPole-v1", "rainbow", {
        "network.hidden_sizes": [32, 32], "algorithm.batch_size": 32, "train_envs": 2, "test_envs": 1,
        "algorithm.learning_starts": 64, "algorithm.collect_per_step": 32, "algorithm.updates_per_step": 0.25,
        "eval.every": 128, "eval.episodes": 1, "algorithm.buffer_size": 2000}, describe=lambda _: info)
    setup = build_setup(config, info, cache=None)
    policy = setup.policy
    seen: list[tuple[bool, bool, bool]] = []  # (within training step, policy in train mode, noisy layers on)
    layers = [m for m in policy.model.modules() if isinstance(m, NoisyLinear)]
    handle = layers[0].register_forward_pre_hook(
        lambda module, args: seen.append((policy.is_within_training_step, policy.training,
                                          all(layer.training for layer in layers))))
    result = train(setup, steps=256, eval_episodes=1, progress=False)
    setup.close()
    handle.remove()
    assert not result.interrupted and result.gradient_steps > 0 and len(result.eval_history) >= 2
    collection = [noisy for training, train_mode, noisy in seen if training and not train_mode]
    evaluation = [noisy for training, _, noisy in seen if not training]
    updates = [noisy for training, train_mode, noisy in seen if training and train_mode]
    assert collection and all(collection)
    assert evaluation and not any(evaluation)
    assert updates and all(updates)
