"""The openai provider's configuration (building models does no I/O), and the key it sends to a
local server (a recording HTTP server on 127.0.0.1)."""

from __future__ import annotations

import http.server
import json
import threading

import pytest
from llm_explorer_openai import LOCAL_PLACEHOLDER_KEY, OpenAIProvider

from explorer_pipeline import ActionSpec, ProviderSettings, UsageError


def test_defaults_per_server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-000000000000")
    provider = OpenAIProvider()
    assert provider.default_structured_output(ProviderSettings()) == "json_schema"
    local = ProviderSettings(base_url="http://127.0.0.1:1/v1")
    assert provider.default_structured_output(local) == "json_object_schema"
    assert provider.token_kwargs(50, local) == {"extra_body": {"max_tokens": 50}}
    assert provider.token_kwargs(50, ProviderSettings()) == {"max_tokens": 50}
    assert provider.model_name(ProviderSettings()) == "gpt-4o-mini"


def test_key_comes_from_the_named_variable_and_stays_secret(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("MY_GATEWAY_KEY", "sk-gateway-secret-123456")
    model = OpenAIProvider().create(ProviderSettings(options={"api_key_env": "MY_GATEWAY_KEY"}))
    assert model.openai_api_key.get_secret_value() == "sk-gateway-secret-123456"
    assert "sk-gateway-secret" not in repr(model) and "sk-gateway-secret" not in str(model)


@pytest.mark.parametrize(("options", "message"), [
    ({"server": "tgi"}, "unknown openai server kind 'tgi'; allowed: openai, llamacpp, vllm, ollama"),
    ({"temperature": "1"}, "unknown openai provider option"),
])
def test_bad_options(monkeypatch, options, message):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-000000000000")
    with pytest.raises(UsageError, match=message):
        OpenAIProvider().create(ProviderSettings(options=options))


def test_stage_models_bind_caps_and_schema(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-000000000000")
    provider = OpenAIProvider()
    settings = ProviderSettings(base_url="http://127.0.0.1:1/v1", max_tokens={"analysis": 7, "proposal": 9})
    model = provider.create(settings)
    spec = ActionSpec.discrete(5)
    assert provider.stage_model(model, "analysis", settings, spec).kwargs == {"extra_body": {"max_tokens": 7}}
    proposal = provider.stage_model(model, "proposal", settings, spec).kwargs
    assert proposal["response_format"]["type"] == "json_object"
    assert proposal["response_format"]["schema"]["properties"]["probabilities"]["maxItems"] == 5


class RecordingServer:
    """A minimal OpenAI-compatible chat endpoint on 127.0.0.1 that records each request's
    ``Authorization`` header."""

    def __init__(self) -> None:
        self.authorization: list[str | None] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner.authorization.append(self.headers.get("Authorization"))
                body = json.dumps({
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "ok"}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> RecordingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.mark.parametrize("options", [{}, {"api_key_env": "MY_UNSET_GATEWAY_KEY"}])
def test_local_server_without_a_key_is_sent_the_placeholder(monkeypatch, options):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("MY_UNSET_GATEWAY_KEY", raising=False)
    with RecordingServer() as server:
        model = OpenAIProvider().create(ProviderSettings(base_url=server.base_url, timeout_s=10, options=options))
        reply = model.invoke("hello")
    assert reply.content == "ok"
    assert LOCAL_PLACEHOLDER_KEY.strip() and server.authorization == [f"Bearer {LOCAL_PLACEHOLDER_KEY}"]


def test_local_server_gets_the_real_key_when_one_is_set(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local-gateway-987654")
    with RecordingServer() as server:
        OpenAIProvider().create(ProviderSettings(base_url=server.base_url, timeout_s=10)).invoke("hello")
    assert server.authorization == ["Bearer sk-local-gateway-987654"]
