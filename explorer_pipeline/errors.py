"""Exceptions. Messages are shown to users: each names the bad value and what is allowed.

:class:`BadInput` is the one way a command line reports bad input: every ``llm-explorer``
command raises it (the top-level group also turns a :class:`UsageError` that reaches it into
one), so bad input always ends the same way: ``Error: <message>`` on stderr, no traceback,
exit status 2.
"""

from __future__ import annotations

from collections.abc import Iterable

import click

#: The exit status of bad input (click's own usage errors exit with it too).
EXIT_BAD_INPUT = 2


class ExplorerError(Exception):
    """Base class for every error this package raises on purpose."""


class UsageError(ExplorerError):
    """Bad input from a user (CLI option, config, name). The CLI exits with status 2."""


class BadInput(click.ClickException):
    """Bad input at the command line: ``Error: <message>`` on stderr, exit status 2.

    Raise it from a command, or ``raise BadInput.from_error(exc) from None`` for a caught
    :class:`UsageError`. The message may span several lines (a spec with several problems).
    """

    exit_code = EXIT_BAD_INPUT

    @classmethod
    def from_error(cls, exc: BaseException) -> BadInput:
        """The same message as ``exc``, as bad input."""
        return cls(str(exc))


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


class BadReply(ParseError):
    """A reply refused before it is read: larger than the reply cap (``too_large``) or not valid
    UTF-8 (``invalid_utf8``). Counted like a reply that does not parse (``parse_error``); the
    reply itself is never used nor logged.

    :param reason: ``too_large`` or ``invalid_utf8``.
    :param detail: one line: what was wrong and the limit.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"reply refused ({reason}): {detail}")
        self.reason, self.detail = reason, detail


class ValidationRejected(ExplorerError):
    """Parsed numbers broke a validation rule. ``reason`` is a short counter key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class ProviderError(ExplorerError):
    """A provider failed in a way that is not worth retrying (bad config, missing key)."""


class ReplayMissError(ProviderError):
    """Replay mode found no recorded response for a request."""
