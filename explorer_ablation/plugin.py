"""The ``ablation`` plugin: adds ``llm-explorer ablate``, ``llm-explorer report`` and ``llm-explorer status``
(and ``scenarios``, ``eval-advice``), and the ``reference-control`` proposer of offline evaluation.

Registered through the ``llm_explorer`` entry-point group, as the Tianshou side registers
``train``. Loading it imports click only; the runner, Ray and the statistics load when a
command runs.
"""

from __future__ import annotations

from collections.abc import Callable
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


@hookimpl
def register_proposers(register: Callable[..., None]) -> None:
    """Register ``reference-control``: the graded controls of ``eval-advice --controls``, replayed in training."""
    from .offline.control_proposer import reference_control_proposer  # numpy and the scenario reader

    register("reference-control", reference_control_proposer)
