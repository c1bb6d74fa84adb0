"""Where runs execute: a pool of child processes on this machine, or Ray tasks.

The local backend keeps at most ``workers`` runs in flight; the Ray backend submits every run
at once with its resource request and lets Ray queue, retry and place them. Both report each
start and end to an :class:`Events` sink from the calling (main) thread. On KeyboardInterrupt
they stop what is running (each run writes a checkpoint), report those runs as interrupted, and
re-raise.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
import uuid
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from . import launch
from .launch import Job, Outcome, available_cpus

log = logging.getLogger(__name__)

__all__ = ["Backend", "Events", "LocalBackend", "RayBackend", "available_cpus"]

POLL_S = 0.2
POLL_RAY_S = 1.0
PREFLIGHT_TIMEOUT_S = 300.0
STORAGE_MARKER = ".storage-check"
"""Written by the driver into the study directory; every node's preflight must read it back."""


class Events(Protocol):
    """What a backend reports while it runs a study (the runner records and prints it)."""

    def started(self, job: Job, pid: int | None) -> None:
        """``job`` started (``pid``: its child process, None on Ray)."""

    def finished(self, outcome: Outcome) -> None:
        """A job ended: complete, failed or interrupted."""

    def note(self, kind: str, run_id: str, fields: dict[str, Any]) -> None:
        """What a Ray task said while it ran: ``started`` (on which node, attempt, GPUs,
        resumed), ``heartbeat`` (env step, steps/s, updates, LLM failures), ``skipped``
        (already complete where it ran), ``stopped``."""


class Backend(Protocol):
    """Runs jobs: :class:`LocalBackend` (child processes here) or :class:`RayBackend`."""

    name: str
    workers: int
    cpus_per_run: int

    def setup(self) -> None:
        """Connect or size the pool (``workers`` is known afterwards)."""

    def run(self, jobs: Sequence[Job], events: Events) -> None:
        """Run every job, at most ``workers`` at a time, reporting to ``events``. A
        KeyboardInterrupt stops the running jobs, reports them as interrupted and propagates."""

    def close(self) -> None:
        """Release what :meth:`setup` took (a local Ray instance)."""


def _cpus(job: Job) -> float:
    """The CPUs ``job`` asks Ray for."""
    return job.num_cpus if job.num_cpus is not None else float(job.cpus)


def _fits(resources: dict[str, Any], cpus: float, gpus: float) -> bool:
    """A node with ``resources`` can hold a run asking for ``cpus`` CPUs and ``gpus`` GPUs."""
    return float(resources.get("CPU", 0.0)) >= cpus and float(resources.get("GPU", 0.0)) >= gpus


class LocalBackend:
    """Child processes on this machine, at most ``workers`` at a time (default: one per
    ``cpus_per_run`` CPUs this process may use)."""

    name = "local"

    def __init__(self, workers: int | None = None, cpus_per_run: int = 1) -> None:
        self.cpus_per_run = max(1, cpus_per_run)
        self.workers = workers or max(1, available_cpus() // self.cpus_per_run)
        self.auto_workers = not workers
        """``workers`` was not given (a study's embedded server may take CPUs from it)."""
        self.env: dict[str, str] = {}
        """Added to every run's environment (the study's endpoint: :mod:`.endpoint`)."""

    def setup(self) -> None:
        """Nothing to set up: the pool size is known."""

    def close(self) -> None:
        """Nothing to release."""

    def run(self, jobs: Sequence[Job], events: Events) -> None:
        """Run ``jobs`` as child processes; Ctrl-C stops the running ones in order."""
        queue = deque(jobs)
        running: list[launch.Started] = []
        try:
            while queue or running:
                while queue and len(running) < self.workers:
                    job = queue.popleft()
                    try:
                        started = launch.start(job, self.env or None)
                    except (RuntimeError, OSError) as exc:
                        events.finished(Outcome(job.run_id, None, 0.0, False, str(exc)))
                        continue
                    running.append(started)
                    events.started(job, started.process.pid)
                for started in [s for s in running if s.process.poll() is not None]:
                    running.remove(started)
                    events.finished(launch.finish(started))
                if running:
                    time.sleep(POLL_S)
        except KeyboardInterrupt:
            for started in running:
                with contextlib.suppress(ProcessLookupError):
                    started.process.send_signal(signal.SIGINT)  # all first, then wait for each
            for started in running:
                launch.stop(started)
                events.finished(launch.finish(started, interrupted=True))
            raise


class RayBackend:
    """Each run is one Ray task (:func:`.ray_task.run_task`) running the same child process as the
    local backend, with the run's own resource request (``num_cpus``, fractional ``num_gpus``,
    ``memory``). Every run is submitted at once and Ray queues them (an autoscaler sees the whole
    demand); ``workers``, when given, caps the runs in flight instead. A lost run (its node or
    worker died, ``train`` killed by a signal) is retried by Ray up to ``runtime.max_retries`` times,
    each time from its newest checkpoint. Ctrl-C cancels without force: every running run gets
    SIGTERM and writes a checkpoint.

    :param address: ``None`` starts a local Ray instance (``ray.init()``); otherwise the address
        of an existing cluster (``auto``, ``ray://host:10001``, ...). The study directory is either
        on storage every node mounts at the same path (the preflight checks it) or a URI on any
        fsspec filesystem (:mod:`.storage`: runs train locally and upload their run directories).
    :param workers: at most this many runs in flight (default: no cap, Ray queues them).
    :param runtime: the spec's ``runtime:`` section (runtime_env, variables passed by name,
        retries, preflight, heartbeats).
    :param base_dir: a relative ``runtime_env.working_dir`` is relative to it (the spec's directory).
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, cpus_per_run: int = 1,
                 num_cpus: int | None = None, runtime: Any = None, base_dir: Path | None = None) -> None:
        from .spec import Runtime

        self.address = address
        self.cpus_per_run = max(1, cpus_per_run)
        self.cap = workers
        self.workers = workers or 0
        self.num_cpus = num_cpus
        self.runtime = runtime if runtime is not None else Runtime()
        self.base_dir = base_dir
        self.storage: Any = None
        """The study's :class:`.storage.StudyStorage` (set by the runner): on a URI, each task
        trains in its node's scratch directory and syncs the run with the storage."""
        self.env: dict[str, str] = {}
        """Added to every run's environment (the study's endpoint: :mod:`.endpoint`)."""
        self._ray: Any = None
        self._started_here = False

    def setup(self) -> None:
        """Start or connect to Ray; ``workers`` becomes the cap, else an estimate of the runs the
        cluster holds at once (its CPUs / ``cpus_per_run``), used for the ETA only."""
        if self._ray is None:
            self._ray, self._started_here = self._init()

    def _init(self) -> tuple[Any, bool]:
        try:
            import ray
        except ImportError as exc:
            from explorer_pipeline.errors import UsageError

            raise UsageError("the Ray backend needs Ray: pip install 'llm-explorer[ablation-ray]' "
                             f"(or pip install 'ray>=2.9'); {exc}") from None
        started_here = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address is None and self.num_cpus is not None:
                kwargs["num_cpus"] = self.num_cpus
            ray.init(address=self.address, **kwargs)
            started_here = True
        if not self.workers:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            self.workers = max(1, cpus // self.cpus_per_run)
        return ray, started_here

    def close(self) -> None:
        """Shut Ray down if it was started here."""
        if self._ray is not None and self._started_here:
            with contextlib.suppress(Exception):
                self._ray.shutdown()
        self._ray, self._started_here = None, False

    # ------------------------------------------------------------------ what every task gets
    def runtime_env(self) -> dict[str, Any] | None:
        """The spec's ``runtime_env``, a relative ``working_dir`` made absolute."""
        env = dict(self.runtime.runtime_env)
        working_dir = env.get("working_dir")
        if isinstance(working_dir, str) and "://" not in working_dir and self.base_dir is not None:
            env["working_dir"] = str((self.base_dir / working_dir).resolve())
        return env or None

    def passed_env(self) -> dict[str, str]:
        """The values of the variables the spec passes by name, read now from this process's
        environment; never written anywhere (they travel as task arguments, in memory)."""
        missing = [name for name in self.runtime.env_vars if name not in os.environ]
        if missing:
            from explorer_pipeline.errors import UsageError

            raise UsageError(f"runtime.env_vars names {', '.join(missing)}, which this process's environment "
                             "does not set: export it before starting the study, or drop it from the spec")
        return {name: os.environ[name] for name in self.runtime.env_vars}

    def _options(self, job: Job, retry: tuple[type[BaseException], ...]) -> dict[str, Any]:
        options: dict[str, Any] = {
            "num_cpus": _cpus(job),
            "num_gpus": job.num_gpus,
            "max_retries": self.runtime.max_retries,
            "retry_exceptions": list(retry),
            "name": f"llm-explorer train {job.run_id}",
        }
        if job.memory_mb:
            options["memory"] = job.memory_mb * 2**20
        runtime_env = self.runtime_env()
        if runtime_env:
            options["runtime_env"] = runtime_env
        return options

    # ------------------------------------------------------------------ preflight
    def preflight(self, out: Path, jobs: Sequence[Job]) -> list[dict[str, Any]]:
        """Before any run: every alive node that can hold a run imports the project, reads the marker this driver
        wrote into the study directory ``out`` (or its storage URI) and, when runs ask for GPUs and the spec says
        ``check_gpus``, shows torch as many GPUs as it declares. Raises UsageError naming each
        node's problems; returns each node's report."""
        from explorer_pipeline.errors import UsageError

        from .ray_task import preflight_task
        from .storage import StudyStorage

        self.setup()
        self.passed_env()  # a missing variable is bad input before anything runs
        if not self.runtime.preflight:
            return []
        ray = self._ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        token = uuid.uuid4().hex
        where = (self.storage or StudyStorage(out)).write_marker(STORAGE_MARKER, token)
        wants_gpus = any(job.num_gpus > 0 for job in jobs)
        task = ray.remote(preflight_task)
        refs = {}
        smallest = (min(_cpus(job) for job in jobs), min(job.num_gpus for job in jobs)) if jobs else (0.0, 0.0)
        for node in ray.nodes():
            if not node.get("Alive") or not _fits(node.get("Resources", {}), *smallest):
                continue  # no run can be placed there (a head started with --num-cpus=0): nothing to check
            gpus = float(node.get("Resources", {}).get("GPU", 0.0)) if wants_gpus else 0.0
            options: dict[str, Any] = {
                "num_cpus": 0, "max_retries": 0,
                "scheduling_strategy": NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)}
            runtime_env = self.runtime_env()
            if runtime_env:
                options["runtime_env"] = runtime_env
            ref = task.options(**options).remote(where, STORAGE_MARKER, token, gpus, self.runtime.check_gpus)
            refs[ref] = node.get("NodeManagerAddress", node["NodeID"])
        reports, problems = [], []
        for ref, where in refs.items():
            try:
                report = ray.get(ref, timeout=PREFLIGHT_TIMEOUT_S)
            except ray.exceptions.TaskUnschedulableError:  # the node left after it was listed: no run goes there
                log.warning("node %s left the cluster during the preflight", where)
                continue
            except Exception as exc:
                problems.append(f"node {where}: the preflight task failed: {type(exc).__name__}: {exc}")
                continue
            reports.append(report)
            problems += [f"node {where} ({report['host']}): {p}" for p in report["problems"]]
        if problems:
            raise UsageError("the Ray preflight failed, nothing ran: " + "; ".join(problems))
        return reports

    # ------------------------------------------------------------------ running
    def run(self, jobs: Sequence[Job], events: Events) -> None:
        """Submit every job as a Ray task (or ``workers`` at a time) and report what they do;
        Ctrl-C cancels them gracefully (a second Ctrl-C, or no end after the grace period, by force)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from .ray_task import Mailbox, RunLost, run_task

        self.setup()
        ray = self._ray
        env = {**self.passed_env(), **self.env}
        options: dict[str, Any] = {"num_cpus": 0}
        with contextlib.suppress(Exception):  # the driver's node (not known through a ray:// client)
            here = ray.get_runtime_context().get_node_id()
            # hard: with soft=True Ray 2.60 placed it on a worker node (the head had no CPUs), where a
            # lost node took the study's messages with it; the driver's node lives as long as the driver
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(here, soft=False)
        mailbox = ray.remote(Mailbox).options(**options).remote()
        task = ray.remote(run_task)
        queue = deque(jobs)
        pending: dict[Any, Job] = {}
        running: set[str] = set()
        try:
            while queue or pending:
                while queue and (not self.cap or len(pending) < self.cap):
                    job = queue.popleft()
                    remote = self.storage.remote_run(job) if self.storage is not None else None
                    ref = task.options(**self._options(job, (RunLost,))).remote(
                        job, env, mailbox, self.runtime.heartbeat_s, remote=remote)
                    pending[ref] = job
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=POLL_RAY_S)
                self._relay(mailbox, events, running)
                for ref in ready:
                    job = pending.pop(ref)
                    running.discard(job.run_id)
                    events.finished(self._outcome(ray, ref, job))
        except KeyboardInterrupt:
            self._cancel(pending, mailbox, events, running)
            raise

    def _relay(self, mailbox: Any, events: Events, running: set[str],
               stopped: dict[str, dict[str, Any]] | None = None) -> None:
        try:
            messages = self._ray.get(mailbox.drain.remote(), timeout=30)
        except Exception as exc:  # the mailbox is slow or gone: progress only, the runs go on
            log.warning("could not read the runs' messages: %s", exc)
            return
        for kind, run_id, fields in messages:
            if kind == "started":
                running.add(run_id)
            elif kind == "stopped" and stopped is not None:
                stopped[run_id] = fields
            note = getattr(events, "note", None)
            if note is not None:
                note(kind, run_id, fields)

    def _cancel(self, pending: dict[Any, Job], mailbox: Any, events: Events, running: set[str]) -> None:
        """Cancel without force and give running runs time to checkpoint; a second Ctrl-C or the
        end of the grace period cancels by force. Runs that ended meanwhile are reported as they
        ended; the rest, if they had started, as interrupted."""
        from .ray_task import STOP_GRACE_S

        ray = self._ray
        for ref in pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=False)
        deadline = time.monotonic() + STOP_GRACE_S + 30.0
        stopped: dict[str, dict[str, Any]] = {}  # what the tasks said once their train had exited
        try:
            while pending and time.monotonic() < deadline:
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=POLL_RAY_S)
                self._relay(mailbox, events, running, stopped)
                reported = 0
                for ref in ready:
                    run_id = pending[ref].run_id
                    # a cancelled task's result is ready at once, while its train may still be writing
                    # its checkpoint and summary: wait for the task's "stopped" message
                    if run_id in running and run_id not in stopped:
                        with contextlib.suppress(Exception):
                            ray.get(ref, timeout=0)
                            self._report_stopped(ref, pending.pop(ref), events, running)  # it ended by itself
                            reported += 1
                        continue
                    self._report_stopped(ref, pending.pop(ref), events, running, stopped.get(run_id))
                    reported += 1
                if ready and not reported:
                    time.sleep(POLL_RAY_S)  # ray.wait returns at once for cancelled tasks
        except KeyboardInterrupt:
            log.warning("second interrupt: cancelling the remaining runs by force")
        for ref, job in list(pending.items()):
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
            if job.run_id in running:
                events.finished(Outcome(job.run_id, None, 0.0, False, "stopped (forced)", interrupted=True))

    def _report_stopped(self, ref: Any, job: Job, events: Events, running: set[str],
                        said: dict[str, Any] | None = None) -> None:
        ray = self._ray
        try:
            outcome = ray.get(ref)
        except Exception:  # TaskCancelledError: it was stopped, or never started
            if said is not None:  # the task's own account of how its train ended
                complete = bool(said.get("complete"))
                events.finished(Outcome(job.run_id, said.get("rc"), float(said.get("wall_s") or 0.0), complete,
                                        "" if complete else "stopped (Ctrl-C)", interrupted=not complete))
            elif job.run_id in running:
                events.finished(Outcome(job.run_id, None, 0.0, False, "stopped (Ctrl-C)", interrupted=True))
            return
        events.finished(outcome)

    @staticmethod
    def _outcome(ray: Any, ref: Any, job: Job) -> Outcome:
        try:
            return ray.get(ref)
        except Exception as exc:  # retries used up, or the task raised: the run failed, the study goes on
            log.warning("Ray task for %s failed: %s", job.run_id, exc)
            return Outcome(job.run_id, None, 0.0, False, f"Ray task failed: {type(exc).__name__}: {exc}")
