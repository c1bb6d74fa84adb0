"""ExchangeLog: one JSON line per LLM call; secrets never reach the file."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from explorer_pipeline.exchange_log import ExchangeLog, redact, secret_values
from explorer_pipeline.session import ExplorerConfig, open_explorer
from explorer_pipeline.types import ActionSpec, EpisodeRecord

KEY = "sk-test1234567890"


def entries(path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def record(log: ExchangeLog, **overrides) -> None:
    kwargs = {
        "stage": "proposal", "attempt": 1, "episode": 3,
        "messages": [SystemMessage("system text"), HumanMessage("user text")],
        "reply": '{"probabilities": [0.5, 0.5]}', "error": None, "latency_s": 0.123456,
        "usage": {"input": 7, "output": 3},
    }
    kwargs.update(overrides)
    log.record(**kwargs)


# --------------------------------------------------------------------------- format


def test_entries_are_json_lines_with_stage_attempt_request_response(tmp_path):
    path = tmp_path / "run" / "exchanges.jsonl"
    log = ExchangeLog(path)
    record(log, stage="analysis", attempt=1, reply="It explores too little.", usage=None)
    record(log, stage="proposal", attempt=2, messages=[SystemMessage("s"), HumanMessage("u"), AIMessage("bad"),
                                                        HumanMessage("That answer could not be used")])
    log.close()
    first, second = entries(path)
    assert first["stage"] == "analysis" and first["attempt"] == 1 and first["episode"] == 3
    assert first["request"] == [{"role": "system", "content": "system text"}, {"role": "human", "content": "user text"}]
    assert first["response"] == "It explores too little." and first["error"] is None
    assert first["latency_s"] == 0.1235
    assert isinstance(first["time"], float)
    assert second["stage"] == "proposal" and second["attempt"] == 2
    assert [m["role"] for m in second["request"]] == ["system", "human", "ai", "human"]
    assert second["usage"] == {"input": 7, "output": 3}


def test_a_failed_call_has_an_error_and_no_response(tmp_path):
    path = tmp_path / "x.jsonl"
    log = ExchangeLog(path)
    record(log, reply=None, error="TimeoutError: took too long", usage=None)
    log.close()
    (entry,) = entries(path)
    assert entry["response"] is None and entry["error"] == "TimeoutError: took too long"


def test_the_log_appends_across_reopen_and_ignores_writes_after_close(tmp_path):
    path = tmp_path / "x.jsonl"
    log = ExchangeLog(path)
    record(log, episode=1)
    log.close()
    record(log, episode=99)  # after close: dropped, no exception
    log = ExchangeLog(path)
    record(log, episode=2)
    log.close()
    assert [e["episode"] for e in entries(path)] == [1, 2]


def test_each_entry_is_flushed_immediately(tmp_path):
    path = tmp_path / "x.jsonl"
    log = ExchangeLog(path)
    record(log)
    assert len(entries(path)) == 1  # readable before close: a crash keeps what was written
    log.close()


def test_non_ascii_text_is_kept(tmp_path):
    path = tmp_path / "x.jsonl"
    log = ExchangeLog(path)
    record(log, reply="Schub nach links → 0,3 ✓")
    log.close()
    assert entries(path)[0]["response"] == "Schub nach links → 0,3 ✓"


# --------------------------------------------------------------------------- redaction


def test_an_api_key_from_the_environment_never_reaches_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    path = tmp_path / "x.jsonl"
    log = ExchangeLog(path)
    record(log, messages=[SystemMessage(f"key is {KEY}"), HumanMessage(f"use {KEY}!")], reply=f"echo {KEY}")
    record(log, reply=None, error=f"AuthenticationError: Incorrect API key provided: {KEY}.")
    log.close()
    text = path.read_text(encoding="utf-8")
    assert KEY not in text
    assert "1234567890" not in text
    assert text.count("[REDACTED]") >= 4


def test_an_env_secret_that_looks_like_nothing_is_still_redacted(tmp_path, monkeypatch):
    # no pattern would catch this value: only the environment scan does
    monkeypatch.setenv("MY_SERVICE_TOKEN", "plainvalue42")
    monkeypatch.setenv("DB_PASSWORD", "hunter2hunter2")
    path = tmp_path / "x.jsonl"
    log = ExchangeLog(path)
    record(log, messages=[HumanMessage("the token: plainvalue42")], error="login hunter2hunter2 failed")
    log.close()
    text = path.read_text(encoding="utf-8")
    assert "plainvalue42" not in text and "hunter2hunter2" not in text


def test_secret_values_come_from_secret_looking_variable_names(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("SOME_ACCESS_TOKEN", "tok-abcdef")
    monkeypatch.setenv("SHORT_KEY", "abc")  # too short to redact safely
    monkeypatch.setenv("HOME_DIRECTORY_NAME", "not-a-secret-value")
    values = secret_values()
    assert KEY in values and "tok-abcdef" in values
    assert "abc" not in values and "not-a-secret-value" not in values


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abc.def-GHI_123456", "abc.def-GHI_123456"),
        ("authorization: bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9"),
        ("headers={'Authorization': 'Bearer tok_9876543210'}", "tok_9876543210"),
        ('{"api_key": "AKIAqwertyuiop123"}', "AKIAqwertyuiop123"),
        ("api-key=zzzzzzzzzzzz", "zzzzzzzzzzzz"),
        ("https://host/v1?token=qwerty123456", "qwerty123456"),
        ("key sk-proj-AbCdEf0123456789xyz leaked", "sk-proj-AbCdEf0123456789xyz"),
    ],
)
def test_token_patterns_are_redacted(text, secret):
    out = redact(text)
    assert secret not in out and "[REDACTED]" in out


def test_bearer_token_in_an_error_is_redacted_in_the_file(tmp_path):
    path = tmp_path / "x.jsonl"
    log = ExchangeLog(path)
    record(log, reply=None, error="HTTP 401 for request with header Authorization: Bearer live_abcdef123456")
    log.close()
    assert "live_abcdef123456" not in path.read_text(encoding="utf-8")


def test_redaction_leaves_ordinary_text_alone():
    text = '{"probabilities": [0.1, 0.2, 0.3, 0.4]} The agent pushes left; token budget is fine.'
    assert redact(text) == text


# --------------------------------------------------------------------------- through a real run


def test_a_run_logs_every_call_redacted(tmp_path, monkeypatch, pm):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    path = tmp_path / "exchanges.jsonl"
    config = ExplorerConfig(exchange_log=path, provider_options={"analysis": f"My key is {KEY}."})
    with open_explorer(config, "CartPole-v1", ActionSpec.discrete(2), plugin_manager=pm) as explorer:
        explorer.runtime.submit_and_wait(EpisodeRecord(20.0, 2, "CartPole-v1", 5, (0, 1)), timeout=30)
    logged = entries(path)
    assert [(e["stage"], e["episode"]) for e in logged] == [("analysis", 5), ("proposal", 5)]
    assert logged[0]["attempt"] == 1 and logged[1]["attempt"] >= 1
    assert "20.00" in logged[0]["request"][-1]["content"]
    assert logged[1]["response"].startswith('{"probabilities"')
    text = path.read_text(encoding="utf-8")
    assert KEY not in text and "[REDACTED]" in text  # the analysis is also quoted in the stage-2 request
