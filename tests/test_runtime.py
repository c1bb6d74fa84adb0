"""ExplorerRuntime: non-blocking intake, newest wins, timeouts, blocking mode, clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest

from explorer_pipeline import ActionSpec, EpisodeRecord, ExplorationCache, ExplorationUpdate, ExplorerRuntime
from explorer_pipeline.types import Provenance, RequestFailure

SPEC = ActionSpec.discrete(2)


def record(i: int) -> EpisodeRecord:
    return EpisodeRecord(float(i), 10, "CartPole-v1", i, (0, 1) * 5)


class GatedHandler:
    """Blocks each request until the test opens the gate; remembers which episodes it served."""

    def __init__(self, values=(0.2, 0.8)) -> None:
        self.gate = threading.Event()
        self.served: list[int] = []
        self.cancelled = False
        self.values = values

    async def handle(self, rec, history, version):
        try:
            while not self.gate.is_set():  # noqa: ASYNC110 - a threading.Event set by the test thread
                await asyncio.sleep(0.005)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.served.append(rec.episode_index)
        return ExplorationUpdate(version, "distribution", self.values,
                                 provenance=Provenance(source_episode=rec.episode_index))


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def test_newest_wins_and_drops_are_counted():
    handler = GatedHandler()
    cache = ExplorationCache(SPEC)
    with ExplorerRuntime(handler, cache) as runtime:
        runtime.submit(record(0))
        assert wait_for(lambda: runtime.stats.requests == 1)  # episode 0 is in flight
        for i in range(1, 11):
            runtime.submit(record(i))
        assert wait_for(lambda: runtime.stats.episodes_seen == 11)
        handler.gate.set()
        assert wait_for(lambda: runtime.stats.updates_published == 2)
    assert handler.served == [0, 10]  # the stale episodes 1..9 were never requested
    assert runtime.stats.dropped_stale == 9
    assert cache.current().version == 2


def test_every_k_gates_requests():
    handler = GatedHandler()
    handler.gate.set()
    with ExplorerRuntime(handler, ExplorationCache(SPEC), every_k=3) as runtime:
        for i in range(7):
            runtime.submit(record(i))
            wait_for(lambda n=i + 1: runtime.stats.episodes_seen == n)
        assert wait_for(lambda: runtime.stats.updates_published == 2)
    assert handler.served == [2, 5]


def test_submit_does_not_wait_for_a_busy_pipeline():
    handler = GatedHandler()
    with ExplorerRuntime(handler, ExplorationCache(SPEC)) as runtime:
        runtime.submit(record(0))
        assert wait_for(lambda: runtime.stats.requests == 1)
        for i in range(1, 200):
            runtime.submit(record(i))  # would hang here if submit waited on the gated request
        assert not handler.gate.is_set() and handler.served == []
        handler.gate.set()


def test_timeout_keeps_previous_update():
    class Slow:
        async def handle(self, rec, history, version):
            await asyncio.sleep(10)

    cache = ExplorationCache(SPEC)
    failures: list[RequestFailure] = []
    with ExplorerRuntime(Slow(), cache, request_timeout_s=0.05, on_failure=[failures.append]) as runtime:
        outcome = runtime.submit_and_wait(record(0), timeout=5)
    assert isinstance(outcome, RequestFailure) and outcome.reason == "timeout"
    assert failures == [outcome]
    assert cache.current().source == "default" and cache.current().values == (0.5, 0.5)
    assert runtime.stats.as_dict()["provider_errors"] == 1


def test_handler_exception_never_reaches_the_caller():
    class Broken:
        async def handle(self, rec, history, version):
            raise RuntimeError("boom")

    cache = ExplorationCache(SPEC)
    with ExplorerRuntime(Broken(), cache) as runtime:
        outcome = runtime.submit_and_wait(record(0), timeout=5)
    assert outcome.reason == "handler_error" and "boom" in outcome.detail
    assert cache.current().version == 0


def test_invalid_update_from_handler_is_not_published():
    class WrongLength:
        async def handle(self, rec, history, version):
            return ExplorationUpdate(version, "distribution", (0.2, 0.3, 0.5))

    cache = ExplorationCache(SPEC)
    with ExplorerRuntime(WrongLength(), cache) as runtime:
        outcome = runtime.submit_and_wait(record(0), timeout=5)
    assert isinstance(outcome, RequestFailure)
    assert cache.current().version == 0


def test_blocking_mode_waits_and_times_out():
    handler = GatedHandler()
    with ExplorerRuntime(handler, ExplorationCache(SPEC)) as runtime:
        assert runtime.submit_and_wait(record(0), timeout=0.05) is None  # still gated
        handler.gate.set()
        outcome = runtime.submit_and_wait(record(1), timeout=5)
        assert isinstance(outcome, ExplorationUpdate)
        # the waiter gets the update computed from its own episode, not the late one of episode 0
        assert outcome.provenance.source_episode == 1 and outcome.version == 2
        assert handler.served == [0, 1]


def test_close_leaves_no_thread_or_task_behind():
    before = {t.name for t in threading.enumerate()}
    handler = GatedHandler()
    runtime = ExplorerRuntime(handler, ExplorationCache(SPEC)).start()
    loop = runtime._loop
    runtime.submit(record(0))
    assert wait_for(lambda: runtime.stats.requests == 1)
    runtime.close()
    assert handler.cancelled  # the in-flight request was cancelled, not abandoned
    assert "explorer-runtime" not in {t.name for t in threading.enumerate()}
    assert {t.name for t in threading.enumerate()} <= before | {"asyncio_0"}
    assert loop.is_closed()
    runtime.submit(record(1))  # a no-op after close, no exception
    runtime.close()  # idempotent


def test_observer_errors_are_contained():
    handler = GatedHandler()
    handler.gate.set()
    seen = []

    def bad_observer(update):
        raise ValueError("observer bug")

    with ExplorerRuntime(handler, ExplorationCache(SPEC), on_update=[bad_observer, seen.append]) as runtime:
        outcome = runtime.submit_and_wait(record(0), timeout=5)
    assert isinstance(outcome, ExplorationUpdate) and seen == [outcome]


def test_observers_added_before_start_run_after_the_constructors():
    class FailSecond:
        async def handle(self, rec, history, version):
            if rec.episode_index == 1:
                raise RuntimeError("boom")
            return ExplorationUpdate(version, "distribution", (0.2, 0.8))

    calls = []
    runtime = ExplorerRuntime(FailSecond(), ExplorationCache(SPEC), on_update=[lambda u: calls.append("first")])
    runtime.observe(on_update=lambda u: calls.append(("update", u.version)))
    runtime.observe(on_failure=lambda f: calls.append(("failure", f.reason)))
    with runtime:
        runtime.submit_and_wait(record(0), timeout=5)
        runtime.submit_and_wait(record(1), timeout=5)
        with pytest.raises(RuntimeError, match="before start"):
            runtime.observe(on_update=calls.append)
    assert calls == ["first", ("update", 1), ("failure", "handler_error")]


@pytest.mark.parametrize("kwargs", [{"every_k": 0}, {"max_in_flight": 0}, {"request_timeout_s": 0}])
def test_bad_settings_are_rejected(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ExplorerRuntime(GatedHandler(), ExplorationCache(SPEC), **kwargs)


def test_cache_rejects_stale_or_mismatched_updates():
    cache = ExplorationCache(SPEC)
    cache.publish(ExplorationUpdate(1, "distribution", (0.3, 0.7)))
    with pytest.raises(ValueError, match="not newer"):
        cache.publish(ExplorationUpdate(1, "distribution", (0.3, 0.7)))
    with pytest.raises(ValueError, match="does not match"):
        cache.publish(ExplorationUpdate(2, "bias", (0.1, 0.1)))
    assert cache.current().values == (0.3, 0.7)
    assert not cache.current().array.flags.writeable


def test_close_releases_a_blocked_waiter():
    handler = GatedHandler()
    runtime = ExplorerRuntime(handler, ExplorationCache(SPEC)).start()
    result = {}
    waiter = threading.Thread(target=lambda: result.setdefault("outcome", runtime.submit_and_wait(record(0), 60)))
    waiter.start()
    assert wait_for(lambda: runtime.stats.requests == 1)
    runtime.close()
    waiter.join(5)
    assert not waiter.is_alive() and result["outcome"] is None


def test_concurrent_requests_publish_increasing_versions():
    class Overlapping:
        """Each request waits (up to 5 s) until two requests are in flight at once."""

        def __init__(self) -> None:
            self.active = self.peak = 0
            self.served: list[int] = []
            self.both_in_flight = asyncio.Event()

        async def handle(self, rec, history, version):
            self.active += 1
            self.peak = max(self.peak, self.active)
            if self.active == 2:
                self.both_in_flight.set()
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.both_in_flight.wait(), 5.0)
            finally:
                self.active -= 1
            self.served.append(rec.episode_index)
            return ExplorationUpdate(version, "distribution", (0.4, 0.6))

    handler = Overlapping()
    cache = ExplorationCache(SPEC)
    published = []
    with ExplorerRuntime(handler, cache, max_in_flight=2, on_update=[published.append]) as runtime:
        runtime.submit(record(0))
        assert wait_for(lambda: runtime.stats.requests == 1)
        runtime.submit(record(1))  # a second worker takes it while the first is still busy
        assert wait_for(lambda: runtime.stats.updates_published == 2, timeout=15)
    assert handler.peak == 2  # both requests were in flight together: episode 1 did not wait for episode 0
    assert sorted(handler.served) == [0, 1] and runtime.stats.dropped_stale == 0
    assert [u.version for u in published] == [1, 2]
    assert runtime.stats.failures == {} and cache.current().version == 2


def test_blocking_mode_waits_only_on_every_kth_episode():
    handler = GatedHandler()
    handler.gate.set()
    cache = ExplorationCache(SPEC)
    with ExplorerRuntime(handler, cache, every_k=2) as runtime:
        first = runtime.submit_and_wait(record(0), timeout=5)
        assert first is cache.current() and first.version == 0  # no request: the default at once
        second = runtime.submit_and_wait(record(1), timeout=5)
        assert isinstance(second, ExplorationUpdate) and second.version == 1
    assert handler.served == [1]
