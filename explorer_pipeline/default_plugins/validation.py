"""The default validator: the rules of DESIGN.md. The collector only ever sees its output."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..errors import ValidationRejected
from ..state import Stateless
from ..types import ActionSpec


class DefaultValidator(Stateless):
    """Discrete: finite, non-negative, one per action; masked actions get 0; renormalised and mixed
    with a uniform floor over legal actions. Continuous: finite, one per dimension, in normalised
    units (1 = half the action range, from its middle to its upper bound), clipped to ``±max_bias``, sign kept.

    :param floor: weight of the uniform mixture, so every legal action stays explorable (0 = off).
    :param max_bias: largest absolute bias, as a fraction of the normalised action range.
    :param legal: optional static action mask (``True`` = legal), one per discrete action.
    """

    def __init__(self, floor: float = 0.05, max_bias: float = 0.5, legal: Sequence[bool] | None = None) -> None:
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"floor must be in [0, 1], got {floor}")
        if not 0.0 < max_bias <= 2.0:
            raise ValueError(f"max_bias must be in (0, 2], got {max_bias}")
        self.floor, self.max_bias = float(floor), float(max_bias)
        self.legal = tuple(bool(x) for x in legal) if legal is not None else None

    def validate(self, values: Sequence[float], spec: ActionSpec) -> tuple[float, ...]:
        """The values the collector may use, or ``ValidationRejected`` with a reason."""
        values = [float(v) for v in values]
        if len(values) != spec.n:
            raise ValidationRejected("wrong_length", f"got {len(values)} values, need {spec.n}")
        if not all(math.isfinite(v) for v in values):
            raise ValidationRejected("non_finite", f"values must be finite, got {values}")
        if spec.is_discrete:
            return self._distribution(values, spec)
        return tuple(max(-self.max_bias, min(self.max_bias, v)) for v in values)

    def _distribution(self, values: list[float], spec: ActionSpec) -> tuple[float, ...]:
        legal = self.legal or (True,) * spec.n
        if len(legal) != spec.n:
            raise ValidationRejected("wrong_length", f"mask has {len(legal)} entries, need {spec.n}")
        if any(v < 0 for v in values):
            raise ValidationRejected("negative", f"probabilities must be >= 0, got {values}")
        masked = [v if ok else 0.0 for v, ok in zip(values, legal, strict=True)]
        peak = max(masked)
        if peak <= 0:
            raise ValidationRejected("all_zero", "no legal action has a positive probability")
        scaled = [v / peak for v in masked]  # dividing by the peak first keeps huge values finite
        total = sum(scaled)
        n_legal = sum(legal)
        return tuple(
            ((1.0 - self.floor) * v / total + self.floor / n_legal) if ok else 0.0
            for v, ok in zip(scaled, legal, strict=True)
        )
