"""One request, stage by stage: summarise -> analyse -> propose + parse (retries) -> validate.

:class:`ExplorationPipeline` implements the runtime's ``RequestHandler``. It never raises for
anything the model or the network does: every failure becomes a :class:`RequestFailure` with a
reason, and nothing reaches the cache.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from . import controls
from .errors import ParseError, PromptError, ValidationRejected
from .exchange_log import ExchangeLog
from .parsing import clean_reply
from .prompts import PromptSet
from .stages import Parser, Summariser, Validator
from .tasks import TaskDescription
from .types import ActionSpec, EpisodeRecord, ExplorationUpdate, Provenance, RequestFailure, StageUsage


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded attempts with exponential backoff (tenacity)."""

    max_attempts: int = 3
    initial_wait_s: float = 0.5
    max_wait_s: float = 4.0


def output_format(spec: ActionSpec) -> str:
    """The stage-2 answer format, generated from the action spec."""
    # symbolic placeholders: small models copy a numeric example back as their answer
    if spec.is_discrete:
        example = ", ".join(f"p{i}" for i in range(spec.n))
        return (f"Answer with JSON only, in the form {{\"probabilities\": [{example}]}}: exactly {spec.n} "
                f"non-negative numbers, one per action in index order (0 to {spec.n - 1}), summing to 1.")
    example = ", ".join(f"b{i}" for i in range(spec.n))
    return (f"Answer with JSON only, in the form {{\"bias\": [{example}]}}: exactly {spec.n} numbers "
            f"between -1 and 1, one per action dimension in order. A positive value pushes that "
            f"dimension up, a negative value pushes it down, 0 leaves it alone.")


def _to_messages(pairs: list[tuple[str, str]]) -> list[BaseMessage]:
    return [SystemMessage(text) if role == "system" else HumanMessage(text) for role, text in pairs]


def _usage(message: BaseMessage) -> StageUsage:
    usage = getattr(message, "usage_metadata", None) or {}
    return StageUsage(int(usage.get("input_tokens", 0) or 0), int(usage.get("output_tokens", 0) or 0))


@dataclass
class _Attempts:
    """Model calls of one request: ``count`` in total (the update's ``attempts``), and per stage."""

    count: int = 0
    per_stage: Counter = field(default_factory=Counter)
    tokens: dict[str, StageUsage] = field(default_factory=dict)

    def add(self, stage: str, usage: StageUsage) -> None:
        self.tokens[stage] = self.tokens.get(stage, StageUsage()) + usage


class ExplorationPipeline:
    """The asyncio request pipeline. Build it with :func:`explorer_pipeline.session.open_explorer`
    or directly (tests do, with fake chat models).

    :param analysis_model: stage-1 runnable (messages -> AI message), or ``None`` for single-stage.
    :param proposal_model: stage-2 runnable (constrained where the provider supports it).
    :param transient_errors: exception types retried (besides ``ParseError``).
    :param call_timeout_s: limit for each model call; a timeout counts as a transient error.
    """

    def __init__(
        self,
        *,
        spec: ActionSpec,
        prompt_set: PromptSet,
        task: TaskDescription,
        summariser: Summariser,
        parser: Parser,
        validator: Validator,
        analysis_model: Runnable | None,
        proposal_model: Runnable | None,
        provider: str = "",
        model: str = "",
        transient_errors: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError),
        retry: RetryPolicy = RetryPolicy(),
        call_timeout_s: float = 60.0,
        exchange_log: ExchangeLog | None = None,
        seed: int = 0,
    ) -> None:
        if prompt_set.calls_llm and proposal_model is None:
            raise ValueError(f"prompt set {prompt_set.id!r} calls the LLM but no proposal model was given")
        if prompt_set.two_stage and prompt_set.calls_llm and analysis_model is None:
            raise ValueError(f"prompt set {prompt_set.id!r} has two stages but no analysis model was given")
        self.spec, self.prompt_set, self.task = spec, prompt_set, task
        self.summariser, self.parser, self.validator = summariser, parser, validator
        self.analysis_model, self.proposal_model = analysis_model, proposal_model
        self.provider, self.model = provider, model
        self.transient_errors = (*tuple(transient_errors), TimeoutError)
        self.retry = retry
        self.call_timeout_s = call_timeout_s
        self.exchange_log = exchange_log
        self.template_hash = prompt_set.template_hash()
        self.control = controls.make_control(prompt_set, spec, np.random.default_rng(seed))

    # ------------------------------------------------------------------ RequestHandler
    async def handle(self, record: EpisodeRecord, history: Sequence[EpisodeRecord], version: int):
        started = time.perf_counter()
        attempts = _Attempts()
        if self.control is not None and self.control.skip_llm():
            values = self.control.values()
            if values is None:
                return None  # frozen: the first answer stays in force; nothing to do
            return self._update(version, values, "control", record, started, attempts, "")
        try:
            variables = self._variables(record, history)
            analysis = ""
            if self.prompt_set.two_stage:
                analysis = await self._analyse(variables, record, attempts)
            values = await self._propose({**variables, "analysis": analysis}, record, attempts)
            values = self.validator.validate(values, self.spec)
        except ParseError as exc:
            return self._failure("parse_error", str(exc), record, started, attempts)
        except ValidationRejected as exc:
            return self._failure(f"validation:{exc.reason}", exc.detail, record, started, attempts)
        except PromptError as exc:
            return self._failure("prompt_error", str(exc), record, started, attempts)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # provider errors: HTTP, connection, auth, replay miss ...
            return self._failure("provider_error", f"{type(exc).__name__}: {exc}", record, started, attempts)
        source = "llm"
        if self.control is not None:
            values = self.control.transform(values)
            source = "control"
        return self._update(version, values, source, record, started, attempts, analysis)

    # ------------------------------------------------------------------ stages
    def _variables(self, record: EpisodeRecord, history: Sequence[EpisodeRecord]) -> dict[str, str]:
        variables = dict(self.summariser.summarise(record, history, self.spec))
        variables["task_title"] = self.task.title
        variables["task_description"] = (self.task.description if self.prompt_set.task_view == "full"
                                         else f"The task is {self.task.title}.")
        variables["output_format"] = output_format(self.spec)
        return variables

    async def _call(self, runnable: Runnable, messages: list[BaseMessage], stage: str,
                    record: EpisodeRecord, attempts: _Attempts) -> str:
        attempts.count += 1
        attempts.per_stage[stage] += 1
        attempt = attempts.per_stage[stage]
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.call_timeout_s):
                reply = await runnable.ainvoke(messages)
        except Exception as exc:
            self._log(stage, attempt, record, messages, None, f"{type(exc).__name__}: {exc}", started, None)
            raise
        usage = _usage(reply)
        attempts.add(stage, usage)
        text = reply.content if isinstance(reply.content, str) else str(reply.content)
        self._log(stage, attempt, record, messages, text, None, started,
                  {"input": usage.input_tokens, "output": usage.output_tokens})
        return text

    def _retrying(self, errors: tuple[type[BaseException], ...]) -> AsyncRetrying:
        r = self.retry
        kwargs: dict = {"stop": stop_after_attempt(r.max_attempts), "retry": retry_if_exception_type(errors),
                        "reraise": True}
        if r.initial_wait_s > 0:
            kwargs["wait"] = wait_exponential(multiplier=r.initial_wait_s, max=r.max_wait_s)
        return AsyncRetrying(**kwargs)

    async def _analyse(self, variables: dict[str, str], record: EpisodeRecord, attempts: _Attempts) -> str:
        assert self.prompt_set.analysis is not None and self.analysis_model is not None
        messages = _to_messages(self.prompt_set.analysis.render(variables))
        async for attempt in self._retrying(self.transient_errors):
            with attempt:
                text = clean_reply(await self._call(self.analysis_model, messages, "analysis", record, attempts))
        return text.strip() or "(no analysis)"

    async def _propose(self, variables: dict[str, str], record: EpisodeRecord, attempts: _Attempts) -> list[float]:
        assert self.proposal_model is not None
        messages = _to_messages(self.prompt_set.proposal_for(self.spec.update_kind).render(variables))
        async for attempt in self._retrying((ParseError, *self.transient_errors)):
            with attempt:
                text = await self._call(self.proposal_model, messages, "proposal", record, attempts)
                try:
                    return self.parser.parse(text, self.spec)
                except ParseError as exc:
                    # re-prompt with the error: the model sees its answer and what was wrong
                    messages = [*messages, AIMessage(text[:2000]),
                                HumanMessage(f"That answer could not be used: {exc}. {variables['output_format']}")]
                    raise
        raise ParseError("no attempt was made")  # pragma: no cover - tenacity re-raises the last error

    # ------------------------------------------------------------------ results
    def _provenance(self, record: EpisodeRecord, started: float, attempts: _Attempts,
                    analysis: str = "", reason: str | None = None) -> Provenance:
        return Provenance(
            source_episode=record.episode_index, latency_s=time.perf_counter() - started,
            tokens=dict(attempts.tokens), provider=self.provider, model=self.model,
            prompt_set=self.prompt_set.id, template_hash=self.template_hash,
            attempts=attempts.count, fallback_reason=reason, analysis=analysis[:2000],
        )

    def _update(self, version: int, values, source: str, record: EpisodeRecord, started: float,
                attempts: _Attempts, analysis: str) -> ExplorationUpdate:
        return ExplorationUpdate(version=version, kind=self.spec.update_kind, values=tuple(values),
                                 source=source, provenance=self._provenance(record, started, attempts, analysis))

    def _failure(self, reason: str, detail: str, record: EpisodeRecord, started: float,
                 attempts: _Attempts) -> RequestFailure:
        return RequestFailure(reason=reason, detail=detail.splitlines()[0][:500] if detail else reason,
                              source_episode=record.episode_index, attempts=attempts.count,
                              latency_s=time.perf_counter() - started, tokens=dict(attempts.tokens))

    def _log(self, stage, attempt, record, messages, reply, error, started, usage) -> None:
        if self.exchange_log is not None:
            self.exchange_log.record(stage=stage, attempt=attempt, episode=record.episode_index,
                                     messages=messages, reply=reply, error=error,
                                     latency_s=time.perf_counter() - started, usage=usage)
