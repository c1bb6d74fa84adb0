"""Launching one run: ``llm-explorer train --config FILE --out DIR`` as a child process.

The runner never imports the training code: each run is a subprocess of the train command,
``python -m explorer_pipeline train`` with this interpreter unless ``LLM_EXPLORER_TRAIN_CMD``
(shell-quoted) or an explicit ``train_command`` says otherwise.

Children start in their own session (a terminal's Ctrl-C reaches only the runner, which then
stops them in order) and, on Linux, with a parent-death signal: if the runner is killed, even
by SIGKILL, its children die with it instead of finishing unobserved and racing a ``--resume``.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from explorer_pipeline import child_process
from explorer_rundir.format import CONFIG_FILE, run_is_complete

from .state import move_aside

__all__ = [
    "TRAIN_CMD_ENV",
    "Job",
    "Outcome",
    "Started",
    "available_cpus",
    "command_line",
    "default_train_command",
    "finish",
    "resumable",
    "run_blocking",
    "start",
    "stop",
]

TRAIN_CMD_ENV = "LLM_EXPLORER_TRAIN_CMD"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
STOP_GRACE_S = 20.0
ERROR_TAIL_LINES = 15


def default_train_command() -> list[str]:
    """``LLM_EXPLORER_TRAIN_CMD`` if set, else this interpreter's ``-m explorer_pipeline train``."""
    custom = os.environ.get(TRAIN_CMD_ENV, "").strip()
    if custom:
        return shlex.split(custom)
    return [sys.executable, "-m", "explorer_pipeline", "train"]


@dataclass(frozen=True)
class Job:
    """Everything a backend needs to run one planned run (picklable, for Ray).

    :param arguments: what follows the train command: ``--config FILE --out DIR``.
    :param run_dir: the ``--out`` directory (absolute).
    :param train_command: None means :func:`default_train_command` where the job runs.
    :param cpus: threads the run may use (``OMP_NUM_THREADS`` and friends, unless set).
    :param num_cpus: CPUs the run asks the scheduler for (Ray's ``num_cpus``; may be fractional);
        None: ``cpus``.
    :param num_gpus: GPUs it asks for (Ray's ``num_gpus``, fractional below 1). With 0 the run
        sees no GPU at all (``CUDA_VISIBLE_DEVICES=""``).
    :param memory_mb: memory it asks for (Ray's ``memory``); None: no request.
    """

    run_id: str
    arguments: tuple[str, ...]
    run_dir: Path
    log_path: Path
    steps: int | None = None
    train_command: tuple[str, ...] | None = None
    cpus: int = 1
    num_cpus: float | None = None
    num_gpus: float = 0.0
    memory_mb: int | None = None


@dataclass(frozen=True)
class Outcome:
    """How a run ended. ``complete``: rc 0 and a complete run directory."""

    run_id: str
    returncode: int | None
    wall_s: float
    complete: bool
    error: str = ""
    interrupted: bool = False
    moved_aside: str | None = None
    host: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    """Backend facts worth recording (Ray: the attempt, the GPU ids the run was given)."""


@dataclass
class Started:
    """A running child (local backend)."""

    job: Job
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    t0: float
    moved_aside: str | None


def _child_env(job: Job, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra or {})
    for name in THREAD_VARS:
        env.setdefault(name, str(job.cpus))
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("MPLBACKEND", "Agg")
    return env


def prepare(job: Job) -> str | None:
    """Move a half-written run directory aside; returns where it went."""
    if job.run_dir.exists():
        return str(move_aside(job.run_dir))
    job.run_dir.parent.mkdir(parents=True, exist_ok=True)
    return None


def resumable(run_dir: Path) -> bool:
    """A half-finished run that ``train --resume`` continues: its ``config.yaml`` and at least one
    complete checkpoint (``checkpoints/step-*/meta.json``, written last in each)."""
    return (run_dir / CONFIG_FILE).is_file() and any((run_dir / "checkpoints").glob("step-*/meta.json"))


def start(job: Job, env: dict[str, str] | None = None) -> Started:
    """Start ``job`` (the caller has checked it is not complete). A half-finished run with a
    checkpoint is resumed (``train --resume DIR``); any other half-written one is moved aside and
    started again. ``env`` is added to the child's environment (never logged). The child runs in a
    session of its own and dies with this process (:func:`explorer_pipeline.child_process.spawn`)."""
    resume = job.run_dir.is_dir() and resumable(job.run_dir)
    moved = None if resume else prepare(job)
    job.log_path.parent.mkdir(parents=True, exist_ok=True)
    arguments = ("--resume", str(job.run_dir)) if resume else job.arguments
    command = [*(job.train_command or default_train_command()), *arguments]
    log = open(job.log_path, "ab")  # noqa: SIM115 -- closed by finish()
    log.write(f"$ {shlex.join(command)}\n".encode())
    log.flush()
    try:
        process = child_process.spawn(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                      env=_child_env(job, env))
    except OSError as exc:
        log.close()
        raise RuntimeError(f"cannot start {command[0]!r}: {exc}") from exc
    return Started(job, process, log, time.monotonic(), moved)


def stop(started: Started, grace_s: float = STOP_GRACE_S, sig: int = signal.SIGINT) -> None:
    """Ask a child to stop (``sig``: SIGINT like Ctrl-C, or SIGTERM like a scheduler; ``train``
    writes a checkpoint on either), then SIGKILL after ``grace_s``."""
    child_process.stop(started.process, grace_s, sig=sig, group=False)


def finish(started: Started, *, interrupted: bool = False) -> Outcome:
    """Close the log and judge the run directory. The child must have exited."""
    rc = started.process.wait()
    started.log.close()
    job = started.job
    complete = rc == 0 and run_is_complete(job.run_dir, job.steps)
    error = ""
    if not complete:
        error = _tail(job.log_path) or f"exit status {rc}"
        if rc == 0:
            error = "exit status 0 but the run directory has no complete summary.json\n" + error
    return Outcome(job.run_id, rc, time.monotonic() - started.t0, complete, error,
                   interrupted=interrupted and not complete, moved_aside=started.moved_aside,
                   host=os.uname().nodename if hasattr(os, "uname") else "")


def run_blocking(job: Job) -> Outcome:
    """Run ``job`` to the end in this process (the Ray task body). A KeyboardInterrupt (Ray's
    cancellation) stops the child first."""
    started = start(job)
    try:
        started.process.wait()
    except BaseException:
        stop(started, grace_s=5.0)
        finish(started, interrupted=True)
        raise
    return finish(started)


def _tail(path: Path, lines: int = ERROR_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16_384))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def command_line(job: Job, train_command: Sequence[str] | None = None) -> str:
    """The shell command that runs ``job`` (``--dry-run`` prints it)."""
    return shlex.join([*(train_command or job.train_command or default_train_command()), *job.arguments])


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
