"""Control arms: they separate the *semantics* of the LLM's answer from mere non-uniformity.

``shuffled``
    the LLM is asked as usual; its distribution is applied with the action labels permuted by a
    fixed random derangement (biases: dimensions permuted, or negated for a single dimension).
``random``
    no LLM call: a random distribution whose entropy is ``target_entropy`` x the maximum
    (default 0.8), or a random bias of norm ``bias_scale`` (default 0.2) per dimension.
``frozen``
    the first valid LLM answer stays in force for the whole run; later requests do nothing.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import brentq

from .prompts import PromptSet
from .types import ActionSpec


def entropy(p: np.ndarray) -> float:
    """Shannon entropy (nats) of a probability vector."""
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def entropy_matched(logits: np.ndarray, target: float) -> np.ndarray:
    """``softmax(logits / t)`` with the temperature ``t`` chosen so its entropy equals ``target``."""
    n = len(logits)
    if n == 1 or target >= math.log(n) - 1e-6:
        return np.full(n, 1.0 / n)
    target = max(target, 1e-6)

    def softmax(t: float) -> np.ndarray:
        z = logits / t
        z = np.exp(z - z.max())
        out: np.ndarray = z / z.sum()
        return out

    t = brentq(lambda t: entropy(softmax(t)) - target, 1e-4, 1e4)
    return softmax(t)


class Control:
    """One control arm (``shuffled``, ``random`` or ``frozen``) for one run: see the module docstring."""

    def __init__(self, kind: str, spec: ActionSpec, rng: np.random.Generator, options: dict[str, float]) -> None:
        self.kind, self.spec, self.rng, self.options = kind, spec, rng, options
        self.frozen: tuple[float, ...] | None = None
        self.permutation = self._derangement(spec.n)

    def _derangement(self, n: int) -> np.ndarray:
        if n == 1:
            return np.zeros(1, dtype=int)
        while True:
            perm = self.rng.permutation(n)
            if not np.any(perm == np.arange(n)):
                return perm

    def get_state(self) -> dict[str, Any]:
        """The generator's state and the frozen answer (:class:`~explorer_pipeline.state.Stateful`);
        the permutation is drawn at construction, from the run's seed."""
        return {"rng": self.rng.bit_generator.state, "frozen": self.frozen}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`get_state`'s result."""
        self.rng.bit_generator.state = state["rng"]
        self.frozen = tuple(state["frozen"]) if state["frozen"] is not None else None

    def skip_llm(self) -> bool:
        """True when this request needs no LLM call (``random``, or ``frozen`` once it has an answer)."""
        return self.kind == "random" or (self.kind == "frozen" and self.frozen is not None)

    def values(self) -> tuple[float, ...] | None:
        """Values when the LLM is skipped (``None``: nothing new to publish)."""
        if self.kind == "frozen":
            return None
        if self.spec.is_discrete:
            fraction = float(self.options.get("target_entropy", 0.8))
            probs = entropy_matched(self.rng.normal(size=self.spec.n), fraction * math.log(self.spec.n))
            return tuple(probs)
        scale = float(self.options.get("bias_scale", 0.2))
        return tuple(scale * self.rng.choice([-1.0, 1.0], size=self.spec.n))

    def transform(self, values: tuple[float, ...]) -> tuple[float, ...]:
        """Applied to each validated LLM answer."""
        if self.kind == "shuffled":
            if self.spec.n == 1 and not self.spec.is_discrete:
                return (-values[0],)
            return tuple(values[i] for i in self.permutation)
        if self.kind == "frozen":
            self.frozen = tuple(values)
        return tuple(values)


def make_control(prompt_set: PromptSet, spec: ActionSpec, rng: np.random.Generator) -> Control | None:
    """The control arm of ``prompt_set`` for ``spec``, or ``None`` for an ordinary prompt set."""
    if prompt_set.control is None:
        return None
    return Control(prompt_set.control, spec, rng, dict(prompt_set.options))
