"""The per-endpoint limiter (explorer_pipeline.ratelimit): slots shared across threads and event
loops, cancelled waiters, the rate (with an injected clock and sleep), and the registry."""

from __future__ import annotations

import asyncio
import threading

import pytest

from explorer_pipeline.ratelimit import LocalLimiter, endpoint_key, limiter_for, set_limiter_factory


def test_slots_are_shared_by_event_loops_in_other_threads():
    limiter = LocalLimiter(max_concurrent=2)
    inside = []
    lock = threading.Lock()
    peak = [0]

    async def calls():
        for _ in range(5):
            await limiter.acquire()
            with lock:
                inside.append(1)
                peak[0] = max(peak[0], len(inside))
            await asyncio.sleep(0.005)
            with lock:
                inside.pop()
            limiter.release()

    threads = [threading.Thread(target=asyncio.run, args=(calls(),)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert peak[0] == 2 and limiter.peak_in_use == 2 and limiter.in_use == 0


def test_a_cancelled_waiter_does_not_keep_a_slot():
    async def main():
        limiter = LocalLimiter(max_concurrent=1)
        await limiter.acquire()
        waiter = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        limiter.release()
        assert limiter.in_use == 0
        await asyncio.wait_for(limiter.acquire(), 1)  # the slot is free again
        assert limiter.in_use == 1

    asyncio.run(main())


def test_a_waiter_cancelled_after_its_grant_passes_the_slot_on():
    async def main():
        limiter = LocalLimiter(max_concurrent=1)
        await limiter.acquire()
        first = asyncio.create_task(limiter.acquire())
        second = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0)
        limiter.release()  # granted to `first` (scheduled) ...
        first.cancel()  # ... which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await first
        await asyncio.wait_for(second, 1)
        assert limiter.in_use == 1

    asyncio.run(main())


def test_the_rate_spaces_starts_evenly():
    slept: list[float] = []
    now = [50.0]

    async def sleep(seconds):
        slept.append(seconds)

    async def main():
        limiter = LocalLimiter(requests_per_minute=120, clock=lambda: now[0], sleep=sleep)
        for _ in range(4):
            await limiter.acquire()
            limiter.release()

    asyncio.run(main())
    assert slept == [0.5, 1.0, 1.5]  # 120 per minute: one start every 0.5 s, the first at once


@pytest.mark.parametrize(("n", "rpm"), [(0, None), (None, 0.0), (-1, None)])
def test_bad_limits(n, rpm):
    with pytest.raises(ValueError, match="must be"):
        LocalLimiter(n, rpm)


def test_one_limiter_per_endpoint_and_limits():
    a = limiter_for("http://127.0.0.1:8080/v1/", 2, None)
    assert a is limiter_for("http://127.0.0.1:8080/v1", 2, None)
    assert a is not limiter_for("http://127.0.0.1:8080/v1", 3, None)
    assert limiter_for("http://127.0.0.1:8080/v1", None, None) is None
    assert endpoint_key("https://user:pw@LLM.example.org/v1/") == "https://llm.example.org:443/v1"


def test_a_study_can_install_its_own_limiters():
    made = []

    class Counting:
        async def acquire(self):
            made.append("acquire")

        def release(self):
            made.append("release")

    try:
        set_limiter_factory(lambda key, n, rpm: made.append((key, n, rpm)) or Counting())
        limiter = limiter_for("http://10.0.0.7:8000/v1", 4, 30.0)
        assert made == [("http://10.0.0.7:8000/v1", 4, 30.0)]
        asyncio.run(limiter.acquire())
        limiter.release()
        assert made[1:] == ["acquire", "release"]
    finally:
        set_limiter_factory(None)
    assert isinstance(limiter_for("http://10.0.0.7:8000/v1", 4, 30.0), LocalLimiter)
