"""Reading a study directory back: one :class:`RunResult` per planned run.

Everything comes from files ``llm-explorer train`` wrote (``summary.json``, ``metrics.csv``,
``updates.jsonl``) and from the study's own ``study.json`` and ``status.jsonl``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from explorer_pipeline.budget import Price
from explorer_pipeline.errors import UsageError
from explorer_rundir import informativeness
from explorer_rundir.format import (
    METRICS_FILE,
    UPDATES_FILE,
    read_json,
    read_jsonl,
    read_summary,
    run_is_complete,
)

from .state import StatusLog

__all__ = ["SUMMARY_COLUMNS", "RunResult", "Study", "load_study"]

SUMMARY_COLUMNS = (
    "arm", "env", "seed", "status", "final_return", "auc", "train_mean", "env_steps", "episodes", "wall_s",
    "steps_per_s",
    "llm_requests", "input_tokens", "output_tokens", "updates_published", "updates_applied", "updates_informative",
    "informative_share", "median_kl_uniform_nats", "median_bias_max_abs", "median_staleness_episodes",
    "median_staleness_steps", "fallbacks", "parse_failures", "validation_rejections", "provider_errors",
    "dropped_stale", "mean_latency_s", "cost_usd", "budget_stop_episode", "budget_stop_step", "run_dir", "error",
)
_COUNTERS = ("llm_requests", "updates_published", "updates_applied", "parse_failures",
             "validation_rejections", "provider_errors", "dropped_stale", "episodes")


@dataclass
class RunResult:
    """One planned run and what it produced. ``status``: complete, failed, interrupted, missing."""

    arm: str
    env: str
    seed: int
    settings: dict[str, Any]
    run_dir: Path
    status: str
    summary: dict[str, Any] = field(default_factory=dict)
    eval_curve: list[tuple[float, float]] = field(default_factory=list)
    train_curve: list[tuple[float, float]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    applied_updates: list[dict[str, Any]] = field(default_factory=list)
    """The ``updates.jsonl`` lines of updates the collector used, with their informativeness measures
    (computed here for run directories written before the measures existed)."""
    fallback_lines: int = 0
    error: str = ""
    log: str = ""

    @property
    def complete(self) -> bool:
        """The run finished (its run directory is complete)."""
        return self.status == "complete"

    @property
    def final_return(self) -> float:
        """The final greedy-evaluation return (``summary.json``), else the last evaluation's."""
        value = self.summary.get("final_eval_return")
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
        return self.eval_curve[-1][1] if self.eval_curve else math.nan

    @property
    def auc(self) -> float:
        """Area under the greedy-evaluation curve divided by its step span: the return averaged
        over training (trapezoidal rule; a single evaluation is its own average)."""
        if not self.eval_curve:
            return math.nan
        steps = np.array([s for s, _ in self.eval_curve], dtype=float)
        values = np.array([v for _, v in self.eval_curve], dtype=float)
        if len(steps) == 1 or steps[-1] <= steps[0]:
            return float(values.mean())
        trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2
        return float(trapezoid(values, steps) / (steps[-1] - steps[0]))

    @property
    def train_mean(self) -> float:
        """The mean return of every training episode (``train_return`` rows of ``metrics.csv``):
        how well the exploring agent did while it learnt. With a reward of 1 at a goal and 0
        elsewhere, the share of training episodes that reached the goal. NaN without episodes."""
        if not self.train_curve:
            return math.nan
        return float(np.mean([v for _, v in self.train_curve]))

    def tokens(self) -> tuple[int, int]:
        """Input and output tokens over every stage."""
        stages = self.summary.get("tokens") or {}
        inp = sum(int(v.get("input", 0) or 0) for v in stages.values() if isinstance(v, dict))
        out = sum(int(v.get("output", 0) or 0) for v in stages.values() if isinstance(v, dict))
        return inp, out

    @property
    def guidance(self) -> dict[str, Any]:
        """Informativeness over this run's applied updates (:func:`informativeness.summarise`), from
        ``updates.jsonl``; ``summary.json``'s own count and share take precedence when it has them."""
        measured = informativeness.summarise(self.applied_updates)
        for key in ("updates_informative", "informative_share"):
            if key in self.summary:
                measured[key] = self.summary[key]
        return measured

    @property
    def updates_informative(self) -> int | None:
        """Applied updates that were informative; None without a summary."""
        value = self.guidance.get("updates_informative") if self.summary else None
        return int(value) if isinstance(value, int | float) else None

    @property
    def fallbacks(self) -> int:
        """Requests that kept the previous update (``summary.json``, else the ``fallback`` lines)."""
        value = self.summary.get("fallbacks")
        return int(value) if isinstance(value, int | float) else self.fallback_lines

    @property
    def budget_limited(self) -> bool:
        """The run had an LLM budget (``explorer.budget``: a token or cost limit)."""
        budget = self.summary.get("budget")
        return isinstance(budget, dict) and (budget.get("max_tokens") is not None
                                             or budget.get("max_cost_usd") is not None)

    @property
    def budget_stop(self) -> dict[str, Any] | None:
        """When and why the run's LLM budget stopped its requests (``summary.json``'s
        ``budget.stop``: ``reason``, ``episode``, ``env_step`` ...); None when it did not."""
        budget = self.summary.get("budget")
        stop = budget.get("stop") if isinstance(budget, dict) else None
        return stop if isinstance(stop, dict) else None

    def price_key(self) -> str | None:
        """The name the spec's ``prices`` are looked up by: the model, else the provider."""
        return self.settings.get("model") or self.settings.get("provider")

    def cost_usd(self, prices: dict[str, dict[str, float]]) -> float | None:
        """Token cost of the run in USD; None when no price applies or the run has no summary."""
        key = self.price_key()
        if key is None or key not in prices or not self.summary:
            return None
        return Price.model_validate(prices[key]).cost_usd(*self.tokens())

    def row(self, prices: dict[str, dict[str, float]], base: Path) -> dict[str, Any]:
        """The run's row of ``summary.csv`` (:data:`SUMMARY_COLUMNS`), paths relative to ``base``."""
        s = self.summary
        inp, out = self.tokens() if s else (None, None)
        cost = self.cost_usd(prices)
        row: dict[str, Any] = {
            "arm": self.arm, "env": self.env, "seed": self.seed, "status": self.status,
            "final_return": _num(self.final_return), "auc": _num(self.auc),
            "train_mean": _num(self.train_mean),
            "env_steps": s.get("env_steps"), "wall_s": _num(s.get("wall_s")), "steps_per_s": _num(s.get("steps_per_s")),
            "input_tokens": inp, "output_tokens": out, "fallbacks": self.fallbacks if s else None,
            "mean_latency_s": _num(float(np.mean(self.latencies))) if self.latencies else None,
            "cost_usd": None if cost is None else round(cost, 6),
            "budget_stop_episode": (self.budget_stop or {}).get("episode"),
            "budget_stop_step": (self.budget_stop or {}).get("env_step"),
            "run_dir": _relative(self.run_dir, base),
            "error": self.error.strip().splitlines()[-1] if self.error.strip() else "",
        }
        for name in _COUNTERS:
            row[name] = s.get(name)
        if s:
            guidance = self.guidance
            row["updates_informative"] = self.updates_informative
            row["informative_share"] = _num(guidance.get("informative_share"))
            for key in ("median_kl_uniform_nats", "median_bias_max_abs", "median_staleness_episodes",
                        "median_staleness_steps"):
                row[key] = _num(guidance.get(key))
        return {column: row.get(column) for column in SUMMARY_COLUMNS}


@dataclass
class Study:
    """A study directory read back."""

    out: Path
    meta: dict[str, Any]
    runs: list[RunResult]

    @property
    def arms(self) -> list[str]:
        """Arm names, in spec order."""
        return list(self.meta["arms"])

    @property
    def envs(self) -> list[str]:
        """Environment ids, in spec order."""
        return [e["id"] for e in self.meta["environments"]]

    @property
    def baseline(self) -> str | None:
        """The arm the others are compared with, if any."""
        return self.meta.get("baseline")

    @property
    def prices(self) -> dict[str, dict[str, float]]:
        """Token prices by model or provider name (``{"input": ..., "output": ...}`` per million)."""
        return self.meta.get("prices") or {}

    def env_meta(self, env: str) -> dict[str, Any]:
        """The spec's entry for environment ``env`` (its scores for normalisation)."""
        return next(e for e in self.meta["environments"] if e["id"] == env)

    def complete(self, arm: str | None = None, env: str | None = None) -> list[RunResult]:
        """Complete runs, optionally of one arm and/or one environment."""
        return [r for r in self.runs if r.complete and (arm is None or r.arm == arm) and (env is None or r.env == env)]


def load_study(out: Path | str) -> Study:
    """Raises :class:`UsageError` when ``out`` is not a study directory. ``out`` may be a storage
    URI (:mod:`.storage`): the files the report reads are fetched from it first."""
    from .storage import local_copy

    out = Path(local_copy(out))
    meta = read_json(out / "study.json")
    if not isinstance(meta, dict) or "runs" not in meta:
        raise UsageError(f"{str(out)!r} is not an ablation study directory (no readable study.json); "
                         "create one with: llm-explorer ablate SPEC --out DIR")
    last = StatusLog(out / "status.jsonl").last_per_run()
    runs = [_load_run(out, run_id, info, last.get(run_id)) for run_id, info in meta["runs"].items()]
    return Study(out, meta, runs)


def _load_run(out: Path, run_id: str, info: dict[str, Any], last: dict[str, Any] | None) -> RunResult:
    run_dir = out / info["dir"]
    settings = info.get("settings", {})
    if run_is_complete(run_dir, settings.get("steps")):
        status = "complete"
    elif last is not None and last.get("event") in ("failed", "interrupted"):
        status = last["event"]
    else:
        status = "missing"
    result = RunResult(arm=info["arm"], env=info["env"], seed=int(info["seed"]), settings=settings,
                       run_dir=run_dir, status=status, log=info.get("log", ""))
    if status != "complete":
        result.error = (last or {}).get("error", "") if status == "failed" else ""
        return result
    result.summary = read_summary(run_dir) or {}
    result.train_curve, result.eval_curve = _read_metrics(run_dir / METRICS_FILE)
    episode_ends = [int(step) for step, _ in result.train_curve]
    result.latencies, result.fallback_lines, result.applied_updates = _read_updates(run_dir / UPDATES_FILE,
                                                                                    episode_ends)
    return result


def _read_metrics(path: Path) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    train: list[tuple[float, float]] = []
    evals: list[tuple[float, float]] = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                step = _float(row.get("step"))
                if step is None:
                    continue
                for key, target in (("train_return", train), ("eval_return", evals)):
                    value = _float(row.get(key))
                    if value is not None:
                        target.append((step, value))
    except OSError:
        pass
    evals.sort(key=lambda p: p[0])
    return train, evals


def _read_updates(path: Path, episode_ends: list[int]) -> tuple[list[float], int, list[dict[str, Any]]]:
    """Request latencies, fallback lines and the measured applied updates in ``updates.jsonl``.

    :param episode_ends: the env step each training episode ended at, by episode index (for the
        staleness of lines written before ``updates.jsonl`` carried it).
    """
    latencies: list[float] = []
    fallbacks = 0
    lines = read_jsonl(path)
    for line in lines:
        source = line.get("source")
        if source == "fallback":
            fallbacks += 1
        asked = source in ("llm", "fallback") or (source == "control" and bool(line.get("tokens")))
        if asked and isinstance(line.get("latency_s"), int | float):  # shuffled / frozen ask the model too
            latencies.append(float(line["latency_s"]))
    applied = [line for line in informativeness.measure_lines(lines, episode_ends)
               if line.get("source") != "fallback" and "informative" in line
               and line.get("applied_at_step") is not None]
    return latencies, fallbacks, applied


def _float(text: Any) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _num(value: Any) -> float | None:
    if isinstance(value, int | float) and math.isfinite(value):
        return round(float(value), 6)
    return None


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)
