"""The exploration cache: the only thing the collector reads on its per-step path."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from .types import ActionSpec, ExplorationUpdate


class ExplorationCache:
    """Holds the latest valid :class:`ExplorationUpdate` as an immutable snapshot.

    ``current()`` is one attribute read (atomic under the GIL), so readers never lock. Writers
    (the pipeline thread) serialise through a small lock only to keep versions monotonic. A
    reader that reads ``current()`` once per batch never mixes two updates.

    The cache is shared by reference: ``copy.deepcopy`` returns the same object, so frameworks
    that deep-copy their configuration (Tianshou's high-level API does) keep a live handle.
    """

    def __init__(self, spec: ActionSpec, default: ExplorationUpdate | None = None) -> None:
        self.spec = spec
        self.default = default or ExplorationUpdate.default_for(spec)
        self._current = self.default
        self._lock = threading.Lock()
        self._applied_at: dict[int, int] = {}

    def current(self) -> ExplorationUpdate:
        """The update in force (the default until the first valid update is published)."""
        return self._current

    def publish(self, update: ExplorationUpdate) -> ExplorationUpdate:
        """Make ``update`` current. Its version must be newer than the one in force.

        The update must already be validated: the cache only checks its kind and length.
        """
        expected = self.spec.update_kind
        if update.kind != expected or len(update.values) != self.spec.n:
            raise ValueError(
                f"update kind/length {update.kind}/{len(update.values)} does not match the action "
                f"spec ({expected}/{self.spec.n})"
            )
        with self._lock:
            if update.version <= self._current.version:
                raise ValueError(f"update version {update.version} is not newer than {self._current.version}")
            self._current = update
        return update

    def next_version(self) -> int:
        """The version number the next published update must have (at least)."""
        return self._current.version + 1

    def mark_applied(self, version: int, env_step: int) -> bool:
        """Record the first env step at which ``version`` was used. True the first time."""
        if version in self._applied_at:
            return False
        self._applied_at[version] = env_step
        return True

    def applied_at(self, version: int) -> int | None:
        """The env step at which ``version`` was first used; None while it has not been."""
        return self._applied_at.get(version)

    # ------------------------------------------------------------------ checkpoints
    def get_state(self) -> dict[str, Any]:
        """What a checkpoint needs to rebuild this cache: the update in force and the env step
        at which each version was first applied. Plain data (picklable); nothing is shared."""
        return {"current": self._current, "applied_at": dict(self._applied_at)}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`get_state`'s snapshot (before the collector and the pipeline use the cache)."""
        current = state["current"]
        if current.kind != self.spec.update_kind or len(current.values) != self.spec.n:
            raise ValueError(f"the saved update ({current.kind}/{len(current.values)}) does not fit this cache's "
                             f"action spec ({self.spec.update_kind}/{self.spec.n})")
        with self._lock:
            self._current = current
            self._applied_at = {int(v): int(s) for v, s in state["applied_at"].items()}

    def __deepcopy__(self, memo: dict[int, Any]) -> ExplorationCache:
        return self
