"""Exceptions. Messages are shown to users: each names the bad value and what is allowed."""

from __future__ import annotations

from collections.abc import Iterable


class ExplorerError(Exception):
    """Base class for every error this package raises on purpose."""


class UsageError(ExplorerError):
    """Bad input from a user (CLI option, config, name). The CLI exits with status 2."""


class UnknownNameError(UsageError, KeyError):
    """A provider, prompt set, stage or task that no plugin registered."""

    def __init__(self, what: str, name: str, known: Iterable[str]) -> None:
        known = sorted(known)
        listing = ", ".join(known) if known else "none registered"
        super().__init__(f"unknown {what} {name!r}; available: {listing}")
        self.what, self.name, self.known = what, name, known

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateRegistrationError(ExplorerError):
    """Two plugins registered the same name in one catalogue."""


class PromptError(UsageError):
    """A prompt set is malformed, or uses variables it does not declare."""


class ParseError(ExplorerError):
    """The model's reply could not be read as the expected numbers. Retried with the error."""


class ValidationRejected(ExplorerError):
    """Parsed numbers broke a validation rule. ``reason`` is a short counter key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class ProviderError(ExplorerError):
    """A provider failed in a way that is not worth retrying (bad config, missing key)."""


class ReplayMissError(ProviderError):
    """Replay mode found no recorded response for a request."""
