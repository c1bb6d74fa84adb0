"""The ``reference-control`` proposer: the graded controls of offline evaluation, replayed in training.

``llm-explorer eval-advice --controls`` scores five controls built from a scenario set's reference
(:mod:`explorer_ablation.offline.controls`). This proposer answers each request of a training run
with the same control, so that a study can set the offline score of a control against the RL
outcome of training with it. No model is called::

    explorer:
      provider: scripted           # any provider: the proposer never calls it
      prompt_set: single-stage     # no stage-1 analysis
      proposer:
        name: reference-control
        options: {scenarios: runs/scenarios/CartPole-v1-dqn, level: best}

Options: ``scenarios``, a scenario set (``llm-explorer scenarios``) of the same environment, and
``level``, one of ``best``, ``good``, ``none``, ``bad``, ``worst``.

Which scenario answers a request: the learner's state of learning is told by its env step. A
request about the episode that finished at env step ``t`` gets the control of the set's newest
scenario recorded at or before ``t`` (the first one before that), computed by
:func:`explorer_ablation.offline.controls.control_at` exactly as offline scoring computes it:
discrete, ``softmax(beta * A_mean / S)`` over the scenario's visited states; continuous, the grid
search on the reference critic's ``q_gain``. (The episode record the pipeline gets holds actions,
not observations, so the states come from the recorded run at the same env step.)

The reference's networks (continuous sets only) are rebuilt once, when the proposer is built,
without disturbing the run's global random generators or torch's thread count.

Registered by the ``ablation`` plugin (:mod:`explorer_ablation.plugin`), which imports this
module only when a run builds its explorer.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from explorer_pipeline.stages import Request, StageContext
from explorer_rundir.scenarios import ScenarioSet, load_set

from .controls import CONTROL_LEVELS, control_at

__all__ = ["LEVELS", "ReferenceControlProposer", "reference_control_proposer"]

#: the ``level`` option's values, from the best advice to the worst
LEVELS = tuple(name.removeprefix("control-") for name in CONTROL_LEVELS)

QFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]


@contextlib.contextmanager
def _isolated_rng() -> Iterator[None]:
    """Rebuilding networks seeds numpy, random and torch and sets torch's threads: undo all of it."""
    import torch

    np_state, py_state = np.random.get_state(), random.getstate()
    torch_state, threads = torch.get_rng_state(), torch.get_num_threads()
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
        torch.set_rng_state(torch_state)
        torch.set_num_threads(threads)


def _reference_q(path: Path) -> QFunction:
    from tianshou_integration.scenarios import load_reference

    with _isolated_rng():
        reference = load_reference(path)
    reference.close()  # its environments; the networks stay usable
    return reference.q


class ReferenceControlProposer:
    """Answers every request with control ``level`` of scenario set ``sset`` (see the module docstring)."""

    def __init__(self, sset: ScenarioSet, level: str, q_ref: QFunction | None = None) -> None:
        if not sset.scenarios:
            raise ValueError(f"scenario set {str(sset.path)!r} has no scenarios")
        self.sset, self.level, self.name = sset, level, f"control-{level}"
        self.q_ref = q_ref

    def values_at(self, env_step: int) -> tuple[tuple[float, ...], str, int]:
        """The control's values for a request at ``env_step``, and the scenario (id, step) they come from."""
        scenario, values = control_at(self.name, self.sset, env_step, self.q_ref)
        return values, scenario.id, scenario.step

    async def propose(self, variables: Mapping[str, str], request: Request) -> Sequence[float]:
        """The control for the learner's env step; recorded in the update's notes."""
        values, scenario, step = self.values_at(request.record.env_step)
        request.notes["proposer"] = {"name": "reference-control", "level": self.level, "scenario": scenario,
                                     "scenario_step": step}
        return values


def reference_control_proposer(context: StageContext, *, scenarios: str, level: str) -> ReferenceControlProposer:
    """No model: control `level` (best..worst) of the `scenarios` set's reference, as `eval-advice --controls`."""
    if level not in LEVELS:
        raise ValueError(f"level {level!r} is not one of {', '.join(LEVELS)}")
    path = Path(scenarios).expanduser()
    sset = load_set(path)  # a ScenarioSetError (one line) for anything that is not a readable set
    if sset.env_id != context.task.env_id:
        raise ValueError(f"scenario set {str(path)!r} was recorded on {sset.env_id}, this run trains "
                         f"{context.task.env_id}")
    if sset.spec.kind is not context.spec.kind or sset.spec.n != context.spec.n:
        raise ValueError(f"scenario set {str(path)!r} has {sset.spec.n} {sset.spec.kind.value} actions, this run "
                         f"{context.spec.n} {context.spec.kind.value}")
    q_ref = None if sset.spec.is_discrete else _reference_q(path)
    return ReferenceControlProposer(sset, level, q_ref)

