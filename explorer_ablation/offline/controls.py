"""Graded scripted controls built from the reference itself: advice of known quality.

Five levels, from the best advice the reference can give to the worst. A scoring method that
cannot put them in this order cannot rank real advice either.

* discrete: p = softmax(beta * mean_s A(s, .) / mean_s std_a Q_ref(s, .)) with beta = 4, 1, 0, -1, -4
  (beta = 0 is uniform, the algorithm's own exploration). The expected-advantage score of this
  family grows with beta (its derivative is the variance of the advantage under p), so the
  order is guaranteed for every reference.
* continuous: one bias serves every state, and where the reference's better action lies varies
  from state to state (on Pendulum it changes sign), so "towards pi_ref" has no single direction:
  b = f * mean_s (pi_ref(s) - pi(s)) is *not* ordered by the reference's critic (measured on the
  built-in Pendulum set, docs/offline-eval.md). The controls are therefore found with the critic:
  ``best`` is the bias on a grid over [-1, 1]^n with the largest q_gain, ``worst`` the one with the
  smallest, ``good`` and ``bad`` the points on the segments from 0 to them whose q_gain is closest
  to half of best's and worst's (they exist: q_gain is continuous and 0 at b = 0), ``none`` is 0.
  Their order in q_gain holds by construction up to the grid's resolution; what the tests check
  with them is that the pipeline, the reference networks and the scoring agree end to end.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from explorer_rundir.scenarios import Scenario, ScenarioSet

from .scores import continuous_scores

__all__ = ["CONTROL_LEVELS", "continuous_controls", "control_at", "control_values", "scenario_at"]

QFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]
_GRID_STEPS = 21
_found: dict[int, tuple[Scenario, dict[str, tuple[float, ...]]]] = {}  # id -> (scenario, its controls)

#: name -> level (beta for discrete, f for continuous), from good to adversarial
CONTROL_LEVELS: dict[str, tuple[float, float]] = {
    "control-best": (4.0, 1.0),
    "control-good": (1.0, 0.5),
    "control-none": (0.0, 0.0),
    "control-bad": (-1.0, -0.5),
    "control-worst": (-4.0, -1.0),
}


def _grid(n: int, rng: np.random.Generator) -> np.ndarray:
    if n <= 2:
        axis = np.linspace(-1.0, 1.0, _GRID_STEPS)
        return np.stack(np.meshgrid(*([axis] * n)), axis=-1).reshape(-1, n)
    return np.vstack([np.zeros((1, n)), rng.uniform(-1.0, 1.0, (400, n)), np.eye(n), -np.eye(n)])


def continuous_controls(scenario: Scenario, q_ref: QFunction) -> dict[str, tuple[float, ...]]:
    """The five continuous controls of ``scenario``, found with the reference's critic ``q_ref``."""
    a = scenario.arrays

    def gain(b: np.ndarray) -> float:
        return continuous_scores(b, a["states"], a["pi"], a["pi_ref"], a["q_pi"], a["spread"], q_ref)["q_gain"]

    n = a["pi"].shape[1]
    grid = _grid(n, np.random.default_rng(0))
    gains = np.array([gain(b) for b in grid])
    best, worst = grid[int(gains.argmax())], grid[int(gains.argmin())]

    def halfway(end: np.ndarray, target: float) -> np.ndarray:
        ts = np.linspace(0.0, 1.0, _GRID_STEPS)[1:-1]
        values = np.array([gain(t * end) for t in ts])
        return ts[int(np.abs(values - target).argmin())] * end

    return {"control-best": tuple(best.tolist()), "control-good": tuple(halfway(best, gains.max() / 2).tolist()),
            "control-none": (0.0,) * n, "control-bad": tuple(halfway(worst, gains.min() / 2).tolist()),
            "control-worst": tuple(worst.tolist())}


def control_values(name: str, scenario: Scenario, discrete: bool, q_ref: QFunction | None = None) -> tuple[float, ...]:
    """The update values of control ``name`` for ``scenario`` (continuous ones need ``q_ref``)."""
    beta, fraction = CONTROL_LEVELS[name]
    arrays = scenario.arrays
    if discrete:
        q = arrays["q_ref"]
        spread = float(q.std(axis=1).mean())
        adv = (q - q.mean(axis=1, keepdims=True)).mean(axis=0) / (spread if spread > 1e-12 else 1.0)
        logits = beta * adv
        p = np.exp(logits - logits.max())
        return tuple((p / p.sum()).tolist())
    if q_ref is None:  # without the critic: towards (or away from) the reference's mean action
        towards = (arrays["pi_ref"] - arrays["pi"]).mean(axis=0)
        return tuple(np.clip(fraction * towards, -1.0, 1.0).tolist())
    found = _found.get(id(scenario))
    if found is None or found[0] is not scenario:  # the grid search runs once per scenario
        found = _found[id(scenario)] = (scenario, continuous_controls(scenario, q_ref))
    return found[1][name]


def scenario_at(sset: ScenarioSet, env_step: int) -> Scenario:
    """The scenario of ``sset`` for a learner at ``env_step``: the newest recorded at or before it
    (the first scenario for a learner younger than all of them)."""
    earlier = [s for s in sset.scenarios if s.step <= env_step]
    if earlier:
        return max(earlier, key=lambda s: s.step)
    return min(sset.scenarios, key=lambda s: s.step)


def control_at(name: str, sset: ScenarioSet, env_step: int,
               q_ref: QFunction | None = None) -> tuple[Scenario, tuple[float, ...]]:
    """Control ``name`` for a learner at ``env_step`` (training's ``reference-control`` proposer):
    the scenario :func:`scenario_at` picks, and :func:`control_values` on it."""
    scenario = scenario_at(sset, env_step)
    return scenario, control_values(name, scenario, sset.spec.is_discrete, q_ref)
