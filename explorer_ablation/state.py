"""What is on disk in a study directory, and writing it safely.

::

    OUT/
      study.json        the spec (normalised), every planned run, its configuration and fingerprint
      spec.yaml         the spec file as given
      configs/          each run's configuration (``train --config``), ARM__ENV__seed-S.yaml
      status.jsonl      one line per event (session, started, heartbeat, done, failed, interrupted, end)
      runs/ARM/ENV/seed-S/   each run directory, exactly as ``llm-explorer train --out`` writes it
      logs/             each run's stdout and stderr
      summary.csv, report.md, figures/   written by ``llm-explorer report``

A run is *complete* as :func:`explorer_rundir.format.run_is_complete` says: its
``summary.json`` (written last and atomically by ``train``) is a JSON object with the result
keys, does not say it was interrupted, and counts as many env steps as were asked for. Anything
else in a run directory is half-written: it is moved aside to ``DIR.failed-N`` and the run
starts again. Files of the study itself are written with the same atomic writers.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from explorer_pipeline.errors import UsageError
from explorer_rundir.format import read_jsonl

__all__ = ["StatusLog", "StudyLock", "move_aside"]


def move_aside(run_dir: Path) -> Path:
    """Rename a half-written run directory to ``DIR.failed-N`` (first free N); returns it."""
    n = 1
    while True:
        target = run_dir.with_name(f"{run_dir.name}.failed-{n}")
        if not target.exists():
            run_dir.rename(target)
            return target
        n += 1


class StatusLog:
    """``status.jsonl``: append-only, one flushed and fsynced JSON line per event.

    :param mirror: called with each event's name after its line is written (a study on a URI
        uploads the file: :meth:`.storage.StudyStorage.push_status`).
    """

    def __init__(self, path: Path, mirror: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.mirror = mirror

    def append(self, event: str, run_id: str | None = None, **fields: Any) -> None:
        """Append one event line (time, ``event``, the run, ``fields``) and sync it to disk."""
        line = {"t": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": event}
        if run_id is not None:
            line["run"] = run_id
        line.update(fields)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.mirror is not None:
            self.mirror(event)

    def events(self) -> Iterator[dict[str, Any]]:
        """Every readable line (a line cut short by a crash is skipped)."""
        yield from read_jsonl(self.path)

    def last_per_run(self) -> dict[str, dict[str, Any]]:
        """The last event of each run other than ``started`` and ``heartbeat`` (those say it is
        running, not how it ended)."""
        last: dict[str, dict[str, Any]] = {}
        for line in self.events():
            if "run" in line and line.get("event") not in ("started", "heartbeat"):
                last[line["run"]] = line
        return last


class StudyLock:
    """An exclusive ``flock`` on ``OUT/.lock`` so two runners never share a study directory.
    The kernel releases it when the holder dies, even by SIGKILL."""

    def __init__(self, out: Path) -> None:
        self.path = out / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> StudyLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not POSIX: no locking
            pass
        except OSError:
            os.close(fd)
            raise UsageError(f"another 'llm-explorer ablate' is running on {str(self.path.parent)!r}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
