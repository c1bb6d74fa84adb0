"""Retry timing for calls to a shared LLM server: full-jitter exponential backoff that honours the
server's ``Retry-After``, under a total deadline.

These are tenacity strategies; :func:`explorer_pipeline.llm.retrying` puts them together with
the attempt limit. A server that is overloaded (HTTP 429 or 503) usually says when to come back:

- ``Retry-After: 30`` (seconds) or ``Retry-After: Wed, 21 Oct 2026 07:28:00 GMT`` (an HTTP date),
  and OpenAI's ``retry-after-ms``. The wait is that long plus a random share of up to ``base_s``,
  so that the runs of a study told the same moment do not all come back at once.
- Without the header, the wait is full-jitter exponential: uniform between 0 and
  ``min(cap_s, base_s * 2 ** (attempt - 1))`` (tenacity's ``wait_random_exponential``).

:class:`stop_at_deadline` stops retrying once the next attempt could not start before the deadline
(a ``Retry-After`` past it ends the retries at once instead of sleeping for nothing). Clock and
random source are parameters, so tests check the arithmetic without sleeping.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

from tenacity import RetryCallState
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_random_exponential

__all__ = ["parse_retry_after", "retry_after_s", "stop_at_deadline", "wait_jitter_or_retry_after"]

#: a Retry-After longer than this is not believed (a misconfigured server); the deadline applies anyway
MAX_RETRY_AFTER_S = 24 * 3600.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait that a ``Retry-After`` header value asks for: a number of seconds or an HTTP
    date (relative to ``now``, seconds since the epoch; default: the time now). ``None`` for a
    missing or unreadable value; never negative; at most :data:`MAX_RETRY_AFTER_S`."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT by definition
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _headers_of(error: BaseException) -> Any:
    response = getattr(error, "response", None)
    return getattr(response, "headers", None)


def retry_after_s(error: BaseException | None, now: float | None = None) -> float | None:
    """The wait the server asked for in the HTTP response behind ``error`` (``retry-after-ms`` or
    ``Retry-After``), looked for on the error and the errors it was raised from; ``None`` when
    there is none. Works with any error that carries an httpx-like ``response.headers``."""
    seen = 0
    while error is not None and seen < 5:
        headers = _headers_of(error)
        if headers is not None:
            millis = parse_retry_after(headers.get("retry-after-ms"), now)
            if millis is not None:
                return millis / 1000.0
            seconds = parse_retry_after(headers.get("retry-after"), now)
            if seconds is not None:
                return seconds
        error = error.__cause__ or error.__context__
        seen += 1
    return None


class wait_jitter_or_retry_after(wait_base):
    """What the server asked for (``Retry-After`` plus up to ``base_s`` of jitter), else full-jitter
    exponential backoff between 0 and ``min(cap_s, base_s * 2 ** (attempt - 1))``.

    :param base_s: the first backoff's upper bound, seconds.
    :param cap_s: the largest backoff without a ``Retry-After``, seconds.
    :param uniform: the random source, ``uniform(a, b)`` (tests pass a fixed one).
    :param now: the wall clock for HTTP dates (seconds since the epoch).
    """

    def __init__(self, base_s: float, cap_s: float, *, uniform: Callable[[float, float], float] = random.uniform,
                 now: Callable[[], float] = time.time) -> None:
        self.base_s, self.cap_s, self.uniform, self.now = base_s, cap_s, uniform, now
        self._exponential = wait_random_exponential(multiplier=base_s, max=cap_s)

    def ceiling(self, attempt: int) -> float:
        """The upper bound of the jittered wait after ``attempt`` (1, 2, ...)."""
        if attempt < 1:
            return 0.0
        try:
            return min(self.cap_s, self.base_s * 2.0 ** (attempt - 1))
        except OverflowError:
            return self.cap_s

    def __call__(self, retry_state: RetryCallState) -> float:
        """The wait after the attempt ``retry_state`` describes, seconds."""
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        asked = retry_after_s(error, self.now())
        if asked is not None:
            return asked + self.uniform(0.0, self.base_s)
        return self.uniform(0.0, self.ceiling(retry_state.attempt_number))


class stop_at_deadline(stop_base):
    """Stop when the next attempt could not start within ``deadline_s`` of this object's creation
    (the time spent so far plus the coming wait reach the deadline).

    tenacity computes the wait before it asks the stop strategy, so ``upcoming_sleep`` is the wait
    that would follow: a ``Retry-After`` beyond the deadline stops at once.

    :param deadline_s: the total time for all attempts and waits, seconds.
    :param clock: a monotonic clock (tests pass a fake one).
    """

    def __init__(self, deadline_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.deadline_s, self.clock = deadline_s, clock
        self.started = clock()

    def remaining(self) -> float:
        """Seconds left before the deadline (never negative)."""
        return max(0.0, self.started + self.deadline_s - self.clock())

    def __call__(self, retry_state: RetryCallState) -> bool:
        """True: no further attempt."""
        return (retry_state.upcoming_sleep or 0.0) >= self.remaining()
