"""Stage-2 proposals read from token probabilities instead of text.

The model is asked for *one label*, and the proposal is read from the log-probabilities of the
first answer token over the labels: no parsing, one output token per call, and every answer is
usable (a reply that starts with anything but a label just puts less probability on the labels,
which is recorded).

Discrete actions (``n`` actions, labels ``A, B, ...``):

1. For each label order (a cyclic shift ``s``), the options are listed as ``A. <action s>``,
   ``B. <action s+1>`` ... (indices mod ``n``). The prompt set's stage-2 template is rendered with
   that list as ``$output_format``; everything the template puts before it is the same for every
   order, so a server that reuses prompt prefixes evaluates it once.
2. ``r_s(j)``: the probability that the first answer token is label ``j`` (token variants that
   differ only by surrounding whitespace are added up). Its sum over the labels is the order's
   *valid mass*: how much of the model's answer was an answer to the question.
3. ``q_s(a) = r_s((a - s) mod n) / valid mass``: the order's distribution over actions.
4. The orders are averaged: arithmetically (default), or geometrically (``average: geometric``,
   which cancels a multiplicative position prior exactly). Small models favour a position (often
   the first); with every cyclic shift each action sits at each position once, so that
   preference is spread evenly instead of landing on whichever action happened to be listed
   first.
5. ``sharpen_temperature`` T sharpens (``< 1``) or flattens (``> 1``) the result: ``p ∝ p^(1/T)``
   (not the LLM's sampling temperature, ``explorer.temperature``).

Continuous actions: each dimension is asked separately which of a few signed *levels* (default
``-1, -0.5, 0, 0.5, 1``, normalised units) exploration should push it by, with the same label
orders over the levels, and the dimension's bias is the expected level.

Providers declare whether they return log-probabilities
(:meth:`~explorer_pipeline.providers.Provider.logprobs_unsupported`); the first reply is also
checked. Where they do not, ``fallback: error`` fails (a one-line usage error when the explorer
is built) and ``fallback: text`` uses the text proposer instead, recording why in every update's
``notes``.
"""

from __future__ import annotations

import asyncio
import math
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable

from ..errors import ParseError
from ..llm import StageModels, retrying, to_messages
from ..providers import ProviderSettings
from ..stages import Request, StageContext
from ..types import ActionSpec
from .proposal import ParsingProposer

NAME = "token-probabilities"
LETTERS: tuple[str, ...] = tuple(string.ascii_uppercase)
DEFAULT_LEVELS: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0)
AVERAGES = ("arithmetic", "geometric")
FALLBACKS = ("error", "text")
_LOG_FLOOR = 1e-9  # probabilities below this count as this in a geometric average


class LogprobsUnavailable(RuntimeError):
    """A reply came back without token log-probabilities (the provider ignored the request)."""


# --------------------------------------------------------------------------- reading one reply


def first_token_top_logprobs(message: BaseMessage) -> list[tuple[str, float]]:
    """The ``(token, logprob)`` candidates for the first answer token of ``message``, from
    OpenAI's format in ``response_metadata["logprobs"]``; :class:`LogprobsUnavailable` if absent."""
    logprobs = (getattr(message, "response_metadata", None) or {}).get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, Mapping) else None
    if not content:
        raise LogprobsUnavailable("the reply carried no token log-probabilities")
    first = content[0]
    top = first.get("top_logprobs") or [{"token": first.get("token", ""), "logprob": first.get("logprob")}]
    pairs = []
    for entry in top:
        logprob = entry.get("logprob")
        if logprob is not None and math.isfinite(float(logprob)):
            pairs.append((str(entry.get("token", "")), float(logprob)))
    if not pairs:
        raise LogprobsUnavailable("the reply's first token had no finite log-probabilities")
    return pairs


def label_probabilities(candidates: Sequence[tuple[str, float]], labels: Sequence[str]) -> list[float]:
    """The probability of each label being the first answer token (0 where it is not among the
    candidates); tokens are compared without surrounding whitespace, and variants summed."""
    index = {label: i for i, label in enumerate(labels)}
    mass = [0.0] * len(labels)
    for token, logprob in candidates:
        i = index.get(token.strip())
        if i is not None:
            mass[i] += math.exp(logprob)
    return mass


# --------------------------------------------------------------------------- the arithmetic


def label_orders(permutations: str | int, n: int) -> tuple[int, ...]:
    """The cyclic shifts to ask: all ``n`` (``cyclic``), none but the listed order (``none``), or
    ``k`` evenly spaced ones (an int ``1 <= k <= n``)."""
    if permutations == "cyclic":
        return tuple(range(n))
    if permutations == "none":
        return (0,)
    if isinstance(permutations, bool) or not isinstance(permutations, int | str) or not str(permutations).isdigit():
        raise ValueError(f"permutations must be 'cyclic', 'none' or a count of label orders, got {permutations!r}")
    k = int(permutations)
    if not 1 <= k <= n:
        raise ValueError(f"permutations must be between 1 and the number of options ({n}), got {k}")
    return tuple(i * n // k for i in range(k))


@dataclass(frozen=True)
class Combined:
    """The label orders of one question, combined.

    :param probabilities: per option (action or level), after averaging and temperature.
    :param valid_mass: per order, the first-token probability that fell on a label.
    :param spread: mean total-variation distance between each order's distribution and their average.
    :param position_preference: the average share of each label position (A, B, ...) over the
        orders: how much the model favours a position whatever it shows there.
    """

    probabilities: tuple[float, ...]
    valid_mass: tuple[float, ...]
    spread: float
    position_preference: tuple[float, ...]


def combine(readings: Sequence[tuple[int, Sequence[float]]], *, average: str = "arithmetic",
            temperature: float = 1.0) -> Combined:
    """Combine ``(shift, label probabilities by position)`` readings of one question.

    An order whose labels got no probability at all is left out; :class:`ParseError` when every
    order was. See the module docstring for the formulas.
    """
    n = len(readings[0][1])
    masses = tuple(sum(r) for _, r in readings)
    used = [(shift, [x / mass for x in r]) for (shift, r), mass in zip(readings, masses, strict=True) if mass > 0]
    if not used:
        raise ParseError("no answer started with one of the labels: the model did not answer the question")
    per_order = [[by_position[(a - shift) % n] for a in range(n)] for shift, by_position in used]
    mean = [sum(q[a] for q in per_order) / len(per_order) for a in range(n)]
    if average == "geometric":
        logs = [sum(math.log(max(q[a], _LOG_FLOOR)) for q in per_order) / len(per_order) for a in range(n)]
        top = max(logs)
        weights = [math.exp(x - top) for x in logs]
        total = sum(weights)
        averaged = [w / total for w in weights]
    else:
        averaged = mean
    spread = sum(0.5 * sum(abs(q[a] - mean[a]) for a in range(n)) for q in per_order) / len(per_order)
    preference = [sum(by_position[j] for _, by_position in used) / len(used) for j in range(n)]
    return Combined(tuple(sharpen(averaged, temperature)), masses, spread, tuple(preference))


def sharpen(probabilities: Sequence[float], temperature: float) -> list[float]:
    """``p^(1/T)``, renormalised: ``T < 1`` sharpens, ``T > 1`` flattens, ``T = 1`` leaves ``p``."""
    if temperature == 1.0:
        return list(probabilities)
    logs = [math.log(p) / temperature if p > 0 else -math.inf for p in probabilities]
    top = max(logs)
    weights = [math.exp(x - top) if x > -math.inf else 0.0 for x in logs]
    total = sum(weights)
    return [w / total for w in weights]


def expected_level(probabilities: Sequence[float], levels: Sequence[float]) -> float:
    """The bias of one dimension: the expected level."""
    return round(sum(p * v for p, v in zip(probabilities, levels, strict=True)), 12)


# --------------------------------------------------------------------------- the questions


def _answer_line(labels: Sequence[str]) -> str:
    # short on purpose: the smallest models answer a short instruction with a label far more often
    if all(label in LETTERS for label in labels):
        return "Answer with one letter."
    return f"Answer with one of: {', '.join(labels)}."


def action_question(spec: ActionSpec, labels: Sequence[str], shift: int) -> str:
    """The ``$output_format`` of one label order for discrete actions."""
    n = spec.n
    options = "\n".join(f"{labels[j]}. {spec.labels[(j + shift) % n]}" for j in range(n))
    return f"Which action should exploration try most often?\n{options}\n{_answer_line(labels[:n])}"


def level_text(level: float, largest: float) -> str:
    """``push it up strongly (+1)``: what a level means, in words and normalised units."""
    if level == 0:
        return "leave it alone (0)"
    direction = "up" if level > 0 else "down"
    strength = "strongly" if abs(level) >= 0.75 * largest else "a little"
    return f"push it {direction} {strength} ({level:+g})"


def level_question(spec: ActionSpec, dim: int, levels: Sequence[float], labels: Sequence[str], shift: int) -> str:
    """The ``$output_format`` of one label order for one continuous dimension."""
    k = len(levels)
    largest = max(abs(v) for v in levels) or 1.0
    options = "\n".join(f"{labels[j]}. {level_text(levels[(j + shift) % k], largest)}" for j in range(k))
    return (f"Action dimension {dim + 1} of {spec.n}: {spec.labels[dim]}.\n"
            f"How should exploration push this dimension?\n{options}\n{_answer_line(labels[:k])}")


# --------------------------------------------------------------------------- the proposer


def logprobs_problem(context: StageContext) -> str | None:
    """Why this run's provider gives no token log-probabilities (``None``: it does, or no
    provider is known yet and the first reply will tell). What the provider declares comes first;
    then what its preflight found by asking the server (``provider_check["logprobs"]``)."""
    models = context.models
    if models is None or models.provider_impl is None:
        return None
    declared = models.provider_impl.logprobs_unsupported(models.settings or ProviderSettings())
    if declared is not None:
        return declared
    check = models.provider_check or {}
    if check.get("logprobs") is False and check.get("logprobs_probed"):
        where = check.get("base_url") or models.provider
        return f"the server at {where} returned no token log-probabilities when the preflight asked for them"
    return None


class TokenProbabilityProposer:
    """Stage 2 from the first answer token's log-probabilities (see the module docstring).

    :param context: the run's :class:`~explorer_pipeline.stages.StageContext`.
    :param permutations: label orders to average: ``cyclic`` (all shifts), ``none``, or a count.
    :param sharpen_temperature: T of ``p^(1/T)`` applied to the result (< 1 sharpens, > 1 flattens;
        unrelated to the LLM's sampling temperature).
    :param labels: the option labels, one token each (default ``A, B, C ...``).
    :param levels: the signed levels offered per continuous dimension (normalised units).
    :param min_valid_mass: below this average first-token probability on the labels the request
        fails as ``parse_error`` (0: every answer is used).
    :param average: ``arithmetic`` or ``geometric`` mean over the label orders.
    :param top_logprobs: how many first-token candidates to ask for (OpenAI allows up to 20).
    :param concurrency: model calls in flight at once (1: one after the other, which suits a
        single local model best).
    :param text_fallback: used when the provider gives no log-probabilities; ``None``: fail.
    :param unavailable: why the provider gives none, when that is already known.
    :param name: the registered name, recorded in the notes.
    """

    def __init__(self, context: StageContext, *, permutations: str | int = "cyclic",
                 sharpen_temperature: float = 1.0,
                 labels: Sequence[str] | None = None, levels: Sequence[float] = DEFAULT_LEVELS,
                 min_valid_mass: float = 0.0, average: str = "arithmetic", top_logprobs: int = 20,
                 concurrency: int = 1, text_fallback: ParsingProposer | None = None,
                 unavailable: str | None = None, name: str = NAME) -> None:
        spec = context.spec
        labels = tuple(str(label) for label in (labels if labels is not None else LETTERS))
        levels = tuple(float(v) for v in levels)
        options = spec.n if spec.is_discrete else len(levels)
        if len(set(labels)) != len(labels) or any(not label or label != label.strip() for label in labels):
            raise ValueError(f"labels must be distinct, non-empty and without surrounding spaces, got {list(labels)}")
        if len(labels) < options:
            raise ValueError(f"{options} options need as many labels, got {len(labels)}")
        if not spec.is_discrete and (len(levels) < 2 or len(set(levels)) != len(levels)
                                     or not all(math.isfinite(v) for v in levels)):
            raise ValueError(f"levels must be at least two distinct finite numbers, got {list(levels)}")
        if not (isinstance(sharpen_temperature, int | float) and math.isfinite(sharpen_temperature)
                and sharpen_temperature > 0):
            raise ValueError(f"sharpen_temperature must be a finite number > 0, got {sharpen_temperature!r}")
        if not 0.0 <= float(min_valid_mass) <= 1.0:
            raise ValueError(f"min_valid_mass must be between 0 and 1, got {min_valid_mass!r}")
        if average not in AVERAGES:
            raise ValueError(f"average must be one of {', '.join(AVERAGES)}, got {average!r}")
        if int(top_logprobs) < 1 or int(concurrency) < 1:
            raise ValueError(f"top_logprobs and concurrency must be >= 1, got {top_logprobs!r}, {concurrency!r}")
        self.context, self.name = context, name
        self.shifts = label_orders(permutations, options)
        self.sharpen_temperature, self.labels, self.levels = float(sharpen_temperature), labels[:options], levels
        self.min_valid_mass, self.average = float(min_valid_mass), average
        self.top_logprobs, self.concurrency = int(top_logprobs), int(concurrency)
        self.text_fallback, self.unavailable = text_fallback, unavailable
        self._runnable: Runnable[Any, Any] | None = None

    # ------------------------------------------------------------------ state (checkpoints)
    def get_state(self) -> dict[str, Any]:
        """Why the provider gives no log-probabilities, once a request found out (from then on
        every request takes the fallback): :class:`~explorer_pipeline.state.Stateful`."""
        return {"unavailable": self.unavailable}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`get_state`'s result."""
        self.unavailable = state["unavailable"]

    # ------------------------------------------------------------------ stage 2
    async def propose(self, variables: Mapping[str, str], request: Request) -> list[float]:
        """``spec.n`` probabilities or biases read from first-token probabilities; the text
        proposer's answer instead (noted) when the provider gives none and a fallback is set."""
        if self.unavailable is not None and self.text_fallback is not None:
            return await self._fall_back(variables, request)
        try:
            if self.context.spec.is_discrete:
                return await self._discrete(variables, request)
            return await self._continuous(variables, request)
        except LogprobsUnavailable as exc:
            provider = self.context.models.provider if self.context.models is not None else "?"
            self.unavailable = f"provider {provider!r}: {exc}"
            if self.text_fallback is None:
                raise LogprobsUnavailable(f"{self.unavailable}; proposer {self.name!r} needs them") from None
            return await self._fall_back(variables, request)

    async def _fall_back(self, variables: Mapping[str, str], request: Request) -> list[float]:
        request.notes["proposer"] = {"name": "default", "requested": self.name, "fallback": self.unavailable}
        assert self.text_fallback is not None
        return await self.text_fallback.propose(variables, request)

    async def _discrete(self, variables: Mapping[str, str], request: Request) -> list[float]:
        spec = self.context.spec
        questions = [action_question(spec, self.labels, s) for s in self.shifts]
        readings = await self._ask_all(variables, questions, request)
        combined = combine(list(zip(self.shifts, readings, strict=True)), average=self.average,
                           temperature=self.sharpen_temperature)
        self._check_mass(combined.valid_mass)
        # what the listed order alone would have given: the measure of what averaging changed
        listed = (combine([(0, readings[0])], temperature=self.sharpen_temperature).probabilities
                  if sum(readings[0]) > 0 else None)
        request.notes["proposer"] = {
            **self._common_notes(combined.valid_mass),
            "spread": round(combined.spread, 4),
            "position_preference": [round(x, 4) for x in combined.position_preference],
            "listed_order": [round(x, 4) for x in listed] if listed is not None else None,
        }
        return list(combined.probabilities)

    async def _continuous(self, variables: Mapping[str, str], request: Request) -> list[float]:
        spec = self.context.spec
        questions = [level_question(spec, d, self.levels, self.labels, s) for d in range(spec.n) for s in self.shifts]
        readings = await self._ask_all(variables, questions, request)
        k = len(self.shifts)
        per_dim = [combine(list(zip(self.shifts, readings[d * k:(d + 1) * k], strict=True)),
                           average=self.average, temperature=self.sharpen_temperature) for d in range(spec.n)]
        masses = tuple(m for c in per_dim for m in c.valid_mass)
        self._check_mass(masses)
        request.notes["proposer"] = {
            **self._common_notes(masses),
            "spread": round(sum(c.spread for c in per_dim) / len(per_dim), 4),
            "levels": list(self.levels),
            "level_probabilities": [[round(p, 4) for p in c.probabilities] for c in per_dim],
        }
        return [expected_level(c.probabilities, self.levels) for c in per_dim]

    def _common_notes(self, masses: Sequence[float]) -> dict[str, Any]:
        return {"name": self.name, "orders": len(self.shifts), "calls": len(masses),
                "valid_mass": round(sum(masses) / len(masses), 4), "valid_mass_min": round(min(masses), 4)}

    def _check_mass(self, masses: Sequence[float]) -> None:
        mean = sum(masses) / len(masses)
        if mean < self.min_valid_mass:
            raise ParseError(f"only {mean:.1%} of the first-token probability fell on the labels "
                             f"(min_valid_mass {self.min_valid_mass:g}): the model was not answering the question")

    # ------------------------------------------------------------------ model calls
    def _model(self, models: StageModels) -> Runnable[Any, Any]:
        if self._runnable is None:
            spec = self.context.spec
            if models.provider_impl is not None and models.chat_model is not None:
                settings = models.settings or ProviderSettings()
                self._runnable = models.provider_impl.logprob_model(models.chat_model, settings, spec,
                                                                    self.top_logprobs)
            else:  # bare runnables (tests): OpenAI's keyword arguments on the proposal runnable
                self._runnable = models.runnable("proposal").bind(logprobs=True, top_logprobs=self.top_logprobs,
                                                                  max_tokens=1)
        return self._runnable

    async def _ask_all(self, variables: Mapping[str, str], questions: Sequence[str],
                       request: Request) -> list[list[float]]:
        models = self.context.require_models(f"proposer {self.name!r}")
        template = self.context.prompt_set.proposal_for(self.context.spec.update_kind)
        runnable = self._model(models)
        limit = asyncio.Semaphore(self.concurrency)
        options = len(self.labels)

        async def ask(question: str) -> list[float]:
            messages = to_messages(template.render({**variables, "output_format": question}))
            async with limit:
                async for attempt in retrying(self.context.retry, models.transient_errors, request, "proposal"):
                    with attempt:
                        reply = await models.invoke("proposal", messages, request, runnable=runnable)
            return label_probabilities(first_token_top_logprobs(reply), self.labels[:options])

        if self.concurrency == 1:
            return [await ask(question) for question in questions]
        return list(await asyncio.gather(*(ask(question) for question in questions)))
