"""The contracts of the pluggable stages. Implementations are registered through hooks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .types import ActionSpec, EpisodeRecord


@runtime_checkable
class Summariser(Protocol):
    """Turns the last episode (and recent ones) into prompt variables.

    Runs on the pipeline thread; must be pure and cheap. Returns a mapping with every name in
    :data:`explorer_pipeline.prompts.EPISODE_VARIABLES` except the task variables
    (``task_title``, ``task_description``), which the pipeline adds.
    """

    def summarise(
        self, record: EpisodeRecord, history: Sequence[EpisodeRecord], spec: ActionSpec
    ) -> dict[str, str]: ...


@runtime_checkable
class Parser(Protocol):
    """Reads ``spec.n`` numbers out of a model reply, or raises ``ParseError``."""

    def parse(self, text: str, spec: ActionSpec) -> list[float]: ...


@runtime_checkable
class Validator(Protocol):
    """Turns parsed numbers into the values of an update, or raises ``ValidationRejected``."""

    def validate(self, values: Sequence[float], spec: ActionSpec) -> tuple[float, ...]: ...
