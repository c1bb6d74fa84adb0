"""What a user chooses about the LLM side of a run (:class:`ExplorerConfig`), and how a setting
says where else it appears (:class:`Setting`).

Every setting is declared once, as a field of a configuration model: its type and bounds
(pydantic), its help (the attribute docstring) and, in ``Annotated`` metadata, a :class:`Setting`
naming its command-line flag and its ablation-spec shortcut. The ``llm-explorer train`` options and
the spec's shortcut fields are generated from these declarations (:func:`settings` lists them), so
adding a setting is one edit: the field.

Importing this module is cheap (pydantic and the budget's model only): a run without an LLM
needs it, and must not load LangChain or the provider layer.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo

from .budget import BudgetConfig

__all__ = ["NO_PROVIDER", "STRUCTURED_METHODS", "ExplorerConfig", "Setting", "SettingInfo", "StageChoice", "settings"]

NO_PROVIDER = "none"
"""The provider name that means: no LLM, the algorithm's own exploration (the baseline)."""

STRUCTURED_METHODS = ("json_schema", "function_calling", "json_object_schema", "grammar", "none")
"""Stage-2 constraint methods a provider may support (``explorer.structured_output``)."""


# --------------------------------------------------------------------------- setting metadata
@dataclass(frozen=True)
class Setting:
    """Where a configuration field appears besides the configuration file, as ``Annotated``
    metadata::

        every_k: Annotated[int, Setting(flag="--k", shortcut="k", metavar="K")] = Field(1, ge=1)
        \"\"\"K: request an exploration update every K finished training episodes.\"\"\"

    The field's type, bounds and docstring give the flag's type, the help text and the range it
    accepts; the configuration model validates the value (one source of truth).
    """

    flag: str | None = None
    """The ``llm-explorer train`` option (``--k``); None: settable with ``--set`` only."""
    shortcut: str | None = None
    """The field of an ablation spec's base or arm (``k``); None: through ``config:`` only."""
    metavar: str | None = None
    """The placeholder in ``--help`` (``K``, ``URL``); default: from the type."""
    default: str | None = None
    """The default as ``--help`` states it where it is not the model's own (``the preset's``)."""


@dataclass(frozen=True)
class SettingInfo:
    """One declared setting, found by :func:`settings`."""

    path: tuple[str, ...]
    """Key path in the configuration (``("explorer", "every_k")``)."""
    field: FieldInfo
    """The pydantic field: annotation, default, description (the docstring), constraints."""
    setting: Setting

    @property
    def key(self) -> str:
        """The dotted key (``explorer.every_k``), as ``--set`` and error messages name it."""
        return ".".join(self.path)

    @property
    def value_type(self) -> Any:
        """The field's type without ``None`` (``int`` for ``int | None``)."""
        return _without_none(self.field.annotation)

    @property
    def constraints(self) -> list[Any]:
        """The field's validation metadata (``Ge(1)``, ``Le(2.0)`` ...), the :class:`Setting` left out."""
        return [m for m in self.field.metadata if not isinstance(m, Setting)]

    def bounds(self) -> str:
        """The range in words (``>= 1``, ``>= 0.0 and <= 2.0``; empty when unbounded)."""
        words = []
        for item in self.constraints:
            for name, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
                value = getattr(item, name, None)
                if value is not None:
                    words.append(f"{sign} {value}")
        return " and ".join(words)

    def help(self) -> str:
        """The docstring as one paragraph of plain text (reST's double backquotes dropped)."""
        text = re.sub(r"``([^`]*)``", r"\1", self.field.description or "")
        return " ".join(text.split())

    def choices(self) -> tuple[str, ...] | None:
        """The allowed values of a ``Literal`` field, else None."""
        kind = self.value_type
        return tuple(str(v) for v in typing.get_args(kind)) if typing.get_origin(kind) is Literal else None

    def default_text(self) -> str | None:
        """The default as ``--help`` states it (None: none worth stating)."""
        if self.setting.default is not None:
            return self.setting.default
        default = self.field.get_default(call_default_factory=True)
        if default is None or default == {} or self.field.is_required():
            return None
        return str(default)


def _without_none(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def settings(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[SettingInfo]:
    """Every field of ``model`` and of its nested section models that carries a :class:`Setting`,
    in declaration order, with its key path."""
    for name, info in model.model_fields.items():
        path = (*prefix, name)
        marker = next((m for m in info.metadata if isinstance(m, Setting)), None)
        if marker is not None:
            yield SettingInfo(path, info, marker)
        nested = info.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            yield from settings(nested, path)


# --------------------------------------------------------------------------- the explorer section
class StageChoice(BaseModel):
    """Which registered implementation runs a stage, and the options its factory gets.

    In YAML either a mapping (``{name: mine, options: {window: 5}}``) or just the name
    (``summariser: mine``). ``llm-explorer plugins`` lists the implementations of every stage.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, use_attribute_docstrings=True)

    name: str = Field("default", min_length=1)
    """A registered implementation name; the built-in one of every stage is ``default``."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Keyword options for the implementation's factory (which ones it takes: its documentation,
    or the error that lists them when an unknown one is given)."""

    @model_validator(mode="before")
    @classmethod
    def _name_alone(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class ExplorerConfig(BaseModel):
    """Everything a user chooses about the LLM side of a run: the ``explorer`` section of a run
    configuration. Frozen; unknown keys are rejected; every bound is checked on construction
    (``pydantic.ValidationError``), so a bad value never reaches the pipeline.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, use_attribute_docstrings=True)

    provider: Annotated[str, Setting(flag="--provider", shortcut="provider", metavar="NAME",
                                     default="local if installed, else scripted")] = "scripted"
    """A registered provider name (``llm-explorer plugins`` lists them: local, openai, scripted, ...),
    or ``none`` for the baseline: the algorithm's own exploration, no LLM."""
    model: Annotated[str | None, Setting(flag="--model", shortcut="model", metavar="NAME")] = None
    """Model name (``openai``) or GGUF path (``local``); None: the provider's default."""
    base_url: Annotated[str | None, Setting(flag="--base-url", shortcut="base_url", metavar="URL")] = None
    """Endpoint of an OpenAI-compatible server (``openai`` provider)."""
    prompt_set: Annotated[str, Setting(flag="--prompt-set", shortcut="prompt_set", metavar="ID")] = "paper"
    """A registered prompt-set id (paper, name-only, single-stage, shuffled, random, frozen, ...)."""
    task_description: Annotated[str | None, Setting(flag="--task-description", shortcut="task_description",
                                                    metavar="TEXT|@FILE")] = None
    """Overrides the registered task description: the text itself, or ``@path`` to a file (in a
    spec, relative to the spec file); needed for environments without a built-in one."""
    every_k: Annotated[int, Setting(flag="--k", shortcut="k", metavar="K")] = Field(1, ge=1)
    """K: request an exploration update every K finished training episodes."""
    sample_m: Annotated[int, Setting(flag="--m", shortcut="m", metavar="M")] = Field(100, ge=1)
    """M: actions sampled at even intervals from the episode for the prompt (the default summariser's
    setting)."""
    temperature: Annotated[float, Setting(flag="--temperature", shortcut="temperature", metavar="T")] = \
        Field(0.0, ge=0.0, le=2.0)
    """Sampling temperature of the LLM (the paper uses 0)."""
    mode: Annotated[Literal["async", "blocking"], Setting(flag="--mode", shortcut="mode")] = "async"
    """``async`` never waits for the LLM; ``blocking`` waits for the update after each requested
    episode (paper parity), at most ``request_timeout_s``."""
    call_timeout_s: float = Field(60.0, gt=0)
    """Limit for one model call, seconds (``--llm-timeout`` sets it and ``request_timeout_s``)."""
    request_timeout_s: float = Field(180.0, gt=0)
    """Limit for one whole request (both stages and every retry), seconds."""
    max_attempts: int = Field(3, ge=1)
    """Model calls per stage before a request fails (a reply that does not parse is retried); the
    retry policy every stage gets in its context."""
    max_tokens_analysis: int = Field(200, ge=1)
    """Output-token cap of stage 1 (the learning-status summary)."""
    max_tokens_proposal: int = Field(120, ge=1)
    """Output-token cap of stage 2 (the distribution or bias)."""
    structured_output: str | None = None
    """Stage-2 constraint method (one of the provider's); None: the strictest it supports."""
    provider_options: Annotated[dict[str, str], Setting(flag="--option", shortcut="options")] = \
        Field(default_factory=dict)
    """Provider-specific ``KEY=VALUE`` options (numbers and booleans are turned into text; repeat the
    flag for several; a spec's arm merges them key by key over the base's)."""
    response_cache: Annotated[Path | None, Setting(flag="--response-cache", shortcut="response_cache",
                                                   metavar="PATH")] = None
    """SQLite file caching LLM responses (in a spec, relative to the spec file)."""
    replay: Annotated[bool, Setting(flag="--replay", shortcut="replay")] = False
    """Answer only from ``response_cache`` (offline reproduction of the same answers)."""
    summariser: StageChoice = Field(default_factory=StageChoice)
    """The trajectory summariser (episode -> prompt variables). The built-in ``default`` shows
    ``sample_m`` actions; option ``window``: how many recent returns it shows (10)."""
    analyser: StageChoice = Field(default_factory=StageChoice)
    """Stage 1, run for two-stage prompt sets. The built-in ``default`` is the LangChain analysis
    chain (template -> model -> cleaned text, transient errors retried); option ``max_chars``: the
    reply is cut to that many characters before stage 2 and the exchange log see it (4000)."""
    proposer: StageChoice = Field(default_factory=StageChoice)
    """Stage 2. The built-in ``default`` calls the model, reads the reply with a parser and retries
    (``max_attempts``); options ``parser`` (a registered parser, ``default``), ``parser_options``
    (a mapping), ``reprompt`` (show the model its unreadable answer and the error; true). Also
    built in: ``token-probabilities`` (one label asked, the distribution read from the first answer
    token's log-probabilities, averaged over label orders) and ``auto`` (that where the provider
    returns log-probabilities, else ``default``); see docs/plugin_hooks.md."""
    validator: StageChoice = Field(default_factory=StageChoice)
    """The validator (proposed numbers -> the values the collector sees). The built-in ``default``
    applies ``floor`` and ``max_bias``; option ``legal``: a static action mask (one boolean per action)."""
    floor: float = Field(0.05, ge=0.0, le=1.0)
    """Share of uniform mixed into every discrete distribution, so every action stays explorable
    (the default validator's setting; other validators may read it)."""
    max_bias: float = Field(0.5, gt=0.0, le=2.0)
    """Largest |bias| applied, normalised action units (1 = half the action range; the default
    validator's setting)."""
    apply_fraction: float = Field(1.0, ge=0.0, le=1.0)
    """Probability that a continuous step gets the LLM bias (1.0: every step, as in the paper)."""
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    """Limits on the LLM's tokens (``max_tokens``) and cost (``max_cost_usd`` at ``price``, USD per
    million input / output tokens) for the run; once one is reached no more updates are asked for
    and the update in force stays (docs/runs.md, *Budget*)."""
    exchange_log: Path | None = Field(None, exclude=True)
    """JSON-lines file of every request and response (keys redacted); set by the run directory."""

    @field_validator("provider_options", mode="before")
    @classmethod
    def _options_as_text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): ("true" if v is True else "false" if v is False else str(v)) for k, v in value.items()}
        return value

    @field_validator("structured_output")
    @classmethod
    def _known_method(cls, value: str | None) -> str | None:
        if value is not None and value not in STRUCTURED_METHODS:
            raise ValueError(f"{value!r} is not one of {', '.join(STRUCTURED_METHODS)}")
        return value

    @field_validator("replay")
    @classmethod
    def _replay_needs_cache(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("response_cache") is None:
            raise ValueError("replay needs a response_cache file (--response-cache)")
        return value

    @property
    def enabled(self) -> bool:
        """False for the baseline (``provider: none``)."""
        return self.provider != NO_PROVIDER
