"""The openai provider's configuration (building models does no I/O), the key it sends to a
local server, and its preflight (recording HTTP servers on 127.0.0.1; the preflight against the
real llama.cpp server and a closed port: tests/integration/test_preflight.py)."""

from __future__ import annotations

import http.server
import json
import socket
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


WEB_PAGE = "<html><body>Welcome to a web server</body></html>"


class RecordingServer:
    """A minimal OpenAI-compatible chat endpoint on 127.0.0.1 that records each request's
    ``Authorization`` header and body. ``GET /v1/models`` is answered with ``models`` (status,
    JSON body, or a text that is sent as a web page); without it the server has no GET at all
    (HTTP 501, like a server without a model listing). ``chat=False``: every POST gets a web page."""

    def __init__(self, models: tuple[int, dict | str] | None = None, chat: bool = True) -> None:
        self.authorization: list[str | None] = []
        self.bodies: list[dict] = []
        self.gets: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _send(self, status: int, payload: dict | str) -> None:
                page = isinstance(payload, str)
                body = payload.encode() if page else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html" if page else "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                owner.gets.append(self.path)
                if models is None:
                    self.send_error(501)
                else:
                    self._send(*models)

            def do_POST(self):
                owner.bodies.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))))
                owner.authorization.append(self.headers.get("Authorization"))
                if not chat:
                    self._send(200, WEB_PAGE)
                    return
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


# ----------------------------------------------------------------------------------- preflight


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens there once the socket is closed


def listing(*names: str) -> tuple[int, dict]:
    return 200, {"object": "list", "data": [{"id": name, "object": "model"} for name in names]}


def preflight(settings: ProviderSettings, **kwargs) -> dict:
    provider = OpenAIProvider()
    return provider.preflight(provider.create(settings), settings, **kwargs)


@pytest.mark.parametrize("url", ["not-a-url", "127.0.0.1:8080/v1", "ftp://host/v1", "http:///v1", "http://h:port/v1",
                                 "http://a b/v1"])
def test_create_rejects_a_malformed_base_url(monkeypatch, url):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-000000000000")
    with pytest.raises(UsageError) as info:
        OpenAIProvider().create(ProviderSettings(base_url=url))
    message = str(info.value)
    assert message.startswith(f"--base-url {url!r} is not an http(s) URL") and "\n" not in message


def test_preflight_option_values(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-000000000000")
    with pytest.raises(UsageError, match="preflight must be on or off, got 'maybe'"):
        OpenAIProvider().create(ProviderSettings(base_url="http://127.0.0.1:1/v1", options={"preflight": "maybe"}))
    # off: no I/O at all (nothing listens at the URL, and nothing is raised)
    settings = ProviderSettings(base_url=closed_port_url(), options={"preflight": "off"})
    assert preflight(settings, logprobs=True) == {"checked": "off"}


def test_preflight_lists_the_models_and_records_what_it_found(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-preflight-424242")
    with RecordingServer(models=listing("m", "other")) as server:
        found = preflight(ProviderSettings(model="m", base_url=server.base_url, timeout_s=10))
    assert server.gets == ["/v1/models"] and server.bodies == []  # no chat call when nothing needs one
    assert server.authorization == [] and found == {
        "checked": "models", "base_url": server.base_url, "server": "llamacpp", "model": "m",
        "structured_output": "json_object_schema", "models_offered": ["m", "other"], "logprobs": True}
    assert "sk-secret" not in json.dumps(found)


def test_preflight_unknown_model_lists_the_offered_ones(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-000000000000")
    names = [f"model-{i:02d}" for i in range(13)]
    with RecordingServer(models=listing(*names)) as server, pytest.raises(UsageError) as info:
        preflight(ProviderSettings(model="nope", base_url=server.base_url, timeout_s=10))
    assert str(info.value) == (f"model 'nope' is not offered by the server at {server.base_url}; it offers: "
                               f"{', '.join(names[:10])} (and 3 more)")
    # the default model, not offered: the message says how to choose one
    with RecordingServer(models=listing("smollm2")) as server, pytest.raises(UsageError) as info:
        preflight(ProviderSettings(base_url=server.base_url, timeout_s=10))
    assert "model 'gpt-4o-mini' (the default; choose one with --model) is not offered" in str(info.value)
    assert str(info.value).endswith("it offers: smollm2")


def test_preflight_without_a_model_listing_makes_a_one_token_call(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with RecordingServer() as server:
        found = preflight(ProviderSettings(model="m", base_url=server.base_url, timeout_s=10), logprobs=True)
    assert server.gets == ["/v1/models"]
    (body,) = server.bodies
    assert body["model"] == "m" and body["max_tokens"] == 1 and body["logprobs"] is True
    assert found["checked"] == "chat" and "models_offered" not in found
    # the recording server's answer carries no log-probabilities: recorded as found, not as declared
    assert found["logprobs"] is False and found["logprobs_probed"] is True


@pytest.mark.parametrize(("key", "expected"), [
    ("sk-wrong-key-31415926", "rejected the API key in the environment variable MY_GATEWAY_KEY (HTTP 401); "
                              "set MY_GATEWAY_KEY to a key it accepts"),
    (None, "requires an API key (HTTP 401): set the environment variable MY_GATEWAY_KEY "
           "(or name another with --option api_key_env=NAME)"),
])
def test_preflight_rejected_or_missing_key_names_the_variable(monkeypatch, key, expected):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    if key is None:
        monkeypatch.delenv("MY_GATEWAY_KEY", raising=False)
    else:
        monkeypatch.setenv("MY_GATEWAY_KEY", key)
    refusal = (401, {"error": {"message": f"Incorrect API key provided: {key}", "type": "invalid_request_error"}})
    with RecordingServer(models=refusal) as server, pytest.raises(UsageError) as info:
        preflight(ProviderSettings(model="m", base_url=server.base_url, timeout_s=10,
                                   options={"api_key_env": "MY_GATEWAY_KEY"}))
    assert str(info.value) == f"the server at {server.base_url} {expected}"
    assert "sk-wrong" not in str(info.value)


def test_preflight_records_a_server_error_and_goes_on(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-000000000000")
    with RecordingServer(models=(503, {"error": {"message": "loading model"}})) as server:
        found = preflight(ProviderSettings(model="m", base_url=server.base_url, timeout_s=10))
    # the listing failed, so the one-token call checked the server (and it answered)
    assert found["checked"] == "chat" and found["warnings"] == ["GET /models answered HTTP 503"]
    assert len(server.bodies) == 1 and "logprobs" not in server.bodies[0]


def test_preflight_unreachable_server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-000000000000")
    url = closed_port_url()
    with pytest.raises(UsageError) as info:
        preflight(ProviderSettings(model="m", base_url=url, timeout_s=10))
    assert str(info.value).startswith(f"cannot reach the server at {url} (")
    assert "--option preflight=off" in str(info.value)


def test_preflight_a_web_page_is_no_openai_server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-000000000000")
    def settings_of(server: RecordingServer) -> ProviderSettings:
        return ProviderSettings(model="m", base_url=server.base_url, timeout_s=10)

    # a web page where the model listing should be, but chat calls work: checked by the chat call
    with RecordingServer(models=(200, WEB_PAGE)) as server:
        found = preflight(settings_of(server))
    assert found["checked"] == "chat" and found["warnings"][0].startswith("GET /models gave no model listing")
    # a web server, not an API: one line that suggests the API's root
    with RecordingServer(models=(200, WEB_PAGE), chat=False) as server, pytest.raises(UsageError) as info:
        preflight(settings_of(server))
    assert str(info.value) == (f"the server at {server.base_url} does not answer like an OpenAI-compatible server "
                               "(no chat completion came back); is that the API's root (usually ending in /v1)?")
