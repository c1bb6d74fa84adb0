"""The openai provider's configuration (no network: building models does no I/O)."""

from __future__ import annotations

import pytest
from llm_explorer_openai import OpenAIProvider

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
