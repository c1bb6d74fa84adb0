"""LLM-guided Gaussian noise: its mean is the cached bias, in normalised units, on real envs."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest
import torch
from tianshou.algorithm.modelfree.ddpg import ContinuousDeterministicPolicy
from tianshou.algorithm.modelfree.sac import SACPolicy
from tianshou.data import Batch, Collector, VectorReplayBuffer
from tianshou.env import DummyVectorEnv
from tianshou.utils.net.common import Net
from tianshou.utils.net.continuous import ContinuousActorDeterministic, ContinuousActorProbabilistic
from tianshou.utils.torch_utils import policy_within_training_step

from explorer_pipeline.cache import ExplorationCache
from explorer_pipeline.types import ActionSpec, ExplorationUpdate
from tianshou_integration import EnvStepCounter, GuidedGaussianNoise, GuidedSACPolicy, attach_continuous
from tianshou_integration.continuous import ClipNoisyActionMixin, ClippedContinuousDeterministicPolicy

SIGMA = 0.1


def bias_cache(bias, low=(-1.0,), high=(1.0,)) -> ExplorationCache:
    cache = ExplorationCache(ActionSpec.continuous(list(low), list(high)))
    cache.publish(ExplorationUpdate(1, "bias", tuple(bias)))
    return cache


def mean_bound(n: int, sigma: float = SIGMA) -> float:
    return 5 * sigma / np.sqrt(n)


def test_noise_mean_is_the_bias_per_dimension():
    cache = bias_cache((-0.3, 0.2), low=(-1.0, -2.0), high=(1.0, 2.0))
    noise = GuidedGaussianNoise(cache, SIGMA, np.random.default_rng(0))
    samples = noise((20_000, 2))
    assert np.all(np.abs(samples.mean(axis=0) - [-0.3, 0.2]) < mean_bound(20_000))
    assert np.all(np.abs(samples.std(axis=0) - SIGMA) < 0.01)


def test_apply_fraction_scales_the_mean():
    cache = bias_cache((-0.4,))
    half = GuidedGaussianNoise(cache, SIGMA, np.random.default_rng(1), apply_fraction=0.5)(( 20_000, 1))
    none = GuidedGaussianNoise(cache, SIGMA, np.random.default_rng(2), apply_fraction=0.0)((20_000, 1))
    # a mixture: half the rows carry the bias -> mean -0.2, std of the mean about 0.2/sqrt(n)
    assert abs(half.mean() + 0.2) < 5 * 0.25 / np.sqrt(20_000)
    assert abs(none.mean()) < mean_bound(20_000)


def test_per_dimension_sigma_and_bad_arguments():
    cache = bias_cache((0.0, 0.0), low=(-1.0, -1.0), high=(1.0, 1.0))
    samples = GuidedGaussianNoise(cache, (0.05, 0.3), np.random.default_rng(0))((20_000, 2))
    assert np.allclose(samples.std(axis=0), (0.05, 0.3), atol=0.01)
    with pytest.raises(ValueError):
        GuidedGaussianNoise(cache, -0.1)
    with pytest.raises(ValueError):
        GuidedGaussianNoise(cache, (0.1, 0.1, 0.1))
    with pytest.raises(ValueError):
        GuidedGaussianNoise(cache, 0.1, apply_fraction=1.5)
    with pytest.raises(ValueError):
        GuidedGaussianNoise(ExplorationCache(ActionSpec.discrete(2)), 0.1)


def test_first_application_is_recorded():
    cache = bias_cache((0.1,))
    counter = EnvStepCounter(17)
    noise = GuidedGaussianNoise(cache, SIGMA, np.random.default_rng(0), counter=counter)
    noise((4, 1))
    counter.value = 21
    noise((4, 1))
    assert cache.applied_at(1) == 17


def ddpg_policy(env: gym.Env, noise, cls: type = ContinuousDeterministicPolicy) -> ContinuousDeterministicPolicy:
    torch.manual_seed(0)
    net = Net(state_shape=env.observation_space.shape, hidden_sizes=(16,))
    actor = ContinuousActorDeterministic(preprocess_net=net, action_shape=env.action_space.shape, max_action=1.0)
    return cls(actor=actor, exploration_noise=noise, action_space=env.action_space)


def collect_noise(policy, env_id: str, n_step: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Collect with exploration noise; return (noise actually added, action the env received)."""
    envs = DummyVectorEnv([lambda: gym.make(env_id) for _ in range(2)])
    envs.seed(0)
    buffer = VectorReplayBuffer(2 * 1000, 2)
    collector = Collector(policy, envs, buffer, exploration_noise=True)
    collector.reset()
    with policy_within_training_step(policy):
        collector.collect(n_step=n_step)
    data = buffer[buffer.sample_indices(0)]
    with torch.no_grad():
        deterministic = policy(Batch(obs=data.obs, info=Batch())).act.numpy()
    envs.close()
    return data.act - deterministic, policy.map_action(data.act)


def test_negative_bias_on_mountain_car_continuous_pushes_actions_down():
    env = gym.make("MountainCarContinuous-v0")
    cache = bias_cache((-0.5,))
    policy = ddpg_policy(env, GuidedGaussianNoise(cache, SIGMA, np.random.default_rng(0)))
    applied, env_actions = collect_noise(policy, "MountainCarContinuous-v0")
    n = len(applied)
    assert applied.mean() < 0
    assert abs(applied.mean() + 0.5) < mean_bound(n)
    # the baseline (zero bias) on the same policy: env actions are clearly higher
    baseline = ddpg_policy(env, GuidedGaussianNoise(bias_cache((0.0,)), SIGMA, np.random.default_rng(0)))
    base_applied, base_env_actions = collect_noise(baseline, "MountainCarContinuous-v0")
    assert abs(base_applied.mean()) < mean_bound(n)
    assert env_actions.mean() < base_env_actions.mean() - 0.3


def test_bias_is_in_normalised_units_on_pendulum():
    """Pendulum's torque range is [-2, 2]: a normalised bias of 0.5 is 1.0 N m in the env."""
    env = gym.make("Pendulum-v1")
    cache = bias_cache((0.5,), low=(-2.0,), high=(2.0,))
    policy = ddpg_policy(env, GuidedGaussianNoise(cache, 0.01, np.random.default_rng(0)))
    applied, env_actions = collect_noise(policy, "Pendulum-v1")
    zero = ddpg_policy(env, GuidedGaussianNoise(bias_cache((0.0,), (-2.0,), (2.0,)), 0.01, np.random.default_rng(0)))
    _, zero_env_actions = collect_noise(zero, "Pendulum-v1")
    assert abs(applied.mean() - 0.5) < 0.01
    # 0.5 normalised = a quarter of the 4 N m range = +1.0 N m (the untrained actor's output is small: no clipping)
    assert abs((env_actions.mean() - zero_env_actions.mean()) - 1.0) < 0.15


def sac_policy(env: gym.Env, noise=None, cls=SACPolicy) -> SACPolicy:
    torch.manual_seed(0)
    net = Net(state_shape=env.observation_space.shape, hidden_sizes=(16,))
    actor = ContinuousActorProbabilistic(preprocess_net=net, action_shape=env.action_space.shape, unbounded=True)
    return cls(actor=actor, exploration_noise=noise, action_space=env.action_space)


def test_sac_with_a_bias_clips_instead_of_crashing():
    env = gym.make("MountainCarContinuous-v0")
    cache = bias_cache((0.9,))
    policy = sac_policy(env, cls=GuidedSACPolicy)
    noise = attach_continuous(policy, cache, sigma=0.3, rng=np.random.default_rng(0))
    assert type(policy) is GuidedSACPolicy
    assert policy.exploration_noise is noise
    envs = DummyVectorEnv([lambda: gym.make("MountainCarContinuous-v0") for _ in range(2)])
    buffer = VectorReplayBuffer(2000, 2)
    collector = Collector(policy, envs, buffer, exploration_noise=True)
    collector.reset()
    with policy_within_training_step(policy):
        collector.collect(n_step=200)  # stock SACPolicy would fail map_action's range assertion
    acts = buffer[buffer.sample_indices(0)].act
    assert acts.min() >= -1.0 and acts.max() <= 1.0
    assert acts.mean() > 0.3  # pushed up by the bias


def test_attach_continuous_to_a_clipping_ddpg_policy():
    env = gym.make("Pendulum-v1")
    policy = ddpg_policy(env, None, cls=ClippedContinuousDeterministicPolicy)
    actor = policy.actor
    noise = attach_continuous(policy, bias_cache((0.2,), (-2.0,), (2.0,)), sigma=0.05)
    assert type(policy) is ClippedContinuousDeterministicPolicy
    assert policy.actor is actor  # same object, same networks
    assert policy.exploration_noise is noise
    assert repr(noise) == "GuidedGaussianNoise(sigma=0.05, apply_fraction=1.0)"
    again = attach_continuous(policy, bias_cache((0.1,), (-2.0,), (2.0,)), sigma=0.05)
    assert policy.exploration_noise is again and type(policy) is ClippedContinuousDeterministicPolicy


@pytest.mark.parametrize(("stock", "clipped"), [(ContinuousDeterministicPolicy, ClippedContinuousDeterministicPolicy),
                                                (SACPolicy, GuidedSACPolicy)])
def test_attach_continuous_names_the_clipping_class_for_a_stock_policy(stock, clipped):
    env = gym.make("Pendulum-v1")
    policy = ddpg_policy(env, None) if stock is ContinuousDeterministicPolicy else sac_policy(env)
    with pytest.raises(TypeError) as info:
        attach_continuous(policy, bias_cache((0.2,), (-2.0,), (2.0,)), sigma=0.05)
    message = str(info.value)
    assert f"got {stock.__name__}: construct {clipped.__name__} instead (same arguments)" in message
    assert "`class ClippedMyPolicy(ClipNoisyActionMixin, MyPolicy): pass`" in message
    assert type(policy) is stock and policy.exploration_noise is None  # nothing was changed


class MyDeterministicPolicy(ContinuousDeterministicPolicy):
    """A user's own policy class, which has no clipping twin in the package."""


def test_the_recipe_in_the_error_makes_a_clipping_class():
    env = gym.make("Pendulum-v1")
    with pytest.raises(TypeError) as info:
        attach_continuous(ddpg_policy(env, None, cls=MyDeterministicPolicy), bias_cache((0.2,), (-2.0,), (2.0,)))
    recipe = re.search(r"`(class .*)`", str(info.value)).group(1)
    assert recipe == "class ClippedMyDeterministicPolicy(ClipNoisyActionMixin, MyDeterministicPolicy): pass"
    namespace = {"ClipNoisyActionMixin": ClipNoisyActionMixin, "MyDeterministicPolicy": MyDeterministicPolicy}
    exec(recipe, namespace)
    policy = ddpg_policy(env, None, cls=namespace["ClippedMyDeterministicPolicy"])
    attach_continuous(policy, bias_cache((5.0,), (-2.0,), (2.0,)), sigma=0.01)  # far past the bound
    noisy = policy.add_exploration_noise(np.zeros((4, 1)), Batch(obs=np.zeros((4, 3)), info=Batch()))
    np.testing.assert_array_equal(noisy, np.ones((4, 1)))  # clipped to the unit box: what the env executes
