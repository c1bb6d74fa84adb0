"""LLM-guided epsilon-greedy: exploratory actions follow the cached distribution; greedy and
evaluation actions do not; action masks hold; the first application of an update is recorded."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest
import torch
from scipy import stats
from tianshou.algorithm.modelfree.c51 import C51Policy
from tianshou.algorithm.modelfree.dqn import DiscreteQLearningPolicy
from tianshou.data import Batch, Collector, VectorReplayBuffer
from tianshou.env import DummyVectorEnv
from tianshou.utils.net.common import Net
from tianshou.utils.torch_utils import policy_within_training_step

from explorer_pipeline.cache import ExplorationCache
from explorer_pipeline.types import ActionSpec, ExplorationUpdate
from tianshou_integration import EnvStepCounter, GuidedDQNPolicy, attach_discrete
from tianshou_integration.discrete import GuidedC51Policy, GuidedEpsGreedyMixin, sample_guided_actions

from . import envs  # noqa: F401  (registers MaskedChoice-v0)

N_ACTIONS = 4


def make_policy(n: int = N_ACTIONS, obs_dim: int = 3, cls: type = GuidedDQNPolicy, **kwargs) -> DiscreteQLearningPolicy:
    torch.manual_seed(0)
    net = Net(state_shape=obs_dim, action_shape=n, hidden_sizes=(16,))
    return cls(model=net, action_space=gym.spaces.Discrete(n), **kwargs)


def publish(cache: ExplorationCache, values) -> ExplorationUpdate:
    return cache.publish(ExplorationUpdate(cache.next_version(), "distribution", tuple(values)))


def obs_batch(size: int, obs_dim: int = 3, mask: np.ndarray | None = None) -> Batch:
    obs = np.random.default_rng(1).normal(size=(size, obs_dim)).astype(np.float32)
    if mask is None:
        return Batch(obs=obs, info=Batch())
    return Batch(obs=Batch(obs=obs, mask=mask), info=Batch())


def greedy_actions(policy: DiscreteQLearningPolicy, batch: Batch) -> np.ndarray:
    with torch.no_grad():
        return policy(batch).act.copy()


def test_exploratory_actions_follow_the_distribution():
    policy = make_policy(eps_training=1.0)
    cache = ExplorationCache(ActionSpec.discrete(N_ACTIONS))
    probs = (0.1, 0.2, 0.3, 0.4)
    publish(cache, probs)
    policy.attach_explorer(cache, np.random.default_rng(7))
    batch = obs_batch(4000)
    with policy_within_training_step(policy):
        acts = policy.add_exploration_noise(greedy_actions(policy, batch), batch)
    counts = np.bincount(acts, minlength=N_ACTIONS)
    # chi-square goodness of fit: a wrong distribution (e.g. uniform) gives p ~ 1e-100 here
    assert stats.chisquare(counts, f_exp=np.array(probs) * counts.sum()).pvalue > 1e-4
    assert stats.chisquare(counts).pvalue < 1e-6  # and it is clearly not uniform


def test_one_hot_distribution_makes_every_exploratory_action_that_action():
    policy = make_policy(eps_training=1.0)
    cache = ExplorationCache(ActionSpec.discrete(N_ACTIONS))
    publish(cache, (0.0, 0.0, 1.0, 0.0))
    policy.attach_explorer(cache, np.random.default_rng(0))
    batch = obs_batch(500)
    with policy_within_training_step(policy):
        acts = policy.add_exploration_noise(greedy_actions(policy, batch), batch)
    assert set(acts.tolist()) == {2}


def test_epsilon_gate_is_kept():
    policy = make_policy(eps_training=0.25)
    cache = ExplorationCache(ActionSpec.discrete(N_ACTIONS))
    batch = obs_batch(4000)
    greedy = greedy_actions(policy, batch)
    target = 3 if np.bincount(greedy, minlength=N_ACTIONS)[3] < 100 else 0  # an action greedy rarely picks
    one_hot = [0.0] * N_ACTIONS
    one_hot[target] = 1.0
    publish(cache, one_hot)
    policy.attach_explorer(cache, np.random.default_rng(3))
    with policy_within_training_step(policy):
        acts = policy.add_exploration_noise(greedy.copy(), batch)
    changed = np.count_nonzero(acts != greedy)
    assert np.all(acts[acts != greedy] == target)
    # about eps * (share of rows whose greedy action is not the target) rows change: binomial bound
    n_eligible = np.count_nonzero(greedy != target)
    expected = 0.25 * n_eligible
    assert abs(changed - expected) < 5 * np.sqrt(n_eligible * 0.25 * 0.75)


def test_greedy_and_evaluation_actions_ignore_the_cache():
    policy = make_policy(eps_training=1.0, eps_inference=0.0)
    cache = ExplorationCache(ActionSpec.discrete(N_ACTIONS))
    publish(cache, (0.0, 0.0, 0.0, 1.0))
    policy.attach_explorer(cache, np.random.default_rng(0))
    batch = obs_batch(300)
    greedy = greedy_actions(policy, batch)
    # evaluation: not within a training step, eps_inference = 0 -> the greedy action
    assert np.array_equal(policy.add_exploration_noise(greedy.copy(), batch), greedy)
    # training with eps 0 -> greedy as well
    policy.set_eps_training(0.0)
    with policy_within_training_step(policy):
        assert np.array_equal(policy.add_exploration_noise(greedy.copy(), batch), greedy)


def test_evaluation_exploration_stays_uniform():
    """With eps_inference > 0, evaluation explores like Tianshou (uniform), not with the LLM's distribution."""
    policy = make_policy(eps_training=1.0, eps_inference=1.0)
    cache = ExplorationCache(ActionSpec.discrete(N_ACTIONS))
    publish(cache, (0.0, 0.0, 0.0, 1.0))
    policy.attach_explorer(cache, np.random.default_rng(0))
    batch = obs_batch(2000)
    np.random.seed(0)
    acts = policy.add_exploration_noise(greedy_actions(policy, batch), batch)
    counts = np.bincount(acts, minlength=N_ACTIONS)
    assert stats.chisquare(counts).pvalue > 1e-4
    assert cache.applied_at(1) is None  # evaluation never counts as applying an update


def test_masked_actions_are_never_drawn():
    policy = make_policy(eps_training=1.0)
    cache = ExplorationCache(ActionSpec.discrete(N_ACTIONS))
    publish(cache, (0.7, 0.1, 0.0, 0.2))
    policy.attach_explorer(cache, np.random.default_rng(5))
    rng = np.random.default_rng(9)
    mask = rng.random((3000, N_ACTIONS)) < 0.5
    mask[:, 1] = True  # at least one legal action per row
    mask[:100] = [False, False, True, False]  # only a zero-probability action is legal -> it is taken
    batch = obs_batch(3000, mask=mask.astype(np.int8))
    with policy_within_training_step(policy):
        acts = policy.add_exploration_noise(greedy_actions(policy, batch), batch)
    assert mask[np.arange(3000), acts].all()
    assert np.all(acts[:100] == 2)
    # rows where actions 0 and 1 are the only legal ones: renormalised 0.7/0.8 vs 0.1/0.8
    only01 = np.where(mask[:, 0] & mask[:, 1] & ~mask[:, 2] & ~mask[:, 3])[0]
    share0 = np.mean(acts[only01] == 0)
    assert abs(share0 - 0.875) < 5 * np.sqrt(0.875 * 0.125 / len(only01))


def test_sample_guided_actions_edge_cases():
    rng = np.random.default_rng(0)
    probs = np.array([0.0, 1.0, 0.0])
    assert set(sample_guided_actions(probs, 200, rng).tolist()) == {1}
    legal = np.array([[True, False, True]] * 3000)  # all legal actions have probability 0 -> uniform over them
    counts = np.bincount(sample_guided_actions(probs, 3000, rng, legal), minlength=3)
    assert counts[1] == 0 and stats.chisquare(counts[[0, 2]]).pvalue > 1e-3, counts
    none_legal = np.zeros((3000, 3), dtype=bool)  # no legal action: uniform over all, like Tianshou
    counts = np.bincount(sample_guided_actions(probs, 3000, rng, none_legal), minlength=3)
    # uniform over all three, not the cached one-hot: a biased fallback (e.g. 0.05/0.9/0.05) gives p ~ 0
    assert counts.min() > 0 and stats.chisquare(counts).pvalue > 1e-3, counts


def test_collector_respects_the_mask_of_an_env():
    env = gym.make("MaskedChoice-v0")
    vector_env = DummyVectorEnv([lambda: gym.make("MaskedChoice-v0") for _ in range(2)])
    torch.manual_seed(0)
    net = Net(state_shape=4, action_shape=4, hidden_sizes=(16,))
    policy = GuidedDQNPolicy(model=net, action_space=env.action_space, eps_training=1.0)
    cache = ExplorationCache(ActionSpec.discrete(4))
    publish(cache, (0.9, 0.05, 0.05, 0.0))  # most mass on the illegal action 0
    policy.attach_explorer(cache, np.random.default_rng(0))
    buffer = VectorReplayBuffer(200, 2)
    collector = Collector(policy, vector_env, buffer, exploration_noise=True)
    collector.reset()
    with policy_within_training_step(policy):
        collector.collect(n_step=160)  # the env raises on an illegal action
    acts = buffer[buffer.sample_indices(0)].act
    assert 0 not in acts.tolist()
    assert {1, 2} <= set(acts.tolist())  # renormalised 0.05/0.05 -> 1 and 2 equally likely
    assert 3 not in acts.tolist()  # probability 0 and legal alternatives exist


def test_first_application_of_an_update_is_recorded():
    policy = make_policy(eps_training=1.0)
    cache = ExplorationCache(ActionSpec.discrete(N_ACTIONS))
    counter = EnvStepCounter()
    policy.attach_explorer(cache, np.random.default_rng(0), counter)
    batch = obs_batch(8)
    counter.value = 40
    publish(cache, (0.25,) * 4)
    with policy_within_training_step(policy):
        policy.add_exploration_noise(greedy_actions(policy, batch), batch)
        counter.value = 48
        policy.add_exploration_noise(greedy_actions(policy, batch), batch)
    assert cache.applied_at(1) == 40
    counter.value = 64
    publish(cache, (0.5, 0.5, 0.0, 0.0))
    with policy_within_training_step(policy):
        policy.add_exploration_noise(greedy_actions(policy, batch), batch)
    assert cache.applied_at(2) == 64


def q_net(cls: type) -> Net:
    torch.manual_seed(0)
    c51 = issubclass(cls, C51Policy)
    return Net(state_shape=3, action_shape=N_ACTIONS, hidden_sizes=(16,), softmax=c51, num_atoms=5 if c51 else 1)


def build(cls: type, **kwargs) -> DiscreteQLearningPolicy:
    extra = {"num_atoms": 5} if issubclass(cls, C51Policy) else {}
    return cls(model=q_net(cls), action_space=gym.spaces.Discrete(N_ACTIONS), eps_training=1.0, **extra, **kwargs)


@pytest.mark.parametrize("cls", [GuidedDQNPolicy, GuidedC51Policy])
def test_attach_discrete_to_a_guided_policy(cls):
    policy = build(cls)
    cache = ExplorationCache(ActionSpec.discrete(N_ACTIONS))
    publish(cache, (0.0, 1.0, 0.0, 0.0))
    same = attach_discrete(policy, cache, np.random.default_rng(0))
    assert same is policy and type(policy) is cls  # the class is never changed
    batch = obs_batch(100)
    with policy_within_training_step(policy):
        acts = policy.add_exploration_noise(greedy_actions(policy, batch), batch)
    assert set(acts.tolist()) == {1}


@pytest.mark.parametrize(("cls", "guided"), [(DiscreteQLearningPolicy, GuidedDQNPolicy), (C51Policy, GuidedC51Policy)])
def test_attach_discrete_names_the_guided_class_for_a_stock_policy(cls, guided):
    policy = build(cls)
    with pytest.raises(TypeError) as info:
        attach_discrete(policy, ExplorationCache(ActionSpec.discrete(N_ACTIONS)))
    message = str(info.value)
    assert f"got {cls.__name__}: construct {guided.__name__} instead (same arguments)" in message
    assert "`class GuidedMyPolicy(GuidedEpsGreedyMixin, MyPolicy): pass`" in message
    assert type(policy) is cls and not isinstance(policy, GuidedEpsGreedyMixin)  # left as it was


class MyPolicy(DiscreteQLearningPolicy):
    """A user's own DQN-family policy class, which has no guided twin in the package."""


def test_the_recipe_in_the_error_makes_a_working_guided_class():
    with pytest.raises(TypeError) as info:
        attach_discrete(build(MyPolicy), ExplorationCache(ActionSpec.discrete(N_ACTIONS)))
    recipe = re.search(r"`(class .*)`", str(info.value)).group(1)
    assert recipe == "class GuidedMyPolicy(GuidedEpsGreedyMixin, MyPolicy): pass"
    namespace = {"GuidedEpsGreedyMixin": GuidedEpsGreedyMixin, "MyPolicy": MyPolicy}
    exec(recipe, namespace)
    policy = build(namespace["GuidedMyPolicy"])
    cache = ExplorationCache(ActionSpec.discrete(N_ACTIONS))
    publish(cache, (0.0, 0.0, 0.0, 1.0))
    attach_discrete(policy, cache, np.random.default_rng(0))
    batch = obs_batch(100)
    with policy_within_training_step(policy):
        acts = policy.add_exploration_noise(greedy_actions(policy, batch), batch)
    assert set(acts.tolist()) == {3}


def test_attach_discrete_refuses_a_policy_whose_own_exploration_the_mixin_would_hide():
    class BranchPolicy(DiscreteQLearningPolicy):
        def add_exploration_noise(self, act, batch):
            return act

    class GuidedBranchPolicy(GuidedEpsGreedyMixin, BranchPolicy):
        pass

    with pytest.raises(TypeError, match=r"would replace BranchPolicy\.add_exploration_noise"):
        attach_discrete(build(GuidedBranchPolicy), ExplorationCache(ActionSpec.discrete(N_ACTIONS)))


def test_attach_discrete_rejects_a_policy_outside_the_dqn_family():
    with pytest.raises(TypeError, match="needs a DiscreteQLearningPolicy, got object"):
        attach_discrete(object(), ExplorationCache(ActionSpec.discrete(N_ACTIONS)))  # type: ignore[arg-type]


def test_attach_rejects_a_cache_of_the_wrong_shape():
    policy = make_policy()
    with pytest.raises(ValueError, match="4 discrete actions"):
        policy.attach_explorer(ExplorationCache(ActionSpec.discrete(3)))
    with pytest.raises(ValueError):
        policy.attach_explorer(ExplorationCache(ActionSpec.continuous([-1.0], [1.0])))


def test_without_a_cache_the_policy_is_tianshous():
    policy = make_policy(eps_training=1.0)
    batch = obs_batch(2000)
    np.random.seed(0)
    with policy_within_training_step(policy):
        acts = policy.add_exploration_noise(greedy_actions(policy, batch), batch)
    assert stats.chisquare(np.bincount(acts, minlength=N_ACTIONS)).pvalue > 1e-4
