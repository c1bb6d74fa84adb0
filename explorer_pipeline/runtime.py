"""ExplorerRuntime: one asyncio loop on one thread, fed by the training thread without blocking.

The training thread calls :meth:`ExplorerRuntime.submit` for every finished episode. ``submit``
only hands the record to the loop thread (``call_soon_threadsafe``) and returns. On the loop
thread, every K-th episode becomes a request; if a request is already pending, the older one is
dropped (newest wins) and counted. Worker tasks (one by default) run the pipeline, publish valid
updates to the :class:`~explorer_pipeline.cache.ExplorationCache` and tell the observers.
Every finished request's tokens count against the run's :class:`~explorer_pipeline.budget.Budget`;
once it is spent, no request starts any more (the episodes that would have asked are counted in
``skipped_budget``) and the update in force stays.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import dataclasses
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .budget import Budget
from .cache import ExplorationCache
from .state import Stateful, state_of
from .types import EpisodeRecord, ExplorationUpdate, RequestFailure, StageUsage

log = logging.getLogger(__name__)

Outcome = ExplorationUpdate | RequestFailure
_Waiter = concurrent.futures.Future["Outcome | None"]


class RequestHandler(Protocol):
    """What the runtime drives: turns an episode (and recent history) into an outcome.

    ``version`` is the version the update must carry if one is produced. The handler must
    never raise for bad LLM output; it returns a :class:`RequestFailure` instead, or ``None``
    when there is deliberately nothing to do (a frozen control arm).
    """

    async def handle(self, record: EpisodeRecord, history: Sequence[EpisodeRecord], version: int) -> Outcome | None:
        """The outcome of one request for ``record``; runs on the pipeline's event loop."""


@dataclass
class RuntimeStats:
    """Counters, updated on the loop thread and read from anywhere (plain ints)."""

    episodes_seen: int = 0
    requests: int = 0
    dropped_stale: int = 0
    updates_published: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    tokens: dict[str, StageUsage] = field(default_factory=dict)
    timeouts: int = 0
    skipped: int = 0
    skipped_budget: int = 0
    """Requests not asked because the LLM budget was spent."""

    def add_tokens(self, tokens: dict[str, StageUsage]) -> None:
        """Add one request's token usage, stage by stage."""
        for stage, usage in tokens.items():
            self.tokens[stage] = self.tokens.get(stage, StageUsage()) + usage

    def as_dict(self) -> dict[str, Any]:
        """The counters as plain data (for ``explorer.stats()`` and the run summary)."""
        return {
            "episodes_seen": self.episodes_seen,
            "skipped": self.skipped,
            "skipped_budget": self.skipped_budget,
            "llm_requests": self.requests,
            "dropped_stale": self.dropped_stale,
            "updates_published": self.updates_published,
            "failures": dict(self.failures),
            "parse_failures": sum(v for k, v in self.failures.items() if k.startswith("parse")),
            "validation_rejections": sum(v for k, v in self.failures.items() if k.startswith("validation")),
            "provider_errors": sum(v for k, v in self.failures.items() if k in ("provider_error", "timeout")),
            "tokens": {k: {"input": v.input_tokens, "output": v.output_tokens} for k, v in self.tokens.items()},
        }


class ExplorerRuntime:
    """Owns the pipeline's event loop thread. Use as a context manager.

    :param handler: the request pipeline (see :class:`RequestHandler`).
    :param cache: where valid updates are published.
    :param every_k: request an update every K finished episodes (paper default 1).
    :param request_timeout_s: a request that takes longer is cancelled and counted as ``timeout``.
    :param max_in_flight: concurrent requests (1 by default: a local model serves one at a time).
    :param history: how many recent episodes the summariser may see.
    :param on_update: callbacks called on the loop thread for each published update.
    :param on_failure: callbacks called on the loop thread for each failed request.
    :param budget: the run's LLM budget (default: no limit, tokens only counted). Once a limit is
        reached no request starts; requests already running finish and are applied, so a limit
        can be exceeded by at most ``max_in_flight`` requests.
    """

    def __init__(
        self,
        handler: RequestHandler,
        cache: ExplorationCache,
        *,
        every_k: int = 1,
        request_timeout_s: float = 120.0,
        max_in_flight: int = 1,
        history: int = 20,
        on_update: Sequence[Callable[[ExplorationUpdate], None]] = (),
        on_failure: Sequence[Callable[[RequestFailure], None]] = (),
        budget: Budget | None = None,
    ) -> None:
        if every_k < 1:
            raise ValueError(f"every_k must be >= 1, got {every_k}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if request_timeout_s <= 0:
            raise ValueError(f"request_timeout_s must be > 0, got {request_timeout_s}")
        self.handler = handler
        self.cache = cache
        self.every_k = every_k
        self.request_timeout_s = request_timeout_s
        self.max_in_flight = max_in_flight
        self.stats = RuntimeStats()
        self.budget = budget if budget is not None else Budget()
        self._history: deque[EpisodeRecord] = deque(maxlen=max(history, 1))
        self._on_update = list(on_update)
        self._on_failure = list(on_failure)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pending: tuple[EpisodeRecord, _Waiter | None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._closed = False
        self._submitted = 0  # episodes handed over, counted on the training thread
        # intake: the training thread appends here and wakes the loop only when no drain is due
        self._inbox: deque[tuple[EpisodeRecord, bool, _Waiter | None]] = deque()
        self._drain_scheduled = False

    # ------------------------------------------------------------------ lifecycle
    def observe(
        self,
        *,
        on_update: Callable[[ExplorationUpdate], None] | None = None,
        on_failure: Callable[[RequestFailure], None] | None = None,
    ) -> None:
        """Add callbacks for published updates and failed requests, after those given to the constructor.

        For an observer that exists only after the runtime was built (a run directory opened
        later). The callbacks run on the loop thread like the constructor's; an exception they
        raise is logged and contained.

        :raises RuntimeError: once :meth:`start` has been called (the loop thread reads the
            callback lists without a lock).
        """
        if self._thread is not None:
            raise RuntimeError("ExplorerRuntime.observe() must be called before start()")
        if on_update is not None:
            self._on_update.append(on_update)
        if on_failure is not None:
            self._on_failure.append(on_failure)

    def start(self) -> ExplorerRuntime:
        """Start the pipeline thread and its event loop; returns once the loop runs."""
        if self._thread is not None:
            raise RuntimeError("ExplorerRuntime already started")
        ready = threading.Event()
        loop = self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._wakeup = asyncio.Event()
            self._workers = [loop.create_task(self._worker(), name=f"explorer-worker-{i}")
                             for i in range(self.max_in_flight)]
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="explorer-runtime", daemon=False)
        self._thread.start()
        ready.wait()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Cancel in-flight work, stop the loop and join its thread. Idempotent."""
        if self._closed or self._loop is None or self._thread is None:
            self._closed = True
            return
        self._closed = True
        loop = self._loop

        async def shutdown() -> None:
            for task in self._workers:
                task.cancel()
            results = await asyncio.gather(*self._workers, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                    log.warning("explorer worker ended with %r", result)
            if self._pending is not None and self._pending[1] is not None:
                self._pending[1].cancel()
            self._pending = None
            await loop.shutdown_asyncgens()
            loop.stop()

        with contextlib.suppress(RuntimeError):  # loop already stopped
            asyncio.run_coroutine_threadsafe(shutdown(), loop)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"explorer runtime thread did not stop within {timeout} s")
        loop.close()

    def __enter__(self) -> ExplorerRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        """The pipeline thread is alive and the runtime not closed."""
        return self._thread is not None and self._thread.is_alive() and not self._closed

    # ------------------------------------------------------------------ checkpoints
    def get_state(self, extra: Callable[[], object] | None = None, timeout: float = 60.0) -> dict[str, Any]:
        """A consistent snapshot of what the runtime carries from one episode to the next.

        Call from the training thread. While the runtime runs, the snapshot is taken on the loop
        thread, between two steps of any request: episodes already handed over are taken in first
        (in order, as the loop would take them a moment later), so the snapshot covers every
        episode submitted so far. ``extra`` (optional) runs in the same loop turn, for state that
        the runtime's callbacks own (the cache's update, a run directory's pending lines), and
        its result is returned under ``"extra"``. Nothing changes in how requests are handled.

        Returns ``stats`` (a copy of :class:`RuntimeStats`), ``history`` (the recent episodes the
        summariser sees), ``submitted`` (episodes counted towards every K-th), ``cache`` (the
        cache's :meth:`~explorer_pipeline.cache.ExplorationCache.get_state`), ``budget`` (the
        budget's spent counters and stop record), ``handler`` (the request handler's state when
        it implements :class:`~explorer_pipeline.state.Stateful`, as the pipeline does; else None)
        and ``waiting``: the episode of a request not started yet, or None. A request already
        running is not part of the snapshot.
        """
        def snapshot() -> dict[str, Any]:
            self._drain()
            return {
                "stats": copy.deepcopy(self.stats),
                "history": list(self._history),
                "submitted": self._submitted,
                "cache": self.cache.get_state(),
                "budget": self.budget.get_state(),
                "handler": state_of(self.handler),
                "waiting": self._pending[0] if self._pending is not None else None,
                "extra": extra() if extra is not None else None,
            }

        loop = self._loop
        if loop is None or not self.running:
            return snapshot()
        done: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(snapshot())
            except BaseException as exc:  # handed to the waiting thread
                done.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return done.result(timeout=timeout)

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state`'s snapshot into a runtime that has not started yet.

        The cache's, the budget's and the handler's state are restored too. A request that was
        waiting in the snapshot is not asked again: the next K-th episode asks for a new update.
        """
        if self._thread is not None:
            raise RuntimeError("set_state needs a runtime that has not started")
        self.stats = copy.deepcopy(state["stats"])
        self._history.clear()
        self._history.extend(state["history"])
        self._submitted = int(state["submitted"])
        if state.get("cache") is not None:
            self.cache.set_state(state["cache"])
        self.budget.set_state(state["budget"])
        if state.get("handler") is not None:
            if not isinstance(self.handler, Stateful):
                raise ValueError(f"the snapshot holds request-handler state, but {type(self.handler).__name__} "
                                 "does not implement get_state/set_state")
            self.handler.set_state(state["handler"])

    def budget_summary(self) -> dict[str, Any]:
        """The run summary's ``budget`` entry (:meth:`Budget.summary`) with ``skipped_requests``:
        the requests not asked because the budget was spent."""
        return {**self.budget.summary(), "skipped_requests": self.stats.skipped_budget}

    # ------------------------------------------------------------------ training-thread API
    def _next_is_request(self) -> bool:
        self._submitted += 1
        return self._submitted % self.every_k == 0

    def submit(self, record: EpisodeRecord) -> None:
        """Hand a finished episode to the pipeline. Never blocks, never raises for a closed runtime.

        Every K-th episode becomes a request. Call from one thread (the training thread).
        """
        loop = self._loop
        if loop is None or self._closed:
            return
        self._hand_over(loop, record, self._next_is_request(), None)

    def submit_and_wait(self, record: EpisodeRecord, timeout: float | None = None) -> Outcome | None:
        """Blocking (paper-parity) mode: on every K-th episode, request an update and wait for it.

        Returns the outcome, or ``None`` if it did not arrive within ``timeout`` seconds (the
        request keeps running and publishes when it finishes) or the runtime is closed. On the
        other episodes, and on every episode once the LLM budget is spent, nothing is requested:
        it returns the update in force at once.
        """
        loop = self._loop
        if loop is None or self._closed:
            return None
        if not self._next_is_request():
            self._hand_over(loop, record, False, None)
            return self.cache.current()
        if self.budget.stop is not None:  # spent: the loop counts the skipped request
            self._hand_over(loop, record, True, None)
            return self.cache.current()
        future: _Waiter = concurrent.futures.Future()
        if not self._hand_over(loop, record, True, future):
            return None
        try:
            return future.result(timeout=timeout)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            return None

    def _hand_over(self, loop: asyncio.AbstractEventLoop, record: EpisodeRecord, request: bool,
                   waiter: _Waiter | None) -> bool:
        # deque.append and the flag are atomic under the GIL; waking the loop costs a syscall and a
        # GIL hand-off, so it happens once per drain, not once per episode
        self._inbox.append((record, request, waiter))
        if self._drain_scheduled:
            return True
        self._drain_scheduled = True
        try:
            loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # loop closed between the check and the call
            return False
        return True

    # ------------------------------------------------------------------ loop thread
    def _drain(self) -> None:
        self._drain_scheduled = False  # reset first: anything appended from now on schedules a drain
        while self._inbox:
            self._intake(*self._inbox.popleft())

    def _intake(self, record: EpisodeRecord, request: bool, waiter: _Waiter | None) -> None:
        self.stats.episodes_seen += 1
        self._history.append(record)
        if not request:
            return
        if self.budget.check(record):
            self._skip_for_budget(waiter)
            return
        if self._pending is not None:
            self.stats.dropped_stale += 1
            old_waiter = self._pending[1]
            if old_waiter is not None and not old_waiter.done():
                old_waiter.cancel()
        self._pending = (record, waiter)
        assert self._wakeup is not None
        self._wakeup.set()

    async def _worker(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            if self._pending is None:
                self._wakeup.clear()
                continue
            record, waiter = self._pending
            self._pending = None
            self._wakeup.clear()
            if self.budget.check(self._history[-1] if self._history else record):
                self._skip_for_budget(waiter)  # spent while this request waited
                continue
            try:
                outcome = await self._run_one(record)
            except asyncio.CancelledError:
                if waiter is not None:
                    waiter.cancel()  # a blocked submit_and_wait returns at once on shutdown
                raise
            if waiter is not None and not waiter.done():
                waiter.set_result(outcome)

    def _skip_for_budget(self, waiter: _Waiter | None) -> None:
        self.stats.skipped_budget += 1
        if waiter is not None and not waiter.done():
            waiter.set_result(self.cache.current())  # a blocked submit_and_wait gets the update in force

    def _spend(self, tokens: dict[str, StageUsage]) -> None:
        """Count a finished request's tokens; record the budget's stop if this crossed a limit."""
        self.stats.add_tokens(tokens)
        self.budget.add(tokens)
        self.budget.check(self._history[-1] if self._history else None)

    async def _run_one(self, record: EpisodeRecord) -> Outcome | None:
        self.stats.requests += 1
        history = tuple(self._history)
        version = self.cache.next_version()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.request_timeout_s):
                outcome = await self.handler.handle(record, history, version)
        except TimeoutError:
            self.stats.timeouts += 1
            outcome = RequestFailure("timeout", f"request took longer than {self.request_timeout_s} s",
                                     record.episode_index, 0, time.perf_counter() - started)
        except Exception as exc:  # a handler must not raise; if it does, nothing reaches the cache
            log.exception("exploration request handler raised")
            outcome = RequestFailure("handler_error", f"{type(exc).__name__}: {exc}",
                                     record.episode_index, 0, time.perf_counter() - started)
        if outcome is None:
            self.stats.skipped += 1
            return None
        if isinstance(outcome, ExplorationUpdate):
            self._spend(outcome.provenance.tokens)
            if outcome.version != self.cache.next_version():  # another request published first
                outcome = dataclasses.replace(outcome, version=self.cache.next_version())
            try:
                self.cache.publish(outcome)
            except ValueError as exc:
                log.error("rejected update from the pipeline: %s", exc)
                outcome = RequestFailure("handler_error", str(exc), record.episode_index,
                                         outcome.provenance.attempts, outcome.provenance.latency_s)
            else:
                self.stats.updates_published += 1
                self._notify(self._on_update, outcome)
                return outcome
        self._spend(outcome.tokens)
        self.stats.failures[outcome.reason] += 1
        self._notify(self._on_failure, outcome)
        return outcome

    @staticmethod
    def _notify(callbacks: Sequence[Callable[[Any], None]], value: object) -> None:
        for callback in callbacks:
            try:
                callback(value)
            except Exception:
                log.exception("exploration observer %r raised", callback)
