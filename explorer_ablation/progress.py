"""Counting runs done / running / failed and estimating the time left."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

__all__ = ["Progress", "format_duration"]


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

    The ETA assumes the remaining runs take as long as the runs finished in this session and that
    ``workers`` of them run at once.
    """

    total: int
    done: int = 0
    workers: int = 1
    running: dict[str, float] = field(default_factory=dict)
    failed: int = 0
    durations: list[float] = field(default_factory=list)
    skipped: int = 0

    def start(self, run_id: str) -> None:
        """``run_id`` started now."""
        self.running[run_id] = time.monotonic()

    def finish(self, run_id: str, ok: bool, wall_s: float) -> None:
        """``run_id`` ended after ``wall_s`` seconds, complete (``ok``) or failed."""
        self.running.pop(run_id, None)
        if ok:
            self.done += 1
            self.durations.append(wall_s)
        else:
            self.failed += 1

    @property
    def remaining(self) -> int:
        """Runs neither complete nor failed (running ones included)."""
        return self.total - self.done - self.failed

    def eta_s(self) -> float | None:
        """Seconds until every remaining run is done; None before any run of this session finished."""
        if not self.durations:
            return None
        per_run = statistics.fmean(self.durations)
        now = time.monotonic()
        in_flight_left = sum(max(0.0, per_run - (now - t0)) for t0 in self.running.values())
        queued = self.remaining - len(self.running)
        return (queued * per_run + in_flight_left) / max(1, self.workers)

    def line(self) -> str:
        """``[done/total done, N running, F failed, ETA ...]`` for progress messages."""
        eta = "done" if self.remaining == 0 else f"ETA {format_duration(self.eta_s())}"
        return (f"[{self.done}/{self.total} done, {len(self.running)} running, "
                f"{self.failed} failed, {eta}]")
