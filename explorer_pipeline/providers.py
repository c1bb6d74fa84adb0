"""The provider contract: how a plugin turns settings into a LangChain chat model per stage."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableLambda

from .llm import DEFAULT_MAX_REPLY_BYTES, RetryPolicy
from .ratelimit import Limiter
from .types import ActionSpec


@dataclass(frozen=True)
class ProviderSettings:
    """What the user chose for the LLM side. Secrets are never part of it: providers read them
    from environment variables.

    :param max_tokens: output token cap per stage (``analysis``, ``proposal``).
    :param timeout_s: per-call timeout.
    :param structured_output: stage-2 constraint method; ``None`` = the provider's default.
    :param options: provider-specific ``KEY=VALUE`` options (strings).
    """

    model: str | None = None
    base_url: str | None = None
    temperature: float = 0.0
    max_tokens: Mapping[str, int] = field(default_factory=lambda: {"analysis": 200, "proposal": 120})
    timeout_s: float = 60.0
    structured_output: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    seed: int = 0


def proposal_schema(spec: ActionSpec) -> dict[str, Any]:
    """The JSON schema of a stage-2 answer for ``spec``."""
    if spec.is_discrete:
        key, items = "probabilities", {"type": "number", "minimum": 0, "maximum": 1}
    else:
        key, items = "bias", {"type": "number", "minimum": -1, "maximum": 1}
    return {
        "type": "object",
        "properties": {key: {"type": "array", "items": items, "minItems": spec.n, "maxItems": spec.n}},
        "required": [key],
        "additionalProperties": False,
    }


def tool_call_as_text(message: BaseMessage) -> AIMessage:
    """Turn a function-calling reply into a plain JSON text reply (usage metadata kept)."""
    calls = getattr(message, "tool_calls", None) or []
    content = json.dumps(calls[0]["args"]) if calls else str(message.content)
    return AIMessage(content=content, usage_metadata=getattr(message, "usage_metadata", None),
                     response_metadata=getattr(message, "response_metadata", {}))


class Provider:
    """Base class of providers. Subclasses set the class attributes and implement :meth:`create`
    (and, to fail fast on a setup that cannot work, :meth:`preflight`).

    :cvar name: the name users pass as ``--provider``.
    :cvar structured_output_methods: stage-2 methods this provider really supports, strictest first.
    :cvar transient_errors: exception types worth retrying (timeouts, connection resets, 5xx).
    :cvar supports_logprobs: the provider's models can return the log-probabilities of the top
        tokens of an answer (what the ``token-probabilities`` proposer reads); refine per settings
        with :meth:`logprobs_unsupported`, and say how to ask for them with :meth:`logprob_model`.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    structured_output_methods: ClassVar[tuple[str, ...]] = ("none",)
    transient_errors: ClassVar[tuple[type[BaseException], ...]] = (TimeoutError, ConnectionError)
    supports_logprobs: ClassVar[bool] = False

    def create(self, settings: ProviderSettings) -> BaseChatModel:
        """Build the chat model. Must not do network I/O."""
        raise NotImplementedError

    def preflight(self, model: BaseChatModel, settings: ProviderSettings, *,
                  logprobs: bool = False) -> dict[str, Any]:
        """Check, once before training and after :meth:`create`, that the model can be reached and
        used; return the capabilities found, which the run manifest records as ``provider_check``.

        It may do network I/O, with short timeouts (a model listing, a one-token call), and it
        raises :class:`~explorer_pipeline.errors.UsageError` (one line: the run stops with exit
        status 2 before anything is trained or written) for a setup that cannot work: a malformed
        URL, a server nobody answers at, a rejected or missing key, a model the server does not
        offer. A transient trouble (an HTTP 5xx or 429 answer) is recorded, not raised: the run's
        requests are retried and counted as before. It is not called when answers are replayed
        from the response cache.

        :param logprobs: the run's proposer reads token log-probabilities: check (cheaply, e.g.
            one one-token call) whether they come back and record it as ``logprobs``.
        :returns: a JSON-able dict; by convention ``checked`` says what was checked (``none``:
            nothing, the default; ``off``: skipped on request) and ``logprobs`` whether the
            model returns token log-probabilities. Never a secret.
        """
        return {"checked": "none", "logprobs": self.logprobs_unsupported(settings) is None}

    def default_structured_output(self, settings: ProviderSettings) -> str:
        """The stage-2 method used when the settings choose none: the strictest this provider supports."""
        return self.structured_output_methods[0]

    def model_name(self, settings: ProviderSettings) -> str:
        """The model name recorded in provenance and the manifest."""
        return settings.model or ""

    def stage_model(
        self, model: BaseChatModel, stage: str, settings: ProviderSettings, spec: ActionSpec,
    ) -> Runnable[list[BaseMessage], BaseMessage]:
        """The runnable for one stage (messages in, one AI message out), with token caps and, for
        ``proposal``, the structured-output constraint. Override to add provider specifics."""
        kwargs = self.token_kwargs(settings.max_tokens.get(stage, 200), settings)
        if stage != "proposal":
            return model.bind(**kwargs) if kwargs else model
        method = settings.structured_output or self.default_structured_output(settings)
        schema = proposal_schema(spec)
        if method == "json_schema":
            fmt = {"type": "json_schema", "json_schema": {"name": "exploration", "schema": schema}}
            return model.bind(response_format=fmt, **kwargs)
        if method == "json_object_schema":
            return model.bind(response_format={"type": "json_object", "schema": schema}, **kwargs)
        if method == "function_calling":
            tool = {"type": "function", "function": {"name": "exploration", "description": "the answer",
                                                     "parameters": schema}}
            bound = model.bind_tools([tool], tool_choice="exploration", **kwargs)
            return bound | RunnableLambda(tool_call_as_text)
        return model.bind(**kwargs) if kwargs else model

    def token_kwargs(self, max_tokens: int, settings: ProviderSettings) -> dict[str, Any]:
        """Keyword arguments that cap output tokens for this provider's models."""
        return {"max_tokens": max_tokens}

    def retry_policy(self, settings: ProviderSettings, max_attempts: int) -> RetryPolicy:
        """How calls to this provider's models are retried (``max_attempts``: ``explorer.max_attempts``).
        The default: full-jitter exponential backoff from 0.5 s to 4 s, ``Retry-After`` honoured,
        no deadline of its own."""
        return RetryPolicy(max_attempts=max_attempts)

    def limiter(self, settings: ProviderSettings) -> Limiter | None:
        """The per-endpoint limiter every call of these settings passes through
        (:func:`explorer_pipeline.ratelimit.limiter_for`); ``None`` (the default): no limit."""
        return None

    def max_reply_bytes(self, settings: ProviderSettings) -> int:
        """Replies larger than this (UTF-8 bytes) are refused as bad replies (default 1 MiB)."""
        return DEFAULT_MAX_REPLY_BYTES

    def logprobs_unsupported(self, settings: ProviderSettings) -> str | None:
        """Why the models these settings build return no token log-probabilities (one line), or
        ``None`` when they do. The default follows :attr:`supports_logprobs`."""
        if self.supports_logprobs:
            return None
        return f"provider {self.name or type(self).__name__!r} does not return token log-probabilities"

    def logprob_model(self, model: BaseChatModel, settings: ProviderSettings, spec: ActionSpec,
                      top_logprobs: int) -> Runnable[list[BaseMessage], BaseMessage]:
        """The runnable for one-token answers whose reply carries, in
        ``response_metadata["logprobs"]["content"][0]["top_logprobs"]``, the ``top_logprobs`` most
        likely first tokens with their log-probabilities (OpenAI's format). The default binds
        OpenAI's ``logprobs``/``top_logprobs`` and a cap of one output token."""
        return model.bind(logprobs=True, top_logprobs=top_logprobs, **self.token_kwargs(1, settings))
