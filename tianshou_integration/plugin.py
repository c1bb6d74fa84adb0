"""The ``tianshou`` plugin: adds ``llm-explorer train`` to the command line.

Registered through the ``llm_explorer`` entry-point group like any third-party plugin. Loading
it imports click only; torch and Tianshou load when ``train`` runs.
"""

from __future__ import annotations

from typing import Any

from explorer_pipeline import hookimpl

from .cli import train


@hookimpl
def register_commands(cli: Any) -> None:
    """Add ``train``."""
    cli.add_command(train)
