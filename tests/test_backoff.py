"""Retry timing (explorer_pipeline.backoff, models.retrying): Retry-After, jitter bounds and the
deadline, computed with an injected clock, sleep and random source (nothing sleeps for real)."""

from __future__ import annotations

import asyncio
from email.utils import formatdate

import httpx
import pytest

from explorer_pipeline.backoff import parse_retry_after, retry_after_s, stop_at_deadline, wait_jitter_or_retry_after
from explorer_pipeline.llm import RetryPolicy, retrying
from explorer_pipeline.stages import Request
from explorer_pipeline.types import EpisodeRecord

NOW = 1_800_000_000.0  # a fixed wall clock (seconds since the epoch)


class Overloaded(ConnectionError):
    """An error carrying an HTTP response, as the OpenAI SDK's status errors do."""

    def __init__(self, status: int = 429, **headers: str) -> None:
        super().__init__(f"HTTP {status}")
        self.response = httpx.Response(status, headers={k.replace("_", "-"): v for k, v in headers.items()})


class FakeTime:
    """A monotonic clock that only the fake sleep advances."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(("value", "expected"), [
    ("30", 30.0), (" 2.5 ", 2.5), ("0", 0.0), ("-4", 0.0),
    (formatdate(NOW + 90, usegmt=True), 90.0), (formatdate(NOW - 90, usegmt=True), 0.0),
    ("soon", None), ("", None), (None, None), ("nan", None), ("inf", None),
    ("99999999", 24 * 3600.0),  # not believed beyond a day
])
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value, now=NOW) == expected


def test_retry_after_is_found_behind_wrapping_errors():
    inner = Overloaded(retry_after="7")
    try:
        try:
            raise inner
        except Overloaded as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as outer:
        assert retry_after_s(outer, NOW) == 7.0
    assert retry_after_s(Overloaded(retry_after_ms="1500", retry_after="9"), NOW) == 1.5  # OpenAI's ms header first
    assert retry_after_s(Overloaded(503), NOW) is None
    assert retry_after_s(ValueError("no response"), NOW) is None


def run_retries(policy, errors, fake, draws=lambda a, b: b):
    """Run the stage retry loop over ``errors`` (raised in order, then success) on fake time."""
    request = Request(EpisodeRecord(1.0, 10, "CartPole-v1", 1, (0, 1)))
    calls: list[float] = []

    async def loop():
        async for attempt in retrying(policy, (ConnectionError,), request, "proposal", sleep=fake.sleep,
                                      clock=fake.clock, uniform=draws):
            with attempt:
                calls.append(fake.now)
                if len(calls) <= len(errors):
                    raise errors[len(calls) - 1]
                return "answer"
        return None

    try:
        result = asyncio.run(loop())
    except ConnectionError as exc:
        result = exc
    return result, calls, request


def test_retry_after_is_honoured_plus_bounded_jitter():
    fake = FakeTime()
    policy = RetryPolicy(max_attempts=5, initial_wait_s=0.5, max_wait_s=4.0, deadline_s=60)
    result, calls, request = run_retries(policy, [Overloaded(retry_after="30"), Overloaded(retry_after="2")], fake,
                                         draws=lambda a, b: b)  # the largest jitter the policy allows
    assert result == "answer"
    assert fake.sleeps == [30.5, 2.5]  # what the server asked, plus at most initial_wait_s
    assert calls == [0.0, 30.5, 33.0]
    assert len(request.retry_reasons) == 2 and "HTTP 429" in request.retry_reasons[0]


def test_an_http_date_retry_after_is_honoured():
    wait = wait_jitter_or_retry_after(0.5, 4.0, uniform=lambda a, b: a, now=lambda: NOW)
    policy_error = Overloaded(retry_after=formatdate(NOW + 12, usegmt=True))

    class State:
        attempt_number = 1

        class outcome:  # tenacity's Future-like outcome
            failed = True

            @staticmethod
            def exception():
                return policy_error

    assert wait(State()) == 12.0  # the date's distance from the (fixed) wall clock, jitter drawn at its least


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 8, 40])
def test_jitter_stays_within_the_exponential_ceiling(attempt):
    asked: list[tuple[float, float]] = []
    wait = wait_jitter_or_retry_after(0.5, 4.0, uniform=lambda a, b: asked.append((a, b)) or b)

    class State:
        attempt_number = attempt
        outcome = None

    assert wait(State()) == min(4.0, 0.5 * 2 ** (attempt - 1))
    assert asked == [(0.0, min(4.0, 0.5 * 2 ** (attempt - 1)))]


def test_full_jitter_waits_are_spread_between_zero_and_the_ceiling():
    wait = wait_jitter_or_retry_after(1.0, 8.0)

    class State:
        attempt_number = 3
        outcome = None

    draws = [wait(State()) for _ in range(2000)]
    assert all(0.0 <= d <= 4.0 for d in draws)
    assert min(draws) < 0.5 and max(draws) > 3.5  # spread over the range, not a fixed wait


def test_the_deadline_ends_the_retries():
    # no Retry-After: waits of 1, 2, 4, 8 ... (largest jitter); a 10 s deadline admits 1 + 2 + 4 = 7 s of waits
    fake = FakeTime()
    policy = RetryPolicy(max_attempts=100, initial_wait_s=1.0, max_wait_s=60.0, deadline_s=10.0)
    result, calls, _ = run_retries(policy, [Overloaded(503)] * 50, fake)
    assert isinstance(result, Overloaded)
    assert fake.sleeps == [1.0, 2.0, 4.0]  # the next (8 s) would end past the deadline
    assert fake.now <= 10.0 and len(calls) == 4


def test_a_retry_after_past_the_deadline_stops_at_once():
    fake = FakeTime()
    policy = RetryPolicy(max_attempts=10, initial_wait_s=0.5, max_wait_s=4.0, deadline_s=20.0)
    result, calls, _ = run_retries(policy, [Overloaded(retry_after="3600")] * 5, fake)
    assert isinstance(result, Overloaded) and fake.sleeps == [] and len(calls) == 1


def test_attempts_still_bound_the_retries_without_a_deadline():
    fake = FakeTime()
    result, calls, _ = run_retries(RetryPolicy(max_attempts=3), [Overloaded(503)] * 5, fake)
    assert isinstance(result, Overloaded) and len(calls) == 3 and len(fake.sleeps) == 2


def test_stop_at_deadline_counts_from_its_creation():
    fake = FakeTime()
    fake.now = 100.0
    stop = stop_at_deadline(5.0, clock=fake.clock)
    fake.now = 103.0
    assert stop.remaining() == 2.0

    class State:
        upcoming_sleep = 1.5

    assert not stop(State())
    State.upcoming_sleep = 2.0
    assert stop(State())
