"""Counting runs done / running / failed and estimating the time left; watching a running run
(:class:`RunWatch`, the heartbeat's fields); the state of a study from its ``status.jsonl``
(:func:`study_state`, what ``llm-explorer status`` prints)."""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explorer_rundir.format import METRICS_FILE, UPDATES_FILE, read_json, read_jsonl, run_is_complete

__all__ = ["Progress", "RunState", "RunWatch", "StudyState", "format_duration", "study_state"]


def format_duration(seconds: float | None) -> str:
    """``1h05m``, ``3m07s`` or ``42s``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


@dataclass
class Progress:
    """``total`` runs, of which ``done`` were complete before this session started.

    The ETA: a running run with a heartbeat needs ``(steps - step) / steps_per_s``; without one,
    as long as the runs finished in this session took, less the time it has run. A queued run
    takes as long as the runs finished in this session, else as long as the running ones need in
    all at their speed. ``workers`` of them run at once (at least as many as are running now).
    """

    total: int
    done: int = 0
    workers: int = 1
    running: dict[str, float] = field(default_factory=dict)
    failed: int = 0
    durations: list[float] = field(default_factory=list)
    skipped: int = 0
    beats: dict[str, dict[str, Any]] = field(default_factory=dict)

    def start(self, run_id: str) -> None:
        """``run_id`` started now."""
        self.running[run_id] = time.monotonic()

    def beat(self, run_id: str, fields: dict[str, Any]) -> None:
        """A heartbeat of a running run (``step``, ``steps``, ``steps_per_s``, ...)."""
        self.running.setdefault(run_id, time.monotonic())
        self.beats[run_id] = fields

    def finish(self, run_id: str, ok: bool, wall_s: float) -> None:
        """``run_id`` ended after ``wall_s`` seconds, complete (``ok``) or failed."""
        self.running.pop(run_id, None)
        self.beats.pop(run_id, None)
        if ok:
            self.done += 1
            self.durations.append(wall_s)
        else:
            self.failed += 1

    def stop(self, run_id: str) -> None:
        """``run_id`` stopped without an outcome (interrupted)."""
        self.running.pop(run_id, None)
        self.beats.pop(run_id, None)

    @property
    def remaining(self) -> int:
        """Runs neither complete nor failed (running ones included)."""
        return self.total - self.done - self.failed

    def eta_s(self) -> float | None:
        """Seconds until every remaining run is done; None while nothing tells."""
        now = time.monotonic()
        per_run = statistics.fmean(self.durations) if self.durations else None
        speeds = [_run_seconds(b) for b in self.beats.values()]
        speeds = [s for s in speeds if s is not None]
        if per_run is None and speeds:
            per_run = statistics.fmean(speeds)
        if per_run is None:
            return None
        in_flight_left = 0.0
        for run_id, t0 in self.running.items():
            left = _seconds_left(self.beats.get(run_id))
            in_flight_left += left if left is not None else max(0.0, per_run - (now - t0))
        queued = max(0, self.remaining - len(self.running))
        return (queued * per_run + in_flight_left) / max(1, self.workers, len(self.running))

    def line(self) -> str:
        """``[done/total done, N running, F failed, ETA ...]`` for progress messages."""
        eta = "done" if self.remaining == 0 else f"ETA {format_duration(self.eta_s())}"
        return (f"[{self.done}/{self.total} done, {len(self.running)} running, "
                f"{self.failed} failed, {eta}]")


def _run_seconds(beat: dict[str, Any]) -> float | None:
    """A whole run's duration at the speed of a heartbeat."""
    steps, speed = beat.get("steps"), beat.get("steps_per_s")
    return steps / speed if isinstance(steps, int) and speed else None


def _seconds_left(beat: dict[str, Any] | None) -> float | None:
    if not beat:
        return None
    steps, step, speed = beat.get("steps"), beat.get("step"), beat.get("steps_per_s")
    if not (isinstance(steps, int) and isinstance(step, int) and speed):
        return None
    return max(0.0, (steps - step) / speed)


class RunWatch:
    """Reads a running run's directory for its heartbeat: the newest env step in ``metrics.csv``,
    steps/s since the previous heartbeat, LLM updates and failures (``fallback`` lines) in
    ``updates.jsonl``. Reads only what was appended since the previous call."""

    TAIL_BYTES = 4096

    def __init__(self, run_dir: Path, steps: int | None) -> None:
        self.run_dir, self.steps = run_dir, steps
        self._last: tuple[float, int] | None = None
        self._offset = 0
        self.updates = 0
        self.failures = 0

    def beat(self) -> dict[str, Any]:
        """The heartbeat's fields now."""
        step = self._step()
        now = time.monotonic()
        speed = None
        if step is not None and self._last is not None and step >= self._last[1] and now > self._last[0]:
            speed = round((step - self._last[1]) / (now - self._last[0]), 2)
        if step is not None:
            self._last = (now, step)
        self._count_updates()
        return {"step": step, "steps": self.steps, "steps_per_s": speed, "updates": self.updates,
                "llm_failures": self.failures}

    def _step(self) -> int | None:
        try:
            with open(self.run_dir / METRICS_FILE, "rb") as f:
                f.seek(0, os.SEEK_END)
                start = max(0, f.tell() - self.TAIL_BYTES)
                f.seek(start)
                text = f.read().decode("utf-8", errors="replace")
        except OSError:
            return None
        lines = text.split("\n")[:-1]  # the last piece is a line still being written (or empty)
        if start > 0:
            lines = lines[1:]  # the first one may be cut
        for line in reversed(lines):
            head = line.split(",", 1)[0]
            if head.isdigit() and line.count(",") >= 2:
                return int(head)
        return None

    def _count_updates(self) -> None:
        path = self.run_dir / UPDATES_FILE
        try:
            size = path.stat().st_size
            if size < self._offset:  # rewritten (a resume cut it back): count again
                self._offset, self.updates, self.failures = 0, 0, 0
            with open(path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except OSError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        for raw in complete.splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and line.get("source") == "fallback":
                self.failures += 1
            elif isinstance(line, dict):
                self.updates += 1


# --------------------------------------------------------------------------- llm-explorer status
@dataclass
class RunState:
    """One run as ``status.jsonl`` tells it: ``queued``, ``running``, ``done``, ``failed`` or
    ``interrupted``, with its newest heartbeat while it runs."""

    run_id: str
    state: str = "queued"
    attempt: int = 0
    host: str = ""
    beat: dict[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass
class StudyState:
    """Every run's state, and whether a session is going on (a ``session`` without its ``end``)."""

    runs: dict[str, RunState]
    active: bool

    def counts(self) -> dict[str, int]:
        """Runs per state, in a fixed order."""
        order = ("queued", "running", "done", "failed", "interrupted")
        return {name: sum(r.state == name for r in self.runs.values()) for name in order}

    def eta_s(self) -> float | None:
        """Seconds left from the running runs' speeds (steps/s); None without a heartbeat."""
        running = [r for r in self.runs.values() if r.state == "running"]
        per_run = [s for s in (_run_seconds(r.beat) for r in running) if s is not None]
        if not per_run:
            return None
        mean = statistics.fmean(per_run)
        left = sum(_seconds_left(r.beat) if _seconds_left(r.beat) is not None else mean for r in running)
        queued = self.counts()["queued"]
        return (left + queued * mean) / max(1, len(running))


def study_state(out: Path | str) -> StudyState:
    """Read ``OUT/study.json`` and ``OUT/status.jsonl``: each planned run's newest state. ``out``
    may be a storage URI (:mod:`.storage`): those files, and each run's ``summary.json``, are read
    from the storage."""
    from .storage import local_copy

    out = local_copy(out, run_files=("summary.json",))
    study = read_json(out / "study.json")
    planned = list(study.get("runs", {})) if isinstance(study, dict) else []
    runs = {run_id: RunState(run_id) for run_id in planned}
    active = False
    for line in read_jsonl(out / "status.jsonl"):
        event = line.get("event")
        if event == "session":
            active = True
            for state in runs.values():  # a new session: whatever did not finish is queued again
                if state.state in ("running", "failed", "interrupted"):
                    state.state, state.beat = "queued", {}
            continue
        if event == "end":
            active = False
            for state in runs.values():
                if state.state == "running":
                    state.state = "interrupted"
            continue
        run_id = line.get("run")
        if not isinstance(run_id, str):
            continue
        state = runs.setdefault(run_id, RunState(run_id))
        if event == "started":
            state.state, state.beat = "running", {}
            state.attempt = int(line.get("attempt") or state.attempt + 1)
            state.host = str(line.get("host") or "")
        elif event == "heartbeat":
            state.state, state.beat = "running", line
        elif event in ("done", "failed", "interrupted"):
            state.state, state.error = event, str(line.get("error") or "")
    entries = study.get("runs", {}) if isinstance(study, dict) else {}
    for run_id, state in runs.items():  # runs of --emit-jobs jobs (or of a lost driver) that finished
        entry = entries.get(run_id) or {}
        if state.state != "done" and entry.get("dir") and run_is_complete(out / entry["dir"], _steps(entry)):
            state.state = "done"
    return StudyState(runs, active)


def _steps(entry: dict[str, Any]) -> int | None:
    steps = (entry.get("config") or {}).get("steps")
    return steps if isinstance(steps, int) else None
