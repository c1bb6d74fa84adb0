"""The openai provider's options for shared servers (bounds, the retry policy and limiter they
give) and its URL and key rules; building models does no I/O. The behaviour against a real
misbehaving server: tests/integration/test_openai_faults.py."""

from __future__ import annotations

import pytest
from llm_explorer_openai import OpenAIProvider, check_base_url, is_loopback

from explorer_pipeline import ProviderSettings, UsageError
from explorer_pipeline.ratelimit import LocalLimiter

LOCAL = "http://127.0.0.1:8080/v1"


@pytest.mark.parametrize(("option", "value", "message"), [
    ("retry_max_attempts", "0", r"retry_max_attempts must be a whole number from 1 to 100 \(calls per stage"),
    ("retry_max_attempts", "2.5", r"must be a whole number from 1 to 100"),
    ("retry_base_s", "-1", r"retry_base_s must be a number from 0 to 60"),
    ("retry_cap_s", "nan", r"retry_cap_s must be a number from 0 to 600"),
    ("retry_deadline_s", "0.5", r"retry_deadline_s must be a number from 1 to 3600"),
    ("max_concurrent", "0", r"max_concurrent must be a whole number from 1 to 100000"),
    ("requests_per_minute", "lots", r"requests_per_minute must be a number from 0.01 to 1e\+06"),
    ("max_reply_bytes", "100", r"max_reply_bytes must be a whole number from 1024 to 1073741824"),
    ("preflight_deadline_s", "9999", r"preflight_deadline_s must be a number from 1 to 600"),
    ("allow_insecure_http", "maybe", r"allow_insecure_http must be on or off \(true or false\), got 'maybe'"),
])
def test_out_of_bounds_options_are_one_line_usage_errors(option, value, message):
    with pytest.raises(UsageError, match=message) as info:
        OpenAIProvider().create(ProviderSettings(base_url=LOCAL, options={option: value, "allow_insecure_http": "on"}
                                                 if option != "allow_insecure_http" else {option: value}))
    assert "\n" not in str(info.value)


def test_the_retry_options_make_the_retry_policy():
    provider = OpenAIProvider()
    default = provider.retry_policy(ProviderSettings(base_url=LOCAL), max_attempts=3)
    assert (default.max_attempts, default.initial_wait_s, default.max_wait_s, default.deadline_s) == (
        3, 0.5, 30.0, 120.0)
    chosen = provider.retry_policy(ProviderSettings(base_url=LOCAL, options={
        "retry_max_attempts": "8", "retry_base_s": "1", "retry_cap_s": "60", "retry_deadline_s": "600"}), 3)
    assert (chosen.max_attempts, chosen.initial_wait_s, chosen.max_wait_s, chosen.deadline_s) == (8, 1.0, 60.0, 600.0)


def test_the_limit_options_make_one_limiter_per_endpoint():
    provider = OpenAIProvider()
    assert provider.limiter(ProviderSettings(base_url=LOCAL)) is None
    settings = ProviderSettings(base_url=LOCAL, options={"max_concurrent": "4", "requests_per_minute": "90"})
    limiter = provider.limiter(settings)
    assert isinstance(limiter, LocalLimiter) and limiter.max_concurrent == 4 and limiter.requests_per_minute == 90
    assert provider.limiter(ProviderSettings(base_url=LOCAL + "/", options=dict(settings.options))) is limiter
    assert provider.max_reply_bytes(ProviderSettings(base_url=LOCAL)) == 1 << 20


@pytest.mark.parametrize("url", ["https://user:tok-123456@llm.example.org/v1", "http://tok-123456@127.0.0.1:8080/v1",
                                 "http://user:tok-123456@[::1]:notaport/v1"])
def test_credentials_in_the_base_url_are_refused_without_repeating_them(url):
    with pytest.raises(UsageError, match="carries credentials") as info:
        check_base_url(url)
    assert "tok-123456" not in str(info.value)


@pytest.mark.parametrize("url", ["https://llm.example.org/v1?api_key=tok-123456",
                                 "https://llm.example.org/v1?api-version=2&access_token=tok-123456"])
def test_credentials_in_the_query_are_refused_without_repeating_them(url):
    with pytest.raises(UsageError, match="carries a credential in its query") as info:
        check_base_url(url)
    assert "tok-123456" not in str(info.value)
    check_base_url("https://llm.example.org/v1?api-version=2024-06-01")  # a query without a credential is fine


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.3.4.5", True), ("localhost", True), ("::1", True), ("[::1]", True),
    ("10.0.0.7", False), ("gpu-box", False), ("", False), (None, False), ("localhost.example.org", False),
])
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("url", ["http://10.0.0.7:8000/v1", "http://gpu-box/v1"])
def test_the_key_is_not_sent_over_plain_http_to_another_host(monkeypatch, url):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-shared-424242")
    with pytest.raises(UsageError, match="refusing to send the API key in OPENAI_API_KEY over plain http") as info:
        OpenAIProvider().create(ProviderSettings(base_url=url))
    assert "sk-secret" not in str(info.value)
    OpenAIProvider().create(ProviderSettings(base_url=url, options={"allow_insecure_http": "true"}))
    OpenAIProvider().create(ProviderSettings(base_url=url.replace("http:", "https:")))


def test_without_a_key_nothing_secret_travels(monkeypatch):
    # no key in the environment: the placeholder is sent, which is no secret, so plain http is fine
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    OpenAIProvider().create(ProviderSettings(base_url="http://10.0.0.7:8000/v1"))
