"""One way to report bad input: :class:`BadInput` (``Error: ...`` on stderr, exit status 2)."""

from __future__ import annotations

import click
from click.testing import CliRunner

from explorer_pipeline.cli import ExplorerGroup
from explorer_pipeline.errors import EXIT_BAD_INPUT, BadInput, UnknownNameError, UsageError


def group_with(command: click.Command) -> click.Group:
    group = ExplorerGroup("llm-explorer")
    group.add_command(command)
    return group


def test_bad_input_is_one_error_line_and_exit_status_2():
    @click.command()
    def cmd() -> None:
        raise BadInput("--x needs --y")

    result = CliRunner().invoke(group_with(cmd), ["cmd"])
    assert result.exit_code == EXIT_BAD_INPUT == 2
    assert result.output == "Error: --x needs --y\n"


def test_a_usage_error_reaching_the_group_becomes_bad_input():
    @click.command()
    def cmd() -> None:
        raise UnknownNameError("provider", "gpt-17", ["scripted"])

    result = CliRunner().invoke(group_with(cmd), ["cmd"])
    assert result.exit_code == 2
    assert result.output == "Error: unknown provider 'gpt-17'; available: scripted\n"  # no usage lines, no traceback


def test_other_errors_are_not_turned_into_bad_input():
    @click.command()
    def cmd() -> None:
        raise RuntimeError("a bug")

    result = CliRunner().invoke(group_with(cmd), ["cmd"])
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)


def test_every_command_uses_the_same_exception():
    from explorer_ablation import cli as ablation_cli
    from tianshou_integration import cli as train_cli

    assert train_cli.BadInput is BadInput and ablation_cli.BadInput is BadInput
    assert BadInput.from_error(UsageError("bad")).format_message() == "bad"
