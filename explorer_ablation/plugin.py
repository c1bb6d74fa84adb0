"""The ``ablation`` plugin: adds ``llm-explorer ablate`` and ``llm-explorer report``.

Registered through the ``llm_explorer`` entry-point group, as the Tianshou side registers
``train``. Loading it imports click only; the runner, Ray and the statistics load when a
command runs.
"""

from __future__ import annotations

from typing import Any

from explorer_pipeline import hookimpl

from .cli import ablate, report


@hookimpl
def register_commands(cli: Any) -> None:
    """Add ``ablate`` and ``report``."""
    cli.add_command(ablate)
    cli.add_command(report)
