"""LLM-guided Gaussian exploration noise for DDPG, TD3 and SAC.

**Units.** Actions and biases are given in normalised units: each dimension's range is mapped
to [-1, 1], so 1 is half the range (the distance from the middle of the range to its upper
bound). Sigma is in the same units. They are Tianshou's own: the noise is added to the policy's
action before ``Policy.map_action`` maps ``[-1, 1]`` linearly onto ``[low, high]``
(``action_scaling`` on, the default). For an environment whose range is ``[-1, 1]`` (most
MuJoCo tasks) normalised units equal the environment's units; on Pendulum (``[-2, 2]``) a bias
of 0.5 adds 1.0 N m.

**What the replay buffer stores.** Tianshou 2.0.1's ``Collector._compute_action_policy_hidden``
computes ``act = policy.add_exploration_noise(policy(obs).act, obs)``, steps the envs with
``policy.map_action(act)`` (clip to ``[-1, 1]``, then scale) and stores ``act``: the noisy
action *before* clipping. A large bias would fill the buffer with actions the environment never
executed. :class:`ClipNoisyActionMixin` bounds the noisy action inside
``add_exploration_noise`` the way ``map_action`` would, so the stored action is the executed one
(``map_action_inverse`` of what the env received).

The clipping policies are explicit classes: :class:`ClippedContinuousDeterministicPolicy` (DDPG,
TD3) and :class:`GuidedSACPolicy` mirror Tianshou's ``ContinuousDeterministicPolicy`` and
``SACPolicy`` and take the same arguments. For any other policy class, write the subclass
yourself, mixin first: ``class ClippedREDQPolicy(ClipNoisyActionMixin, REDQPolicy): pass``.
:func:`attach_continuous` and :func:`store_executed_actions` check for the mixin; they never
change a policy's class.

Usage::

    noise = GuidedGaussianNoise(cache, sigma=0.1, rng=np.random.default_rng(seed))
    policy = ClippedContinuousDeterministicPolicy(actor=actor, action_space=space, exploration_noise=noise)
    # or, to give a clipping policy (SAC included) guided noise:
    attach_continuous(policy, cache, sigma=0.1, rng=rng)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from tianshou.algorithm.modelfree.ddpg import ContinuousDeterministicPolicy, ContinuousPolicyWithExplorationNoise
from tianshou.algorithm.modelfree.sac import SACPolicy
from tianshou.algorithm.modelfree.td3 import TD3
from tianshou.exploration import BaseNoise

from explorer_pipeline.cache import ExplorationCache

from .counter import EnvStepCounter
from .mixins import missing_mixin

__all__ = [
    "BoundedTD3",
    "ClipNoisyActionMixin",
    "ClippedContinuousDeterministicPolicy",
    "GuidedGaussianNoise",
    "GuidedSACPolicy",
    "attach_continuous",
    "store_executed_actions",
]


class GuidedGaussianNoise(BaseNoise):
    """Gaussian noise ``N(bias, sigma)`` whose mean ``bias`` is the cache's current update.

    :param cache: the exploration cache; its spec has one bias per action dimension.
    :param sigma: the standard deviation, in normalised action units (scalar or per dimension).
    :param rng: the generator (``default_rng()`` if None).
    :param apply_fraction: the probability that a step (one row of the batch) gets the bias;
        the other steps get zero-mean noise. 1.0 (the default) is the paper's behaviour: the bias
        acts on every step.
    :param counter: the env-step counter used to record when an update is first applied.

    Use it with a policy that has :class:`ClipNoisyActionMixin` (e.g.
    :class:`ClippedContinuousDeterministicPolicy`), or the buffer keeps noisy actions outside
    ``[-1, 1]`` that the environment never executed.
    """

    def __init__(
        self,
        cache: ExplorationCache,
        sigma: float | Sequence[float] = 0.1,
        rng: np.random.Generator | None = None,
        *,
        apply_fraction: float = 1.0,
        counter: EnvStepCounter | None = None,
    ) -> None:
        if cache.spec.is_discrete:
            raise ValueError("GuidedGaussianNoise needs a continuous action spec (one bias per dimension)")
        sigma_arr = np.asarray(sigma, dtype=np.float64)
        if sigma_arr.ndim > 1 or (sigma_arr.ndim == 1 and len(sigma_arr) != cache.spec.n):
            raise ValueError(f"sigma must be a scalar or one value per dimension ({cache.spec.n}), got {sigma!r}")
        if not np.all(np.isfinite(sigma_arr)) or np.any(sigma_arr < 0):
            raise ValueError(f"sigma must be finite and >= 0, got {sigma!r}")
        if not 0.0 <= apply_fraction <= 1.0:
            raise ValueError(f"apply_fraction must be in [0, 1], got {apply_fraction}")
        self.cache = cache
        self.sigma = sigma_arr
        self.rng = rng if rng is not None else np.random.default_rng()
        self.apply_fraction = float(apply_fraction)
        self.counter = counter if counter is not None else EnvStepCounter()
        self._last_version = -1

    def get_state(self) -> dict[str, Any]:
        """The version last applied (:class:`~explorer_pipeline.state.Stateful`); the generator
        is the run's guided-draw generator, which the checkpoint saves with the others."""
        return {"last_version": self._last_version}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`get_state`'s result."""
        self._last_version = int(state["last_version"])

    def __call__(self, size: Sequence[int]) -> np.ndarray:
        """Noise of shape ``size``: ``N(bias, sigma)`` for the rows that get the bias, ``N(0, sigma)`` otherwise."""
        update = self.cache.current()  # read once per batch
        if update.version != self._last_version:
            self._last_version = update.version
            self.cache.mark_applied(update.version, self.counter.value)
        bias = update.array
        noise = self.rng.normal(0.0, 1.0, size) * self.sigma
        if self.apply_fraction >= 1.0:
            noise += bias
        elif self.apply_fraction > 0.0:
            rows = self.rng.random(tuple(size)[:-1]) < self.apply_fraction
            noise[rows] += bias
        return noise

    def reset(self) -> None:
        """Stateless: nothing to reset."""

    def __repr__(self) -> str:
        sigma = self.sigma.tolist()
        return f"{type(self).__name__}(sigma={sigma}, apply_fraction={self.apply_fraction})"


class ClipNoisyActionMixin:
    """Bound the noisy action the way ``map_action`` will, so the buffer stores what was executed.

    Tianshou's collector stores the output of ``add_exploration_noise`` but executes
    ``map_action`` of it. When ``map_action`` clips to ``[-1, 1]`` (``action_bound_method="clip"``,
    DDPG/TD3) or requires that range (no bounding but ``action_scaling``, SAC: its
    ``map_action`` asserts the range, so unbounded noise would crash the collector), the noisy
    action is clipped here; clipping again in ``map_action`` changes nothing, so the stored
    action equals ``map_action_inverse`` of the executed one. Other bound methods are left
    alone: ``"tanh"`` stores the pre-squash action, which ``map_action_inverse`` recovers, and
    without bounding and scaling the env receives the stored action unchanged.
    """

    def add_exploration_noise(self, act: Any, batch: Any) -> Any:
        """The base class's noisy action, clipped to ``[-1, 1]`` when ``map_action`` will clip or require that."""
        noisy = super().add_exploration_noise(act, batch)  # type: ignore[misc]
        if isinstance(noisy, np.ndarray) and _bounds_to_unit_box(self):
            noisy = np.clip(noisy, -1.0, 1.0)
        return noisy


def _bounds_to_unit_box(policy: Any) -> bool:
    """``map_action`` clips to, or requires, ``[-1, 1]`` before scaling."""
    method = policy.action_bound_method
    return method == "clip" or (method is None and bool(policy.action_scaling))


class ClippedContinuousDeterministicPolicy(ClipNoisyActionMixin, ContinuousDeterministicPolicy):
    """``ContinuousDeterministicPolicy`` (DDPG, TD3) that stores the executed (clipped) action."""


class GuidedSACPolicy(ClipNoisyActionMixin, SACPolicy):
    """``SACPolicy`` that accepts additive exploration noise and stores the executed (clipped) action."""


class BoundedTD3(TD3):
    """Tianshou's ``TD3`` whose smoothed target action stays inside the action bounds.

    Target policy smoothing adds clipped Gaussian noise to the lagged actor's action; the TD3
    paper (Fujimoto et al. 2018, Eq. 14) then clips the sum to the action range. Tianshou 2.0.1
    does not, so the target critics would be queried at up to ``max_action + noise_clip``
    (±1.5 in normalised units), where the buffer holds no data. Here the noisy target action is
    clamped to ``[-max_action, max_action]`` of the actor (1 in normalised units); the random
    draws are Tianshou's, so nothing else changes.
    """

    def _target_q_compute_action(self, obs_batch: Any) -> Any:
        act_batch = super()._target_q_compute_action(obs_batch)
        bound = float(getattr(self.policy.actor, "max_action", 1.0))
        act_batch.act = act_batch.act.clamp(-bound, bound)
        return act_batch


#: Tianshou's policy class -> the clipping class that mirrors it.
CLIPPED_CLASSES: dict[type, type] = {
    ContinuousDeterministicPolicy: ClippedContinuousDeterministicPolicy,
    SACPolicy: GuidedSACPolicy,
}


def store_executed_actions(policy: ContinuousPolicyWithExplorationNoise) -> ContinuousPolicyWithExplorationNoise:
    """Check that ``policy`` stores the action its environment executes; returns it unchanged.

    True of every policy whose class has :class:`ClipNoisyActionMixin`, and of one whose
    ``map_action`` neither clips to nor requires ``[-1, 1]`` (tanh bounding, or no scaling and
    no bounding: the stored action is then what the env receives or maps back to it). Any other
    policy raises :class:`TypeError` naming the class to construct instead.
    """
    if not isinstance(policy, ContinuousPolicyWithExplorationNoise):
        raise TypeError(f"store_executed_actions needs a policy with exploration noise, got {type(policy).__name__}")
    if isinstance(policy, ClipNoisyActionMixin) or not _bounds_to_unit_box(policy):
        return policy
    raise missing_mixin("storing the executed action", policy, ClipNoisyActionMixin, CLIPPED_CLASSES, "Clipped")


def attach_continuous(
    policy: ContinuousPolicyWithExplorationNoise,
    cache: ExplorationCache,
    sigma: float | Sequence[float] = 0.1,
    rng: np.random.Generator | None = None,
    *,
    apply_fraction: float = 1.0,
    counter: EnvStepCounter | None = None,
) -> GuidedGaussianNoise:
    """Give ``policy`` a :class:`GuidedGaussianNoise` reading ``cache``; returns the noise.

    ``policy`` must be built from a clipping class (:class:`ClippedContinuousDeterministicPolicy`,
    :class:`GuidedSACPolicy`, or your own ``class ClippedX(ClipNoisyActionMixin, X): pass``), so
    the replay buffer holds the actions the environment executed and SAC does not crash on noisy
    actions; anything else raises :class:`TypeError` saying which class to construct. The
    policy's class is never changed.
    """
    if not isinstance(policy, ContinuousPolicyWithExplorationNoise):
        raise TypeError(f"attach_continuous needs a policy with exploration noise, got {type(policy).__name__}")
    if not isinstance(policy, ClipNoisyActionMixin):
        raise missing_mixin("attach_continuous", policy, ClipNoisyActionMixin, CLIPPED_CLASSES, "Clipped")
    noise = GuidedGaussianNoise(cache, sigma, rng, apply_fraction=apply_fraction, counter=counter)
    policy.set_exploration_noise(noise)
    return noise
