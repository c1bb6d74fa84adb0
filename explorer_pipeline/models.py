"""The LLM as stages see it: per-stage runnables, called with a timeout, counted and logged.

:class:`StageModels` is built once per explorer from the chosen provider (or, in tests, from
fake runnables). Stages call :meth:`StageModels.invoke` (or :meth:`StageModels.ask` for the
text); each call is limited by ``call_timeout_s``, counted in the request's tally, and written to
the exchange log. :func:`retrying` is the one retry policy of the LLM stages (tenacity, bounded
attempts, capped exponential backoff).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_exponential

from .exchange_log import ExchangeLog
from .types import StageUsage

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from .providers import Provider, ProviderSettings
    from .stages import Request


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded attempts with capped exponential backoff (tenacity)."""

    max_attempts: int = 3
    initial_wait_s: float = 0.5
    max_wait_s: float = 4.0


def retrying(policy: RetryPolicy, errors: tuple[type[BaseException], ...], request: Request,
             stage: str) -> AsyncRetrying:
    """The tenacity loop of the LLM stages (``async for attempt in ...: with attempt: ...``).

    It retries ``errors`` only, at most ``policy.max_attempts`` times, and notes each retried
    error in ``request.retry_reasons``.
    """

    def note(state: RetryCallState) -> None:
        if state.outcome is not None and state.outcome.failed:
            request.note_retry(stage, state.outcome.exception())

    kwargs: dict[str, Any] = {"stop": stop_after_attempt(policy.max_attempts),
                              "retry": retry_if_exception_type(errors), "reraise": True, "before_sleep": note}
    if policy.initial_wait_s > 0:
        kwargs["wait"] = wait_exponential(multiplier=policy.initial_wait_s, max=policy.max_wait_s)
    return AsyncRetrying(**kwargs)


def to_messages(pairs: Sequence[tuple[str, str]]) -> list[BaseMessage]:
    """``[("system", text), ("human", text)]`` (what a template renders) as LangChain messages."""
    return [SystemMessage(text) if role == "system" else HumanMessage(text) for role, text in pairs]


def message_text(message: BaseMessage) -> str:
    """The text of a chat message (its content, as a string)."""
    return message.content if isinstance(message.content, str) else str(message.content)


def usage_of(message: BaseMessage) -> StageUsage:
    """The tokens a reply reports in its usage metadata (0 where it reports none)."""
    usage = getattr(message, "usage_metadata", None) or {}
    return StageUsage(int(usage.get("input_tokens", 0) or 0), int(usage.get("output_tokens", 0) or 0))


class StageModels:
    """One runnable per LLM stage (messages in, one AI message out) and the rules of calling them.

    :param runnables: by stage name (``analysis``, ``proposal``); providers build them with
        :meth:`~explorer_pipeline.providers.Provider.stage_model` (token caps, structured output).
    :param provider: provider name recorded in provenance.
    :param model: model name recorded in provenance.
    :param transient_errors: exception types worth retrying; ``TimeoutError`` is always one.
    :param call_timeout_s: limit for each call.
    :param exchange_log: where every call is recorded, if anywhere.
    :param chat_model: the provider's chat model itself, for stages that bind it differently
        (e.g. to ask for token log-probabilities); ``None`` in tests with bare runnables.
    :param provider_impl: the :class:`~explorer_pipeline.providers.Provider` that built them.
    :param settings: the :class:`~explorer_pipeline.providers.ProviderSettings` they were built with.
    :param provider_check: what the provider's
        :meth:`~explorer_pipeline.providers.Provider.preflight` found (``{}``: not run).
    """

    def __init__(
        self,
        runnables: Mapping[str, Runnable],
        *,
        provider: str = "",
        model: str = "",
        transient_errors: tuple[type[BaseException], ...] = (ConnectionError,),
        call_timeout_s: float = 60.0,
        exchange_log: ExchangeLog | None = None,
        chat_model: BaseChatModel | None = None,
        provider_impl: Provider | None = None,
        settings: ProviderSettings | None = None,
        provider_check: Mapping[str, Any] | None = None,
    ) -> None:
        if call_timeout_s <= 0:
            raise ValueError(f"call_timeout_s must be > 0, got {call_timeout_s}")
        self._runnables = dict(runnables)
        self.provider, self.model = provider, model
        self.transient_errors: tuple[type[BaseException], ...] = (*tuple(transient_errors), TimeoutError)
        self.call_timeout_s = call_timeout_s
        self.exchange_log = exchange_log
        self.chat_model, self.provider_impl, self.settings = chat_model, provider_impl, settings
        self.provider_check: dict[str, Any] = dict(provider_check or {})

    def runnable(self, stage: str) -> Runnable:
        """The runnable of ``stage``; ``KeyError`` naming the stages there are."""
        try:
            return self._runnables[stage]
        except KeyError:
            raise KeyError(f"no model for stage {stage!r}; have: {', '.join(sorted(self._runnables))}") from None

    async def invoke(self, stage: str, messages: list[BaseMessage], request: Request, *,
                     runnable: Runnable | None = None) -> BaseMessage:
        """Call the model of ``stage`` (or ``runnable``) once: timeout, tally, exchange log."""
        runnable = runnable if runnable is not None else self.runnable(stage)
        attempt = request.count_call(stage)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.call_timeout_s):
                reply = await runnable.ainvoke(messages)
        except Exception as exc:
            self._log(stage, attempt, request, messages, None, f"{type(exc).__name__}: {exc}", started, None)
            raise
        usage = usage_of(reply)
        request.add_tokens(stage, usage)
        self._log(stage, attempt, request, messages, message_text(reply), None, started,
                  {"input": usage.input_tokens, "output": usage.output_tokens})
        return reply

    async def ask(self, stage: str, messages: list[BaseMessage], request: Request) -> str:
        """:meth:`invoke`, returning the reply's text."""
        return message_text(await self.invoke(stage, messages, request))

    def _log(self, stage: str, attempt: int, request: Request, messages: list[BaseMessage], reply: str | None,
             error: str | None, started: float, usage: dict | None) -> None:
        if self.exchange_log is not None:
            self.exchange_log.record(stage=stage, attempt=attempt, episode=request.record.episode_index,
                                     messages=messages, reply=reply, error=error,
                                     latency_s=time.perf_counter() - started, usage=usage)
