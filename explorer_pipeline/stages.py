"""The contracts of the pluggable stages, and what the session hands an implementation.

One request runs four stages, each a registered implementation chosen by name in the run
configuration (``explorer.summariser``, ``explorer.analyser``, ``explorer.proposer``,
``explorer.validator``)::

    summarise (sync, pure) -> analyse (async, stage 1) -> propose (async, stage 2) -> validate (sync, pure)

A plugin registers a *factory* per implementation through the stage's catalogue hook
(``register_summarisers`` ...). The session calls ``factory(context, **options)`` once per
explorer, with the :class:`StageContext` of the run and the ``options`` of the configuration,
and checks that the object it gets back has the stage's method (``async def`` for the analyser
and proposer, a plain ``def`` for the others). The pipeline then calls that method once per
request, on the pipeline's event-loop thread.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .llm import RetryPolicy, StageModels
from .types import ActionSpec, EpisodeRecord, StageUsage

if TYPE_CHECKING:
    from .config import ExplorerConfig
    from .plugins import Catalogue
    from .prompts import PromptSet
    from .tasks import TaskDescription


# --------------------------------------------------------------------------- the stage protocols


@runtime_checkable
class Summariser(Protocol):
    """Turns the last episode (and recent ones) into prompt variables.

    Runs on the pipeline thread; must be pure and cheap. Returns a mapping with every name in
    :data:`explorer_pipeline.prompts.EPISODE_VARIABLES` except the task variables
    (``task_title``, ``task_description``), which the pipeline adds.
    """

    def summarise(
        self, record: EpisodeRecord, history: Sequence[EpisodeRecord], spec: ActionSpec
    ) -> Mapping[str, str]:
        """The episode variables of the prompts for ``record``."""
        ...


@runtime_checkable
class Analyser(Protocol):
    """Stage 1: the learning-status analysis that a two-stage prompt set feeds to stage 2.

    Called only for two-stage prompt sets. ``variables`` are the summariser's variables plus
    ``task_title``, ``task_description`` and ``output_format``. Returns the analysis text (the
    ``$analysis`` variable of the proposal template). Raise what the model or network raised
    (after any retries of your own); the pipeline turns it into a failed request.
    """

    async def analyse(self, variables: Mapping[str, str], request: Request) -> str:
        """The stage-1 analysis text."""
        ...


@runtime_checkable
class Proposer(Protocol):
    """Stage 2: the numbers of an update, one per action (probabilities) or dimension (bias).

    ``variables`` are the analyser's plus ``analysis`` (empty for single-stage prompt sets).
    Returns ``spec.n`` numbers, unvalidated: the validator checks them next. Raise
    :class:`~explorer_pipeline.errors.ParseError` when no usable answer came back after your
    retries; anything else the model raised propagates as a provider error.
    """

    async def propose(self, variables: Mapping[str, str], request: Request) -> Sequence[float]:
        """``spec.n`` unvalidated numbers for the update."""
        ...


@runtime_checkable
class Validator(Protocol):
    """Turns proposed numbers into the values of an update, or raises ``ValidationRejected``.

    Pure and cheap; runs on the pipeline thread. Only what it returns reaches the cache.
    """

    def validate(self, values: Sequence[float], spec: ActionSpec) -> tuple[float, ...]:
        """The values of the update, or ``ValidationRejected``."""
        ...


@runtime_checkable
class Parser(Protocol):
    """Reads ``spec.n`` numbers out of a model reply, or raises ``ParseError``.

    Not a stage of its own: the default proposer uses one, chosen by its ``parser`` option.
    """

    def parse(self, text: str, spec: ActionSpec) -> list[float]:
        """``spec.n`` numbers, or ``ParseError``."""
        ...


@dataclass(frozen=True)
class StageKind:
    """One pluggable stage: its configuration key, catalogue hook, protocol and method."""

    key: str
    """The ``explorer`` configuration key and the name users see (``summariser`` ...)."""
    hook: str
    """The catalogue hook that registers implementations."""
    protocol: type
    method: str
    is_async: bool


STAGES: tuple[StageKind, ...] = (
    StageKind("summariser", "register_summarisers", Summariser, "summarise", False),
    StageKind("analyser", "register_analysers", Analyser, "analyse", True),
    StageKind("proposer", "register_proposers", Proposer, "propose", True),
    StageKind("validator", "register_validators", Validator, "validate", False),
)
"""The four stages of a request, in the order the pipeline runs them."""

PARSER = StageKind("parser", "register_parsers", Parser, "parse", False)
"""Parsers: components of text-reading proposers, registered like stages."""


def check_stage(kind: StageKind, obj: object, name: str, owner: str) -> None:
    """Fail loudly when a factory returned an object without the stage's method, or with a
    method of the wrong colour (a coroutine where a plain call is expected, or the reverse)."""
    method = getattr(obj, kind.method, None)
    where = f"{kind.key} {name!r} (from plugin {owner!r})"
    if not callable(method):
        raise TypeError(f"{where} returned {type(obj).__name__}, which has no {kind.method}() method")
    if inspect.iscoroutinefunction(method) != kind.is_async:
        want = "an 'async def'" if kind.is_async else "a plain 'def' (not async)"
        raise TypeError(f"{where}: {type(obj).__name__}.{kind.method} must be {want} method")


# --------------------------------------------------------------------------- what stages receive


@dataclass
class Request:
    """One request in flight: the episode it is about, and the tally of its model calls.

    Shared by the stages of one request (and only that request). Stages that call a model
    through :class:`~explorer_pipeline.llm.StageModels` are counted automatically; a stage
    that talks to a model some other way calls :meth:`count_call` and :meth:`add_tokens` itself,
    so that the update's provenance (attempts, tokens) stays true.
    """

    record: EpisodeRecord
    history: Sequence[EpisodeRecord] = ()
    calls: int = 0
    """Model calls so far, all stages together (the update's ``attempts``)."""
    per_stage: Counter[str] = field(default_factory=Counter)
    tokens: dict[str, StageUsage] = field(default_factory=dict)
    retry_reasons: list[str] = field(default_factory=list)
    """Why attempts were retried, in order (``proposal: ParseError: ...``)."""
    notes: dict[str, Any] = field(default_factory=dict)
    """What stages record about how they produced the update, by stage key (``proposer``: the
    token-probability proposer's valid-label mass, or the fallback it took); JSON-ready values.
    Becomes the update's ``provenance.notes`` (the ``notes`` of its ``updates.jsonl`` line)."""

    def count_call(self, stage: str) -> int:
        """Count one model call of ``stage``; returns its attempt number within the stage (1, 2 ...)."""
        self.calls += 1
        self.per_stage[stage] += 1
        return self.per_stage[stage]

    def add_tokens(self, stage: str, usage: StageUsage) -> None:
        """Add the tokens one call of ``stage`` used."""
        self.tokens[stage] = self.tokens.get(stage, StageUsage()) + usage

    def note_retry(self, stage: str, error: BaseException) -> None:
        """Record that ``stage`` is retried because of ``error`` (one line)."""
        first_line = (str(error).splitlines() or [""])[0][:200]
        self.retry_reasons.append(f"{stage}: {type(error).__name__}: {first_line}".rstrip(": "))


@dataclass(frozen=True)
class StageContext:
    """What a stage factory gets: the run's choices and the shared resources of one explorer.

    :param spec: the action spec, with the task's action labels.
    :param prompt_set: the prompt set of the run (templates, task view, control arm).
    :param task: the task description shown to the model.
    :param config: the whole ``explorer`` section of the run configuration.
    :param seed: the run's seed (derive any randomness of your own from it).
    :param models: the LLM, per stage; ``None`` when the prompt set calls no LLM (``random``).
    :param retry: the retry policy (``explorer.max_attempts``, exponential backoff).
    :param parsers: the registered parsers (see :meth:`parser`).
    """

    spec: ActionSpec
    prompt_set: PromptSet
    task: TaskDescription
    config: ExplorerConfig
    seed: int = 0
    models: StageModels | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    parsers: Catalogue | None = None

    def require_models(self, who: str) -> StageModels:
        """The models, or a clear error for a stage that needs an LLM when there is none."""
        if self.models is None:
            raise RuntimeError(f"{who} needs an LLM, but prompt set {self.prompt_set.id!r} calls none")
        return self.models

    def parser(self, name: str = "default", options: Mapping[str, Any] | None = None) -> Parser:
        """Build the registered parser ``name`` with ``options`` (raises ``UnknownNameError``)."""
        if self.parsers is None:
            raise RuntimeError("this context has no parser catalogue")
        factory = self.parsers.get(name)
        check_options(PARSER, name, self.parsers.owner(name), factory, options or {})
        parser: Parser = factory(self, **dict(options or {}))
        check_stage(PARSER, parser, name, self.parsers.owner(name))
        return parser


def check_options(kind: StageKind, name: str, owner: str, factory: Callable[..., Any],
                  options: Mapping[str, Any]) -> None:
    """Raise ``UsageError`` when ``factory(context, **options)`` would not accept ``options``."""
    from .errors import UsageError

    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin or C callable: let the call itself decide
        return
    try:
        signature.bind(None, **options)
    except TypeError:
        params = list(signature.parameters.values())[1:]
        accepted = option_names(factory) or []
        required = [p.name for p in params if p.default is p.empty
                    and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        problem = (f"needs option(s) {sorted(set(required) - set(options))}" if set(required) - set(options)
                   else f"does not accept option(s) {sorted(set(options) - set(accepted))}")
        raise UsageError(f"{kind.key} {name!r} (from plugin {owner!r}) {problem}; "
                         f"it accepts: {', '.join(accepted) or 'no options'}") from None


def option_names(factory: Callable[..., Any]) -> list[str] | None:
    """The options ``factory(context, **options)`` takes by name; ``None`` when it cannot be told
    (no signature, or ``**kwargs``)."""
    try:
        params = list(inspect.signature(factory).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def describe(factory: object) -> str:
    """The first line of a factory's docstring (what ``llm-explorer plugins`` shows)."""
    doc = inspect.getdoc(factory) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""
