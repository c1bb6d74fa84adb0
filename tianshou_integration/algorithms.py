"""Algorithm builders: from a resolved :class:`~tianshou_integration.config.RunConfig` to a
ready-to-train Tianshou algorithm.

``build_setup(config, env_info, ...)`` returns an :class:`AlgoSetup`: the algorithm, its (guided)
policy, vector envs and replay buffer. Collectors are made by the training loop, which owns the
episode tap. Hyperparameters come only from the configuration (the presets hold the defaults).
Atari observations get the Nature DQN torso (``networks.py``) and a replay buffer that stores
each frame once (``frame_buffer.py``).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tianshou.algorithm import DDPG, DQN, QRDQN, SAC
from tianshou.algorithm.algorithm_base import OffPolicyAlgorithm, Policy
from tianshou.algorithm.modelfree.sac import AutoAlpha
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.data import PrioritizedVectorReplayBuffer, ReplayBuffer, VectorReplayBuffer
from tianshou.env import BaseVectorEnv, DummyVectorEnv, ShmemVectorEnv, SubprocVectorEnv
from tianshou.exploration import GaussianNoise
from tianshou.utils.net.common import Net
from tianshou.utils.net.continuous import ContinuousActorDeterministic, ContinuousActorProbabilistic, ContinuousCritic
from tianshou.utils.net.discrete import NoisyLinear

from explorer_pipeline.cache import ExplorationCache
from explorer_pipeline.errors import UsageError

from . import fast
from .config import AlgorithmConfig, RunConfig
from .continuous import BoundedTD3, ClippedContinuousDeterministicPolicy, GuidedGaussianNoise, GuidedSACPolicy
from .counter import EnvStepCounter
from .curl import build_curl
from .discrete import GuidedC51Policy, GuidedDQNPolicy, GuidedEpsGreedyMixin, GuidedQRDQNPolicy
from .distributional import NStepC51, NStepRainbowDQN
from .envs import EnvInfo, env_factory
from .frame_buffer import set_buffer_beta
from .icm import ICMDQN, build_icm
from .names import CONTINUOUS_ALGOS, DISCRETE_ALGOS
from .noisy import NoisyDQN
from .rnd import RNDDQN, RNDDQNPolicy, build_rnd
from .tianshou_state import seed_sampler

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- replay buffers
class FastVectorReplayBuffer(fast.FastSamplingMixin, VectorReplayBuffer):
    """``VectorReplayBuffer`` without the full-buffer NaN rescan, sampling with less Python
    (:class:`~tianshou_integration.fast.FastSamplingMixin`: the same draws and arrays).

    Tianshou's trainer calls ``buffer.hasnull()`` after every collect, which materialises the
    whole buffer (10 ms for 100k CartPole transitions, seconds for Atari). Nothing we add can
    hold NaN, so the check is skipped.
    """

    def hasnull(self) -> bool:
        """Never: nothing stored here can be NaN."""
        return False


class FastPrioritizedVectorReplayBuffer(PrioritizedVectorReplayBuffer):
    """``PrioritizedVectorReplayBuffer`` without the full-buffer NaN rescan (see above), whose
    ``set_beta`` really anneals β (see :func:`set_buffer_beta`)."""

    def hasnull(self) -> bool:
        """Never: nothing stored here can be NaN."""
        return False

    def set_beta(self, beta: float) -> None:
        """Set the importance-sampling exponent so that the next samples use it."""
        set_buffer_beta(self, beta)



# --------------------------------------------------------------------------- setup
@dataclass
class AlgoSetup:
    """A ready-to-train algorithm. The training loop adds collectors (and the episode tap).

    :param config: the resolved run configuration it was built from.
    :param device: the torch device the networks live on.
    """

    config: RunConfig
    env: EnvInfo
    algorithm: OffPolicyAlgorithm
    policy: Policy
    train_envs: BaseVectorEnv
    test_envs: BaseVectorEnv
    buffer: ReplayBuffer
    noise: Any = None
    device: str = "cpu"

    @property
    def name(self) -> str:
        """The algorithm's name (``config.algo``)."""
        return self.config.algo

    @property
    def hp(self) -> AlgorithmConfig:
        """The algorithm's hyperparameters (``config.algorithm``)."""
        return self.config.algorithm

    @property
    def is_discrete(self) -> bool:
        """The environment has discrete actions (a DQN-family algorithm)."""
        return self.env.is_discrete

    def on_env_step(self, env_step: int) -> None:
        """Schedules: ε (DQN family), importance-sampling β annealed over the run's steps (PER)."""
        hp = self.config.algorithm
        if self.is_discrete:
            self.policy.set_eps_training(hp.epsilon.at(env_step))  # type: ignore[attr-defined]
        if isinstance(self.buffer, PrioritizedVectorReplayBuffer):
            frac = min(env_step / max(self.config.steps, 1), 1.0)
            prio = hp.prioritized
            self.buffer.set_beta(prio.beta + frac * (prio.beta_final - prio.beta))

    def eval_buffer(self) -> ReplayBuffer:
        """The evaluation collector's buffer. Tianshou's default keeps 10 000 transitions per env
        with ``obs`` and ``obs_next`` both stored: 2.8 GB of Atari frames for 5 envs, so Atari
        evaluation stores each frame once, 2 000 per env (returns still cover whole episodes)."""
        n = len(self.test_envs)
        if self.env.is_atari:
            from .frame_buffer import make_replay_buffer

            return make_replay_buffer(2000 * n, n, frame_stack=self.config.atari.frame_stack)
        return FastVectorReplayBuffer(10_000 * n, n)

    def close(self) -> None:
        """Close the training and test envs (closing twice is harmless)."""
        for envs in (self.train_envs, self.test_envs):
            with contextlib.suppress(Exception):  # already closed
                envs.close()


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``. ``cuda`` without one is an error."""
    has_cuda = torch.cuda.is_available()
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    if device == "cuda" and not has_cuda:
        raise UsageError("device: cuda was asked for but torch sees no GPU; use device: auto or cpu")
    return device


_VECTOR_ENVS: dict[str, type[BaseVectorEnv]] = {"dummy": DummyVectorEnv, "subproc": SubprocVectorEnv,
                                                 "shmem": ShmemVectorEnv}


def _make_envs(config: RunConfig, env: EnvInfo, n: int, *, training: bool) -> BaseVectorEnv:
    return _VECTOR_ENVS[config.env_workers]([env_factory(env.env_id, config, training=training) for _ in range(n)])


def _make_buffer(config: RunConfig, env: EnvInfo, n_envs: int) -> ReplayBuffer:
    hp = config.algorithm
    prio = hp.prioritized
    if env.is_atari:
        from .frame_buffer import make_replay_buffer

        return make_replay_buffer(hp.buffer_size, n_envs, prioritized=prio.enabled, alpha=prio.alpha,
                                  beta=prio.beta, frame_stack=config.atari.frame_stack,
                                  clip_rewards=config.atari.clip_rewards)
    if prio.enabled:
        return FastPrioritizedVectorReplayBuffer(hp.buffer_size, n_envs, alpha=prio.alpha, beta=prio.beta,
                                                 weight_norm=True)
    return FastVectorReplayBuffer(hp.buffer_size, n_envs)


def build_setup(
    config: RunConfig,
    env: EnvInfo,
    *,
    cache: ExplorationCache | None,
    rng: np.random.Generator | None = None,
    counter: EnvStepCounter | None = None,
) -> AlgoSetup:
    """Build ``config.algo`` for ``env`` as ``config`` says.

    :param cache: exploration cache the policy reads; None gives Tianshou's stock exploration.
    :param rng: generator for the exploration draws (``default_rng(config.seed)`` if None).
    """
    algo = config.algo
    if (algo in DISCRETE_ALGOS) != env.is_discrete:
        kind = "discrete" if env.is_discrete else "continuous"
        suitable = DISCRETE_ALGOS if env.is_discrete else CONTINUOUS_ALGOS
        raise ValueError(
            f"{algo} does not fit {env.env_id}, which has {kind} actions; use one of {', '.join(suitable)}")
    torch.set_num_threads(config.torch_threads)
    device = resolve_device(config.device)
    seed = config.seed
    rng = rng if rng is not None else np.random.default_rng(seed)
    counter = counter if counter is not None else EnvStepCounter()

    np.random.seed(seed)  # Tianshou's replay sampling uses the global generator
    torch.manual_seed(seed)
    train_envs = _make_envs(config, env, config.train_envs, training=True)
    test_envs = _make_envs(config, env, max(1, min(config.test_envs, config.eval.episodes)), training=False)
    train_envs.seed(seed)
    test_envs.seed(seed + 10_000)

    fast.enable_numba_cache()  # before the policy and the buffer compile Tianshou's kernels
    builder: Callable[..., tuple[OffPolicyAlgorithm, Any]] = _BUILDERS[algo]
    algorithm, noise = builder(config, env, train_envs.action_space[0], cache, rng, counter, device)
    fast.accelerate(algorithm)
    algorithm.to(device)
    buffer = _make_buffer(config, env, len(train_envs))
    # Tianshou samples uniform replay from the buffer's own RandomState(42) whatever the seed: seed it
    seed_sampler(buffer, seed)
    setup = AlgoSetup(config, env, algorithm, algorithm.policy, train_envs, test_envs, buffer, noise, device)
    if setup.is_discrete:
        setup.policy.set_eps_inference(config.algorithm.epsilon.eval)  # type: ignore[attr-defined]
    setup.on_env_step(0)
    return setup


def _adam(lr: float, hp: AlgorithmConfig) -> AdamOptimizerFactory:
    return fast.adam(lr, hp.adam_eps, fused=hp.fused_adam)


# --------------------------------------------------------------------------- discrete builders
def _attach(policy: GuidedEpsGreedyMixin, cache: ExplorationCache | None, rng: np.random.Generator,
            counter: EnvStepCounter) -> None:
    if cache is not None:
        policy.attach_explorer(cache, rng, counter)


def _q_network(config: RunConfig, env: EnvInfo, n: int, device: str) -> torch.nn.Module:
    """The Q-network of a DQN-family algorithm: the Nature DQN torso for Atari frames, an MLP
    (Tianshou's ``Net``) otherwise."""
    hp, hidden, algo = config.algorithm, config.network.hidden_sizes, config.algo
    if env.is_atari:
        from .networks import build_atari_q_network

        return build_atari_q_network(algo, env.obs_shape, n, num_atoms=hp.num_atoms,
                                     num_quantiles=hp.num_quantiles, noisy_std=hp.noisy_std,
                                     features=hidden[-1], device=device)
    if algo in ("dqn", "double-dqn", "dueling-dqn", "rnd-dqn", "icm-dqn"):
        head = {"hidden_sizes": hidden[-1:]}
        dueling = (head, head) if algo == "dueling-dqn" else None
        return Net(state_shape=env.obs_shape, action_shape=n, hidden_sizes=hidden[:-1] if dueling else hidden,
                   dueling_param=dueling)
    if algo == "c51":
        return Net(state_shape=env.obs_shape, action_shape=n, hidden_sizes=hidden, softmax=True,
                   num_atoms=hp.num_atoms)
    if algo == "rainbow":
        def noisy(x: int, y: int) -> NoisyLinear:
            return NoisyLinear(x, y, hp.noisy_std)

        head = {"linear_layer": noisy, "hidden_sizes": hidden[-1:]}
        return Net(state_shape=env.obs_shape, action_shape=n, hidden_sizes=hidden[:-1], softmax=True,
                   num_atoms=hp.num_atoms, dueling_param=(head, dict(head)))
    if algo == "qrdqn":
        return Net(state_shape=env.obs_shape, action_shape=n, hidden_sizes=hidden, num_atoms=hp.num_quantiles)
    if algo == "noisy-dqn":  # every layer is fully connected, so every layer is noisy (as NoisyNet's FC layers)
        return Net(state_shape=env.obs_shape, action_shape=n, hidden_sizes=hidden,
                   linear_layer=lambda x, y: NoisyLinear(x, y, hp.noisy_std))
    raise ValueError(f"not a DQN-family algorithm: {algo!r}")


def _build_discrete(config: RunConfig, env: EnvInfo, space: Any, cache: ExplorationCache | None,
                    rng: np.random.Generator, counter: EnvStepCounter, device: str) -> tuple[OffPolicyAlgorithm, None]:
    hp, algo = config.algorithm, config.algo
    n = int(space.n)
    net = _q_network(config, env, n, device)
    eps = dict(eps_training=hp.epsilon.start, eps_inference=hp.epsilon.eval)
    common = dict(optim=_adam(hp.lr, hp), gamma=hp.gamma, n_step_return_horizon=hp.n_step,
                  target_update_freq=hp.target_update_freq)
    algorithm: OffPolicyAlgorithm
    if algo in ("c51", "rainbow"):
        policy: Any = GuidedC51Policy(model=net, action_space=space, num_atoms=hp.num_atoms, v_min=hp.v_min,
                                      v_max=hp.v_max, **eps)
        _attach(policy, cache, rng, counter)
        algorithm = (NStepRainbowDQN if algo == "rainbow" else NStepC51)(policy=policy, **common)
    elif algo == "qrdqn":
        policy = GuidedQRDQNPolicy(model=net, action_space=space, **eps)
        _attach(policy, cache, rng, counter)
        algorithm = QRDQN(policy=policy, num_quantiles=hp.num_quantiles, **common)
    else:
        policy = GuidedDQNPolicy(model=net, action_space=space, **eps)
        _attach(policy, cache, rng, counter)
        algorithm = DQN(policy=policy, is_double=algo != "dqn", huber_loss_delta=hp.huber_loss_delta, **common)
    return algorithm, None


# --------------------------------------------------------------------------- continuous builders
def noise_sigma(config: RunConfig, env: EnvInfo) -> float | np.ndarray:
    """σ in normalised action units (a value per dimension when given in env units)."""
    noise = config.algorithm.noise
    if noise.units == "normalized":
        return noise.sigma
    half_range = (np.asarray(env.spec.high, dtype=np.float64) - np.asarray(env.spec.low, dtype=np.float64)) / 2.0
    return noise.sigma / half_range


def _noise(config: RunConfig, env: EnvInfo, cache: ExplorationCache | None, rng: np.random.Generator,
           counter: EnvStepCounter) -> Any:
    sigma = noise_sigma(config, env)
    if cache is not None:
        return GuidedGaussianNoise(cache, sigma, rng, apply_fraction=config.explorer.apply_fraction, counter=counter)
    if np.ndim(sigma) == 0:
        return GaussianNoise(sigma=float(sigma)) if float(sigma) > 0 else None
    return GuidedGaussianNoise(ExplorationCache(env.spec), sigma, rng, counter=counter)  # zero bias, per-dimension σ


def _critic(config: RunConfig, env: EnvInfo, act_dim: int) -> ContinuousCritic:
    net = Net(state_shape=env.obs_shape, action_shape=act_dim, hidden_sizes=config.network.hidden_sizes, concat=True)
    return ContinuousCritic(preprocess_net=net)


def _build_deterministic(config: RunConfig, env: EnvInfo, space: Any, cache: ExplorationCache | None,
                         rng: np.random.Generator, counter: EnvStepCounter,
                         device: str) -> tuple[OffPolicyAlgorithm, Any]:
    hp = config.algorithm
    act_dim = int(np.prod(space.shape))
    net = Net(state_shape=env.obs_shape, hidden_sizes=config.network.hidden_sizes)
    actor = ContinuousActorDeterministic(preprocess_net=net, action_shape=act_dim, max_action=1.0)
    noise = _noise(config, env, cache, rng, counter)
    policy = ClippedContinuousDeterministicPolicy(actor=actor, exploration_noise=noise, action_space=space)
    common = dict(policy=policy, policy_optim=_adam(hp.lr, hp), critic=_critic(config, env, act_dim),
                  critic_optim=_adam(hp.critic_lr, hp), tau=hp.tau, gamma=hp.gamma,
                  n_step_return_horizon=hp.n_step)
    if config.algo == "ddpg":
        return DDPG(**common), noise
    algorithm = BoundedTD3(**common, critic2=_critic(config, env, act_dim), critic2_optim=_adam(hp.critic_lr, hp),
                    policy_noise=hp.policy_noise, update_actor_freq=hp.update_actor_freq, noise_clip=hp.noise_clip)
    return algorithm, noise


def _build_sac(config: RunConfig, env: EnvInfo, space: Any, cache: ExplorationCache | None,
               rng: np.random.Generator, counter: EnvStepCounter, device: str) -> tuple[OffPolicyAlgorithm, Any]:
    hp = config.algorithm
    act_dim = int(np.prod(space.shape))
    net = Net(state_shape=env.obs_shape, hidden_sizes=config.network.hidden_sizes)
    # the standard deviation depends on the state, as in Tianshou's own SAC examples
    actor = ContinuousActorProbabilistic(preprocess_net=net, action_shape=act_dim, unbounded=True,
                                         conditioned_sigma=True)
    noise = _noise(config, env, cache, rng, counter)
    policy = GuidedSACPolicy(actor=actor, exploration_noise=noise, action_space=space)
    alpha = AutoAlpha(target_entropy=-float(act_dim), log_alpha=math.log(hp.sac_alpha), optim=_adam(hp.lr, hp))
    algorithm = SAC(policy=policy, policy_optim=_adam(hp.lr, hp), critic=_critic(config, env, act_dim),
                    critic_optim=_adam(hp.critic_lr, hp), critic2=_critic(config, env, act_dim),
                    critic2_optim=_adam(hp.critic_lr, hp), tau=hp.tau, gamma=hp.gamma, alpha=alpha,
                    n_step_return_horizon=hp.n_step)
    return algorithm, noise


# --------------------------------------------------------------------------- exploration baselines
def _build_noisy_dqn(config: RunConfig, env: EnvInfo, space: Any, cache: ExplorationCache | None,
                     rng: np.random.Generator, counter: EnvStepCounter,
                     device: str) -> tuple[OffPolicyAlgorithm, None]:
    """NoisyNet-DQN (:mod:`.noisy`). It has no ε-random draw to guide: the cache is never attached."""
    hp = config.algorithm
    if cache is not None:
        log.warning("noisy-dqn explores with its noisy layers only: the LLM's exploration updates are not used")
    net = _q_network(config, env, int(space.n), device)
    policy = GuidedDQNPolicy(model=net, action_space=space, eps_training=hp.epsilon.start,
                             eps_inference=hp.epsilon.eval)
    algorithm = NoisyDQN(policy=policy, optim=_adam(hp.lr, hp), gamma=hp.gamma, n_step_return_horizon=hp.n_step,
                         target_update_freq=hp.target_update_freq, is_double=False,
                         huber_loss_delta=hp.huber_loss_delta)
    return algorithm, None


def _build_rnd_dqn(config: RunConfig, env: EnvInfo, space: Any, cache: ExplorationCache | None,
                   rng: np.random.Generator, counter: EnvStepCounter, device: str) -> tuple[OffPolicyAlgorithm, None]:
    """RND-DQN (:mod:`.rnd`): DQN's ε-greedy, guided like DQN's, plus the intrinsic reward."""
    hp, rnd_hp = config.algorithm, config.algorithm.rnd
    net = _q_network(config, env, int(space.n), device)
    policy = RNDDQNPolicy(model=net, action_space=space, eps_training=hp.epsilon.start, eps_inference=hp.epsilon.eval)
    _attach(policy, cache, rng, counter)
    rnd = build_rnd(env.obs_shape, atari=env.is_atari, hidden_sizes=config.network.hidden_sizes,
                    out_dim=rnd_hp.output_dim, gamma=rnd_hp.gamma, obs_clip=rnd_hp.obs_clip, device=device)
    algorithm = RNDDQN(policy=policy, rnd=rnd, rnd_optim=_adam(rnd_hp.lr, hp), intrinsic_coef=rnd_hp.coef,
                       optim=_adam(hp.lr, hp), gamma=hp.gamma, n_step_return_horizon=hp.n_step,
                       target_update_freq=hp.target_update_freq, is_double=False,
                       huber_loss_delta=hp.huber_loss_delta)
    return algorithm, None


def _build_icm_dqn(config: RunConfig, env: EnvInfo, space: Any, cache: ExplorationCache | None,
                   rng: np.random.Generator, counter: EnvStepCounter, device: str) -> tuple[OffPolicyAlgorithm, None]:
    """ICM-DQN (:mod:`.icm`): DQN's ε-greedy, guided like DQN's, plus the curiosity reward."""
    hp, icm_hp = config.algorithm, config.algorithm.icm
    n = int(space.n)
    net = _q_network(config, env, n, device)
    policy = GuidedDQNPolicy(model=net, action_space=space, eps_training=hp.epsilon.start,
                             eps_inference=hp.epsilon.eval)
    _attach(policy, cache, rng, counter)
    dqn = DQN(policy=policy, optim=_adam(hp.lr, hp), gamma=hp.gamma, n_step_return_horizon=hp.n_step,
              target_update_freq=hp.target_update_freq, is_double=False, huber_loss_delta=hp.huber_loss_delta)
    icm = build_icm(env.obs_shape, n, atari=env.is_atari, hidden_sizes=config.network.hidden_sizes, device=device)
    algorithm = ICMDQN(wrapped_algorithm=dqn, model=icm, optim=_adam(hp.lr, hp), lr_scale=icm_hp.lr_scale,
                       reward_scale=icm_hp.reward_scale, forward_loss_weight=icm_hp.forward_loss_weight)
    return algorithm, None


_BUILDERS: dict[str, Callable[..., tuple[OffPolicyAlgorithm, Any]]] = {
    **{name: _build_discrete for name in DISCRETE_ALGOS},
    "ddpg": _build_deterministic,
    "td3": _build_deterministic,
    "sac": _build_sac,
    "curl": build_curl,  # after the DQN family's entry, which it replaces
    "noisy-dqn": _build_noisy_dqn,
    "rnd-dqn": _build_rnd_dqn,
    "icm-dqn": _build_icm_dqn,
}
