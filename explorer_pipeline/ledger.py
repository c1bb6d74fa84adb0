"""A study-wide LLM ledger: the tokens and USD that all runs of a study spent, against the study's
limits.

A run's :class:`~explorer_pipeline.budget.Budget` keeps its own counters (and its own limits,
``explorer.budget``); with a ledger it also charges every finished request to the ledger and
stops asking once the *study's* limit is reached (stop reasons ``study_tokens``/``study_cost``).
The seam is :class:`Ledger`; two implementations:

- :class:`LocalLedger`: in memory, thread-safe, for runs of one process;
- :class:`FileLedger`: a JSON file guarded by an exclusive ``fcntl`` lock, for runs in several
  processes of one machine (or on a filesystem with working POSIX locks). The study creates it
  with its limits (:meth:`FileLedger.create`); each run names it in ``explorer.budget.ledger``.

A cluster study can back the same interface with an actor (one ``charge`` call per finished
request). The ledger records what was really spent: a run resumed from a checkpoint does not
take back what it charged after that checkpoint.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = ["FileLedger", "Ledger", "LocalLedger", "exhausted_reason"]


@runtime_checkable
class Ledger(Protocol):
    """What a run's budget needs of a study-wide ledger."""

    def charge(self, input_tokens: int, output_tokens: int, cost_usd: float | None) -> None:
        """Add one finished request's tokens and cost (``None``: the run has no price)."""

    def totals(self) -> dict[str, Any]:
        """``max_tokens``, ``max_cost_usd`` (``None``: no limit), ``input_tokens``,
        ``output_tokens``, ``cost_usd`` and ``requests`` so far, for the whole study."""


def exhausted_reason(totals: dict[str, Any]) -> str | None:
    """``study_tokens`` or ``study_cost`` when that study-wide limit is reached, else None."""
    tokens = int(totals.get("input_tokens", 0)) + int(totals.get("output_tokens", 0))
    if totals.get("max_tokens") is not None and tokens >= totals["max_tokens"]:
        return "study_tokens"
    if totals.get("max_cost_usd") is not None and float(totals.get("cost_usd", 0.0)) >= totals["max_cost_usd"]:
        return "study_cost"
    return None


def _empty(max_tokens: int | None, max_cost_usd: float | None) -> dict[str, Any]:
    if max_tokens is not None and max_tokens <= 0:
        raise ValueError(f"a study's max_tokens must be > 0, got {max_tokens}")
    if max_cost_usd is not None and not max_cost_usd > 0:
        raise ValueError(f"a study's max_cost_usd must be > 0, got {max_cost_usd}")
    return {"max_tokens": max_tokens, "max_cost_usd": max_cost_usd, "input_tokens": 0, "output_tokens": 0,
            "cost_usd": 0.0, "requests": 0}


def _add(totals: dict[str, Any], input_tokens: int, output_tokens: int, cost_usd: float | None) -> None:
    totals["input_tokens"] += int(input_tokens)
    totals["output_tokens"] += int(output_tokens)
    totals["cost_usd"] = round(float(totals["cost_usd"]) + float(cost_usd or 0.0), 9)
    totals["requests"] += 1


class LocalLedger:
    """A ledger in this process's memory.

    :param max_tokens: the study's limit on input plus output tokens (``None``: none).
    :param max_cost_usd: the study's limit in USD (``None``: none).
    """

    def __init__(self, max_tokens: int | None = None, max_cost_usd: float | None = None) -> None:
        self._totals = _empty(max_tokens, max_cost_usd)
        self._lock = threading.Lock()

    def charge(self, input_tokens: int, output_tokens: int, cost_usd: float | None) -> None:
        """Add one finished request."""
        with self._lock:
            _add(self._totals, input_tokens, output_tokens, cost_usd)

    def totals(self) -> dict[str, Any]:
        """A copy of the totals."""
        with self._lock:
            return dict(self._totals)


class FileLedger:
    """A ledger in a JSON file, shared by processes through an exclusive lock on ``PATH.lock``.

    :param path: the ledger file; it must exist (:meth:`create`), so that a mistyped path in a
        run's configuration is an error, not a fresh ledger without limits.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"no study ledger at {str(self.path)!r}; the study creates it (FileLedger.create)")
        self.totals()  # readable now, not at the first charge

    @classmethod
    def create(cls, path: str | Path, max_tokens: int | None = None, max_cost_usd: float | None = None, *,
               exist_ok: bool = True) -> FileLedger:
        """Create the ledger file with the study's limits (an existing one is kept when
        ``exist_ok``: a resumed study goes on with what it spent)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        ledger = cls.__new__(cls)
        ledger.path = path
        with ledger._locked():
            if path.is_file():
                if not exist_ok:
                    raise ValueError(f"a study ledger exists at {str(path)!r}")
            else:
                ledger._write(_empty(max_tokens, max_cost_usd))
        return ledger

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(f"{self.path}.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read(self) -> dict[str, Any]:
        try:
            totals = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"the study ledger {str(self.path)!r} cannot be read: {exc}") from None
        if not isinstance(totals, dict):
            raise ValueError(f"the study ledger {str(self.path)!r} is not a JSON object")
        return {**_empty(None, None), **totals}

    def _write(self, totals: dict[str, Any]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(totals, indent=1), encoding="utf-8")
        os.replace(tmp, self.path)  # readers see the old totals or the new, never half of them

    def charge(self, input_tokens: int, output_tokens: int, cost_usd: float | None) -> None:
        """Add one finished request, under the lock."""
        with self._locked():
            totals = self._read()
            _add(totals, input_tokens, output_tokens, cost_usd)
            self._write(totals)

    def totals(self) -> dict[str, Any]:
        """The totals as the file holds them now."""
        return self._read()
