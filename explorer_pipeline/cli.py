"""The ``llm-explorer`` command line. Subcommands from plugins arrive via ``register_commands``."""

from __future__ import annotations

import sys

import click

from .ablation.cli import ablate, report
from .errors import UsageError
from .plugins import list_plugins, make_plugin_manager
from .session import Catalogues


class ExplorerGroup(click.Group):
    """Turns :class:`UsageError` into exit status 2 with a one-line message, no traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            raise click.UsageError(str(exc), ctx) from None


@click.group(cls=ExplorerGroup)
@click.version_option(package_name="llm-explorer")
def cli() -> None:
    """LLM-guided exploration for reinforcement learning."""


@cli.command()
def plugins() -> None:
    """List plugins (with versions and hooks), providers and prompt sets."""
    pm = make_plugin_manager()
    for info in list_plugins(pm):
        version = f" {info.version}" if info.version else ""
        dist = f" ({info.distribution}{version})" if info.distribution else ""
        click.echo(f"{info.name}{dist}: {', '.join(info.hooks)}")
    cat = Catalogues(pm)
    click.echo("\nproviders:")
    for name in cat.providers.names():
        provider = cat.providers.get(name)
        click.echo(f"  {name}: {provider.description} [from {cat.providers.owner(name)}; "
                   f"structured output: {', '.join(provider.structured_output_methods)}]")
    click.echo("\nprompt sets:")
    for name in cat.prompt_sets.names():
        ps = cat.prompt_sets.get(name)
        click.echo(f"  {name}: {ps.description.strip().splitlines()[0]} [hash {ps.template_hash()}]")


@cli.command()
def tasks() -> None:
    """List the environments that have a built-in task description."""
    cat = Catalogues(make_plugin_manager())
    for name in cat.tasks.names():
        click.echo(f"{name}: {cat.tasks.get(name).title}")


cli.add_command(ablate)
cli.add_command(report)


def main() -> None:
    pm = make_plugin_manager()
    pm.hook.register_commands(cli=cli)
    cli(prog_name="llm-explorer")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
