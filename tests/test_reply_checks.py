"""Every reply is checked before a stage reads it (StageModels): the reply cap, UTF-8, stage 1 cut
to the analyser's max_chars, and the provider's limiter around each call. Any provider: these
use runnables, not HTTP (the openai provider over HTTP: tests/integration/test_openai_faults.py)."""

from __future__ import annotations

import asyncio
import json

from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda

from explorer_pipeline.exchange_log import ExchangeLog
from explorer_pipeline.llm import DEFAULT_MAX_REPLY_BYTES
from explorer_pipeline.providers import Provider, ProviderSettings
from explorer_pipeline.ratelimit import LocalLimiter
from explorer_pipeline.session import ExplorerConfig
from explorer_pipeline.types import ActionSpec, EpisodeRecord, ExplorationUpdate, RequestFailure

from .pipelines import make_context, make_models, pipeline_for

SPEC = ActionSpec.discrete(2)
RECORD = EpisodeRecord(3.0, 10, "Test-v0", 4, (0, 1) * 5)
GOOD = '{"probabilities": [0.4, 0.6]}'


def replies(analysis: str, proposal: str = GOOD):
    return {"analysis": RunnableLambda(lambda _: AIMessage(analysis, usage_metadata={
                "input_tokens": 7, "output_tokens": 3, "total_tokens": 10})),
            "proposal": RunnableLambda(lambda _: AIMessage(proposal))}


def handle(models, *, config=None, set_name="paper"):
    context = make_context(SPEC, set_name, models=models, config=config or ExplorerConfig(prompt_set=set_name))
    return asyncio.run(pipeline_for(context).handle(RECORD, [RECORD], 1))


def test_a_reply_over_the_cap_is_a_counted_bad_reply_and_its_tokens_count(tmp_path):
    log = ExchangeLog(tmp_path / "x.jsonl")
    models = make_models(replies("A" * (DEFAULT_MAX_REPLY_BYTES + 1)), exchange_log=log)
    outcome = handle(models)
    log.close()
    assert isinstance(outcome, RequestFailure) and outcome.reason == "parse_error"
    assert outcome.detail.startswith("reply refused (too_large): 1048577 bytes, more than the reply cap")
    assert outcome.tokens["analysis"].input_tokens == 7  # spent, though refused
    entry = json.loads((tmp_path / "x.jsonl").read_text().splitlines()[0])
    assert entry["response"] is None and entry["error"].startswith("BadReply: reply refused (too_large)")


def test_a_reply_that_is_not_utf8_is_a_counted_bad_reply():
    outcome = handle(make_models(replies("fine so far \udcff then not")))  # a byte a decoder kept as a surrogate
    assert isinstance(outcome, RequestFailure) and outcome.reason == "parse_error"
    assert "invalid_utf8" in outcome.detail


def test_the_provider_sets_the_cap():
    class Tight(Provider):
        def max_reply_bytes(self, settings):
            return 16

    models = make_models(replies("ok", proposal=GOOD), provider_impl=Tight(), settings=ProviderSettings())
    outcome = handle(models, set_name="single-stage")
    assert isinstance(outcome, RequestFailure) and "more than the reply cap of 16 bytes" in outcome.detail


def test_stage1_is_cut_before_stage2_and_the_log(tmp_path):
    seen = []

    def proposal(messages):
        seen.append(" ".join(str(m.content) for m in messages))
        return AIMessage(GOOD)

    runnables = {**replies("Explore more. " + "B" * 10_000), "proposal": RunnableLambda(proposal)}
    log = ExchangeLog(tmp_path / "x.jsonl")
    config = ExplorerConfig(analyser={"name": "default", "options": {"max_chars": 100}})
    outcome = handle(make_models(runnables, exchange_log=log), config=config)
    log.close()
    assert isinstance(outcome, ExplorationUpdate)
    kept = 100 - len("Explore more. ")
    assert "B" * kept in seen[0] and "B" * (kept + 1) not in seen[0]
    analysis = json.loads((tmp_path / "x.jsonl").read_text().splitlines()[0])
    assert analysis["stage"] == "analysis" and len(analysis["response"]) == 100
    assert outcome.provenance.analysis == "Explore more. " + "B" * kept


def test_every_call_passes_through_the_provider_s_limiter():
    limiter = LocalLimiter(max_concurrent=1)

    class Limited(Provider):
        def limiter(self, settings):
            return limiter

    models = make_models(replies("Explore."), provider_impl=Limited(), settings=ProviderSettings())
    outcome = handle(models)
    assert isinstance(outcome, ExplorationUpdate)
    assert limiter.peak_in_use == 1 and limiter.in_use == 0  # taken for each call, given back after it
