"""The LLM budget: limits on tokens and cost, the runtime stopping its requests, state for resume."""

from __future__ import annotations

import threading
import time

import pytest
from pydantic import ValidationError

from explorer_pipeline import ActionSpec, EpisodeRecord, ExplorationCache, ExplorationUpdate, ExplorerRuntime
from explorer_pipeline.budget import Budget, BudgetConfig, stop_message
from explorer_pipeline.session import ExplorerConfig, open_explorer
from explorer_pipeline.types import Provenance, RequestFailure, StageUsage

from .test_runtime import wait_for

SPEC = ActionSpec.discrete(2)


def record(i: int) -> EpisodeRecord:
    return EpisodeRecord(float(i), 10, "CartPole-v1", i, (0, 1) * 5, env_step=100 * (i + 1))


class SpendingHandler:
    """Each request spends ``input_tokens`` + ``output_tokens``; ``fail`` makes it a failure (which
    spent them too). Requests after ``block_after`` hang until the test opens ``gate``."""

    def __init__(self, input_tokens=30, output_tokens=10, *, fail=False, block_after=None) -> None:
        self.usage = {"proposal": StageUsage(input_tokens, output_tokens)}
        self.fail = fail
        self.block_after = block_after
        self.gate = threading.Event()
        self.served: list[int] = []

    async def handle(self, rec, history, version):
        import asyncio

        if self.block_after is not None and len(self.served) >= self.block_after:
            while not self.gate.is_set():  # noqa: ASYNC110 - a threading.Event set by the test thread
                await asyncio.sleep(0.005)
        self.served.append(rec.episode_index)
        if self.fail:
            return RequestFailure("parse_error", "unreadable", rec.episode_index, 1, 0.0, tokens=dict(self.usage))
        return ExplorationUpdate(version, "distribution", (0.2, 0.8),
                                 provenance=Provenance(source_episode=rec.episode_index, tokens=dict(self.usage)))


# --------------------------------------------------------------------------- configuration
def test_max_cost_without_a_price_is_one_line_naming_the_keys():
    with pytest.raises(ValidationError) as info:
        ExplorerConfig(budget={"max_cost_usd": 1})
    (error,) = info.value.errors()
    assert error["loc"] == ("budget",)
    message = str(error["ctx"]["error"])
    assert "\n" not in message
    assert "explorer.budget.price.input" in message and "explorer.budget.price.output" in message


@pytest.mark.parametrize("budget", [{"max_tokens": 0}, {"max_tokens": -5}, {"max_cost_usd": 0, "price": {
    "input": 1, "output": 1}}, {"price": {"input": -1, "output": 1}}, {"max_tokens": 10, "unknown": 1},
    {"max_cost_usd": 1, "price": {"input": 0, "output": 0}}])
def test_bad_budgets_are_rejected(budget):
    with pytest.raises(ValidationError):
        ExplorerConfig(budget=budget)


def test_the_default_budget_has_no_limit_and_is_in_the_dumped_config():
    config = ExplorerConfig()
    assert not config.budget.limited
    assert config.model_dump(mode="json")["budget"] == {"max_tokens": None, "max_cost_usd": None, "price": None}
    limited = ExplorerConfig(budget={"max_cost_usd": 0.5, "price": {"input": 3, "output": 15}})
    assert limited.budget.limited and limited.budget.price.output == 15


# --------------------------------------------------------------------------- accounting
def test_budget_counts_tokens_and_cost_and_records_the_stop_once():
    budget = Budget(BudgetConfig(max_cost_usd=0.007, price={"input": 2.0, "output": 10.0}))
    usage = {"analysis": StageUsage(600, 50), "proposal": StageUsage(400, 50)}  # 0.002 + 0.001 USD
    budget.add(usage)
    budget.add(usage)
    assert budget.spent_tokens == 2200 and budget.spent_cost_usd == pytest.approx(0.006)
    assert not budget.check(record(1)) and budget.stop is None
    budget.add(usage)
    assert budget.check(record(2))
    stop = budget.stop
    assert stop["reason"] == "cost" and stop["limit"] == 0.007 and stop["spent_cost_usd"] == pytest.approx(0.009)
    assert (stop["episode"], stop["env_step"], stop["spent_tokens"]) == (2, 300, 3300)
    assert budget.check(record(7)) and budget.stop["episode"] == 2  # recorded once
    assert stop_message(budget.summary()) == "LLM budget reached at episode 2, env step 300 (cost $0.009/$0.007)"


def test_a_token_limit_is_checked_before_cost_and_without_a_price_there_is_no_cost():
    budget = Budget(BudgetConfig(max_tokens=100))
    budget.add({"proposal": StageUsage(60, 40)})
    assert budget.spent_cost_usd is None and budget.exhausted() == "tokens"
    budget.check(None)
    assert budget.summary()["stop"]["episode"] is None
    assert stop_message(budget.summary()) == "LLM budget reached (tokens 100/100)"
    assert stop_message(Budget().summary()) is None and stop_message(None) is None


# --------------------------------------------------------------------------- the runtime
def test_token_limit_stops_requests_and_the_last_update_stays_in_force():
    handler = SpendingHandler(30, 10, block_after=3)  # 40 tokens a request; a 4th request would hang
    cache = ExplorationCache(SPEC)
    budget = Budget(BudgetConfig(max_tokens=100))
    with ExplorerRuntime(handler, cache, budget=budget) as runtime:
        outcomes = [runtime.submit_and_wait(record(i), timeout=10) for i in range(3)]
        assert [o.version for o in outcomes] == [1, 2, 3]
        started = time.monotonic()
        after = [runtime.submit_and_wait(record(i), timeout=10) for i in range(3, 6)]
        assert time.monotonic() - started < 2  # blocking mode does not wait for an update that never comes
        runtime.submit(record(6))  # async intake is refused too
        assert wait_for(lambda: runtime.stats.episodes_seen == 7)
    assert handler.served == [0, 1, 2]
    assert [o.version for o in after] == [3, 3, 3]  # the update in force, returned at once
    assert cache.current().version == 3 and cache.current().values == (0.2, 0.8)
    assert runtime.stats.requests == 3 and runtime.stats.skipped_budget == 4
    stop = budget.stop
    assert (stop["reason"], stop["limit"], stop["spent_tokens"], stop["episode"], stop["env_step"]) == \
        ("tokens", 100, 120, 2, 300)
    summary = runtime.budget_summary()
    assert summary["skipped_requests"] == 4 and summary["spent_tokens"] == 120 and summary["stop"] == stop
    assert runtime.stats.as_dict()["skipped_budget"] == 4


def test_failed_requests_spend_the_budget_too():
    handler = SpendingHandler(50, 0, fail=True)
    budget = Budget(BudgetConfig(max_tokens=100))
    with ExplorerRuntime(handler, ExplorationCache(SPEC), budget=budget) as runtime:
        for i in range(4):
            runtime.submit_and_wait(record(i), timeout=10)
    assert handler.served == [0, 1]
    assert budget.stop["reason"] == "tokens" and budget.stop["episode"] == 1
    assert runtime.stats.failures["parse_error"] == 2 and runtime.stats.skipped_budget == 2


def test_cost_limit_with_a_price():
    handler = SpendingHandler(1000, 100)  # (2 * 1000 + 10 * 100) / 1e6 = 0.003 USD a request
    budget = Budget(BudgetConfig(max_cost_usd=0.007, price={"input": 2.0, "output": 10.0}))
    with ExplorerRuntime(handler, ExplorationCache(SPEC), budget=budget) as runtime:
        for i in range(5):
            runtime.submit_and_wait(record(i), timeout=10)
    assert handler.served == [0, 1, 2]
    assert budget.stop["reason"] == "cost" and budget.stop["spent_cost_usd"] == pytest.approx(0.009)
    assert runtime.budget_summary()["spent_cost_usd"] == pytest.approx(0.009)


def test_a_request_waiting_when_the_limit_is_crossed_is_not_asked():
    handler = SpendingHandler(60, 60, block_after=0)  # the first request crosses the limit alone
    budget = Budget(BudgetConfig(max_tokens=100))
    with ExplorerRuntime(handler, ExplorationCache(SPEC), budget=budget) as runtime:
        runtime.submit(record(0))
        assert wait_for(lambda: runtime.stats.requests == 1)  # in flight
        runtime.submit(record(1))  # waits behind it
        assert wait_for(lambda: runtime.stats.episodes_seen == 2)
        handler.gate.set()
        assert wait_for(lambda: runtime.stats.skipped_budget == 1)
    assert handler.served == [0]  # the in-flight request finished and was applied: 120 > 100, one request over
    assert runtime.stats.updates_published == 1 and budget.stop["episode"] == 1


def test_budget_state_survives_a_snapshot_and_the_run_goes_on_with_what_is_left():
    budget = Budget(BudgetConfig(max_tokens=100))
    with ExplorerRuntime(SpendingHandler(), ExplorationCache(SPEC), budget=budget) as runtime:
        for i in range(2):
            runtime.submit_and_wait(record(i), timeout=10)
        state = runtime.get_state()
    assert state["budget"] == {"input_tokens": 60, "output_tokens": 20, "stop": None}

    handler = SpendingHandler()
    resumed_budget = Budget(BudgetConfig(max_tokens=100))
    resumed = ExplorerRuntime(handler, ExplorationCache(SPEC), budget=resumed_budget)
    resumed.set_state(state)
    with resumed:
        for i in range(2, 5):
            resumed.submit_and_wait(record(i), timeout=10)
        after_stop = resumed.get_state()
    assert handler.served == [2]  # 80 spent before the snapshot: one more request reaches 120
    assert resumed_budget.stop["spent_tokens"] == 120 and resumed_budget.stop["episode"] == 2

    again = ExplorerRuntime(SpendingHandler(), ExplorationCache(SPEC), budget=Budget(BudgetConfig(max_tokens=100)))
    again.set_state(after_stop)
    with again:
        again.submit_and_wait(record(5), timeout=10)
    assert again.handler.served == [] and again.stats.skipped_budget == 3  # 2 before the snapshot, 1 now
    assert again.budget.stop == resumed_budget.stop


# --------------------------------------------------------------------------- through open_explorer
def test_open_explorer_applies_the_configured_budget_with_the_scripted_provider():
    config = ExplorerConfig(provider="scripted", budget={"max_tokens": 1})
    with open_explorer(config, "CartPole-v1", SPEC) as explorer:
        first = explorer.runtime.submit_and_wait(record(0), timeout=30)
        second = explorer.runtime.submit_and_wait(record(1), timeout=30)
    assert isinstance(first, ExplorationUpdate) and second.version == first.version == 1  # the update stays
    stats = explorer.stats()
    assert stats["llm_requests"] == 1
    budget = stats["budget"]
    assert budget["max_tokens"] == 1 and budget["spent_tokens"] > 1  # the scripted model reports its usage
    assert budget["spent_tokens"] == sum(v["input"] + v["output"] for v in stats["tokens"].values())
    assert budget["stop"]["episode"] == 0 and budget["skipped_requests"] == 1
    assert explorer.manifest()["explorer"]["budget"]["max_tokens"] == 1
