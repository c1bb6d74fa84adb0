"""A third-party llm-explorer plugin whose stage holds state: an analyser with its own random
generator and a call counter, saved and restored through the state protocol
(``get_state``/``set_state``, :mod:`explorer_pipeline.state`).

Its module name is deliberately unrelated to llm-explorer's, so nothing could find its state by
looking for the project's own modules: only the protocol carries it across ``train --resume``.
"""

from __future__ import annotations

import numpy as np

from explorer_pipeline import hookimpl


class DiceAnalyser:
    """An analysis that names a random action to try (no model call), numbered by request."""

    def __init__(self, context, salt: int = 0) -> None:
        self.n = context.spec.n
        self.rng = np.random.default_rng([context.seed, int(salt)])
        self.calls = 0

    async def analyse(self, variables, request):
        self.calls += 1
        action = int(self.rng.integers(self.n))
        draw = float(self.rng.random())
        return f"analysis {self.calls}: try action {action} (draw {draw:.6f})"

    def get_state(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "calls": self.calls}

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.calls = int(state["calls"])


@hookimpl
def register_analysers(register):
    register("dice", DiceAnalyser)
