"""Asking the train command what it accepts, before a study starts.

``TRAIN --help`` is run once; the options it lists (and, when its help names them, the
algorithms) let a spec that uses an option the train command lacks fail with exit status 2 and
the spec location, instead of failing every run of an arm later.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import UsageError

__all__ = ["TrainInterface", "probe"]

HELP_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class TrainInterface:
    """What a train command accepts. ``algorithms`` is None when its help does not list them."""

    flags: frozenset[str]
    algorithms: tuple[str, ...] | None = None

    @classmethod
    def from_help(cls, text: str) -> TrainInterface:
        flags = frozenset(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))
        return cls(flags, _algorithms(text))


def _algorithms(text: str) -> tuple[str, ...] | None:
    """``--algo ... One of: a, b, c.`` (this project's train) or a click choice ``[a|b|c]``."""
    match = re.search(r"--algo\b(.*?)(?=\n\s*--|\Z)", text, flags=re.S)
    if not match:
        return None
    block = " ".join(match.group(1).split())
    listed = re.search(r"[Oo]ne of:?\s*([a-z0-9_, -]+)", block)
    if listed:
        names = tuple(n.strip() for n in listed.group(1).split(",") if n.strip())
        return names or None
    choice = re.search(r"\[([a-z0-9_-]+(?:\|[a-z0-9_-]+)+)\]", block)
    return tuple(choice.group(1).split("|")) if choice else None


def probe(command: Sequence[str]) -> TrainInterface:
    """Run ``COMMAND --help``. Raises :class:`UsageError` when the command does not work."""
    try:
        done = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=HELP_TIMEOUT_S,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"the train command {' '.join(command)!r} cannot run: {exc}") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise UsageError(f"the train command {' '.join(command)!r} does not work (exit {done.returncode} for --help): "
                         + " / ".join(tail))
    return TrainInterface.from_help(done.stdout)
