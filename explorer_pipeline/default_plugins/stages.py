"""Registers the built-in implementation of every stage (and the default parser) as ``default``.

Exactly what a third-party plugin does: one catalogue hook per stage, each registering a factory
``factory(context, **options)``. The first line of a factory's docstring is what
``llm-explorer plugins`` shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..analysis import ChainAnalyser
from ..hookspecs import hookimpl
from ..parsing import DefaultParser
from ..proposal import ParsingProposer
from ..stages import StageContext
from ..summariser import DefaultSummariser
from ..validation import DefaultValidator


def default_summariser(context: StageContext, *, window: int = 10) -> DefaultSummariser:
    """Episode return, `sample_m` evenly spaced actions, recent returns and their trend, action histogram."""
    return DefaultSummariser(m=context.config.sample_m, window=window)


def default_analyser(context: StageContext) -> ChainAnalyser:
    """The LangChain analysis chain: stage-1 template -> model -> cleaned text; transient errors retried."""
    return ChainAnalyser(context)


def default_proposer(context: StageContext, *, parser: str = "default",
                     parser_options: Mapping[str, Any] | None = None, reprompt: bool = True) -> ParsingProposer:
    """Model call (structured output where supported), a registered parser, retries with a re-prompt."""
    if not isinstance(parser_options, Mapping | None):
        raise ValueError(f"parser_options must be a mapping, got {parser_options!r}")
    return ParsingProposer(context, context.parser(parser, parser_options), reprompt=reprompt)


def default_validator(context: StageContext, *, legal: Sequence[bool] | None = None) -> DefaultValidator:
    """Finite, one value per action; distributions renormalised with a `floor`, biases clipped to `max_bias`."""
    if legal is not None and len(legal) != context.spec.n:
        raise ValueError(f"legal needs one boolean per action ({context.spec.n}), got {len(legal)}")
    return DefaultValidator(floor=context.config.floor, max_bias=context.config.max_bias, legal=legal)


def default_parser(context: StageContext) -> DefaultParser:
    """JSON first (keys naming the update kind), then `i: p` pairs, then exactly n bare numbers."""
    return DefaultParser()


@hookimpl
def register_summarisers(register):
    """Register the built-in summariser as ``default``."""
    register("default", default_summariser)


@hookimpl
def register_analysers(register):
    """Register the built-in analyser as ``default``."""
    register("default", default_analyser)


@hookimpl
def register_proposers(register):
    """Register the built-in proposer as ``default``."""
    register("default", default_proposer)


@hookimpl
def register_validators(register):
    """Register the built-in validator as ``default``."""
    register("default", default_validator)


@hookimpl
def register_parsers(register):
    """Register the built-in parser as ``default``."""
    register("default", default_parser)
