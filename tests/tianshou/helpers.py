"""Test doubles for the Tianshou integration tests: a fake request handler and a recording runtime."""

from __future__ import annotations

from collections.abc import Sequence

from explorer_pipeline.types import EpisodeRecord, ExplorationUpdate, RequestFailure


class FakeHandler:
    """Answers every request with the same values (or a failure), like a perfectly obedient LLM."""

    def __init__(self, kind: str, values: Sequence[float], fail_every: int = 0) -> None:
        self.kind, self.values, self.fail_every = kind, tuple(values), fail_every
        self.records: list[EpisodeRecord] = []

    async def handle(self, record: EpisodeRecord, history: Sequence[EpisodeRecord], version: int):
        self.records.append(record)
        if self.fail_every and len(self.records) % self.fail_every == 0:
            return RequestFailure("parse_error", "fake failure", record.episode_index, 1, 0.0)
        return ExplorationUpdate(version=version, kind=self.kind, values=self.values, source="llm")  # type: ignore[arg-type]


class RecordingRuntime:
    """Stands in for ExplorerRuntime: keeps what the tap submits."""

    def __init__(self, raise_on_submit: bool = False, wait_result: object = "ok") -> None:
        self.submitted: list[EpisodeRecord] = []
        self.waited: list[tuple[EpisodeRecord, float | None]] = []
        self.raise_on_submit = raise_on_submit
        self.wait_result = wait_result

    def submit(self, record: EpisodeRecord) -> None:
        if self.raise_on_submit:
            raise RuntimeError("runtime is broken")
        self.submitted.append(record)

    def submit_and_wait(self, record: EpisodeRecord, timeout: float | None = None):
        self.waited.append((record, timeout))
        return self.wait_result
