"""A run's LLM budget: a limit on tokens and, with a price, on cost.

:class:`BudgetConfig` is ``explorer.budget`` in the run configuration; :class:`Budget` does the
accounting on the runtime's loop thread. Every finished request (an update or a failure) adds the
tokens it spent; once a limit is reached the runtime asks no more (:class:`~explorer_pipeline.runtime.ExplorerRuntime`),
the update in force stays, and :attr:`Budget.stop` records once when and why. A request already
running when the limit is crossed finishes and is applied, so a run may exceed its limit by at
most that one request.

A study's runs can also share one account (``explorer.budget.ledger``, a
:class:`~explorer_pipeline.ledger.Ledger`): every finished request is charged to it too, and its
limits stop every run of the study (stop reasons ``study_tokens``, ``study_cost``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import UsageError
from .ledger import FileLedger, Ledger, exhausted_reason
from .types import EpisodeRecord, StageUsage

log = logging.getLogger(__name__)

__all__ = ["Budget", "BudgetConfig", "Price", "stop_message"]

_PER = 1e6  # prices are per million tokens


class Price(BaseModel):
    """USD per million tokens (the shape of an ablation spec's ``prices:`` entries)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    input: float = Field(ge=0.0)
    """USD per million input (prompt) tokens."""
    output: float = Field(ge=0.0)
    """USD per million output (completion) tokens."""

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        """What ``input_tokens`` and ``output_tokens`` cost, in USD."""
        return (input_tokens * self.input + output_tokens * self.output) / _PER


class BudgetConfig(BaseModel):
    """``explorer.budget``: limits on what the LLM may spend in one run. Unset limits do not apply;
    with none set, tokens (and, with a price, cost) are only counted."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, use_attribute_docstrings=True)

    max_tokens: int | None = Field(None, gt=0)
    """Input plus output tokens of every LLM call in the run (all stages, retries and failed
    requests included); None: no limit."""
    max_cost_usd: float | None = Field(None, gt=0.0)
    """Cost of those tokens in USD at ``price``; None: no limit. Needs ``price``."""
    price: Price | None = None
    """USD per million tokens, ``{input: ..., output: ...}``, as in an ablation spec's ``prices:``
    table; also gives the run's cost in its summary."""
    # left out of the dumped configuration while unset, so that configurations and checkpoints
    # written before the ledger existed keep their identity
    ledger: Path | None = Field(None, exclude_if=lambda value: value is None)
    """A study's ledger file (:class:`~explorer_pipeline.ledger.FileLedger`, created by the study
    with the study's limits): every request of this run is charged to it too, and its limits stop
    this run like its own; None: the run's budget is its own."""

    @model_validator(mode="after")
    def _cost_needs_a_price(self) -> BudgetConfig:
        if self.max_cost_usd is not None:
            if self.price is None:
                raise ValueError("max_cost_usd needs a price: set explorer.budget.price.input and "
                                 "explorer.budget.price.output (USD per million tokens)")
            if self.price.input == 0 and self.price.output == 0:
                raise ValueError("max_cost_usd can never be reached at a price of 0 for input and output tokens")
        return self

    @property
    def limited(self) -> bool:
        """A token or cost limit is set."""
        return self.max_tokens is not None or self.max_cost_usd is not None


class Budget:
    """The accounting of one run against a :class:`BudgetConfig`. Used on one thread (the runtime's
    loop thread); :attr:`stop` may be read from any thread."""

    def __init__(self, config: BudgetConfig | None = None, ledger: Ledger | None = None) -> None:
        self.config = config or BudgetConfig()
        if ledger is None and self.config.ledger is not None:
            try:
                ledger = FileLedger(self.config.ledger)
            except ValueError as exc:
                raise UsageError(f"explorer.budget.ledger: {exc}") from None
        self.ledger = ledger
        """The study-wide ledger this run charges too (None: none)."""
        if ledger is not None and ledger.totals().get("max_cost_usd") is not None and self.config.price is None:
            raise UsageError("the study's ledger limits cost (max_cost_usd), but this run has no price: set "
                             "explorer.budget.price.input and .output (USD per million tokens)")
        self.input_tokens = 0
        self.output_tokens = 0
        self.stop: dict[str, Any] | None = None
        """Set once, when a limit is reached: ``reason`` (``tokens`` or ``cost``), ``limit``,
        ``spent_tokens``, ``spent_cost_usd``, ``episode`` and ``env_step`` (of the newest episode
        the runtime had received), ``time`` (UTC, ISO 8601)."""

    @property
    def spent_tokens(self) -> int:
        """Input plus output tokens so far."""
        return self.input_tokens + self.output_tokens

    @property
    def spent_cost_usd(self) -> float | None:
        """Cost so far in USD; None without a price."""
        price = self.config.price
        return None if price is None else price.cost_usd(self.input_tokens, self.output_tokens)

    def add(self, tokens: Mapping[str, StageUsage]) -> None:
        """Add one finished request's tokens (by stage), and charge them to the ledger."""
        spent_in = sum(usage.input_tokens for usage in tokens.values())
        spent_out = sum(usage.output_tokens for usage in tokens.values())
        self.input_tokens += spent_in
        self.output_tokens += spent_out
        if self.ledger is not None:
            price = self.config.price
            self.ledger.charge(spent_in, spent_out, None if price is None else price.cost_usd(spent_in, spent_out))

    def exhausted(self) -> str | None:
        """``tokens`` or ``cost`` when this run's limit is reached, ``study_tokens`` or
        ``study_cost`` when the ledger's is, else None."""
        c = self.config
        if c.max_tokens is not None and self.spent_tokens >= c.max_tokens:
            return "tokens"
        cost = self.spent_cost_usd
        if c.max_cost_usd is not None and cost is not None and cost >= c.max_cost_usd:
            return "cost"
        return exhausted_reason(self.ledger.totals()) if self.ledger is not None else None

    def check(self, at: EpisodeRecord | None) -> bool:
        """True when no more requests may start. The first time a limit is found reached, record
        :attr:`stop` with the episode ``at`` (the newest one received)."""
        if self.stop is not None:
            return True
        reason = self.exhausted()
        if reason is None:
            return False
        cost = self.spent_cost_usd
        limits = {"tokens": self.config.max_tokens, "cost": self.config.max_cost_usd}
        if reason.startswith("study_") and self.ledger is not None:
            study = self.ledger.totals()
            limits = {"study_tokens": study.get("max_tokens"), "study_cost": study.get("max_cost_usd")}
        self.stop = {
            "reason": reason,
            "limit": limits[reason],
            "spent_tokens": self.spent_tokens,
            "spent_cost_usd": None if cost is None else round(cost, 6),
            "episode": at.episode_index if at is not None else None,
            "env_step": at.env_step if at is not None else None,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        log.warning("%s: no more exploration requests; the update in force stays", stop_message(self.summary()))
        return True

    # ------------------------------------------------------------------ checkpoints and summary
    def get_state(self) -> dict[str, Any]:
        """The spent counters and the stop record, for a checkpoint."""
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "stop": dict(self.stop) if self.stop is not None else None}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`get_state`'s result: a resumed run goes on with what is left."""
        self.input_tokens = int(state.get("input_tokens", 0))
        self.output_tokens = int(state.get("output_tokens", 0))
        stop = state.get("stop")
        self.stop = dict(stop) if stop is not None else None

    def summary(self) -> dict[str, Any]:
        """The run summary's ``budget`` entry: the limits, what was spent, and the stop record (or None)."""
        c = self.config
        cost = self.spent_cost_usd
        return {
            "max_tokens": c.max_tokens,
            "max_cost_usd": c.max_cost_usd,
            "price": c.price.model_dump() if c.price is not None else None,
            "spent_tokens": self.spent_tokens,
            "spent_input_tokens": self.input_tokens,
            "spent_output_tokens": self.output_tokens,
            "spent_cost_usd": None if cost is None else round(cost, 6),
            "stop": dict(self.stop) if self.stop is not None else None,
            **({"study": self.ledger.totals()} if self.ledger is not None else {}),
        }


def stop_message(budget: Mapping[str, Any] | None) -> str | None:
    """``LLM budget reached at episode 57, env step 1234 (tokens 10120/10000)`` for a summary's
    ``budget`` entry whose limit was reached; None otherwise."""
    stop = (budget or {}).get("stop")
    if not stop:
        return None
    where = []
    if stop.get("episode") is not None:
        where.append(f"episode {stop['episode']}")
    if stop.get("env_step") is not None:
        where.append(f"env step {stop['env_step']}")
    at = f" at {', '.join(where)}" if where else ""
    if stop.get("reason") in ("study_tokens", "study_cost"):
        return f"the study's LLM budget reached{at} ({stop['reason'].removeprefix('study_')} limit {stop.get('limit')})"
    if stop.get("reason") == "cost":
        spent = f"${stop.get('spent_cost_usd') or 0:.4g}/${stop.get('limit'):.4g}"
        return f"LLM budget reached{at} (cost {spent})"
    return f"LLM budget reached{at} (tokens {stop.get('spent_tokens')}/{stop.get('limit')})"
