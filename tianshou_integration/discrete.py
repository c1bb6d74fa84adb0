"""LLM-guided epsilon-greedy for Tianshou's DQN family.

:class:`GuidedEpsGreedyMixin` overrides ``DiscreteQLearningPolicy.add_exploration_noise``. The
epsilon gate, the ``is_within_training_step`` switch and action masks work as in Tianshou; only
the *random* action of a training step is drawn from the distribution in the
:class:`~explorer_pipeline.cache.ExplorationCache` instead of uniformly. Greedy actions and
evaluation (``is_within_training_step`` False, ``eps_inference``) are Tianshou's own.

Noisy networks (Rainbow): Tianshou's ``Collector.collect`` runs the policy under
``torch_train_mode(policy, enabled=False)``, and a ``NoisyLinear`` layer in eval mode uses only
its mean weights, so a stock Rainbow policy collects its training data without noisy
exploration. :class:`NoisyCollectionMixin` (a base of every guided policy) switches the policy
model's ``NoisyLinear`` layers to train mode and draws fresh noise for each forward pass made
while collecting inside a training step (``is_within_training_step`` True); evaluation (outside
a training step) keeps the mean weights and is deterministic.

The guided policies are explicit classes: :class:`GuidedDQNPolicy`, :class:`GuidedC51Policy`
and :class:`GuidedQRDQNPolicy` mirror Tianshou's ``DiscreteQLearningPolicy``, ``C51Policy`` and
``QRDQNPolicy`` and take the same arguments. For any other DQN-family policy class, write the
subclass yourself, mixin first: ``class GuidedIQNPolicy(GuidedEpsGreedyMixin, IQNPolicy): pass``.

Usage::

    policy = GuidedDQNPolicy(model=net, action_space=env.action_space, eps_training=0.1)
    policy.attach_explorer(cache, rng=np.random.default_rng(seed), counter=counter)
    # or, equivalently:
    attach_discrete(policy, cache, rng)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tianshou.algorithm.modelfree.c51 import C51Policy
from tianshou.algorithm.modelfree.dqn import DiscreteQLearningPolicy
from tianshou.algorithm.modelfree.qrdqn import QRDQNPolicy
from tianshou.utils.net.discrete import NoisyLinear

from explorer_pipeline.cache import ExplorationCache

from .counter import EnvStepCounter
from .mixins import missing_mixin

__all__ = [
    "GuidedC51Policy",
    "GuidedDQNPolicy",
    "GuidedEpsGreedyMixin",
    "GuidedQRDQNPolicy",
    "NoisyCollectionMixin",
    "attach_discrete",
    "enable_noisy_collection",
    "sample_guided_actions",
]


def sample_guided_actions(
    probs: np.ndarray, count: int, rng: np.random.Generator, legal: np.ndarray | None = None
) -> np.ndarray:
    """Draw ``count`` actions from ``probs`` (shape ``(n,)``).

    :param legal: optional boolean mask of shape ``(count, n)``; each draw is restricted to its
        row's legal actions (probabilities renormalised over them). A row whose legal actions all
        have probability 0 falls back to uniform over its legal actions; a row with no legal
        action at all falls back to uniform over every action (what Tianshou does).
    """
    if legal is None:
        cumulative = np.cumsum(probs)
        draws = np.searchsorted(cumulative, rng.random(count) * cumulative[-1], side="right")
        return np.minimum(draws, len(probs) - 1)
    weights = probs[None, :] * legal
    totals = weights.sum(axis=1)
    empty = totals <= 0.0
    if empty.any():
        fallback = legal[empty].astype(np.float64)
        fallback[fallback.sum(axis=1) == 0] = 1.0
        weights[empty] = fallback
        totals = weights.sum(axis=1)
    cumulative = np.cumsum(weights, axis=1)
    thresholds = rng.random(count) * totals
    draws = (cumulative <= thresholds[:, None]).sum(axis=1)
    return np.minimum(draws, probs.shape[0] - 1)


class NoisyCollectionMixin:
    """Keep ``NoisyLinear`` exploration on while collecting for training; put before a
    ``DiscreteQLearningPolicy`` subclass in the bases.

    A forward pass of the policy's own model made while the policy is in eval mode (the
    collector's setting) and within a training step runs the model's ``NoisyLinear`` layers in
    train mode with freshly sampled noise (one draw per forward pass, i.e. per vector step, as
    in NoisyNet-DQN); their modes are restored afterwards. Everything else is Tianshou's: in
    train mode (gradient updates, where ``RainbowDQN`` samples the noise itself), for another
    model (the target network) and outside a training step (evaluation: mean weights) the
    forward pass is unchanged. A model without ``NoisyLinear`` layers is unaffected.
    """

    def forward(self, batch: Any, state: Any = None, model: Any = None, **kwargs: Any) -> Any:
        """The base class's forward, with noisy layers on and freshly sampled while collecting for training."""
        noisy = self._noisy_layers_to_activate(model)
        if not noisy:
            return super().forward(batch, state, model, **kwargs)  # type: ignore[misc]
        modes = [layer.training for layer in noisy]
        try:
            for layer in noisy:
                layer.train(True)
                layer.sample()
            return super().forward(batch, state, model, **kwargs)  # type: ignore[misc]
        finally:
            for layer, mode in zip(noisy, modes, strict=True):
                layer.train(mode)

    def _noisy_layers_to_activate(self, model: Any) -> list[NoisyLinear]:
        if self.training or not self.is_within_training_step:  # type: ignore[attr-defined]
            return []
        own = self.model  # type: ignore[attr-defined]
        if model is not None and model is not own:
            return []
        return [m for m in own.modules() if isinstance(m, NoisyLinear)]


class GuidedEpsGreedyMixin(NoisyCollectionMixin):
    """Put before a ``DiscreteQLearningPolicy`` subclass in the bases.

    Without an attached cache the policy behaves like its Tianshou base class, except that
    noisy layers explore while collecting for training (:class:`NoisyCollectionMixin`).
    """

    _explorer_cache: ExplorationCache | None = None
    _explorer_rng: np.random.Generator | None = None
    _explorer_counter: EnvStepCounter | None = None
    _explorer_last_version: int = -1

    def attach_explorer(
        self,
        cache: ExplorationCache,
        rng: np.random.Generator | None = None,
        counter: EnvStepCounter | None = None,
    ) -> GuidedEpsGreedyMixin:
        """Draw exploratory actions from ``cache``.

        :param cache: the exploration cache; its spec must have one probability per action.
        :param rng: the generator for the epsilon gate and the draws (``default_rng()`` if None).
        :param counter: the env-step counter used to record when an update is first applied.
        """
        n = int(self.action_space.n)  # type: ignore[attr-defined]
        if not cache.spec.is_discrete or cache.spec.n != n:
            raise ValueError(
                f"the exploration cache describes {cache.spec.kind.value} actions of size {cache.spec.n}; "
                f"this policy has {n} discrete actions"
            )
        self._explorer_cache = cache
        self._explorer_rng = rng if rng is not None else np.random.default_rng()
        self._explorer_counter = counter if counter is not None else EnvStepCounter()
        self._explorer_last_version = -1
        return self

    def detach_explorer(self) -> None:
        """Go back to Tianshou's uniform exploration."""
        self._explorer_cache = None

    def add_exploration_noise(self, act: Any, batch: Any) -> Any:
        """Epsilon-greedy whose random actions are drawn from the cached distribution (masks respected)."""
        cache = self._explorer_cache
        if cache is None or not self.is_within_training_step:  # type: ignore[attr-defined]
            return super().add_exploration_noise(act, batch)  # type: ignore[misc]
        eps = self.eps_training  # type: ignore[attr-defined]
        if eps <= 0.0:
            return act
        if not isinstance(act, np.ndarray):
            raise NotImplementedError(
                f"Currently only numpy array is supported for action, but got {type(act)}"
            )
        rng = self._explorer_rng
        assert rng is not None
        explore = rng.random(len(act)) < eps
        count = int(np.count_nonzero(explore))
        if count == 0:
            return act
        update = cache.current()  # read once: a batch never mixes two updates
        if update.version != self._explorer_last_version:
            self._explorer_last_version = update.version
            cache.mark_applied(update.version, self._explorer_counter.value)  # type: ignore[union-attr]
        mask = getattr(batch.obs, "mask", None) if hasattr(batch, "obs") else None
        legal = None if mask is None else np.asarray(mask, dtype=bool)[explore]
        act[explore] = sample_guided_actions(update.array, count, rng, legal)
        return act


class GuidedDQNPolicy(GuidedEpsGreedyMixin, DiscreteQLearningPolicy):
    """``DiscreteQLearningPolicy`` (DQN, Double/Dueling DQN) with LLM-guided exploration."""


class GuidedC51Policy(GuidedEpsGreedyMixin, C51Policy):
    """``C51Policy`` (C51, Rainbow) with LLM-guided exploration."""


class GuidedQRDQNPolicy(GuidedEpsGreedyMixin, QRDQNPolicy):
    """``QRDQNPolicy`` (QRDQN) with LLM-guided exploration."""


#: Tianshou's policy class -> the guided class that mirrors it.
GUIDED_CLASSES: dict[type, type] = {
    DiscreteQLearningPolicy: GuidedDQNPolicy,
    C51Policy: GuidedC51Policy,
    QRDQNPolicy: GuidedQRDQNPolicy,
}


def enable_noisy_collection(policy: DiscreteQLearningPolicy) -> DiscreteQLearningPolicy:
    """Check that ``policy``'s noisy layers will explore while collecting for training; returns it.

    True of every policy whose class has :class:`NoisyCollectionMixin` (every guided policy), and
    trivially of one whose model has no ``NoisyLinear`` layer. Nothing is changed: any other
    policy raises :class:`TypeError` naming the class to construct instead.
    """
    if not isinstance(policy, DiscreteQLearningPolicy):
        raise TypeError(f"enable_noisy_collection needs a DiscreteQLearningPolicy, got {type(policy).__name__}")
    if isinstance(policy, NoisyCollectionMixin):
        return policy
    if any(isinstance(m, NoisyLinear) for m in policy.model.modules()):
        raise missing_mixin("exploring with noisy layers while collecting", policy, NoisyCollectionMixin,
                            GUIDED_CLASSES, "Noisy")
    return policy


def attach_discrete(
    policy: GuidedEpsGreedyMixin,
    cache: ExplorationCache,
    rng: np.random.Generator | None = None,
    counter: EnvStepCounter | None = None,
) -> GuidedEpsGreedyMixin:
    """Make a guided DQN-family policy draw its exploratory actions from ``cache``; returns it.

    The same as ``policy.attach_explorer(cache, rng, counter)``. ``policy`` must be built from a
    guided class (:class:`GuidedDQNPolicy`, :class:`GuidedC51Policy`, :class:`GuidedQRDQNPolicy`
    or your own ``class GuidedX(GuidedEpsGreedyMixin, X): pass``); anything else raises
    :class:`TypeError` saying which class to construct. The policy's class is never changed.
    """
    if not isinstance(policy, DiscreteQLearningPolicy):
        raise TypeError(f"attach_discrete needs a DiscreteQLearningPolicy, got {type(policy).__name__}")
    if not isinstance(policy, GuidedEpsGreedyMixin):
        raise missing_mixin("attach_discrete", policy, GuidedEpsGreedyMixin, GUIDED_CLASSES, "Guided")
    replaced = _replaced_exploration(type(policy))
    if replaced is not None:
        raise TypeError(
            f"{type(policy).__name__}: GuidedEpsGreedyMixin would replace {replaced.__name__}.add_exploration_noise "
            "(e.g. BDQN's per-branch exploration); guided exploration supports epsilon-greedy policies only"
        )
    return policy.attach_explorer(cache, rng, counter)


def _replaced_exploration(cls: type) -> type | None:
    """The class after :class:`GuidedEpsGreedyMixin` in ``cls``'s MRO whose own
    ``add_exploration_noise`` the mixin hides, unless that is Tianshou's epsilon-greedy."""
    mro = cls.__mro__
    for klass in mro[mro.index(GuidedEpsGreedyMixin) + 1:]:
        if "add_exploration_noise" in vars(klass):
            return None if klass is DiscreteQLearningPolicy else klass
    return None
