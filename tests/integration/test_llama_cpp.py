"""The real SmolLM2 model: through the llama.cpp server (openai provider) and in process (local)."""

from __future__ import annotations

import json
import math
import time

import pytest

from explorer_pipeline import ActionSpec, EpisodeRecord, ExplorationUpdate, ExplorerConfig, open_explorer
from explorer_pipeline.types import RequestFailure

pytestmark = pytest.mark.integration

CARTPOLE = ActionSpec.discrete(2)
PENDULUM = ActionSpec.continuous([-2.0], [2.0])
CART_RECORD = EpisodeRecord(23.0, 23, "CartPole-v1", 5, tuple([1, 1, 0, 1] * 5 + [1, 0, 1]))
PENDULUM_RECORD = EpisodeRecord(-1250.0, 200, "Pendulum-v1", 2, tuple((0.3,) for _ in range(200)))


def assert_valid(update, spec):
    assert isinstance(update, ExplorationUpdate), update
    assert len(update.values) == spec.n and all(math.isfinite(v) for v in update.values)
    if spec.is_discrete:
        assert min(update.values) >= 0 and sum(update.values) == pytest.approx(1.0)
    else:
        assert all(abs(v) <= 0.5 for v in update.values)


def test_openai_provider_against_llama_cpp_server(llama_server, tmp_path):
    config = ExplorerConfig(provider="openai", base_url=llama_server.base_url, model="smollm2",
                            max_tokens_analysis=60, exchange_log=tmp_path / "exchanges.jsonl")
    with open_explorer(config, "CartPole-v1", CARTPOLE) as explorer:
        outcome = explorer.runtime.submit_and_wait(CART_RECORD, timeout=240)
        stats = explorer.stats()
    assert_valid(outcome, CARTPOLE)
    assert outcome.provenance.provider == "openai" and outcome.provenance.model == "smollm2"
    analysis_tokens = outcome.provenance.tokens["analysis"]
    assert 0 < analysis_tokens.output_tokens <= 60  # the server honoured the cap sent as max_tokens
    assert stats["updates_published"] == 1 and explorer.cache.current() is outcome
    lines = [json.loads(line) for line in (tmp_path / "exchanges.jsonl").read_text().splitlines()]
    assert {line["stage"] for line in lines} == {"analysis", "proposal"}
    assert "sk-local-test-key" not in (tmp_path / "exchanges.jsonl").read_text()


def test_openai_provider_bias_with_json_object_schema(llama_server):
    config = ExplorerConfig(provider="openai", base_url=llama_server.base_url, model="smollm2",
                            prompt_set="single-stage", structured_output="json_object_schema")
    with open_explorer(config, "Pendulum-v1", PENDULUM) as explorer:
        outcome = explorer.runtime.submit_and_wait(PENDULUM_RECORD, timeout=240)
    assert_valid(outcome, PENDULUM)
    assert outcome.kind == "bias"


def test_local_provider_in_process(tmp_path):
    config = ExplorerConfig(provider="local", max_tokens_analysis=60)
    with open_explorer(config, "CartPole-v1", CARTPOLE) as explorer:
        outcome = explorer.runtime.submit_and_wait(CART_RECORD, timeout=240)
    assert_valid(outcome, CARTPOLE)
    assert outcome.provenance.model.endswith(".gguf")
    assert outcome.provenance.tokens["proposal"].output_tokens > 0


def test_recorded_run_replays_offline(fresh_llama_server, tmp_path):
    db = tmp_path / "responses.sqlite"
    config = ExplorerConfig(provider="openai", base_url=fresh_llama_server.base_url, model="smollm2",
                            max_tokens_analysis=40, response_cache=db)
    with open_explorer(config, "CartPole-v1", CARTPOLE) as explorer:
        recorded = explorer.runtime.submit_and_wait(CART_RECORD, timeout=240)
    assert_valid(recorded, CARTPOLE)
    # the same request, replayed after the server is gone
    fresh_llama_server.stop()
    config = config.model_copy(update={"replay": True})  # the run configuration is frozen
    with open_explorer(config, "CartPole-v1", CARTPOLE) as explorer:
        replayed = explorer.runtime.submit_and_wait(CART_RECORD, timeout=60)
        other = explorer.runtime.submit_and_wait(EpisodeRecord(99.0, 99, "CartPole-v1", 6, (0,) * 99), timeout=60)
    assert replayed.values == recorded.values
    assert isinstance(other, RequestFailure) and "ReplayMissError" in other.detail


def test_server_that_disappears(fresh_llama_server):
    config = ExplorerConfig(provider="openai", base_url=fresh_llama_server.base_url, model="smollm2",
                            max_tokens_analysis=40, call_timeout_s=20, max_attempts=2)
    with open_explorer(config, "CartPole-v1", CARTPOLE) as explorer:
        first = explorer.runtime.submit_and_wait(CART_RECORD, timeout=240)
        assert_valid(first, CARTPOLE)
        fresh_llama_server.stop()
        second = explorer.runtime.submit_and_wait(CART_RECORD, timeout=120)
        assert isinstance(second, RequestFailure) and second.reason == "provider_error"
        assert explorer.cache.current() is first
        assert explorer.stats()["provider_errors"] == 1


def test_function_calling_reads_a_real_tool_call(llama_server, tmp_path):
    from langchain_core.messages import HumanMessage, SystemMessage
    from llm_explorer_openai import OpenAIProvider

    from explorer_pipeline import ProviderSettings
    from explorer_pipeline.default_plugins.parsing import DefaultParser
    from explorer_pipeline.pipeline import output_format
    from explorer_pipeline.providers import tool_call_as_text

    provider = OpenAIProvider()
    settings = ProviderSettings(model="smollm2", base_url=llama_server.base_url, structured_output="function_calling",
                                max_tokens={"analysis": 40, "proposal": 60}, timeout_s=120)
    runnable = provider.stage_model(provider.create(settings), "proposal", settings, CARTPOLE)
    messages = [SystemMessage("You guide the exploration of a CartPole agent."), HumanMessage(output_format(CARTPOLE))]
    reply = runnable.first.invoke(messages)  # the model call itself, before the reply becomes text
    assert reply.tool_calls and reply.tool_calls[0]["name"] == "exploration", reply
    args = reply.tool_calls[0]["args"]
    text = tool_call_as_text(reply).content
    assert json.loads(text) == args
    assert DefaultParser().parse(text, CARTPOLE) == pytest.approx(args["probabilities"])

    # and through the whole pipeline: what the exchange log records is the tool call's arguments
    config = ExplorerConfig(provider="openai", base_url=llama_server.base_url, model="smollm2",
                            prompt_set="single-stage", structured_output="function_calling",
                            exchange_log=tmp_path / "exchanges.jsonl")
    with open_explorer(config, "CartPole-v1", CARTPOLE) as explorer:
        outcome = explorer.runtime.submit_and_wait(CART_RECORD, timeout=240)
    assert_valid(outcome, CARTPOLE)
    (line,) = [json.loads(x) for x in (tmp_path / "exchanges.jsonl").read_text().splitlines()]
    assert len(json.loads(line["response"])["probabilities"]) == CARTPOLE.n


def test_async_mode_with_the_real_model(llama_server, tmp_path):
    """submit() returns at once; while the model answers episode 0, episodes 1-3 are dropped as stale
    and the newest one (4) is asked next."""
    config = ExplorerConfig(provider="openai", base_url=llama_server.base_url, model="smollm2",
                            prompt_set="single-stage", exchange_log=tmp_path / "exchanges.jsonl")
    with open_explorer(config, "CartPole-v1", CARTPOLE) as explorer:
        explorer.runtime.submit(EpisodeRecord(20.0, 20, "CartPole-v1", 0, CART_RECORD.actions))
        assert wait_until(lambda: explorer.stats()["llm_requests"] == 1, 30)
        for i in range(1, 5):
            explorer.runtime.submit(EpisodeRecord(20.0 + i, 20 + i, "CartPole-v1", i, CART_RECORD.actions))
        # the model is still on episode 0 (seconds per answer): nothing has waited for it
        assert explorer.stats()["updates_published"] == 0 and explorer.cache.current().source == "default"

        def settled():
            s = explorer.stats()
            return s["llm_requests"] == 2 and s["updates_published"] + sum(s["failures"].values()) == 2

        assert wait_until(settled, 480)
        stats = explorer.stats()
        current = explorer.cache.current()
    assert stats["episodes_seen"] == 5 and stats["dropped_stale"] == 3
    assert stats["updates_published"] >= 1, stats
    assert_valid(current, CARTPOLE)
    episodes = {json.loads(x)["episode"] for x in (tmp_path / "exchanges.jsonl").read_text().splitlines()}
    assert episodes == {0, 4}


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
