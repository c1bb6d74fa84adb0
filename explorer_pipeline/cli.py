"""The ``llm-explorer`` command line. Subcommands from plugins arrive via ``register_commands``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .config import ExplorerConfig
from .errors import BadInput, UsageError
from .plugins import DEFAULT_PLUGINS, Catalogue, list_plugins, make_plugin_manager


class ExplorerGroup(click.Group):
    """Turns a :class:`UsageError` any subcommand lets through into :class:`BadInput`."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand; bad input ends as :class:`BadInput` (exit status 2)."""
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            raise BadInput.from_error(exc) from None


@click.group(cls=ExplorerGroup)
@click.version_option(package_name="llm-explorer")
def cli() -> None:
    """LLM-guided exploration for reinforcement learning."""


def _explorer_section(path: Path | None) -> ExplorerConfig:
    """The ``explorer`` section of a run configuration file (defaults without a file)."""
    if path is None:
        return ExplorerConfig()
    from pydantic import ValidationError

    from .yamlio import YamlError, read_yaml

    try:
        data = read_yaml(path.read_text(encoding="utf-8")).data or {}
    except (OSError, YamlError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    section = data.get("explorer", {}) if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise UsageError(f"{path}: the 'explorer' section must be a mapping")
    try:
        return ExplorerConfig.model_validate(section)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in ("explorer", *first["loc"]))
        raise UsageError(f"{path}: {where}: {first['msg']}") from None


def _implementations(catalogue: Catalogue, chosen: str) -> list[str]:
    from .stages import describe, option_names

    width = max((len(name) for name in catalogue.names()), default=0)
    lines = []
    for name in catalogue.names():
        mark = "*" if name == chosen else " "
        factory = catalogue.get(name)
        about = describe(factory)
        options = option_names(factory)
        takes = "" if options is None else f"(options: {', '.join(options) or 'none'}) "
        lines.append(f"    {mark} {name:<{width}}  {about + ' ' if about else ''}{takes}[from {catalogue.owner(name)}]")
    if chosen not in catalogue:
        lines.append(f"    ! {chosen}: chosen but not registered by any plugin")
    return lines


@cli.command()
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              metavar="FILE.yaml", help="Mark the stages this run configuration chooses (default: the defaults).")
def plugins(config_file: Path | None) -> None:
    """List plugins (with versions and hooks), providers, prompt sets, and each stage's
    implementations, marking with * the one a run uses."""
    from .session import Catalogues
    from .stages import STAGES

    chosen = _explorer_section(config_file)
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
    where = str(config_file) if config_file else "the default configuration"
    click.echo(f"\nstages (choose with --set explorer.STAGE.name=NAME; * = what {where} uses):")
    for kind in STAGES:
        choice = getattr(chosen, kind.key)
        click.echo(f"  {kind.key}:")
        for line in _implementations(cat.stage(kind.key), choice.name):
            click.echo(line)
    parser = str(chosen.proposer.options.get("parser", "default"))
    click.echo("  parsers (the default proposer's option: --set explorer.proposer.options.parser=NAME):")
    for line in _implementations(cat.parsers, parser):
        click.echo(line)


@cli.command()
def tasks() -> None:
    """List the environments that have a built-in task description."""
    from .session import Catalogues

    cat = Catalogues(make_plugin_manager())
    for name in cat.tasks.names():
        click.echo(f"{name}: {cat.tasks.get(name).title}")


def main() -> None:
    """Entry point of ``llm-explorer``: plugins add their subcommands, then the group runs. The
    default plugins (stages, scripted provider, prompt sets) add no command and are not loaded
    here: a command that needs them builds its own plugin manager, so ``train --provider none``
    never imports the LLM stages."""
    pm = make_plugin_manager(blocked=DEFAULT_PLUGINS)
    pm.hook.register_commands(cli=cli)
    cli(prog_name="llm-explorer")


if __name__ == "__main__":  # pragma: no cover
    main()
