"""Registers the built-in implementation of every stage (and the default parser) as ``default``,
and the token-probability proposers ``token-probabilities`` and ``auto``.

Exactly what a third-party plugin does: one catalogue hook per stage, each registering a factory
``factory(context, **options)``. The first line of a factory's docstring is what
``llm-explorer plugins`` shows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..hookspecs import hookimpl
from ..stages import StageContext
from .analysis import DEFAULT_MAX_CHARS, ChainAnalyser
from .logprob_proposer import DEFAULT_LEVELS, FALLBACKS, TokenProbabilityProposer, logprobs_problem
from .parsing import DefaultParser
from .proposal import ParsingProposer
from .summariser import DefaultSummariser
from .validation import DefaultValidator


def default_summariser(context: StageContext, *, window: int = 10) -> DefaultSummariser:
    """Episode return, `sample_m` evenly spaced actions, recent returns and their trend, action histogram."""
    return DefaultSummariser(m=context.config.sample_m, window=window)


def default_analyser(context: StageContext, *, max_chars: int = DEFAULT_MAX_CHARS) -> ChainAnalyser:
    """The LangChain analysis chain: stage-1 template -> model -> text cut to `max_chars` and cleaned; retried."""
    return ChainAnalyser(context, max_chars=max_chars)


def default_proposer(context: StageContext, *, parser: str = "default",
                     parser_options: Mapping[str, Any] | None = None, reprompt: bool = True) -> ParsingProposer:
    """Model call (structured output where supported), a registered parser, retries with a re-prompt."""
    if not isinstance(parser_options, Mapping | None):
        raise ValueError(f"parser_options must be a mapping, got {parser_options!r}")
    return ParsingProposer(context, context.parser(parser, parser_options), reprompt=reprompt)


def _token_probabilities(context: StageContext, name: str, fallback: str, options: dict[str, Any]
                          ) -> TokenProbabilityProposer:
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {', '.join(FALLBACKS)}, got {fallback!r}")
    problem = logprobs_problem(context)
    if problem is not None and fallback == "error":
        raise ValueError(f"{problem}; choose a provider that does, or proposer 'auto' (text proposals instead)")
    text = ParsingProposer(context, context.parser("default")) if fallback == "text" else None
    return TokenProbabilityProposer(context, **options, text_fallback=text, unavailable=problem, name=name)


def token_probabilities_proposer(
    context: StageContext, *, permutations: str | int = "cyclic", sharpen_temperature: float = 1.0,
    labels: Sequence[str] | None = None, levels: Sequence[float] = DEFAULT_LEVELS, min_valid_mass: float = 0.0,
    average: str = "arithmetic", top_logprobs: int = 20, concurrency: int = 1, fallback: str = "error",
) -> TokenProbabilityProposer:
    """One label asked; the first answer token's probabilities over the labels, averaged over label orders."""
    options = {"permutations": permutations, "sharpen_temperature": sharpen_temperature, "labels": labels,
               "levels": levels,
               "min_valid_mass": min_valid_mass, "average": average, "top_logprobs": top_logprobs,
               "concurrency": concurrency}
    return _token_probabilities(context, "token-probabilities", fallback, options)


def auto_proposer(
    context: StageContext, *, permutations: str | int = "cyclic", sharpen_temperature: float = 1.0,
    labels: Sequence[str] | None = None, levels: Sequence[float] = DEFAULT_LEVELS, min_valid_mass: float = 0.0,
    average: str = "arithmetic", top_logprobs: int = 20, concurrency: int = 1,
) -> TokenProbabilityProposer:
    """`token-probabilities` where the provider gives log-probabilities, else the text proposer (noted)."""
    options = {"permutations": permutations, "sharpen_temperature": sharpen_temperature, "labels": labels,
               "levels": levels,
               "min_valid_mass": min_valid_mass, "average": average, "top_logprobs": top_logprobs,
               "concurrency": concurrency}
    return _token_probabilities(context, "auto", "text", options)


def default_validator(context: StageContext, *, legal: Sequence[bool] | None = None) -> DefaultValidator:
    """Finite, one value per action; distributions renormalised with a `floor`, biases clipped to `max_bias`."""
    if legal is not None and len(legal) != context.spec.n:
        raise ValueError(f"legal needs one boolean per action ({context.spec.n}), got {len(legal)}")
    return DefaultValidator(floor=context.config.floor, max_bias=context.config.max_bias, legal=legal)


def default_parser(context: StageContext) -> DefaultParser:
    """JSON first (keys naming the update kind), then `i: p` pairs, then exactly n bare numbers."""
    return DefaultParser()


@hookimpl
def register_summarisers(register: Callable[..., None]) -> None:
    """Register the built-in summariser as ``default``."""
    register("default", default_summariser)


@hookimpl
def register_analysers(register: Callable[..., None]) -> None:
    """Register the built-in analyser as ``default``."""
    register("default", default_analyser)


@hookimpl
def register_proposers(register: Callable[..., None]) -> None:
    """Register the built-in text proposer as ``default``, and ``token-probabilities`` and ``auto``."""
    register("default", default_proposer)
    register("token-probabilities", token_probabilities_proposer)
    register("auto", auto_proposer)


@hookimpl
def register_validators(register: Callable[..., None]) -> None:
    """Register the built-in validator as ``default``."""
    register("default", default_validator)


@hookimpl
def register_parsers(register: Callable[..., None]) -> None:
    """Register the built-in parser as ``default``."""
    register("default", default_parser)
