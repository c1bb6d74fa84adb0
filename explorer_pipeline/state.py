"""The state protocol: what a part of the explorer carries from one request to the next, as data.

A checkpoint (``train --resume``) must put every random generator and counter back where it
stood, or a resumed run computes something else than an uninterrupted one would. Nothing finds
that state by looking inside objects: each part that holds some says so by implementing
:class:`Stateful`, and its owner collects it.

- :class:`~explorer_pipeline.runtime.ExplorerRuntime` collects its counters, recent episodes,
  the cache, the budget and its request handler's state, all in one turn of its event loop.
- :class:`~explorer_pipeline.pipeline.ExplorationPipeline` (the handler) collects the state of
  each stage that implements the protocol (under the stage's key: ``summariser``, ``analyser``,
  ``proposer``, ``validator``), of its control arm, and of the chat model (the scripted model
  counts its calls).
- A stage that does not implement it is stateless: nothing of it is saved, and a resumed run
  builds it afresh from the configuration. A stage that holds state it cannot save (an open
  connection, a process) implements the protocol for what it can save and documents the rest.

``get_state`` returns plain, picklable data that shares nothing with the live object (copy what
is mutable); ``set_state`` is called with what ``get_state`` returned, on a freshly built object
of the same configuration, before the runtime starts. Built-in stages without state inherit
:class:`Stateless`, which states that explicitly.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["Stateful", "Stateless", "state_of"]


@runtime_checkable
class Stateful(Protocol):
    """An object whose state a checkpoint saves and restores (see the module docstring)."""

    def get_state(self) -> dict[str, Any]:
        """Everything that changes from request to request, as plain data (copied, picklable)."""
        ...

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from what :meth:`get_state` returned (on a freshly built, not yet started object)."""
        ...


class Stateless:
    """A part that carries nothing from one request to the next: its state is empty."""

    def get_state(self) -> dict[str, Any]:
        """Nothing: this part holds no state."""
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        """Nothing to restore."""


def state_of(obj: object) -> dict[str, Any] | None:
    """``obj.get_state()`` when ``obj`` implements :class:`Stateful`; None for a stateless object."""
    return obj.get_state() if isinstance(obj, Stateful) else None
