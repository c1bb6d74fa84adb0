"""The ``ablation`` plugin: adds ``llm-explorer ablate``, ``llm-explorer report`` and ``llm-explorer status``.

Registered through the ``llm_explorer`` entry-point group, as the Tianshou side registers
``train``. Loading it imports click only; the runner, Ray and the statistics load when a
command runs.
"""

from __future__ import annotations

from typing import Any

from explorer_pipeline import hookimpl

from .cli import ablate, report, status
from .offline.cli import eval_advice, scenarios


@hookimpl
def register_commands(cli: Any) -> None:
    """Add ``ablate``, ``report`` and ``status``."""
    cli.add_command(ablate)
    cli.add_command(report)
    cli.add_command(status)
    cli.add_command(scenarios)
    cli.add_command(eval_advice)
