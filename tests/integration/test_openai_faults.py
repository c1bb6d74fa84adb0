"""The openai provider against a fault-injecting OpenAI-compatible server."""

from __future__ import annotations

import json

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


# ------------------------------------------------------------------------------ shared servers
# The fault server runs in a process of its own here (fs.ServerProcess): its counters are read over HTTP.

def submit_twice(config):
    """Two requests through one explorer: each outcome, the stats, and the update in force."""
    with open_explorer(config, "Acrobot-v1", SPEC) as explorer:
        outcomes = [explorer.runtime.submit_and_wait(RECORD, timeout=60) for _ in range(2)]
        return outcomes, explorer.stats(), explorer.cache.current()


def config_for(url, model, **overrides):
    options = {"preflight": "off", **overrides.pop("provider_options", {})}
    return ExplorerConfig(provider="openai", base_url=url, model=model, provider_options=options,
                          call_timeout_s=overrides.pop("call_timeout_s", 10), **overrides)


@pytest.mark.parametrize("model", ["ratelimited", "ratelimited-date"])
def test_retry_after_is_honoured(model):
    # the server answers 429 for fs.RETRY_AFTER_S from its first request on, saying so in Retry-After
    # (seconds, or an HTTP date); a client that came back sooner (the old 0.5 s) would get a second 429.
    # run() allows 2 attempts: the one 429 and the answer
    with fs.ServerProcess() as server:
        outcome, stats, current = run(server, model, prompt_set="single-stage")
        statuses = [status for name, status in server.counters()["statuses"] if name == model]
    assert isinstance(outcome, ExplorationUpdate) and current is outcome
    assert statuses == [429, 200]
    assert outcome.provenance.attempts == 2 and "RateLimitError" in outcome.provenance.retry_reasons[0]
    assert stats["failures"] == {}


def test_retry_after_past_the_deadline_gives_up_at_once():
    # Retry-After: 3600 with a 5 s deadline: no pointless wait, one call, a counted failure; the run goes on
    with fs.ServerProcess() as server:
        config = config_for(server.base_url, "ratelimited-long", max_attempts=5, prompt_set="single-stage",
                            provider_options={"retry_deadline_s": 5})
        outcomes, stats, current = submit_twice(config)
        statuses = server.counters()["statuses"]
    assert all(isinstance(o, RequestFailure) and o.reason == "provider_error" for o in outcomes)
    assert "RateLimitError" in outcomes[0].detail and outcomes[0].attempts == 1
    assert statuses == [["ratelimited-long", 429]] * 2
    assert stats["failures"] == {"provider_error": 2} and current.source == "default"


@pytest.mark.parametrize("model", ["huge", "huge-chunked"])
def test_a_huge_reply_is_a_counted_bad_reply(tmp_path, model):
    # 2 MiB replies against the default 1 MiB cap: announced (Content-Length) or counted as they arrive
    log = tmp_path / "exchanges.jsonl"
    with fs.ServerProcess() as server:
        config = config_for(server.base_url, model, max_attempts=2, exchange_log=log)
        outcomes, stats, current = submit_twice(config)
    for outcome in outcomes:
        assert isinstance(outcome, RequestFailure) and outcome.reason == "parse_error"
        assert "reply refused (too_large)" in outcome.detail and "1048576" in outcome.detail
    assert stats["failures"] == {"parse_error": 2} and current.source == "default"
    assert log.stat().st_size < 100_000  # the refused replies are not in the log
    assert "too_large" in log.read_text()


def test_a_larger_cap_takes_the_huge_reply():
    # the same 2 MiB answer (valid, padded with spaces) under a 4 MiB cap is read and published
    with fs.ServerProcess() as server:
        config = config_for(server.base_url, "huge", provider_options={"max_reply_bytes": 4 << 20})
        outcomes, _, current = submit_twice(config)
    assert all(isinstance(o, ExplorationUpdate) for o in outcomes) and current is outcomes[-1]


def test_invalid_utf8_is_a_counted_bad_reply():
    with fs.ServerProcess() as server:
        outcomes, stats, current = submit_twice(config_for(server.base_url, "badutf8", max_attempts=2))
    for outcome in outcomes:
        assert isinstance(outcome, RequestFailure) and outcome.reason == "parse_error"
        assert "invalid_utf8" in outcome.detail
    assert stats["failures"] == {"parse_error": 2} and current.source == "default"


def test_a_long_stage1_reply_is_cut_before_stage2_and_the_log(tmp_path):
    log = tmp_path / "exchanges.jsonl"
    with fs.ServerThread() as server:
        config = config_for(server.base_url, "long-analysis", exchange_log=log,
                            analyser={"name": "default", "options": {"max_chars": 500}})
        outcomes, _, current = submit_twice(config)
        bodies = server.app.state.counters["bodies"]
    assert all(isinstance(o, ExplorationUpdate) for o in outcomes) and current is outcomes[-1]
    kept = 500 - len("The agent should explore more. ")
    proposal_prompt = " ".join(m["content"] for m in bodies[1]["messages"])
    assert "A" * kept in proposal_prompt and "A" * (kept + 1) not in proposal_prompt
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    analysis_replies = [e["response"] for e in entries if e["stage"] == "analysis"]
    assert len(analysis_replies) == 2 and all(len(r) == 500 for r in analysis_replies)
    assert len(outcomes[0].provenance.analysis) <= 500


def test_a_slow_drip_server_cannot_hold_the_preflight():
    # /drip answers a byte every 0.2 s: each read is quick, the whole listing takes minutes
    from explorer_pipeline import UsageError

    with fs.ServerProcess() as server:
        config = ExplorerConfig(provider="openai", base_url=server.url("drip"), model="good", call_timeout_s=30,
                                provider_options={"preflight_deadline_s": 2})
        with pytest.raises(UsageError, match=r"did not finish answering the preflight within 2 s"):
            open_explorer(config, "Acrobot-v1", SPEC)


def test_a_slow_drip_call_is_a_counted_timeout():
    with fs.ServerProcess() as server:
        outcomes, _, current = submit_twice(config_for(server.url("drip"), "good", call_timeout_s=1,
                                                           max_attempts=1, prompt_set="single-stage"))
    assert all(isinstance(o, RequestFailure) and o.reason == "provider_error" for o in outcomes)
    assert "TimeoutError" in outcomes[0].detail
    assert current.source == "default"


def test_redirects_fail_the_preflight_naming_where_they_point():
    from explorer_pipeline import UsageError

    with fs.ServerProcess() as server:
        config = ExplorerConfig(provider="openai", base_url=server.url("redirect"), model="good")
        with pytest.raises(UsageError, match=rf"HTTP 307, a redirect to http://127.0.0.1:{server.port}/v1/models; "
                                             "redirects are not followed"):
            open_explorer(config, "Acrobot-v1", SPEC)


def test_redirected_calls_are_counted_not_followed_nor_retried():
    with fs.ServerProcess() as server:
        outcomes, _, current = submit_twice(config_for(server.url("redirect"), "good", max_attempts=3))
        requests = server.counters()["requests"]
    for outcome in outcomes:
        assert isinstance(outcome, RequestFailure) and outcome.reason == "provider_error"
        assert "RedirectRefused" in outcome.detail and f"127.0.0.1:{server.port}/v1/chat/completions" in outcome.detail
        assert outcome.attempts == 1
    assert requests == 0 and current.source == "default"


def test_the_key_never_goes_over_plain_http_to_another_host(monkeypatch):
    from explorer_pipeline import UsageError

    monkeypatch.setenv("OPENAI_API_KEY", "sk-supersecret-abcdef123456")
    config = ExplorerConfig(provider="openai", base_url="http://10.11.12.13:8000/v1", model="m")
    with pytest.raises(UsageError, match=r"refusing to send the API key in OPENAI_API_KEY over plain http to "
                                         r"10\.11\.12\.13.*allow_insecure_http=true") as info:
        open_explorer(config, "Acrobot-v1", SPEC)
    assert "supersecret" not in str(info.value)
    allowed = config.model_copy(update={"provider_options": {"allow_insecure_http": "true", "preflight": "off"}})
    open_explorer(allowed, "Acrobot-v1", SPEC).close()


def test_credentials_in_the_url_are_refused_and_not_repeated():
    from explorer_pipeline import UsageError

    config = ExplorerConfig(provider="openai", base_url="https://lab:tok-9f8e7d6c@llm.example.org/v1", model="m")
    with pytest.raises(UsageError, match=r"carries credentials") as info:
        open_explorer(config, "Acrobot-v1", SPEC)
    assert "tok-9f8e7d6c" not in str(info.value) and "lab" not in str(info.value)


def test_one_concurrency_limit_for_every_explorer_of_an_endpoint():
    # four explorers, each on its own event loop thread, share max_concurrent=1: the server never sees two
    # calls at once; without the limit it does (the test could fail)
    import threading

    def peak(options):
        with fs.ServerProcess() as server:
            config = config_for(server.base_url, "brief", prompt_set="single-stage", provider_options=options)
            outcomes = []

            def one():
                with open_explorer(config, "Acrobot-v1", SPEC) as explorer:
                    outcomes.append(explorer.runtime.submit_and_wait(RECORD, timeout=60))

            threads = [threading.Thread(target=one) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert len(outcomes) == 4 and all(isinstance(o, ExplorationUpdate) for o in outcomes)
            return server.counters()["peak_in_flight"]

    assert peak({"max_concurrent": 1}) == 1
    assert peak({}) > 1


@pytest.mark.parametrize(("base_url", "expected"), [
    ("http://lab:tok-9f8e7d6c@127.0.0.1:9/v1", "carries credentials (user:token@host)"),
    ("http://10.11.12.13:8000/v1", "refusing to send the API key in OPENAI_API_KEY over plain http to 10.11.12.13"),
])
def test_train_refuses_an_unsafe_base_url_with_one_line_and_exit_2(tmp_path, base_url, expected):
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "explorer_pipeline", "train", "--env", "CartPole-v1", "--algo", "dqn",
           "--provider", "openai", "--base-url", base_url, "--model", "good", "--steps", "200", "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OPENAI_API_KEY": "sk-supersecret-abcdef123456", "TQDM_DISABLE": "1"})
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0], result.stderr
    assert "tok-9f8e7d6c" not in result.stderr + result.stdout and "supersecret" not in result.stderr + result.stdout
    assert not out.exists()  # nothing written, the URL recorded nowhere
