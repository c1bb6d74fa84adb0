"""Replay a run's recorded update schedule: the same run again, with no LLM at all.

A finished run directory records, for every exploration update the collector used, the env step
at which it was first applied (``updates.jsonl``, ``applied_at_step``). ``llm-explorer train
--replay-schedule RUN_DIR --out NEW_DIR`` reruns that run's configuration without opening any
provider: a :class:`ScheduledCache` publishes each recorded update when the env-step counter
reaches its recorded step, and the run computes the same ``metrics.csv``, also for runs recorded
in async mode.

Why this is exact: the guided draws read the cache only when they explore (discrete actions) or
at every step (continuous noise), and an update is marked applied at the first read after its
publication. So at every read the recorded run used the applied update with the largest
``applied_at_step`` not beyond the current step (versions only grow; two reads never share a
step). :meth:`ScheduledCache.current` publishes exactly those updates before answering, at the
same counter values, so every read returns the same update, the same actions are drawn from the
same generators, and everything downstream follows. Updates that were published but never
applied, and failed requests, change nothing the collector sees and are not replayed.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from explorer_pipeline.cache import ExplorationCache
from explorer_pipeline.errors import UsageError
from explorer_pipeline.types import ActionSpec, ExplorationUpdate, Provenance, StageUsage
from explorer_rundir.format import (
    CONFIG_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    UPDATES_FILE,
    read_summary,
)

from .counter import EnvStepCounter

__all__ = ["SCHEDULE_FILE", "ScheduledCache", "ScheduledUpdate", "load_schedule", "read_recorded_schedule",
           "write_schedule"]

SCHEDULE_FILE = "replayed_schedule.jsonl"
"""In a replay's run directory: the recorded update lines it applies (a resumed replay reads them)."""


@dataclass(frozen=True)
class ScheduledUpdate:
    """One recorded update and the env step at which the recorded run first applied it."""

    step: int
    update: ExplorationUpdate
    line: dict[str, Any]


def update_from_line(line: dict[str, Any]) -> ExplorationUpdate:
    """Rebuild an update from its ``updates.jsonl`` line (provenance fields the line has)."""
    known = {f.name for f in dataclasses.fields(Provenance)}
    fields: dict[str, Any] = {key: line[key] for key in known if key in line and key != "tokens"}
    tokens = line.get("tokens") or {}
    fields["tokens"] = {stage: StageUsage(int(t.get("input", 0)), int(t.get("output", 0)))
                        for stage, t in tokens.items()}
    if "retry_reasons" in known and "retries" in line:
        fields["retry_reasons"] = tuple(line["retries"])
    if "fallback_reason" in known and "reason" in line:
        fields["fallback_reason"] = line["reason"]
    return ExplorationUpdate(version=int(line["version"]), kind=line["kind"], values=tuple(line["values"]),
                             source=line.get("source", "llm"), provenance=Provenance(**fields))


def _schedule_from_lines(lines: Sequence[dict[str, Any]], where: str) -> list[ScheduledUpdate]:
    schedule = []
    for line in lines:
        if line.get("source") == "fallback" or line.get("applied_at_step") is None:
            continue
        try:
            schedule.append(ScheduledUpdate(int(line["applied_at_step"]), update_from_line(line), line))
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"{where}: update line {line.get('version')!r} cannot be replayed: {exc}") from None
    schedule.sort(key=lambda s: s.step)
    for before, after in itertools.pairwise(schedule):
        if after.update.version <= before.update.version or after.step == before.step:
            raise UsageError(f"{where}: applied updates are out of order (version {before.update.version} at step "
                             f"{before.step}, version {after.update.version} at step {after.step}); it is not "
                             "a schedule a run records")
    return schedule


def _read_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSONL file; UsageError for one that is not a JSON object (a cut last line)."""
    lines = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            line = None
        if not isinstance(line, dict):
            raise UsageError(f"{path}:{number}: not a complete JSON line; the run directory is incomplete")
        lines.append(line)
    return lines


def read_recorded_schedule(run_dir: str | Path, steps: int) -> list[ScheduledUpdate]:
    """The update schedule of the finished run in ``run_dir``.

    Raises :class:`UsageError` when the directory is not a finished run (a file missing, no
    summary, an interrupted or failed run, a line cut short) or its schedule is inconsistent.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"--replay-schedule: {str(run_dir)!r} is not a directory")
    missing = [name for name in (CONFIG_FILE, MANIFEST_FILE, METRICS_FILE, UPDATES_FILE, SUMMARY_FILE)
               if not (run_dir / name).is_file()]
    if missing:
        raise UsageError(f"--replay-schedule: {str(run_dir)!r} is not a complete run directory "
                         f"(missing: {', '.join(missing)})")
    summary = read_summary(run_dir)
    if summary is None or summary.get("interrupted") is not False or not isinstance(summary.get("env_steps"), int):
        state = "interrupted" if summary is not None and summary.get("interrupted") else "unfinished"
        raise UsageError(f"--replay-schedule: the run in {str(run_dir)!r} is {state}; its schedule is incomplete "
                         "(resume it with --resume first)")
    schedule = _schedule_from_lines(_read_lines(run_dir / UPDATES_FILE), str(run_dir / UPDATES_FILE))
    if schedule and schedule[-1].step >= max(steps, summary["env_steps"]):
        raise UsageError(f"--replay-schedule: {run_dir / UPDATES_FILE} applies an update at env step "
                         f"{schedule[-1].step}, beyond the run's {summary['env_steps']} steps")
    return schedule


def write_schedule(path: str | Path, schedule: Sequence[ScheduledUpdate]) -> None:
    """Keep the replayed schedule in the replay's own run directory (one recorded line each)."""
    from explorer_rundir.format import write_text_atomic

    write_text_atomic(path, "".join(json.dumps(s.line) + "\n" for s in schedule))


def load_schedule(path: str | Path) -> list[ScheduledUpdate]:
    """Read back :func:`write_schedule`'s file."""
    return _schedule_from_lines(_read_lines(Path(path)), str(path))


class ScheduledCache(ExplorationCache):
    """An exploration cache that publishes recorded updates at their recorded env steps.

    :param schedule: the updates in step order.
    :param counter: the env-step counter the guided draws record ``applied_at`` with.
    :param on_publish: called with each update as it is published (the run directory's
        ``on_update``), on the training thread.
    """

    def __init__(self, spec: ActionSpec, schedule: Sequence[ScheduledUpdate], counter: EnvStepCounter,
                 on_publish: Sequence[Callable[[ExplorationUpdate], None]] = ()) -> None:
        super().__init__(spec)
        self.schedule = list(schedule)
        self.counter = counter
        self.on_publish = list(on_publish)
        self._next = 0

    def current(self) -> ExplorationUpdate:
        """The update in force at the counter's step: recorded updates due by now are published first."""
        while self._next < len(self.schedule) and self.schedule[self._next].step <= self.counter.value:
            update = self.publish(self.schedule[self._next].update)
            self._next += 1
            for callback in self.on_publish:
                callback(update)
        return self._current

    def set_state(self, state: Any) -> None:
        """Restore a checkpoint's cache; the recorded updates not yet published stay scheduled."""
        super().set_state(state)
        version = self._current.version
        self._next = sum(1 for s in self.schedule if s.update.version <= version)

    def mismatches(self) -> list[dict[str, Any]]:
        """Scheduled updates that were not first applied at their recorded step (empty when the
        replay reproduced the recorded run)."""
        out = []
        for s in self.schedule:
            at = self.applied_at(s.update.version)
            if at != s.step:
                out.append({"version": s.update.version, "recorded_step": s.step, "applied_at_step": at})
        return out
