"""Score the arms of an ablation spec offline: their pipeline stages on recorded scenarios.

Each arm's run configuration is resolved as ``llm-explorer ablate`` would resolve it for the
scenario set's environment (:func:`explorer_ablation.spec.run_document`), and its explorer is
built the way ``llm-explorer train`` builds it (:func:`explorer_pipeline.session.open_explorer`:
provider, preflight, prompt set, every stage plugin, response cache, exchange log). Only the
pipeline runs: summariser -> analyser -> proposer -> validator, once per scenario, with the
scenario's episode record and history; no environment is stepped and nothing is trained. Every
update is scored against the scenario set's reference (:mod:`.scores`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from explorer_pipeline.errors import UsageError
from explorer_pipeline.types import ExplorationUpdate, RequestFailure
from explorer_rundir.scenarios import Scenario, ScenarioSet

from .controls import CONTROL_LEVELS, control_values
from .scores import continuous_scores, discrete_scores

__all__ = ["ArmPlan", "Outcome", "plan_arms", "run_arm", "score_values"]


@dataclass(frozen=True)
class ArmPlan:
    """One arm to score: its explorer configuration (None: the algorithm's own exploration) or a
    scripted control level."""

    name: str
    explorer: Any = None
    control: str | None = None
    seed: int = 0


@dataclass
class Outcome:
    """What one arm did on one scenario."""

    arm: str
    set_name: str
    scenario: str
    step: int
    values: tuple[float, ...] | None = None
    scores: dict[str, float] = field(default_factory=dict)
    failure: str | None = None
    detail: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    attempts: int = 0

    def row(self) -> dict[str, Any]:
        """A flat JSON-ready row."""
        return {"set": self.set_name, "arm": self.arm, "scenario": self.scenario, "step": self.step,
                "status": "ok" if self.failure is None else self.failure, "detail": self.detail,
                **self.scores, "values": list(self.values) if self.values is not None else None,
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "latency_s": round(self.latency_s, 4), "attempts": self.attempts}


def _arm_config(spec: Any, arm: Any, sset: ScenarioSet, seed: int, base_dir: Path) -> Any:
    """The arm's resolved run configuration on the set's environment, with the set's algorithm
    (the advice is scored against that algorithm's reference, whatever the spec trains)."""
    from tianshou_integration.config import resolve

    from ..spec import run_document

    document = run_document(spec, arm, sset.env_id, seed, base_dir)
    data = {**document.data, "algo": sset.manifest.get("algo", document.data.get("algo"))}
    overrides = [((key,), value, f"arm {arm.name!r}: {key}") for key, value in data.items()]
    return resolve(overrides=overrides)


def plan_arms(spec: Any, spec_path: Path, sets: Sequence[ScenarioSet], out: Path, *, arms: Sequence[str] = (),
              controls: bool = False, response_cache: Path | None = None) -> dict[str, list[ArmPlan]]:
    """Every arm to score on every set, by set name. Raises :class:`UsageError` for a set whose
    environment the spec does not list, or an unknown arm name."""
    known = [a.name for a in spec.arms]
    for name in arms:
        if name not in known:
            raise UsageError(f"--arm {name!r}: the spec has no such arm; its arms: {', '.join(known)}")
    chosen = [a for a in spec.arms if not arms or a.name in arms]
    env_ids = [e.id for e in spec.environments]
    seed = spec.seeds[0]
    plans: dict[str, list[ArmPlan]] = {}
    for sset in sets:
        if sset.env_id not in env_ids:
            raise UsageError(f"scenario set {str(sset.path)!r} was recorded on {sset.env_id}; the spec's "
                             f"environments are {', '.join(env_ids)}")
        arm_plans = []
        for arm in chosen:
            config = _arm_config(spec, arm, sset, seed, spec_path.parent)
            explorer = config.explorer
            if explorer.enabled:
                update: dict[str, Any] = {"exchange_log": out / arm.name / "exchanges.jsonl"}
                if explorer.response_cache is None and response_cache is not None:
                    update["response_cache"] = response_cache
                explorer = explorer.model_copy(update=update)
            arm_plans.append(ArmPlan(arm.name, explorer if explorer.enabled else None, seed=seed))
        if controls:
            arm_plans += [ArmPlan(name, control=name) for name in CONTROL_LEVELS]
        plans[sset.name] = arm_plans
    return plans


def score_values(values: Sequence[float], scenario: Scenario, sset: ScenarioSet,
                 q_ref: Callable[[np.ndarray, np.ndarray], np.ndarray] | None) -> dict[str, float]:
    """The scores of one update's values on one scenario."""
    a = scenario.arrays
    if sset.spec.is_discrete:
        return discrete_scores(values, a["q_ref"])
    assert q_ref is not None
    return continuous_scores(values, a["states"], a["pi"], a["pi_ref"], a["q_pi"], a["spread"], q_ref)


def _tokens(tokens: dict[str, Any]) -> tuple[int, int]:
    return (sum(u.input_tokens for u in tokens.values()), sum(u.output_tokens for u in tokens.values()))


async def _ask_all(pipeline: Any, scenarios: Sequence[Scenario], concurrency: int) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def ask(i: int, scenario: Scenario) -> Any:
        async with gate:
            try:
                return await pipeline.handle(scenario.record, scenario.history, i + 1)
            except Exception as exc:  # a third-party stage outside the pipeline's own handling
                return RequestFailure("stage_error", f"{type(exc).__name__}: {exc}", scenario.record.episode_index,
                                      0, 0.0)

    return list(await asyncio.gather(*(ask(i, s) for i, s in enumerate(scenarios))))


def run_arm(plan: ArmPlan, sset: ScenarioSet, *, q_ref: Callable[[np.ndarray, np.ndarray], np.ndarray] | None,
            concurrency: int = 1, plugin_manager: Any = None) -> list[Outcome]:
    """Ask ``plan``'s pipeline (or control) for an update on every scenario of ``sset`` and score it.

    A request that fails is a counted failure (its reason: ``parse_error``, ``validation:...``,
    ``provider_error``, ...). Raises :class:`UsageError` when the arm's explorer cannot be built
    (unknown provider or stage, failed preflight)."""
    scenarios = sset.scenarios
    if plan.control is not None or plan.explorer is None:
        default = ExplorationUpdate.default_for(sset.spec).values
        out = []
        for s in scenarios:
            values = control_values(plan.control, s, sset.spec.is_discrete, q_ref) if plan.control else default
            out.append(Outcome(plan.name, sset.name, s.id, s.step, tuple(values), score_values(values, s, sset, q_ref)))
        return out
    from explorer_pipeline.session import open_explorer

    Path(plan.explorer.exchange_log).parent.mkdir(parents=True, exist_ok=True)
    explorer = open_explorer(plan.explorer, sset.env_id, sset.spec, seed=plan.seed, plugin_manager=plugin_manager)
    try:
        results = asyncio.run(_ask_all(explorer.runtime.handler, scenarios, max(1, concurrency)))
    finally:
        explorer.close()
    outcomes = []
    for s, result in zip(scenarios, results, strict=True):
        o = Outcome(plan.name, sset.name, s.id, s.step)
        if result is None:  # a frozen control arm after its first answer
            o.failure, o.detail = "no_update", "the arm published nothing (frozen)"
        elif isinstance(result, RequestFailure):
            o.failure, o.detail = result.reason, result.detail
            o.input_tokens, o.output_tokens = _tokens(result.tokens)
            o.latency_s, o.attempts = result.latency_s, result.attempts
        else:
            p = result.provenance
            o.values = tuple(result.values)
            o.input_tokens, o.output_tokens = _tokens(p.tokens)
            o.latency_s, o.attempts = p.latency_s, p.attempts
            try:
                o.scores = score_values(o.values, s, sset, q_ref)
            except ValueError as exc:  # a third-party validator returned the wrong number of values
                o.values, o.failure, o.detail = None, "validation:shape", str(exc)
        outcomes.append(o)
    return outcomes
