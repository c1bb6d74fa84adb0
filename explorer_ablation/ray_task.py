"""What runs on a Ray worker: one run of a study (:func:`run_task`), the per-node preflight
(:func:`preflight_task`) and the mailbox through which runs tell the driver what they do.

A run's task starts the same child process as the local backend (``train --config`` or, when the
run directory holds a checkpoint, ``train --resume``), so a retry after a lost node continues from
the newest checkpoint. Whether a run is complete is judged here, where its files are: a task whose
run is already complete returns at once without training again.

A run's child sees exactly the GPUs Ray assigned to the task (``CUDA_VISIBLE_DEVICES``), none when
it asked for none. Ray's non-forced cancellation raises KeyboardInterrupt in the task: the child then
gets SIGTERM, writes a checkpoint and exits, and the task reports it as interrupted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

from explorer_rundir.format import SUMMARY_FILE, read_json, run_is_complete

from . import launch
from .launch import Job, Outcome
from .progress import RunWatch
from .storage import RemoteRun, RunSync, is_uri, read_marker

__all__ = ["STOP_GRACE_S", "Mailbox", "RunLost", "preflight_task", "run_task"]

STOP_GRACE_S = 120.0
"""How long a cancelled run may take to write its last checkpoint before it is killed."""
POLL_S = 0.5
LOCK_WAIT_S = 60.0


class RunLost(RuntimeError):
    """The train process was killed by a signal nobody here sent (the OOM killer, a preemption):
    the task raises it so that Ray retries the run (``retry_exceptions``)."""


class Mailbox:
    """A Ray actor on the driver's node: runs post ``started``, ``heartbeat``, ``stopped`` and
    ``skipped`` messages, the driver drains them. It numbers each run's attempts."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, dict[str, Any]]] = []
        self.attempts: dict[str, int] = {}

    def put(self, kind: str, run_id: str, fields: dict[str, Any]) -> None:
        """Queue one message (``started`` also counts an attempt)."""
        if kind == "started":
            self.attempts[run_id] = self.attempts.get(run_id, 0) + 1
            fields = {**fields, "attempt": self.attempts[run_id]}
        self.messages.append((kind, run_id, fields))

    def drain(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Every message since the last call, oldest first."""
        messages, self.messages = self.messages, []
        return messages


def _post(mailbox: Any, kind: str, run_id: str, **fields: Any) -> None:
    if mailbox is not None:
        with contextlib.suppress(Exception):  # the driver is gone: the run goes on
            mailbox.put.remote(kind, run_id, fields)


def _host() -> str:
    return os.uname().nodename if hasattr(os, "uname") else ""


def run_task(job: Job, env: dict[str, str], mailbox: Any = None, heartbeat_s: float = 30.0,
             remote: RemoteRun | None = None) -> Outcome:
    """Run ``job`` to the end on this Ray worker; ``env`` (the variables the spec passes by name)
    is added to the child's environment. With ``remote`` (a study on a URI) the run trains in this
    node's scratch directory, downloaded from the storage first and uploaded at each checkpoint
    and at the end (:class:`.storage.RunSync`)."""
    import ray

    _accept_cancellation()
    context = ray.get_runtime_context()
    gpu_ids = [str(i) for i in context.get_accelerator_ids().get("GPU", [])] if job.num_gpus > 0 else []
    details: dict[str, Any] = {"node": context.get_node_id(), "gpu_ids": gpu_ids}
    sync = RunSync(remote, job, details["node"]) if remote is not None else None
    if sync.complete() if sync is not None else run_is_complete(job.run_dir, job.steps):
        _post(mailbox, "skipped", job.run_id, host=_host(), node=details["node"])
        return Outcome(job.run_id, 0, 0.0, True, host=_host(), details={**details, "already_complete": True})
    if sync is not None:
        job = sync.prepare()
        if sync.moved_aside:
            details["moved_aside"] = sync.moved_aside
    _wait_for_lock(job.run_dir)
    resume = job.run_dir.is_dir() and launch.resumable(job.run_dir)
    started = launch.start(job, {**env, "CUDA_VISIBLE_DEVICES": ",".join(gpu_ids)})
    _post(mailbox, "started", job.run_id, pid=started.process.pid, host=_host(), node=details["node"],
          gpu_ids=gpu_ids, resume=resume)
    watch = RunWatch(job.run_dir, job.steps)
    next_beat = time.monotonic() + heartbeat_s
    try:
        while started.process.poll() is None:
            with contextlib.suppress(Exception):
                started.process.wait(timeout=POLL_S)
            if time.monotonic() >= next_beat and started.process.poll() is None:
                next_beat = time.monotonic() + heartbeat_s
                _post(mailbox, "heartbeat", job.run_id, **watch.beat())
            if sync is not None:
                sync.sync()  # uploads only when a new checkpoint is complete
    except BaseException:  # Ray's cancellation (KeyboardInterrupt): let the run checkpoint
        launch.stop(started, grace_s=STOP_GRACE_S, sig=signal.SIGTERM)
        outcome = launch.finish(started, interrupted=True)
        if sync is not None:
            sync.finish(clear=False)
        _post(mailbox, "stopped", job.run_id, rc=outcome.returncode, complete=outcome.complete,
              wall_s=round(outcome.wall_s, 2))
        raise
    outcome = launch.finish(started)
    if sync is not None:
        sync.finish(clear=outcome.complete)
    rc = outcome.returncode
    if rc is not None and rc < 0 and not outcome.complete:
        raise RunLost(f"{job.run_id}: train was killed by {signal.Signals(-rc).name} on {_host()}; "
                      "retrying from its newest checkpoint")
    if not outcome.complete and _stopped_by_signal(job.run_dir):
        raise RunLost(f"{job.run_id}: train was stopped by a signal from outside (a preemption?) on {_host()}; "
                      "retrying from the checkpoint it wrote")
    return Outcome(outcome.run_id, rc, outcome.wall_s, outcome.complete, outcome.error,
                   moved_aside=outcome.moved_aside, host=outcome.host,
                   details={**details, "resumed": resume})


def _accept_cancellation() -> None:
    """Let Ray's non-forced cancellation reach this task. Ray delivers it as a simulated SIGINT in
    the worker's main thread, which Python drops when SIGINT is ignored — and a Ray node started
    from a background job of a non-interactive shell (``ray start ... &`` in a script, a CI step)
    passes SIG_IGN for SIGINT to every worker. Then Ctrl-C on the driver never reached the runs."""
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL):
        with contextlib.suppress(ValueError):  # not the main thread: nothing to change
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _stopped_by_signal(run_dir: Path) -> bool:
    """``train`` wrote an interrupted summary: SIGTERM or SIGINT reached it from outside this task
    (a preemption stops every process of a node or container), and it wrote a checkpoint first."""
    summary = read_json(run_dir / SUMMARY_FILE)
    return isinstance(summary, dict) and summary.get("interrupted") is True


def _wait_for_lock(run_dir: Path, timeout_s: float = LOCK_WAIT_S) -> None:
    """Wait until no process holds the run directory's lock (``train`` holds it while it writes):
    after a lost node the previous attempt's ``train`` may take a moment to die."""
    try:
        import fcntl
    except ImportError:
        return
    lock = run_dir / ".lock"
    deadline = time.monotonic() + timeout_s
    while lock.exists() and time.monotonic() < deadline:
        try:
            with open(lock, "a") as f:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            return
        except OSError:
            time.sleep(POLL_S)


def preflight_task(study_dir: str, marker_name: str, token: str, gpus_expected: float,
                   check_gpus: bool) -> dict[str, Any]:
    """On one node: the project imports, the study directory shows the driver's marker, and
    (``check_gpus`` with ``gpus_expected`` > 0) torch sees as many GPUs as the node declares."""
    import importlib

    problems: list[str] = []
    for module in ("explorer_pipeline", "explorer_ablation", "tianshou_integration"):
        try:
            importlib.import_module(module)
        except Exception as exc:
            problems.append(f"cannot import {module}: {type(exc).__name__}: {exc}")
    marker = f"{study_dir.rstrip('/')}/{marker_name}"
    try:
        seen = read_marker(study_dir, marker_name)
    except OSError as exc:
        seen = None
        hint = ("this node cannot reach the study's storage" if is_uri(study_dir)
                else "the study directory must be on storage every node mounts at the same path")
        problems.append(f"cannot read the study directory's marker {marker!r} ({exc.strerror or exc}): {hint}")
    if seen is not None and seen != token:
        problems.append(f"{marker!r} is not the driver's (another file system is mounted at that path)")
    if check_gpus and gpus_expected > 0:
        found, why = _torch_gpus()
        if found < gpus_expected:
            problems.append(f"the node declares {gpus_expected:g} GPU(s) but torch sees {found}{why} "
                            "(runtime.check_gpus: false skips this check)")
    return {"host": _host(), "problems": problems}


def _torch_gpus() -> tuple[int, str]:
    """GPUs torch sees on this node, asked in a fresh process without this worker's
    ``CUDA_VISIBLE_DEVICES`` (Ray hides GPUs from a task that asked for none)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    code = "import torch; print(torch.cuda.device_count())"
    try:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                              check=False)
        return int(done.stdout.strip().splitlines()[-1]), ""
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired) as exc:
        return 0, f" (torch could not be asked: {type(exc).__name__})"
