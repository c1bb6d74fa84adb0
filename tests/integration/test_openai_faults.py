"""The openai provider against a fault-injecting OpenAI-compatible server."""

from __future__ import annotations

import pytest

from explorer_pipeline import ActionSpec, EpisodeRecord, ExplorationUpdate, ExplorerConfig, open_explorer
from explorer_pipeline.types import RequestFailure

from .. import fault_server as fs

SPEC = ActionSpec.discrete(3)
RECORD = EpisodeRecord(5.0, 30, "Acrobot-v1", 1, (0, 1, 2) * 10)


def run(server, model, **overrides):
    config = ExplorerConfig(provider="openai", base_url=server.base_url, model=model, max_attempts=2,
                            call_timeout_s=overrides.pop("call_timeout_s", 10), **overrides)
    with open_explorer(config, "Acrobot-v1", SPEC) as explorer:
        outcome = explorer.runtime.submit_and_wait(RECORD, timeout=30)
        return outcome, explorer.stats(), explorer.cache.current()


def test_good_answer(fault_server):
    outcome, _, current = run(fault_server, "good")
    assert isinstance(outcome, ExplorationUpdate) and current is outcome
    assert outcome.provenance.tokens["proposal"].input_tokens == 50


@pytest.mark.parametrize(("model", "reason"), [
    ("garbage", "parse_error"),
    ("nan", "validation:non_finite"),
    ("http500", "provider_error"),
    ("http401", "provider_error"),
])
def test_faults_are_counted_and_nothing_is_published(fault_server, model, reason):
    outcome, stats, current = run(fault_server, model)
    assert isinstance(outcome, RequestFailure) and outcome.reason == reason
    assert stats["failures"] == {reason: 1}
    assert current.source == "default"


def test_transient_503_is_retried():
    # a server of its own: "flaky" alternates on the server's request counter, which other tests
    # would otherwise have advanced by an unknown number
    with fs.ServerThread() as server:
        outcome, stats, _ = run(server, "flaky", prompt_set="single-stage")
        requests = server.app.state.counters["requests"]
    assert isinstance(outcome, ExplorationUpdate)
    assert outcome.provenance.attempts == 2 and requests == 2  # a 503, then the answer
    assert stats["failures"] == {} and stats["updates_published"] == 1


def test_slow_server_times_out(fault_server):
    # the server answers correctly, but only after fs.SLOW_S (3 s): only the 0.3 s call timeout fails it
    assert fs.SLOW_S >= 10 * 0.3
    outcome, stats, current = run(fault_server, "slow", call_timeout_s=0.3, max_tokens_analysis=10)
    assert isinstance(outcome, RequestFailure) and outcome.reason == "provider_error"
    assert "Timeout" in outcome.detail, outcome.detail
    assert outcome.attempts == 2  # the timeout is transient: retried once (max_attempts=2), then given up
    assert stats["failures"] == {"provider_error": 1}
    assert current.source == "default"


def test_missing_key_for_hosted_openai_names_the_variable(monkeypatch):
    from explorer_pipeline import UsageError

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UsageError, match="OPENAI_API_KEY"):
        open_explorer(ExplorerConfig(provider="openai"), "Acrobot-v1", SPEC)


def test_key_is_never_in_the_manifest_or_repr(monkeypatch, fault_server):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-supersecret-abcdef123456")
    config = ExplorerConfig(provider="openai", provider_options={"preflight": "off"})  # OpenAI itself is not asked
    explorer = open_explorer(config, "Acrobot-v1", SPEC)
    try:
        assert "sk-supersecret" not in repr(explorer.manifest())
        models = explorer.runtime.handler.context.models
        assert "sk-supersecret" not in repr(models.runnable("proposal"))
        assert "sk-supersecret" not in repr(models.chat_model)
    finally:
        explorer.close()


@pytest.mark.parametrize(("server", "fmt_type"), [("llamacpp", "json_object"), ("vllm", "json_schema")])
def test_requests_carry_token_caps_and_schema_the_server_understands(fault_server, server, fmt_type):
    bodies = fault_server.app.state.counters["bodies"]
    bodies.clear()
    outcome, _, _ = run(fault_server, "good", max_tokens_analysis=33, max_tokens_proposal=44,
                        provider_options={"server": server})
    assert isinstance(outcome, ExplorationUpdate)
    analysis, proposal = bodies
    assert analysis["max_tokens"] == 33 and "max_completion_tokens" not in analysis
    assert proposal["max_tokens"] == 44
    fmt = proposal["response_format"]
    assert fmt["type"] == fmt_type
    schema = fmt["schema"] if fmt_type == "json_object" else fmt["json_schema"]["schema"]
    items = schema["properties"]["probabilities"]
    assert items["minItems"] == items["maxItems"] == SPEC.n


def test_function_calling_answers_are_read(fault_server):
    outcome, _, _ = run(fault_server, "good", structured_output="function_calling")
    # the fault server answers with text, not a tool call: the text is still parsed
    assert isinstance(outcome, ExplorationUpdate)
