"""The ``openai`` provider: LangChain ``ChatOpenAI`` for OpenAI and OpenAI-compatible servers.

The API key is read from an environment variable only (``OPENAI_API_KEY`` by default; choose
another with ``--option api_key_env=NAME``). It is held as a pydantic ``SecretStr`` by
ChatOpenAI and never written to logs or manifests.

Options (``--option KEY=VALUE``):

``api_key_env``
    the environment variable holding the key.
``server``
    ``openai`` (default without ``--base-url``), ``llamacpp`` (default with ``--base-url``),
    ``vllm`` or ``ollama``: picks the stage-2 structured-output method and how the token cap is
    sent. llama.cpp's server ignores ``max_completion_tokens`` (which ChatOpenAI sends) and rejects
    ``response_format`` type ``json_schema``, so for it the cap goes in the request body as
    ``max_tokens`` and stage 2 uses ``json_object`` with a ``schema``.
``logprobs``
    ``on`` or ``off``: whether the server returns token log-probabilities (OpenAI's
    ``logprobs``/``top_logprobs``, what the ``token-probabilities`` proposer reads). Default: on
    for ``openai``, ``vllm`` and ``llamacpp``, off for ``ollama``.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import openai
from langchain_core.language_models import BaseChatModel
from langchain_openai import ChatOpenAI

from explorer_pipeline import Provider, ProviderSettings, UsageError, hookimpl

SERVERS = {
    # server: (default structured-output method, token cap in the request body as max_tokens,
    #          returns token log-probabilities)
    "openai": ("json_schema", False, True),
    "llamacpp": ("json_object_schema", True, True),
    "vllm": ("json_schema", True, True),
    "ollama": ("json_schema", True, False),
}
_SWITCHES = {"on": True, "true": True, "yes": True, "1": True, "off": False, "false": False, "no": False, "0": False}
DEFAULT_MODEL = "gpt-4o-mini"
LOCAL_PLACEHOLDER_KEY = "sk-no-key-required"


class OpenAIProvider(Provider):
    """The ``openai`` provider (see the module docstring for its options)."""

    name = "openai"
    description = "OpenAI, or any OpenAI-compatible server with --base-url (vLLM, Ollama, llama.cpp)"
    structured_output_methods = ("json_schema", "function_calling", "json_object_schema", "none")
    supports_logprobs = True
    transient_errors = (
        TimeoutError, ConnectionError, openai.APIConnectionError, openai.APITimeoutError,
        openai.RateLimitError, openai.InternalServerError, openai.LengthFinishReasonError,
    )

    def _server(self, settings: ProviderSettings) -> str:
        server = settings.options.get("server") or ("llamacpp" if settings.base_url else "openai")
        if server not in SERVERS:
            raise UsageError(f"unknown openai server kind {server!r}; allowed: {', '.join(SERVERS)}")
        return server

    def default_structured_output(self, settings: ProviderSettings) -> str:
        """The strictest stage-2 method the chosen server kind accepts."""
        return SERVERS[self._server(settings)][0]

    def model_name(self, settings: ProviderSettings) -> str:
        """The ``--model``, else ``gpt-4o-mini``."""
        return settings.model or DEFAULT_MODEL

    def create(self, settings: ProviderSettings) -> BaseChatModel:
        """A ``ChatOpenAI`` with its own HTTP client; UsageError for a bad option, or without a key
        when the model is OpenAI's own (no ``--base-url``)."""
        unknown = set(settings.options) - {"api_key_env", "server", "logprobs"}
        if unknown:
            raise UsageError(f"unknown openai provider option(s) {sorted(unknown)}; "
                             "allowed: api_key_env, server, logprobs")
        self._server(settings)
        self.logprobs_unsupported(settings)
        key_env = settings.options.get("api_key_env", "OPENAI_API_KEY")
        api_key = os.environ.get(key_env)
        if not api_key:
            if settings.base_url is None:
                raise UsageError(f"the openai provider needs an API key: set the environment variable {key_env}")
            api_key = LOCAL_PLACEHOLDER_KEY  # OpenAI-compatible local servers accept any key
        return ChatOpenAI(
            model=self.model_name(settings), base_url=settings.base_url, api_key=api_key,
            temperature=settings.temperature, timeout=settings.timeout_s, max_retries=0,
            use_responses_api=False, seed=settings.seed,
            # a client of this model's own: langchain-openai shares a cached async client across
            # models, which breaks when each explorer runs its own event loop
            http_async_client=httpx.AsyncClient(timeout=settings.timeout_s),
        )

    def logprobs_unsupported(self, settings: ProviderSettings) -> str | None:
        """``None`` when the server kind returns log-probabilities (or ``--option logprobs=on``)."""
        server = self._server(settings)
        value = settings.options.get("logprobs")
        if value is not None and value.strip().lower() not in _SWITCHES:
            raise UsageError(f"openai provider option logprobs must be on or off, got {value!r}")
        if _SWITCHES.get((value or "").strip().lower(), SERVERS[server][2]):
            return None
        how = "--option logprobs=off" if value is not None else f"server {server!r} (--option logprobs=on if it does)"
        return f"provider 'openai' returns no token log-probabilities with {how}"

    def token_kwargs(self, max_tokens: int, settings: ProviderSettings) -> dict[str, Any]:
        """How the token cap is sent: in the request body as ``max_tokens`` for servers that ignore ChatOpenAI's own."""
        if SERVERS[self._server(settings)][1]:
            return {"extra_body": {"max_tokens": max_tokens}}
        return {"max_tokens": max_tokens}


@hookimpl
def register_providers(register):
    """Register the ``openai`` provider."""
    register("openai", OpenAIProvider())
