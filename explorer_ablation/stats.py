"""Aggregate statistics for the report: thin glue over SciPy.

The metrics follow Agarwal et al., "Deep RL at the Edge of the Statistical Precipice" (NeurIPS
2021), as implemented in rliable. rliable itself is not used: 1.2.0 is an sdist only (no wheel),
pulls in arch, statsmodels, seaborn and pandas, and its bootstrap draws from the global
``np.random`` state. The same quantities come from maintained SciPy functions:

* IQM: ``scipy.stats.trim_mean(scores, 0.25)`` over every run of every environment.
* Stratified bootstrap: ``scipy.stats.bootstrap`` with one sample per environment and
  ``paired=False``, which resamples the runs of each environment independently (the strata).
  Percentile intervals, as rliable's default.
* Probability of improvement: the Mann-Whitney U statistic of X against Y divided by
  ``n_x * n_y`` (``P(X > Y) + P(X = Y) / 2``), averaged over environments.
* Performance profile: the fraction of runs whose normalised score exceeds each threshold tau.

Each interval is ``(low, high)`` or ``(nan, nan)`` when a stratum has fewer than two runs (a
bootstrap of one value says nothing).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.stats

__all__ = [
    "CONFIDENCE",
    "Estimate",
    "iqm",
    "iqm_estimate",
    "mean_band",
    "performance_profile",
    "poi_estimate",
    "probability_of_improvement",
]

CONFIDENCE = 0.95
RESAMPLES = 5000


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval (``nan`` bounds: no interval)."""

    value: float
    low: float = math.nan
    high: float = math.nan

    @property
    def has_interval(self) -> bool:
        """Both bounds are known."""
        return not (math.isnan(self.low) or math.isnan(self.high))


def _strata(samples: Sequence[Sequence[float]]) -> list[np.ndarray]:
    return [np.asarray(s, dtype=float) for s in samples if len(s) > 0]


def _bootstrap(samples: Sequence[np.ndarray], statistic: Callable[..., np.ndarray], *, seed: int,
               resamples: int = RESAMPLES, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    kwargs = {"paired": False, "vectorized": True, "n_resamples": resamples, "method": "percentile",
              "confidence_level": CONFIDENCE, "axis": axis}
    generator = np.random.default_rng(seed)
    if "rng" in inspect.signature(scipy.stats.bootstrap).parameters:  # SciPy >= 1.15
        kwargs["rng"] = generator
    else:
        kwargs["random_state"] = generator
    result = scipy.stats.bootstrap(tuple(samples), statistic, **kwargs)
    return np.asarray(result.confidence_interval.low), np.asarray(result.confidence_interval.high)


def _can_bootstrap(samples: Sequence[np.ndarray]) -> bool:
    return bool(samples) and all(len(s) >= 2 for s in samples)


# --------------------------------------------------------------------------- IQM
def iqm(scores: Sequence[float] | np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% (``trim_mean(..., 0.25)``)."""
    values = np.ravel(np.asarray(scores, dtype=float))
    return float(scipy.stats.trim_mean(values, 0.25)) if values.size else math.nan


def _iqm_of_strata(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    return scipy.stats.trim_mean(np.concatenate(samples, axis=axis), 0.25, axis=axis)


def iqm_estimate(per_env: Sequence[Sequence[float]], *, seed: int = 0) -> Estimate:
    """IQM over every run of every environment, with a stratified-bootstrap interval."""
    samples = _strata(per_env)
    if not samples:
        return Estimate(math.nan)
    value = float(_iqm_of_strata(*samples))
    if not _can_bootstrap(samples):
        return Estimate(value)
    low, high = _bootstrap(samples, _iqm_of_strata, seed=seed)
    return Estimate(value, float(low), float(high))


# --------------------------------------------------------------------------- probability of improvement
def _poi_one(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    u = scipy.stats.mannwhitneyu(x, y, alternative="two-sided", axis=axis).statistic
    return np.asarray(u) / (x.shape[axis] * y.shape[axis])


def probability_of_improvement(x_per_env: Sequence[Sequence[float]], y_per_env: Sequence[Sequence[float]]) -> float:
    """``P(X > Y) + P(X = Y) / 2`` for a run of X and a run of Y on the same environment,
    averaged over the environments where both have runs."""
    pairs = [(np.asarray(x, float), np.asarray(y, float)) for x, y in zip(x_per_env, y_per_env, strict=True)
             if len(x) and len(y)]
    if not pairs:
        return math.nan
    return float(np.mean([_poi_one(x, y) for x, y in pairs]))


def poi_estimate(x_per_env: Sequence[Sequence[float]], y_per_env: Sequence[Sequence[float]], *,
                 seed: int = 0) -> Estimate:
    """Probability of improvement with a stratified (independent per arm and env) bootstrap."""
    pairs = [(np.asarray(x, float), np.asarray(y, float)) for x, y in zip(x_per_env, y_per_env, strict=True)
             if len(x) and len(y)]
    if not pairs:
        return Estimate(math.nan)
    value = probability_of_improvement([x for x, _ in pairs], [y for _, y in pairs])
    samples = [a for pair in pairs for a in pair]
    if not _can_bootstrap(samples):
        return Estimate(value)

    def statistic(*arrays: np.ndarray, axis: int = -1) -> np.ndarray:
        per_env = [_poi_one(arrays[i], arrays[i + 1], axis=axis) for i in range(0, len(arrays), 2)]
        return np.mean(np.stack(per_env, axis=0), axis=0)

    low, high = _bootstrap(samples, statistic, seed=seed)
    return Estimate(value, float(low), float(high))


# --------------------------------------------------------------------------- performance profile
def performance_profile(per_env: Sequence[Sequence[float]], taus: Sequence[float] | np.ndarray, *,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fraction of runs (all environments) with a normalised score above each ``tau``, with
    stratified-bootstrap bands (``nan`` when a stratum has fewer than two runs)."""
    taus = np.asarray(taus, dtype=float)
    samples = _strata(per_env)
    if not samples:
        nan = np.full(taus.shape, math.nan)
        return nan, nan, nan

    def statistic(*arrays: np.ndarray, axis: int = -1) -> np.ndarray:
        scores = np.concatenate(arrays, axis=axis)
        return np.stack([np.mean(scores > tau, axis=axis) for tau in taus], axis=0)

    profile = statistic(*samples)
    if not _can_bootstrap(samples):
        nan = np.full(taus.shape, math.nan)
        return profile, nan, nan
    low, high = _bootstrap(samples, statistic, seed=seed, resamples=2000)
    return profile, low, high


# --------------------------------------------------------------------------- learning curves
def mean_band(curves: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column mean of ``curves`` (runs x points) and a bootstrap interval over runs."""
    curves = np.asarray(curves, dtype=float)
    mean = curves.mean(axis=0)
    if curves.shape[0] < 2:
        nan = np.full(mean.shape, math.nan)
        return mean, nan, nan
    low, high = _bootstrap([curves], np.mean, seed=seed, resamples=2000, axis=0)
    return mean, low, high
