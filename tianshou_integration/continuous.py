"""LLM-guided Gaussian exploration noise for DDPG, TD3 and SAC.

Tianshou adds exploration noise to the policy's *normalised* action (``[-1, 1]`` is the full
range) before ``map_action`` clips and scales it, so the LLM's per-dimension bias is read in
the same normalised units: a bias of 0.1 moves the action by 5 % of its range.

Usage::

    noise = GuidedGaussianNoise(cache, sigma=0.1, rng=np.random.default_rng(seed))
    policy = ContinuousDeterministicPolicy(actor=actor, action_space=space, exploration_noise=noise)
    # or, for a policy that already exists (SAC included):
    attach_continuous(policy, cache, sigma=0.1, rng=rng)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from tianshou.algorithm.modelfree.ddpg import ContinuousPolicyWithExplorationNoise
from tianshou.algorithm.modelfree.sac import SACPolicy
from tianshou.exploration import BaseNoise

from explorer_pipeline.cache import ExplorationCache

from .counter import EnvStepCounter
from .mixins import with_mixin

__all__ = ["ClipNoisyActionMixin", "GuidedGaussianNoise", "GuidedSACPolicy", "attach_continuous"]


class GuidedGaussianNoise(BaseNoise):
    """Gaussian noise ``N(bias, sigma)`` whose mean ``bias`` is the cache's current update.

    :param cache: the exploration cache; its spec has one bias per action dimension.
    :param sigma: the standard deviation, in normalised action units (scalar or per dimension).
    :param rng: the generator (``default_rng()`` if None).
    :param apply_fraction: the probability that a step (one row of the batch) gets the bias;
        the other steps get zero-mean noise. 1.0 (the default) is the paper's behaviour: the bias
        acts on every step.
    :param counter: the env-step counter used to record when an update is first applied.
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

    def __call__(self, size: Sequence[int]) -> np.ndarray:
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
    """Clip the noisy action to ``[-1, 1]``.

    Needed for policies whose ``action_bound_method`` is None while ``action_scaling`` is on
    (SAC): Tianshou's ``map_action`` asserts the action is already in range, so any additive
    noise would crash the collector.
    """

    def add_exploration_noise(self, act: Any, batch: Any) -> Any:
        noisy = super().add_exploration_noise(act, batch)  # type: ignore[misc]
        if isinstance(noisy, np.ndarray):
            np.clip(noisy, -1.0, 1.0, out=noisy)
        return noisy


class GuidedSACPolicy(ClipNoisyActionMixin, SACPolicy):
    """``SACPolicy`` that accepts additive exploration noise (clipped to the action range)."""


_CLIPPED: dict[type, type] = {SACPolicy: GuidedSACPolicy}


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

    A policy that would crash on noisy actions (SAC: no bounding, but scaling) becomes its
    clipping subclass (:class:`GuidedSACPolicy` for ``SACPolicy``).
    """
    if not isinstance(policy, ContinuousPolicyWithExplorationNoise):
        raise TypeError(f"attach_continuous needs a policy with exploration noise, got {type(policy).__name__}")
    noise = GuidedGaussianNoise(cache, sigma, rng, apply_fraction=apply_fraction, counter=counter)
    if policy.action_scaling and policy.action_bound_method is None:
        policy.__class__ = with_mixin(ClipNoisyActionMixin, type(policy), "Clipped", _CLIPPED, globals())
    policy.set_exploration_noise(noise)
    return noise
