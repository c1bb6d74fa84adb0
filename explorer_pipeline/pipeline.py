"""One request, stage by stage: summarise -> analyse -> propose -> validate.

:class:`ExplorationPipeline` implements the runtime's ``RequestHandler``. It only wires the
stages together: each stage is a registered implementation (:mod:`explorer_pipeline.stages`),
chosen in the run configuration. It never raises for anything a stage, the model or the network
does: every failure becomes a :class:`RequestFailure` with a reason, and nothing reaches the
cache. The prompt set's control arm (``shuffled``, ``random``, ``frozen``) is applied around the
stages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import controls
from .errors import ParseError, PromptError, ValidationRejected
from .llm import RetryPolicy
from .stages import STAGES, Analyser, Proposer, Request, StageContext, Summariser, Validator
from .state import Stateful, state_of
from .types import ActionSpec, EpisodeRecord, ExplorationUpdate, Provenance, RequestFailure, UpdateSource

__all__ = ["ExplorationPipeline", "RetryPolicy", "output_format"]

log = logging.getLogger(__name__)


class _StageBug(Exception):
    """A pure stage (summariser, validator) raised something other than its documented errors."""

    def __init__(self, stage: str, obj: object, error: Exception) -> None:
        super().__init__(f"{stage} {type(obj).__name__} raised {type(error).__name__}: {error}")


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


class ExplorationPipeline:
    """The asyncio request pipeline. Build it with :func:`explorer_pipeline.session.open_explorer`,
    or with :func:`explorer_pipeline.session.build_pipeline` from a context (tests do, with fake
    chat models).

    :param context: the run's stage context (spec, prompt set, task, models, seed).
    :param summariser: episode -> prompt variables.
    :param analyser: stage 1, called for two-stage prompt sets only.
    :param proposer: stage 2 (model call, parsing, retries).
    :param validator: proposed numbers -> the values of an update.
    """

    def __init__(self, *, context: StageContext, summariser: Summariser, analyser: Analyser, proposer: Proposer,
                 validator: Validator) -> None:
        self.context = context
        self.spec, self.prompt_set, self.task = context.spec, context.prompt_set, context.task
        self.summariser, self.analyser, self.proposer, self.validator = summariser, analyser, proposer, validator
        models = context.models
        self.provider = models.provider if models is not None else "none"
        self.model = models.model if models is not None else ""
        self.template_hash = self.prompt_set.template_hash()
        self.control = controls.make_control(self.prompt_set, self.spec, np.random.default_rng(context.seed))

    # ------------------------------------------------------------------ state (checkpoints)
    def get_state(self) -> dict[str, Any]:
        """What the pipeline carries from one request to the next (:mod:`explorer_pipeline.state`):
        ``stages``, the state of each stage that implements :class:`~explorer_pipeline.state.Stateful`
        (by stage key; the others are stateless), ``control``, the control arm's, and ``model``,
        the chat model's (when it implements the protocol: the scripted model counts its calls)."""
        stages = {kind.key: getattr(self, kind.key) for kind in STAGES}
        models = self.context.models
        return {"stages": {key: stage.get_state() for key, stage in stages.items() if isinstance(stage, Stateful)},
                "control": self.control.get_state() if self.control is not None else None,
                "model": state_of(models.chat_model) if models is not None else None}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state`'s result into a freshly built pipeline of the same configuration.
        A saved part this pipeline has no stateful counterpart for is logged and left out."""
        missing = []
        for key, saved in state["stages"].items():
            stage = getattr(self, key, None)
            if isinstance(stage, Stateful):
                stage.set_state(saved)
            else:
                missing.append(key)
        for name, target, saved in (("control", self.control, state["control"]),
                                    ("model", self.context.models.chat_model if self.context.models else None,
                                     state["model"])):
            if saved is None:
                continue
            if isinstance(target, Stateful):
                target.set_state(saved)
            else:
                missing.append(name)
        if missing:
            log.warning("the explorer pipeline has changed; not restored: %s", ", ".join(missing))

    # ------------------------------------------------------------------ RequestHandler
    async def handle(self, record: EpisodeRecord, history: Sequence[EpisodeRecord],
                     version: int) -> ExplorationUpdate | RequestFailure | None:
        """Run the stages for ``record``: an update, a failure with its reason, or ``None`` (frozen)."""
        started = time.perf_counter()
        request = Request(record, tuple(history))
        if self.control is not None and self.control.skip_llm():
            values = self.control.values()
            if values is None:
                return None  # frozen: the first answer stays in force; nothing to do
            return self._update(version, values, "control", request, started, "")
        analysis = ""
        try:
            variables = self._variables(record, history)
            if self.prompt_set.two_stage:
                analysis = await self.analyser.analyse(variables, request)
            proposed = await self.proposer.propose({**variables, "analysis": analysis}, request)
            values = self._validate(proposed)
        except _StageBug as exc:
            log.error("%s", exc, exc_info=exc.__cause__)
            return self._failure("stage_error", str(exc), request, started)
        except ParseError as exc:
            return self._failure("parse_error", str(exc), request, started)
        except ValidationRejected as exc:
            return self._failure(f"validation:{exc.reason}", exc.detail, request, started)
        except PromptError as exc:
            return self._failure("prompt_error", str(exc), request, started)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # provider errors: HTTP, connection, auth, replay miss ...
            return self._failure("provider_error", f"{type(exc).__name__}: {exc}", request, started)
        source: UpdateSource = "llm"
        if self.control is not None:
            values = self.control.transform(tuple(values))
            source = "control"
        return self._update(version, values, source, request, started, analysis)

    def _variables(self, record: EpisodeRecord, history: Sequence[EpisodeRecord]) -> dict[str, str]:
        try:
            variables = dict(self.summariser.summarise(record, history, self.spec))
        except Exception as exc:
            raise _StageBug("summariser", self.summariser, exc) from exc
        variables["task_title"] = self.task.title
        variables["task_description"] = (self.task.description if self.prompt_set.task_view == "full"
                                         else f"The task is {self.task.title}.")
        variables["output_format"] = output_format(self.spec)
        return variables

    def _validate(self, proposed: Sequence[float]) -> tuple[float, ...]:
        try:
            return tuple(self.validator.validate(proposed, self.spec))
        except ValidationRejected:
            raise
        except Exception as exc:
            raise _StageBug("validator", self.validator, exc) from exc

    # ------------------------------------------------------------------ results
    def _provenance(self, request: Request, started: float, analysis: str = "") -> Provenance:
        return Provenance(
            source_episode=request.record.episode_index, latency_s=time.perf_counter() - started,
            tokens=dict(request.tokens), provider=self.provider, model=self.model,
            prompt_set=self.prompt_set.id, template_hash=self.template_hash,
            attempts=request.calls, retry_reasons=tuple(request.retry_reasons), analysis=analysis[:2000],
            notes=dict(request.notes),
        )

    def _update(self, version: int, values: Sequence[float], source: UpdateSource, request: Request, started: float,
                analysis: str) -> ExplorationUpdate:
        return ExplorationUpdate(version=version, kind=self.spec.update_kind, values=tuple(values),
                                 source=source, provenance=self._provenance(request, started, analysis))

    def _failure(self, reason: str, detail: str, request: Request, started: float) -> RequestFailure:
        return RequestFailure(reason=reason, detail=detail.splitlines()[0][:500] if detail else reason,
                              source_episode=request.record.episode_index, attempts=request.calls,
                              latency_s=time.perf_counter() - started, tokens=dict(request.tokens))

