"""How much an exploration update says: is it distinguishable from the algorithm's own exploration?

An update that is (almost) a uniform distribution, or (almost) a zero bias, leaves epsilon-greedy
or Gaussian exploration as it was: applying it is not guidance. This module measures every update
against that default, against the update it replaced, and in time (how old its evidence was when
it took effect). It is pure numpy/scipy so that the run directory (training side) and the
ablation report share one definition.

Per update (the keys :func:`measure` and :func:`staleness` return, written into ``updates.jsonl``):

====================  =========================================================================
discrete
``entropy_norm``      Shannon entropy divided by ``ln n``: 1 is uniform, 0 is one action only
``kl_uniform_nats``   ``KL(p || uniform)`` in nats, ``= ln n * (1 - entropy_norm)``
``change_tv``         total-variation distance to the update it replaced, ``0.5 * sum |p - q|``
                      (0: the same, 1: disjoint supports)
continuous
``bias_max_abs``      largest ``|bias|`` over the dimensions, in normalised action units
                      (``[-1, 1]`` is the full range, so 0.1 is 5 % of the range)
``bias_rms``          root-mean-square bias over the dimensions, normalised units
``change_max_abs``    largest per-dimension ``|bias - previous bias|``, normalised units
both
``informative``       the update clears :data:`KL_THRESHOLD_NATS` or :data:`BIAS_THRESHOLD`
``staleness_episodes``  training episodes that finished after the source episode and before the
                      update took effect (0: nothing happened in between)
``staleness_steps``   env steps from the end of the source episode to the first step it was used
====================  =========================================================================

"The update it replaced" is the one in force in the cache before it was published (the
algorithm's default for the first): updates are compared in publication order, applied or not.

**Thresholds.**

- Discrete: ``KL(p || uniform) >= 0.01`` nats. KL from uniform is the expected evidence (the
  log-likelihood ratio) each exploratory draw gives that exploration changed at all: at 0.01 nats
  it takes about 100 draws to gather one nat (odds of e to 1). It is also about the KL from
  uniform of the *observed* frequencies of ``50 (n - 1)`` truly uniform draws, so a smaller tilt
  hides in epsilon-greedy's own sampling noise over that many draws. With two actions the
  threshold is about 0.57 / 0.43, with four 0.31 / 0.23 / 0.23 / 0.23; rounding noise such as
  0.51 / 0.49 (0.0002 nats) stays below it, a real preference such as 0.34 / 0.66 (0.052 nats)
  clears it. (Normalised entropy says the same: ``entropy_norm <= 1 - 0.01 / ln n``.)
- Continuous: ``max |bias| >= 0.05`` normalised units: half the default Gaussian noise scale
  (``sigma = 0.1`` for DDPG and TD3 here). A mean shift of ``0.5 sigma`` moves the probability
  that the noise pushes a dimension in the bias's direction from 50 % to 69 %; smaller shifts are
  swamped by the noise itself.

Only updates the collector actually used (``applied_at_step`` set) count in :func:`summarise`:
``updates_informative`` is a subset of ``updates_applied``. The measures describe non-uniformity
only, not whether the advice is any good: a control arm's random distribution is as informative
as an LLM's.
"""

from __future__ import annotations

import bisect
import contextlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "BIAS_THRESHOLD",
    "KL_THRESHOLD_NATS",
    "MEASURE_KEYS",
    "bias_size",
    "default_values",
    "is_informative",
    "kl_from_uniform",
    "measure",
    "measure_lines",
    "normalised_entropy",
    "staleness",
    "summarise",
    "threshold",
    "total_variation",
]

#: a discrete update is informative when its KL divergence from uniform is at least this (nats).
KL_THRESHOLD_NATS = 0.01
#: a continuous update is informative when its largest |bias| is at least this (normalised units).
BIAS_THRESHOLD = 0.05

#: the per-update keys, by update kind (``staleness_*`` and ``informative`` apply to both).
MEASURE_KEYS: dict[str, tuple[str, ...]] = {
    "distribution": ("entropy_norm", "kl_uniform_nats", "change_tv"),
    "bias": ("bias_max_abs", "bias_rms", "change_max_abs"),
}
_COMMON_KEYS = ("staleness_episodes", "staleness_steps")
_DIGITS = 6


# --------------------------------------------------------------------------- single measures
def _probabilities(values: Sequence[float]) -> np.ndarray:
    p = np.asarray(values, dtype=np.float64).reshape(-1)
    if p.size == 0 or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError(f"not a probability distribution: {list(values)!r}")
    out: np.ndarray = p / p.sum()
    return out


def normalised_entropy(values: Sequence[float]) -> float:
    """Entropy of the distribution divided by its maximum ``ln n``: 1 uniform, 0 deterministic.

    A single action has nothing to choose between: its normalised entropy is 1 (it is uniform).
    """
    p = _probabilities(values)
    if p.size == 1:
        return 1.0
    from scipy.stats import entropy  # here: importing scipy.stats costs ~0.8 s of every run's start-up

    return float(min(1.0, max(0.0, entropy(p) / math.log(p.size))))


def kl_from_uniform(values: Sequence[float]) -> float:
    """``KL(p || uniform)`` in nats (0 for uniform, ``ln n`` for a one-hot distribution)."""
    p = _probabilities(values)
    from scipy.stats import entropy

    return float(max(0.0, entropy(p, np.full(p.size, 1.0 / p.size))))


def total_variation(values: Sequence[float], previous: Sequence[float]) -> float:
    """``0.5 * sum |p - q|``: the largest difference in probability the two give any set of actions."""
    p, q = _probabilities(values), _probabilities(previous)
    if p.shape != q.shape:
        raise ValueError(f"distributions over different action counts: {p.size} and {q.size}")
    return float(0.5 * np.abs(p - q).sum())


def bias_size(values: Sequence[float]) -> tuple[float, float]:
    """``(max |bias|, root-mean-square bias)`` in the bias's own (normalised) units."""
    b = np.asarray(values, dtype=np.float64).reshape(-1)
    if b.size == 0 or not np.all(np.isfinite(b)):
        raise ValueError(f"not a finite bias: {list(values)!r}")
    return float(np.max(np.abs(b))), float(np.sqrt(np.mean(b * b)))


def default_values(kind: str, n: int) -> tuple[float, ...]:
    """The algorithm's own exploration as an update's values: uniform, or zero bias."""
    if kind == "distribution":
        return (1.0 / n,) * n
    if kind == "bias":
        return (0.0,) * n
    raise ValueError(f"unknown update kind {kind!r} (expected 'distribution' or 'bias')")


def threshold(kind: str) -> dict[str, Any]:
    """The informativeness threshold for ``kind``, as written into ``summary.json``."""
    if kind == "distribution":
        return {"metric": "kl_uniform_nats", "min": KL_THRESHOLD_NATS, "unit": "nats"}
    if kind == "bias":
        return {"metric": "bias_max_abs", "min": BIAS_THRESHOLD, "unit": "normalised action units"}
    raise ValueError(f"unknown update kind {kind!r} (expected 'distribution' or 'bias')")


def is_informative(kind: str, values: Sequence[float]) -> bool:
    """Whether the update clears the threshold for its kind (see the module docstring)."""
    if kind == "distribution":
        return kl_from_uniform(values) >= KL_THRESHOLD_NATS
    if kind == "bias":
        return bias_size(values)[0] >= BIAS_THRESHOLD
    raise ValueError(f"unknown update kind {kind!r} (expected 'distribution' or 'bias')")


def measure(kind: str, values: Sequence[float], previous: Sequence[float] | None = None) -> dict[str, Any]:
    """The per-update measures of one update (rounded to 6 decimals), plus ``informative``.

    :param previous: the values of the update it replaced; None: the algorithm's default.
    """
    previous = default_values(kind, len(values)) if previous is None or len(previous) != len(values) else previous
    if kind == "distribution":
        kl = kl_from_uniform(values)
        out = {"entropy_norm": normalised_entropy(values), "kl_uniform_nats": kl,
               "change_tv": total_variation(values, previous)}
        informative = kl >= KL_THRESHOLD_NATS
    elif kind == "bias":
        max_abs, rms = bias_size(values)
        change = float(np.max(np.abs(np.asarray(values, float) - np.asarray(previous, float))))
        out = {"bias_max_abs": max_abs, "bias_rms": rms, "change_max_abs": change}
        informative = max_abs >= BIAS_THRESHOLD
    else:
        raise ValueError(f"unknown update kind {kind!r} (expected 'distribution' or 'bias')")
    rounded: dict[str, Any] = {k: round(v, _DIGITS) for k, v in out.items()}
    rounded["informative"] = bool(informative)
    return rounded


def staleness(source_episode: int | None, applied_at_step: int | None,
              episode_end_steps: Sequence[int]) -> dict[str, int | None]:
    """How old an update's evidence was when it took effect.

    :param source_episode: 0-based index of the episode the update was computed from.
    :param applied_at_step: the env-step counter when the collector first used the update.
    :param episode_end_steps: the env-step counter at the end of each training episode, by episode
        index (non-decreasing: ``metrics.csv``'s training rows in order).
    :returns: ``staleness_episodes`` (episodes that ended after the source episode, at or before
        the update took effect) and ``staleness_steps``; both None when the update was never
        applied or its source episode is unknown.
    """
    none: dict[str, int | None] = {"staleness_episodes": None, "staleness_steps": None}
    if applied_at_step is None or source_episode is None or not 0 <= source_episode < len(episode_end_steps):
        return none
    ended_by_then = bisect.bisect_right(episode_end_steps, applied_at_step)
    return {"staleness_episodes": max(0, ended_by_then - (source_episode + 1)),
            "staleness_steps": max(0, int(applied_at_step) - int(episode_end_steps[source_episode]))}


# --------------------------------------------------------------------------- update lines
def _is_update_line(line: Mapping[str, Any]) -> bool:
    values = line.get("values")
    return (line.get("source") != "fallback" and line.get("kind") in MEASURE_KEYS and isinstance(values, list)
            and bool(values) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values))


def measure_lines(lines: Iterable[Mapping[str, Any]],
                  episode_end_steps: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Copies of ``updates.jsonl`` lines with the measures filled in where a line lacks them.

    For run directories written before the measures existed: each update is compared with the
    previous update line (the default for the first); staleness needs ``episode_end_steps``.
    Lines that already carry the measures, fallback lines and unreadable lines are kept as they are.
    """
    out: list[dict[str, Any]] = []
    previous: list[float] | None = None
    for raw in lines:
        line = dict(raw)
        if _is_update_line(line):
            if "informative" not in line:
                with contextlib.suppress(ValueError):  # not a valid update: left unmeasured
                    line.update(measure(line["kind"], line["values"], previous))
            if "staleness_steps" not in line and episode_end_steps is not None:
                source = line.get("source_episode")
                line.update(staleness(source if isinstance(source, int) and source >= 0 else None,
                                      line.get("applied_at_step"), episode_end_steps))
            previous = line["values"]
        out.append(line)
    return out


def _median(values: list[float]) -> float | None:
    return round(float(np.median(values)), _DIGITS) if values else None


def summarise(lines: Iterable[Mapping[str, Any]], kind: str | None = None) -> dict[str, Any]:
    """``summary.json``'s guidance fields from measured update lines (see :func:`measure_lines`).

    Counts and medians are over the updates the collector used (``applied_at_step`` set):

    ``updates_informative`` (int), ``informative_share`` (informative / applied, None when none
    was applied), ``informative_threshold`` (:func:`threshold`; None when the kind is unknown),
    ``guidance_kind``, and ``median_<measure>`` for the kind's measures and both staleness counts
    (None when no applied update has that measure).

    :param kind: the update kind when known (e.g. from the action spec); else taken from the lines.
    """
    applied = [line for line in lines if _is_update_line(line) and line.get("applied_at_step") is not None]
    if kind is None and applied:
        kind = applied[0]["kind"]
    informative = sum(1 for line in applied if line.get("informative") is True)
    summary: dict[str, Any] = {
        "updates_informative": informative,
        "informative_share": round(informative / len(applied), _DIGITS) if applied else None,
        "informative_threshold": threshold(kind) if kind in MEASURE_KEYS else None,
        "guidance_kind": kind if kind in MEASURE_KEYS else None,
    }
    for key in (*MEASURE_KEYS.get(kind or "", ()), *_COMMON_KEYS):
        numbers = [float(line[key]) for line in applied if isinstance(line.get(key), int | float)
                   and not isinstance(line.get(key), bool) and math.isfinite(line[key])]
        summary[f"median_{key}"] = _median(numbers)
    return summary
