"""The data model: immutable records that cross the boundary between training and the pipeline.

Everything here is a frozen dataclass holding plain Python values (tuples, not arrays), so an
object handed from the training thread to the pipeline thread, or published to the cache, can be
shared without copies or locks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import numpy as np

UpdateKind = Literal["distribution", "bias"]
UpdateSource = Literal["llm", "fallback", "control", "default"]


@dataclass(frozen=True)
class EpisodeRecord:
    """One finished training episode, as the pipeline sees it.

    :param episode_return: undiscounted sum of rewards.
    :param length: number of environment steps.
    :param env_id: gymnasium id of the environment.
    :param episode_index: 0-based index of the episode in the run (across all vector envs).
    :param actions: the actions taken, in order. Discrete: ints; continuous: one tuple of floats
        per step, in normalised units ([-1, 1] is the full action range).
    :param env_step: the global environment step at which the episode finished (for provenance).
    """

    episode_return: float
    length: int
    env_id: str
    episode_index: int
    actions: tuple[Any, ...] = ()
    env_step: int = 0

    def __post_init__(self) -> None:
        if self.length < 0:
            raise ValueError(f"EpisodeRecord.length must be >= 0, got {self.length}")
        if not isinstance(self.actions, tuple):
            object.__setattr__(self, "actions", tuple(self.actions))


class ActionKind(StrEnum):
    """Discrete actions (a distribution over them) or continuous ones (a bias per dimension)."""

    DISCRETE = "discrete"
    CONTINUOUS = "continuous"


@dataclass(frozen=True)
class ActionSpec:
    """What the LLM is asked to produce a distribution or bias over.

    Use :meth:`discrete` or :meth:`continuous` to build one.

    :param kind: discrete (a distribution over ``n`` actions) or continuous (a bias per dimension).
    :param n: number of discrete actions, or number of continuous dimensions.
    :param labels: one human-readable label per action or dimension.
    :param low: per-dimension lower bounds (continuous only, in the environment's units).
    :param high: per-dimension upper bounds (continuous only).
    """

    kind: ActionKind
    n: int
    labels: tuple[str, ...]
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"ActionSpec.n must be >= 1, got {self.n}")
        if len(self.labels) != self.n:
            raise ValueError(f"ActionSpec needs {self.n} labels, got {len(self.labels)}")
        if self.kind is ActionKind.CONTINUOUS:
            if len(self.low) != self.n or len(self.high) != self.n:
                raise ValueError(f"continuous ActionSpec needs {self.n} low and high bounds")
            for i, (lo, hi) in enumerate(zip(self.low, self.high, strict=True)):
                if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                    raise ValueError(f"dimension {i}: bounds must be finite with low < high, got [{lo}, {hi}]")

    @classmethod
    def discrete(cls, n: int, labels: list[str] | tuple[str, ...] | None = None) -> ActionSpec:
        """``n`` discrete actions, labelled ``action 0`` ... unless ``labels`` are given."""
        labels = tuple(labels) if labels is not None else tuple(f"action {i}" for i in range(n))
        return cls(ActionKind.DISCRETE, n, labels)

    @classmethod
    def continuous(
        cls,
        low: list[float] | tuple[float, ...],
        high: list[float] | tuple[float, ...],
        labels: list[str] | tuple[str, ...] | None = None,
    ) -> ActionSpec:
        """A box of ``len(low)`` dimensions, labelled ``dimension 0`` ... unless ``labels`` are given."""
        n = len(low)
        labels = tuple(labels) if labels is not None else tuple(f"dimension {i}" for i in range(n))
        return cls(ActionKind.CONTINUOUS, n, labels, tuple(map(float, low)), tuple(map(float, high)))

    @property
    def is_discrete(self) -> bool:
        """True for discrete actions."""
        return self.kind is ActionKind.DISCRETE

    @property
    def update_kind(self) -> UpdateKind:
        """``distribution`` for discrete actions, ``bias`` for continuous ones."""
        return "distribution" if self.is_discrete else "bias"


@dataclass(frozen=True)
class StageUsage:
    """Tokens one stage spent (summed over its attempts)."""

    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: StageUsage) -> StageUsage:
        return StageUsage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens)

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class Provenance:
    """Where an update came from. Every published update carries one.

    :param attempts: model calls the request made, all stages together (0 for a control arm
        that calls no LLM).
    :param retry_reasons: why attempts were retried, in order (``proposal: ParseError: ...``);
        empty when every stage succeeded at its first call. A request that failed altogether
        publishes nothing: it is a :class:`RequestFailure`, whose ``reason`` says why.
    :param notes: what stages recorded about how they produced the update, by stage key (for
        example ``{"proposer": {"name": "token-probabilities", "valid_mass": 0.93, ...}}``);
        JSON-ready values only.
    """

    source_episode: int = -1
    latency_s: float = 0.0
    tokens: dict[str, StageUsage] = field(default_factory=dict)
    provider: str = ""
    model: str = ""
    prompt_set: str = ""
    template_hash: str = ""
    attempts: int = 0
    retry_reasons: tuple[str, ...] = ()
    analysis: str = ""
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExplorationUpdate:
    """A validated exploration update: what the collector reads from the cache.

    ``values`` is a probability per action (``kind == "distribution"``: non-negative, sums to 1)
    or a bias per dimension in normalised action units (``kind == "bias"``). The update is
    immutable; :attr:`array` is a read-only numpy view for fast sampling.
    """

    version: int
    kind: UpdateKind
    values: tuple[float, ...]
    source: UpdateSource = "llm"
    provenance: Provenance = field(default_factory=Provenance)

    def __post_init__(self) -> None:
        values = tuple(float(v) for v in self.values)
        object.__setattr__(self, "values", values)
        array = np.asarray(values, dtype=np.float64)
        array.flags.writeable = False
        object.__setattr__(self, "_array", array)

    @property
    def array(self) -> np.ndarray:
        """The values as a read-only float64 array."""
        array: np.ndarray = self._array  # type: ignore[attr-defined]
        return array

    @classmethod
    def default_for(cls, spec: ActionSpec) -> ExplorationUpdate:
        """The algorithm's own exploration: uniform over actions, or zero bias."""
        if spec.is_discrete:
            return cls(0, "distribution", (1.0 / spec.n,) * spec.n, source="default")
        return cls(0, "bias", (0.0,) * spec.n, source="default")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (used by ``updates.jsonl`` and the exchange log). ``reason`` is always
        ``None`` here: it is the key that fallback lines (failed requests) fill in the same file."""
        p = self.provenance
        return {
            "version": self.version,
            "kind": self.kind,
            "values": list(self.values),
            "source": self.source,
            "source_episode": p.source_episode,
            "latency_s": round(p.latency_s, 4),
            "tokens": {k: {"input": v.input_tokens, "output": v.output_tokens} for k, v in p.tokens.items()},
            "provider": p.provider,
            "model": p.model,
            "prompt_set": p.prompt_set,
            "template_hash": p.template_hash,
            "attempts": p.attempts,
            "retries": list(p.retry_reasons),
            "notes": dict(p.notes),
            "reason": None,
        }


@dataclass(frozen=True)
class RequestFailure:
    """A request that produced no update: the cache keeps what it had.

    :param reason: a short machine-readable reason (``parse_error``, ``validation:negative``,
        ``provider_error``, ``timeout``, ...), used as a counter key.
    :param detail: one human-readable line.
    """

    reason: str
    detail: str
    source_episode: int
    attempts: int
    latency_s: float
    tokens: dict[str, StageUsage] = field(default_factory=dict)
