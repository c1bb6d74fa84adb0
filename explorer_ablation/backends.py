"""Where runs execute: a pool of child processes on this machine, or Ray tasks.

Both backends keep at most ``workers`` runs in flight and report each start and end to an
:class:`Events` sink from the calling (main) thread. On KeyboardInterrupt they stop what is
running, report those runs as interrupted, and re-raise.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

from . import launch
from .launch import Job, Outcome

log = logging.getLogger(__name__)

__all__ = ["Backend", "Events", "LocalBackend", "RayBackend", "available_cpus"]

POLL_S = 0.2


class Events(Protocol):
    """What a backend reports while it runs a study (the runner records and prints it)."""

    def started(self, job: Job, pid: int | None) -> None:
        """``job`` started (``pid``: its child process, None on Ray)."""

    def finished(self, outcome: Outcome) -> None:
        """A job ended: complete, failed or interrupted."""


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


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class LocalBackend:
    """Child processes on this machine, at most ``workers`` at a time (default: one per
    ``cpus_per_run`` CPUs this process may use)."""

    name = "local"

    def __init__(self, workers: int | None = None, cpus_per_run: int = 1) -> None:
        self.cpus_per_run = max(1, cpus_per_run)
        self.workers = workers or max(1, available_cpus() // self.cpus_per_run)

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
                        started = launch.start(job)
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
    """Each run is a Ray task running the same child process (``launch.run_blocking``).

    :param address: ``None`` starts a local Ray instance (``ray.init()``); otherwise the address
        of an existing cluster (``auto``, ``ray://host:10001``, ...). On a cluster the study
        directory must be on a file system every node sees, at the same path.
    :param workers: runs in flight at once; default: the cluster's CPUs / ``cpus_per_run``.
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, cpus_per_run: int = 1,
                 num_cpus: int | None = None) -> None:
        self.address = address
        self.cpus_per_run = max(1, cpus_per_run)
        self.workers = workers or 0
        self.num_cpus = num_cpus
        self._ray: Any = None
        self._started_here = False

    def setup(self) -> None:
        """Start or connect to Ray; without ``workers``, size the pool from the cluster's CPUs."""
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

    def run(self, jobs: Sequence[Job], events: Events) -> None:
        """Run each job as a Ray task; Ctrl-C cancels the tasks in flight."""
        self.setup()
        ray = self._ray
        task = ray.remote(num_cpus=self.cpus_per_run, max_retries=0)(launch.run_blocking)
        queue = deque(jobs)
        in_flight: dict[Any, Job] = {}
        try:
            while queue or in_flight:
                while queue and len(in_flight) < self.workers:
                    job = queue.popleft()
                    in_flight[task.remote(job)] = job
                    events.started(job, None)
                done, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
                for ref in done:
                    job = in_flight.pop(ref)
                    events.finished(self._outcome(ray, ref, job))
        except KeyboardInterrupt:
            for ref in in_flight:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            for job in in_flight.values():
                events.finished(Outcome(job.run_id, None, 0.0, False, "stopped (Ctrl-C)", interrupted=True))
            raise

    @staticmethod
    def _outcome(ray: Any, ref: Any, job: Job) -> Outcome:
        try:
            return ray.get(ref)
        except Exception as exc:  # a worker died or the task raised: the run failed, the study goes on
            log.warning("Ray task for %s failed: %s", job.run_id, exc)
            return Outcome(job.run_id, None, 0.0, False, f"Ray task failed: {type(exc).__name__}: {exc}")
