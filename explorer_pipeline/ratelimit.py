"""Per-endpoint limits on model calls: how many may be in flight at once, and how many may start
per minute, shared by every explorer that calls the same server.

The seam is :class:`Limiter`: ``await acquire()`` before a call, ``release()`` after it (also
after a failure). :class:`~explorer_pipeline.llm.StageModels` does this around every model
call when its provider gives a limiter (``Provider.limiter``; the ``openai`` provider's options
``max_concurrent`` and ``requests_per_minute``).

Where the limit lives is a choice of :func:`set_limiter_factory`:

- by default, :class:`LocalLimiter`, one per endpoint **per process**: every run of a study that
  runs in one process (threads, the ``local`` ablation backend) shares it. It is thread-safe and
  works across event loops (each explorer runs its own loop thread).
- a study spread over processes or machines installs its own factory before opening explorers,
  e.g. one whose ``acquire`` awaits a Ray actor that holds the count for the whole cluster. The
  factory gets the endpoint key and the two limits and returns any object with the two methods.
  The factory is per process: install it in every process that opens explorers (at the start of
  each Ray task, say), not only in the driver. ``release`` must not block (it runs in a
  ``finally`` on the explorer's event loop): send it and move on.
- a process started by someone else (``llm-explorer train`` launched by a study) is told its
  factory by the environment: ``LLM_EXPLORER_LIMITER_FACTORY=module:function`` names it, and it
  is imported on the first :func:`limiter_for` unless :func:`set_limiter_factory` chose one
  (the ablation runner sets it for a study's ``endpoint:``).

Keys are :func:`endpoint_key` of the base URL (scheme, host, port and path; never user info)
together with the limits, so runs that ask for different limits on one server do not silently
share the first one's.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

__all__ = ["FACTORY_ENV", "Limiter", "LocalLimiter", "endpoint_key", "limiter_for", "set_limiter_factory"]

FACTORY_ENV = "LLM_EXPLORER_LIMITER_FACTORY"
"""Names this process's limiter factory, ``module:function`` (imported on first use)."""


@runtime_checkable
class Limiter(Protocol):
    """What :class:`~explorer_pipeline.llm.StageModels` needs of a limiter."""

    async def acquire(self) -> None:
        """Wait until one more call may start (a free slot, and the rate allows it)."""

    def release(self) -> None:
        """The call that :meth:`acquire` admitted has ended (answered or failed)."""


class LocalLimiter:
    """At most ``max_concurrent`` calls in flight and at most ``requests_per_minute`` starts per
    minute (evenly spaced, no bursts), for every thread and event loop of this process.

    :param max_concurrent: slots; ``None``: no limit on calls in flight.
    :param requests_per_minute: ``None``: no limit on the rate.
    :param clock: a monotonic clock, seconds.
    :param sleep: ``asyncio.sleep`` (tests pass one that only records).
    """

    def __init__(self, max_concurrent: int | None = None, requests_per_minute: float | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if max_concurrent is not None and max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")
        if requests_per_minute is not None and not requests_per_minute > 0:
            raise ValueError(f"requests_per_minute must be > 0, got {requests_per_minute}")
        self.max_concurrent, self.requests_per_minute = max_concurrent, requests_per_minute
        self.clock, self.sleep = clock, sleep
        self._lock = threading.Lock()
        self._in_use = 0
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()
        self._granting: set[asyncio.Future[None]] = set()  # handed a slot, not yet told (on their own loop)
        self._next_start = 0.0
        self.peak_in_use = 0
        """The most calls ever in flight at once (for tests and diagnostics)."""

    @property
    def in_use(self) -> int:
        """Calls in flight now."""
        return self._in_use

    async def acquire(self) -> None:
        """Wait for a slot, then for the rate (first come, first served)."""
        if self.max_concurrent is not None:
            await self._slot()
        if self.requests_per_minute is not None:
            with self._lock:
                now = self.clock()
                start = max(now, self._next_start)
                self._next_start = start + 60.0 / self.requests_per_minute
            if start > now:
                try:
                    await self.sleep(start - now)
                except BaseException:
                    self.release()
                    raise

    async def _slot(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.max_concurrent is not None  # acquire() waits for a slot only with a limit
        with self._lock:
            if self._in_use < self.max_concurrent and not self._waiters:
                self._take()
                return
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, future))
        try:
            await future
        except asyncio.CancelledError:
            with self._lock:
                if (loop, future) in self._waiters:  # still waiting: nothing was taken
                    self._waiters.remove((loop, future))
                    return_slot = False
                elif future in self._granting:  # handed a slot that never arrived: pass it on
                    self._granting.discard(future)
                    return_slot = True
                else:  # the slot arrived just before the cancellation: ours to give back
                    return_slot = future.done() and not future.cancelled()
            if return_slot:
                self.release()
            raise

    def _take(self) -> None:
        self._in_use += 1
        self.peak_in_use = max(self.peak_in_use, self._in_use)

    def release(self) -> None:
        """Give the slot to the longest waiter, or free it."""
        if self.max_concurrent is None:
            return
        with self._lock:
            while self._waiters:
                loop, future = self._waiters.popleft()
                self._granting.add(future)
                try:
                    # the slot passes straight on: _in_use stays the same
                    loop.call_soon_threadsafe(self._grant, future)
                    return
                except RuntimeError:  # that loop is closed: try the next waiter
                    self._granting.discard(future)
                    continue
            self._in_use = max(0, self._in_use - 1)

    def _grant(self, future: asyncio.Future[None]) -> None:
        """On the waiter's loop: deliver the slot, or pass it on when the waiter is gone."""
        with self._lock:
            if future not in self._granting:  # its waiter was cancelled and passed the slot on
                return
            self._granting.discard(future)
            if not future.done():
                future.set_result(None)
                return
        self.release()  # cancelled meanwhile: pass the slot on


LimiterFactory = Callable[[str, "int | None", "float | None"], Limiter]

_registry: dict[tuple[str, int | None, float | None], Limiter] = {}
_registry_lock = threading.Lock()


def _local(key: str, max_concurrent: int | None, requests_per_minute: float | None) -> Limiter:
    return LocalLimiter(max_concurrent, requests_per_minute)


_factory: LimiterFactory = _local
_factory_chosen = False  # set_limiter_factory was called: the environment is not read


def _factory_from_env() -> LimiterFactory:
    """The factory ``LLM_EXPLORER_LIMITER_FACTORY`` names, else :class:`LocalLimiter`'s."""
    name = os.environ.get(FACTORY_ENV, "").strip()
    if not name:
        return _local
    module, _, attribute = name.partition(":")
    try:
        factory = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"{FACTORY_ENV}={name!r} does not name a limiter factory (module:function): {exc}") from None
    if not callable(factory):
        raise ValueError(f"{FACTORY_ENV}={name!r} is not callable")
    return factory  # type: ignore[no-any-return]


def endpoint_key(base_url: str) -> str:
    """``scheme://host:port/path`` of ``base_url``, lower-case host, without user info, query or
    trailing slash: what identifies one server for the limits."""
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}{parts.path.rstrip('/')}"


def set_limiter_factory(factory: LimiterFactory | None) -> None:
    """Use ``factory(endpoint_key, max_concurrent, requests_per_minute)`` for limiters created from
    now on (``None``: back to the default, the factory ``LLM_EXPLORER_LIMITER_FACTORY`` names, else
    :class:`LocalLimiter`), and forget the limiters made so far."""
    global _factory, _factory_chosen
    with _registry_lock:
        _factory = factory or _local
        _factory_chosen = factory is not None
        _registry.clear()


def limiter_for(base_url: str, max_concurrent: int | None, requests_per_minute: float | None) -> Limiter | None:
    """The limiter this process shares for ``base_url`` with these limits (made on first use);
    ``None`` when neither limit is set."""
    if max_concurrent is None and requests_per_minute is None:
        return None
    global _factory, _factory_chosen
    key = (endpoint_key(base_url), max_concurrent, requests_per_minute)
    with _registry_lock:
        if not _factory_chosen:
            _factory, _factory_chosen = _factory_from_env(), True
        limiter = _registry.get(key)
        if limiter is None:
            limiter = _registry[key] = _factory(*key)
        return limiter
