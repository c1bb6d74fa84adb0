"""The LLM as stages see it: per-stage runnables, called with a timeout, counted and logged.

:class:`StageModels` is built once per explorer from the chosen provider (or, in tests, from
fake runnables). Stages call :meth:`StageModels.invoke` (or :meth:`StageModels.ask` for the
text); each call is limited by ``call_timeout_s``, counted in the request's tally, and written to
the exchange log. :func:`retrying` is the one retry policy of the LLM stages (tenacity, bounded
attempts, full-jitter exponential backoff that honours the server's ``Retry-After``, an optional
total deadline: :mod:`explorer_pipeline.backoff`).

Every reply is checked before a stage sees it: one larger than the provider's reply cap, or that
is not valid UTF-8, is refused as :class:`~explorer_pipeline.errors.BadReply` (counted as a reply
that does not parse). A provider may also give a per-endpoint :class:`~explorer_pipeline.ratelimit.Limiter`
that every call passes through.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from .backoff import stop_at_deadline, wait_jitter_or_retry_after
from .errors import BadReply
from .exchange_log import ExchangeLog
from .types import StageUsage

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from .providers import Provider, ProviderSettings
    from .ratelimit import Limiter
    from .stages import Request

#: the reply cap when the provider sets none: larger replies are refused (BadReply)
DEFAULT_MAX_REPLY_BYTES = 1 << 20


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded attempts with full-jitter exponential backoff, ``Retry-After`` honoured, and an
    optional total deadline (tenacity; :mod:`explorer_pipeline.backoff`).

    :param max_attempts: calls per stage, the first included.
    :param initial_wait_s: the first backoff's upper bound (0: no waits at all, for tests).
    :param max_wait_s: the largest backoff without a ``Retry-After``.
    :param deadline_s: all attempts and waits of one stage end within this; ``None``: no deadline
        (``explorer.request_timeout_s`` still bounds the whole request).
    """

    max_attempts: int = 3
    initial_wait_s: float = 0.5
    max_wait_s: float = 4.0
    deadline_s: float | None = None


def retrying(policy: RetryPolicy, errors: tuple[type[BaseException], ...], request: Request,
             stage: str, *, sleep: Any = None, clock: Any = None, uniform: Any = None) -> AsyncRetrying:
    """The tenacity loop of the LLM stages (``async for attempt in ...: with attempt: ...``).

    It retries ``errors`` only, at most ``policy.max_attempts`` times and within
    ``policy.deadline_s``, waits as :class:`~explorer_pipeline.backoff.wait_jitter_or_retry_after`
    says, and notes each retried error in ``request.retry_reasons``. ``sleep`` (an async
    function), ``clock`` and ``uniform`` replace the real ones in tests.
    """

    def note(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None and state.outcome.failed else None
        if error is not None:
            request.note_retry(stage, error)

    stop: Any = stop_after_attempt(policy.max_attempts)
    if policy.deadline_s is not None:
        stop = stop | stop_at_deadline(policy.deadline_s, **({"clock": clock} if clock else {}))
    kwargs: dict[str, Any] = {"stop": stop, "retry": retry_if_exception_type(errors), "reraise": True,
                              "before_sleep": note}
    if policy.initial_wait_s > 0:
        kwargs["wait"] = wait_jitter_or_retry_after(policy.initial_wait_s, policy.max_wait_s,
                                                    **({"uniform": uniform} if uniform else {}))
    if sleep is not None:
        kwargs["sleep"] = sleep
    return AsyncRetrying(**kwargs)


def bad_reply_in(error: BaseException) -> BadReply | None:
    """The :class:`BadReply` ``error`` is or was raised from (a provider's HTTP client refuses a
    reply while reading it, and its SDK wraps that in an error of its own)."""
    seen = 0
    current: BaseException | None = error
    while current is not None and seen < 6:
        if isinstance(current, BadReply):
            return current
        current = current.__cause__ or current.__context__
        seen += 1
    return None


def check_reply(text: str, max_bytes: int) -> None:
    """:class:`BadReply` for a reply that is not valid UTF-8 (lone surrogates: bytes a decoder
    kept) or is larger than ``max_bytes`` in UTF-8."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadReply("invalid_utf8", "the reply is not valid UTF-8") from None
    if size > max_bytes:
        raise BadReply("too_large", f"{size} bytes, more than the reply cap of {max_bytes} bytes")


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

    With ``provider_impl`` and ``settings``, the provider also gives the reply cap
    (``max_reply_bytes``), the per-endpoint ``limiter`` and the retry policy (:meth:`retry_policy`).
    """

    def __init__(
        self,
        runnables: Mapping[str, Runnable[Any, Any]],
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
        self.max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES
        self.limiter: Limiter | None = None
        if provider_impl is not None and settings is not None:
            self.max_reply_bytes = provider_impl.max_reply_bytes(settings)
            self.limiter = provider_impl.limiter(settings)

    def retry_policy(self, max_attempts: int) -> RetryPolicy:
        """The provider's retry policy for ``max_attempts`` calls per stage (the default one without a provider)."""
        if self.provider_impl is not None and self.settings is not None:
            return self.provider_impl.retry_policy(self.settings, max_attempts)
        return RetryPolicy(max_attempts=max_attempts)

    def runnable(self, stage: str) -> Runnable[Any, Any]:
        """The runnable of ``stage``; ``KeyError`` naming the stages there are."""
        try:
            return self._runnables[stage]
        except KeyError:
            raise KeyError(f"no model for stage {stage!r}; have: {', '.join(sorted(self._runnables))}") from None

    async def invoke(self, stage: str, messages: list[BaseMessage], request: Request, *,
                     runnable: Runnable[Any, Any] | None = None, max_chars: int | None = None) -> BaseMessage:
        """Call the model of ``stage`` (or ``runnable``) once: limiter, timeout, tally, reply
        checks, exchange log. A reply's text longer than ``max_chars`` is cut to that length
        before anyone (the exchange log included) sees it."""
        runnable = runnable if runnable is not None else self.runnable(stage)
        limiter = self.limiter
        if limiter is not None:  # waiting for a slot is not part of the call's timeout
            await limiter.acquire()
        attempt = request.count_call(stage)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.call_timeout_s):
                reply: BaseMessage = await runnable.ainvoke(messages)
            usage = usage_of(reply)
            request.add_tokens(stage, usage)  # spent even when the reply is refused
            text = message_text(reply)
            check_reply(text, self.max_reply_bytes)
        except Exception as exc:
            bad = bad_reply_in(exc)
            shown = bad if bad is not None else exc
            self._log(stage, attempt, request, messages, None, f"{type(shown).__name__}: {shown}", started, None)
            if bad is not None and bad is not exc:
                raise bad from exc
            raise
        finally:
            if limiter is not None:
                limiter.release()
        if max_chars is not None and len(text) > max_chars:
            text = text[:max_chars]
            reply = reply.model_copy(update={"content": text})
        self._log(stage, attempt, request, messages, text, None, started,
                  {"input": usage.input_tokens, "output": usage.output_tokens})
        return reply

    async def ask(self, stage: str, messages: list[BaseMessage], request: Request, *,
                  max_chars: int | None = None) -> str:
        """:meth:`invoke`, returning the reply's text (at most ``max_chars`` characters)."""
        return message_text(await self.invoke(stage, messages, request, max_chars=max_chars))

    def _log(self, stage: str, attempt: int, request: Request, messages: list[BaseMessage], reply: str | None,
             error: str | None, started: float, usage: dict[str, Any] | None) -> None:
        if self.exchange_log is not None:
            self.exchange_log.record(stage=stage, attempt=attempt, episode=request.record.episode_index,
                                     messages=messages, reply=reply, error=error,
                                     latency_s=time.perf_counter() - started, usage=usage)
