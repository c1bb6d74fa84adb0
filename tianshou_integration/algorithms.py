"""Algorithm builders with default hyperparameters that learn on a 2-core CPU.

``build_setup(name, env_info, ...)`` returns an :class:`AlgoSetup`: the Tianshou algorithm, its
(guided) policy, vector envs and replay buffer. Collectors are made by the training loop, which
owns the episode tap.

Defaults come per algorithm and environment family (:func:`default_hyperparams`); the
CartPole DQN setting is rl-zoo's with lr 1e-3 and batch 128 (reached 500 within 7.7-17.7k env steps).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from tianshou.algorithm import C51, DDPG, DQN, QRDQN, SAC, TD3, RainbowDQN
from tianshou.algorithm.algorithm_base import OffPolicyAlgorithm, Policy
from tianshou.algorithm.modelfree.ddpg import ContinuousDeterministicPolicy
from tianshou.algorithm.modelfree.sac import AutoAlpha, SACPolicy
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.data import PrioritizedVectorReplayBuffer, ReplayBuffer, VectorReplayBuffer
from tianshou.env import BaseVectorEnv, DummyVectorEnv
from tianshou.exploration import GaussianNoise
from tianshou.utils.net.common import Net
from tianshou.utils.net.continuous import ContinuousActorDeterministic, ContinuousActorProbabilistic, ContinuousCritic
from tianshou.utils.net.discrete import NoisyLinear

from explorer_pipeline.cache import ExplorationCache

from .continuous import GuidedGaussianNoise, GuidedSACPolicy
from .counter import EnvStepCounter
from .discrete import GuidedC51Policy, GuidedDQNPolicy, GuidedEpsGreedyMixin, GuidedQRDQNPolicy
from .envs import EnvInfo, env_factory
from .names import ALGORITHMS, CONTINUOUS_ALGOS, DISCRETE_ALGOS


# --------------------------------------------------------------------------- replay buffers
class FastVectorReplayBuffer(VectorReplayBuffer):
    """``VectorReplayBuffer`` without the full-buffer NaN rescan.

    Tianshou's trainer calls ``buffer.hasnull()`` after every collect, which materialises the
    whole buffer (10 ms for 100k CartPole transitions, seconds for Atari). Nothing we add can
    hold NaN, so the check is skipped.
    """

    def hasnull(self) -> bool:
        return False


class FastPrioritizedVectorReplayBuffer(PrioritizedVectorReplayBuffer):
    """``PrioritizedVectorReplayBuffer`` without the full-buffer NaN rescan (see above)."""

    def hasnull(self) -> bool:
        return False


# --------------------------------------------------------------------------- hyperparameters
@dataclass(frozen=True)
class Hyperparams:
    """Everything the builders and the training loop read. Steps are env steps.

    :param steps: default training budget.
    :param num_train_envs: training envs in one ``DummyVectorEnv`` (batched forward passes).
    :param collect_per_step: env steps collected between two rounds of gradient steps.
    :param updates_per_step: gradient steps per collected env step.
    :param learning_starts: no gradient step before this many env steps.
    :param random_warmup_steps: uniformly random actions collected first (continuous only).
    :param eval_every: greedy evaluation every this many env steps (and once at the end).
    :param eps_start, eps_end, eps_decay_steps: linear epsilon schedule (DQN family).
    :param target_update_freq: gradient steps between target-network copies (DQN family).
    :param sigma: exploration-noise standard deviation, normalised units (DDPG/TD3/SAC).
    """

    steps: int
    hidden: tuple[int, ...]
    lr: float
    gamma: float
    batch_size: int
    buffer_size: int
    num_train_envs: int
    collect_per_step: int
    updates_per_step: float
    learning_starts: int
    eval_every: int
    random_warmup_steps: int = 0
    # DQN family
    n_step: int = 1
    target_update_freq: int = 0
    huber_loss_delta: float | None = None
    eps_start: float = 1.0
    eps_end: float = 0.05
    eps_decay_steps: int = 10_000
    num_atoms: int = 51
    v_min: float = -100.0
    v_max: float = 100.0
    num_quantiles: int = 50
    noisy_std: float = 0.1
    prioritized: bool = False
    prio_alpha: float = 0.6
    prio_beta: float = 0.4
    # actor-critic
    critic_lr: float = 1e-3
    tau: float = 0.005
    sigma: float = 0.1
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    update_actor_freq: int = 2

    def eps_at(self, env_step: int) -> float:
        if env_step >= self.eps_decay_steps:
            return self.eps_end
        frac = env_step / max(self.eps_decay_steps, 1)
        return self.eps_start + frac * (self.eps_end - self.eps_start)


_DISCRETE_FAMILIES: dict[str, dict[str, Any]] = {
    # rl-zoo DQN CartPole-v1 with lr 1e-3 and batch 128 (plain DQN reached 500 at 7.7k-17.7k steps, seeds 0,2,3)
    "CartPole": dict(steps=20_000, hidden=(256, 256), lr=1e-3, gamma=0.99, batch_size=128,
                     buffer_size=100_000, num_train_envs=8, collect_per_step=256, updates_per_step=0.5,
                     learning_starts=1000, eval_every=2500, target_update_freq=10,
                     eps_end=0.04, eps_decay_steps=8000, v_min=0.0, v_max=100.0),
    # rl-zoo DQN MountainCar-v0
    "MountainCar": dict(steps=100_000, hidden=(256, 256), lr=4e-3, gamma=0.98, batch_size=128,
                        buffer_size=10_000, num_train_envs=4, collect_per_step=16, updates_per_step=0.5,
                        learning_starts=1000, eval_every=10_000, target_update_freq=300,
                        eps_end=0.07, eps_decay_steps=20_000, v_min=-60.0, v_max=0.0),
    # rl-zoo DQN Acrobot-v1 / LunarLander-v3 (train every 4 steps, target every 250 updates)
    "Acrobot": dict(steps=100_000, hidden=(256, 256), lr=6.3e-4, gamma=0.99, batch_size=128,
                    buffer_size=50_000, num_train_envs=4, collect_per_step=16, updates_per_step=0.25,
                    learning_starts=1000, eval_every=10_000, target_update_freq=250,
                    eps_end=0.1, eps_decay_steps=12_000, v_min=-100.0, v_max=0.0),
    "LunarLander": dict(steps=100_000, hidden=(256, 256), lr=6.3e-4, gamma=0.99, batch_size=128,
                        buffer_size=50_000, num_train_envs=4, collect_per_step=16, updates_per_step=0.25,
                        learning_starts=1000, eval_every=10_000, target_update_freq=250,
                        eps_end=0.1, eps_decay_steps=12_000, v_min=-300.0, v_max=300.0),
}
_DISCRETE_GENERIC = _DISCRETE_FAMILIES["LunarLander"]

_CONTINUOUS_FAMILIES: dict[str, dict[str, Any]] = {
    "Pendulum": dict(steps=20_000, hidden=(128, 128), lr=1e-3, critic_lr=1e-3, gamma=0.99, batch_size=128,
                     buffer_size=20_000, num_train_envs=4, collect_per_step=4, updates_per_step=0.5,
                     learning_starts=1000, random_warmup_steps=1000, eval_every=2000, sigma=0.1),
    "MountainCarContinuous": dict(steps=50_000, hidden=(128, 128), lr=1e-3, critic_lr=1e-3, gamma=0.99,
                                  batch_size=128, buffer_size=100_000, num_train_envs=4, collect_per_step=4,
                                  updates_per_step=0.25, learning_starts=1000, random_warmup_steps=1000,
                                  eval_every=5000, sigma=0.1),
}
# MuJoCo-style defaults (TD3 paper) at a budget a CPU can afford
_CONTINUOUS_GENERIC = dict(steps=200_000, hidden=(256, 256), lr=3e-4, critic_lr=3e-4, gamma=0.99, batch_size=256,
                           buffer_size=1_000_000, num_train_envs=1, collect_per_step=1, updates_per_step=1.0,
                           learning_starts=10_000, random_warmup_steps=10_000, eval_every=10_000, sigma=0.1)

_ALGO_OVERRIDES: dict[str, dict[str, Any]] = {
    "c51": dict(lr=1e-3),
    "qrdqn": dict(lr=1e-3),
    "rainbow": dict(lr=1e-3, n_step=3, prioritized=True, eps_end=0.01),
    "sac": dict(sigma=0.0),  # the stochastic actor explores; the LLM bias shifts it
}


def default_hyperparams(algo: str, env: EnvInfo) -> Hyperparams:
    """Defaults for ``algo`` on ``env``'s family (by gymnasium name, e.g. ``CartPole``)."""
    if algo not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algo!r}; available: {', '.join(ALGORITHMS)}")
    families = _DISCRETE_FAMILIES if algo in DISCRETE_ALGOS else _CONTINUOUS_FAMILIES
    generic = _DISCRETE_GENERIC if algo in DISCRETE_ALGOS else _CONTINUOUS_GENERIC
    values = dict(families.get(env.short_name, generic))
    values.update(_ALGO_OVERRIDES.get(algo, {}))
    hp = Hyperparams(**values)
    # every env's sub-buffer must hold a whole episode (the tap reads episodes back from it)
    if env.max_episode_steps:
        need = hp.num_train_envs * (env.max_episode_steps + 1)
        if hp.buffer_size < need:
            hp = replace(hp, buffer_size=need)
    return hp


# --------------------------------------------------------------------------- setup
@dataclass
class AlgoSetup:
    """A ready-to-train algorithm. The training loop adds collectors (and the episode tap)."""

    name: str
    env: EnvInfo
    hp: Hyperparams
    algorithm: OffPolicyAlgorithm
    policy: Policy
    train_envs: BaseVectorEnv
    test_envs: BaseVectorEnv
    buffer: ReplayBuffer
    noise: Any = None

    @property
    def is_discrete(self) -> bool:
        return self.env.is_discrete

    def on_env_step(self, env_step: int) -> None:
        """Schedules: epsilon (DQN family), importance-sampling beta (prioritized replay)."""
        if self.is_discrete:
            self.policy.set_eps_training(self.hp.eps_at(env_step))  # type: ignore[attr-defined]
        if isinstance(self.buffer, PrioritizedVectorReplayBuffer):
            frac = min(env_step / max(self.hp.steps, 1), 1.0)
            self.buffer.set_beta(self.hp.prio_beta + frac * (1.0 - self.hp.prio_beta))

    def close(self) -> None:
        for envs in (self.train_envs, self.test_envs):
            with contextlib.suppress(Exception):  # already closed
                envs.close()


def _make_envs(env: EnvInfo, n: int) -> DummyVectorEnv:
    return DummyVectorEnv([env_factory(env.env_id) for _ in range(n)])


def build_setup(
    algo: str,
    env: EnvInfo,
    *,
    cache: ExplorationCache | None,
    seed: int = 0,
    rng: np.random.Generator | None = None,
    counter: EnvStepCounter | None = None,
    hp: Hyperparams | None = None,
    sigma: float | None = None,
    apply_fraction: float = 1.0,
    eval_envs: int = 10,
) -> AlgoSetup:
    """Build ``algo`` for ``env``.

    :param cache: exploration cache the policy reads; None gives Tianshou's stock exploration.
    :param rng: generator for the exploration draws (``default_rng(seed)`` if None).
    :param sigma: override the Gaussian noise scale (continuous).
    :param eval_envs: number of greedy-evaluation envs.
    """
    if algo not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algo!r}; available: {', '.join(ALGORITHMS)}")
    if (algo in DISCRETE_ALGOS) != env.is_discrete:
        kind = "discrete" if env.is_discrete else "continuous"
        suitable = DISCRETE_ALGOS if env.is_discrete else CONTINUOUS_ALGOS
        raise ValueError(
            f"{algo} does not fit {env.env_id}, which has {kind} actions; use one of {', '.join(suitable)}")
    torch.set_num_threads(1)
    hp = hp or default_hyperparams(algo, env)
    if sigma is not None:
        hp = replace(hp, sigma=sigma)
    rng = rng if rng is not None else np.random.default_rng(seed)
    counter = counter if counter is not None else EnvStepCounter()

    np.random.seed(seed)  # Tianshou's replay sampling uses the global generator
    torch.manual_seed(seed)
    train_envs = _make_envs(env, hp.num_train_envs)
    test_envs = _make_envs(env, max(1, eval_envs))
    train_envs.seed(seed)
    test_envs.seed(seed + 10_000)

    builder: Callable[..., tuple[OffPolicyAlgorithm, Any]] = _BUILDERS[algo]
    algorithm, noise = builder(env, hp, train_envs.action_space[0], cache, rng, counter, apply_fraction)
    if hp.prioritized:
        buffer: ReplayBuffer = FastPrioritizedVectorReplayBuffer(
            hp.buffer_size, len(train_envs), alpha=hp.prio_alpha, beta=hp.prio_beta, weight_norm=True)
    else:
        buffer = FastVectorReplayBuffer(hp.buffer_size, len(train_envs))
    setup = AlgoSetup(algo, env, hp, algorithm, algorithm.policy, train_envs, test_envs, buffer, noise)
    setup.on_env_step(0)
    return setup


# --------------------------------------------------------------------------- discrete builders
def _attach(policy: GuidedEpsGreedyMixin, cache: ExplorationCache | None, rng: np.random.Generator,
            counter: EnvStepCounter) -> None:
    if cache is not None:
        policy.attach_explorer(cache, rng, counter)


def _dqn_like(algo: str) -> Callable[..., tuple[OffPolicyAlgorithm, None]]:
    def build(env: EnvInfo, hp: Hyperparams, space: Any, cache: ExplorationCache | None,
              rng: np.random.Generator, counter: EnvStepCounter, _fraction: float) -> tuple[OffPolicyAlgorithm, None]:
        n = int(space.n)
        head = {"hidden_sizes": hp.hidden[-1:]}
        dueling = (head, head) if algo == "dueling-dqn" else None
        hidden = hp.hidden[:-1] if dueling else hp.hidden
        net = Net(state_shape=env.obs_shape, action_shape=n, hidden_sizes=hidden, dueling_param=dueling)
        policy = GuidedDQNPolicy(model=net, action_space=space, eps_training=hp.eps_start, eps_inference=0.0)
        _attach(policy, cache, rng, counter)
        algorithm = DQN(policy=policy, optim=AdamOptimizerFactory(lr=hp.lr), gamma=hp.gamma,
                        n_step_return_horizon=hp.n_step, target_update_freq=hp.target_update_freq,
                        is_double=algo != "dqn", huber_loss_delta=hp.huber_loss_delta)
        return algorithm, None

    return build


def _build_c51(env: EnvInfo, hp: Hyperparams, space: Any, cache: ExplorationCache | None,
               rng: np.random.Generator, counter: EnvStepCounter, _fraction: float,
               rainbow: bool = False) -> tuple[OffPolicyAlgorithm, None]:
    n = int(space.n)
    if rainbow:
        def noisy(x: int, y: int) -> NoisyLinear:
            return NoisyLinear(x, y, hp.noisy_std)

        net = Net(state_shape=env.obs_shape, action_shape=n, hidden_sizes=hp.hidden[:-1], softmax=True,
                  num_atoms=hp.num_atoms,
                  dueling_param=({"linear_layer": noisy, "hidden_sizes": hp.hidden[-1:]},
                                 {"linear_layer": noisy, "hidden_sizes": hp.hidden[-1:]}))
    else:
        net = Net(state_shape=env.obs_shape, action_shape=n, hidden_sizes=hp.hidden, softmax=True,
                  num_atoms=hp.num_atoms)
    policy = GuidedC51Policy(model=net, action_space=space, num_atoms=hp.num_atoms, v_min=hp.v_min,
                             v_max=hp.v_max, eps_training=hp.eps_start, eps_inference=0.0)
    _attach(policy, cache, rng, counter)
    cls = RainbowDQN if rainbow else C51
    algorithm = cls(policy=policy, optim=AdamOptimizerFactory(lr=hp.lr), gamma=hp.gamma,
                    n_step_return_horizon=hp.n_step, target_update_freq=hp.target_update_freq)
    return algorithm, None


def _build_rainbow(*args: Any) -> tuple[OffPolicyAlgorithm, None]:
    return _build_c51(*args, rainbow=True)


def _build_qrdqn(env: EnvInfo, hp: Hyperparams, space: Any, cache: ExplorationCache | None,
                 rng: np.random.Generator, counter: EnvStepCounter,
                 _fraction: float) -> tuple[OffPolicyAlgorithm, None]:
    n = int(space.n)
    net = Net(state_shape=env.obs_shape, action_shape=n, hidden_sizes=hp.hidden, num_atoms=hp.num_quantiles)
    policy = GuidedQRDQNPolicy(model=net, action_space=space, eps_training=hp.eps_start, eps_inference=0.0)
    _attach(policy, cache, rng, counter)
    algorithm = QRDQN(policy=policy, optim=AdamOptimizerFactory(lr=hp.lr), gamma=hp.gamma,
                      num_quantiles=hp.num_quantiles, n_step_return_horizon=hp.n_step,
                      target_update_freq=hp.target_update_freq)
    return algorithm, None


# --------------------------------------------------------------------------- continuous builders
def _noise(hp: Hyperparams, cache: ExplorationCache | None, rng: np.random.Generator, counter: EnvStepCounter,
           fraction: float) -> Any:
    if cache is not None:
        return GuidedGaussianNoise(cache, hp.sigma, rng, apply_fraction=fraction, counter=counter)
    return GaussianNoise(sigma=hp.sigma) if hp.sigma > 0 else None


def _critic(env: EnvInfo, hp: Hyperparams, act_dim: int) -> ContinuousCritic:
    net = Net(state_shape=env.obs_shape, action_shape=act_dim, hidden_sizes=hp.hidden, concat=True)
    return ContinuousCritic(preprocess_net=net)


def _deterministic(algo: str) -> Callable[..., tuple[OffPolicyAlgorithm, Any]]:
    def build(env: EnvInfo, hp: Hyperparams, space: Any, cache: ExplorationCache | None,
              rng: np.random.Generator, counter: EnvStepCounter, fraction: float) -> tuple[OffPolicyAlgorithm, Any]:
        act_dim = int(np.prod(space.shape))
        net = Net(state_shape=env.obs_shape, hidden_sizes=hp.hidden)
        actor = ContinuousActorDeterministic(preprocess_net=net, action_shape=act_dim, max_action=1.0)
        noise = _noise(hp, cache, rng, counter, fraction)
        policy = ContinuousDeterministicPolicy(actor=actor, exploration_noise=noise, action_space=space)
        common = dict(policy=policy, policy_optim=AdamOptimizerFactory(lr=hp.lr), critic=_critic(env, hp, act_dim),
                      critic_optim=AdamOptimizerFactory(lr=hp.critic_lr), tau=hp.tau, gamma=hp.gamma,
                      n_step_return_horizon=hp.n_step)
        if algo == "ddpg":
            return DDPG(**common), noise
        algorithm = TD3(**common, critic2=_critic(env, hp, act_dim),
                        critic2_optim=AdamOptimizerFactory(lr=hp.critic_lr),
                        policy_noise=hp.policy_noise, update_actor_freq=hp.update_actor_freq, noise_clip=hp.noise_clip)
        return algorithm, noise

    return build


def _build_sac(env: EnvInfo, hp: Hyperparams, space: Any, cache: ExplorationCache | None,
               rng: np.random.Generator, counter: EnvStepCounter, fraction: float) -> tuple[OffPolicyAlgorithm, Any]:
    act_dim = int(np.prod(space.shape))
    net = Net(state_shape=env.obs_shape, hidden_sizes=hp.hidden)
    actor = ContinuousActorProbabilistic(preprocess_net=net, action_shape=act_dim, unbounded=True)
    noise = _noise(hp, cache, rng, counter, fraction)
    policy_cls = GuidedSACPolicy if noise is not None else SACPolicy
    policy = policy_cls(actor=actor, exploration_noise=noise, action_space=space)
    alpha = AutoAlpha(target_entropy=-float(act_dim), log_alpha=math.log(0.2), optim=AdamOptimizerFactory(lr=hp.lr))
    algorithm = SAC(policy=policy, policy_optim=AdamOptimizerFactory(lr=hp.lr), critic=_critic(env, hp, act_dim),
                    critic_optim=AdamOptimizerFactory(lr=hp.critic_lr), critic2=_critic(env, hp, act_dim),
                    critic2_optim=AdamOptimizerFactory(lr=hp.critic_lr), tau=hp.tau, gamma=hp.gamma, alpha=alpha,
                    n_step_return_horizon=hp.n_step)
    return algorithm, noise


_BUILDERS: dict[str, Callable[..., tuple[OffPolicyAlgorithm, Any]]] = {
    "dqn": _dqn_like("dqn"),
    "double-dqn": _dqn_like("double-dqn"),
    "dueling-dqn": _dqn_like("dueling-dqn"),
    "c51": _build_c51,
    "rainbow": _build_rainbow,
    "qrdqn": _build_qrdqn,
    "ddpg": _deterministic("ddpg"),
    "td3": _deterministic("td3"),
    "sac": _build_sac,
}
