"""Hook specifications of the ``llm_explorer`` plugin system.

Every hook is synchronous: pluggy never awaits, and an implementation that returns a coroutine
is an error. Anything that does I/O lives in the objects a plugin registers (providers' chat
models, stages), which expose ``async def`` methods.

Catalogue hooks receive a ``register`` callback and return nothing. Registering a name that
another plugin already registered raises :class:`~explorer_pipeline.errors.DuplicateRegistrationError`
naming both plugins. An implementation may accept fewer arguments than the spec lists.

Every hook is called through pluggy's hook callers; catalogue and observer hooks plugin by
plugin (see :func:`explorer_pipeline.plugins.callers_by_plugin`), so a hook wrapper runs around
each plugin's implementation.

Stage hooks register *factories*: the session calls ``factory(context, **options)`` with the
run's :class:`~explorer_pipeline.stages.StageContext` and the ``options`` the run configuration
gives the stage (``explorer.summariser.options`` ...), for the one implementation per stage that
the configuration names (``explorer.summariser.name`` ...; ``default`` is the built-in one).

The reference documentation of these hooks is ``docs/plugin_hooks.md``; a test fails when a hook
is missing from it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from .types import ExplorationUpdate, RequestFailure

PROJECT = "llm_explorer"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------------- catalogue hooks
# Called once per catalogue when a plugin manager's catalogues are first read (the thread that
# builds the explorer, usually the main thread). They must not do I/O: register factories.


@hookspec
def register_providers(register: Callable[..., None]) -> None:
    """Register LLM providers.

    :param register: call ``register(name, provider)`` once per provider. ``provider`` is a
        :class:`~explorer_pipeline.providers.Provider`: it builds a LangChain ``BaseChatModel``
        from :class:`~explorer_pipeline.providers.ProviderSettings` and says which structured
        output methods it supports.

    Called from: the thread building the explorer, once per plugin manager. Must not block.
    """


@hookspec
def register_prompt_sets(register: Callable[..., None]) -> None:
    """Register prompt sets (the stage-1/stage-2 templates of one prompt design).

    :param register: call ``register(prompt_set)`` with a
        :class:`~explorer_pipeline.prompts.PromptSet`; its ``id`` is the registered name. Use
        :func:`~explorer_pipeline.prompts.load_prompt_set` to read one from a YAML file; it fails
        at load time on missing or unknown variables.

    Called from: the thread building the explorer, once per plugin manager. Must not block.
    """


@hookspec
def register_task_descriptions(register: Callable[..., None]) -> None:
    """Register natural-language descriptions of environments.

    :param register: call ``register(task)`` with a
        :class:`~explorer_pipeline.tasks.TaskDescription`; its ``env_id`` (a gymnasium id) is the
        registered name.

    Called from: the thread building the explorer, once per plugin manager. Must not block.
    """


@hookspec
def register_summarisers(register: Callable[..., None]) -> None:
    """Register trajectory summarisers (episode -> prompt variables): ``explorer.summariser``.

    :param register: call ``register(name, factory)``; ``factory(context, **options)`` returns an
        object implementing :class:`~explorer_pipeline.stages.Summariser` (a plain ``def
        summarise``).

    Called from: the thread building the explorer. The summariser itself runs on the pipeline
    thread and must be cheap and pure.
    """


@hookspec
def register_analysers(register: Callable[..., None]) -> None:
    """Register stage-1 analysers (prompt variables -> analysis text): ``explorer.analyser``.

    :param register: call ``register(name, factory)``; ``factory(context, **options)`` returns an
        object implementing :class:`~explorer_pipeline.stages.Analyser` (an ``async def analyse``).

    Called from: the thread building the explorer. ``analyse`` is awaited on the pipeline's
    event loop, for two-stage prompt sets only.
    """


@hookspec
def register_proposers(register: Callable[..., None]) -> None:
    """Register stage-2 proposers (prompt variables -> the numbers of an update): ``explorer.proposer``.

    :param register: call ``register(name, factory)``; ``factory(context, **options)`` returns an
        object implementing :class:`~explorer_pipeline.stages.Proposer` (an ``async def
        propose``). A proposer owns its model calls, reading and retries; it raises
        :class:`~explorer_pipeline.errors.ParseError` when no usable answer came back.

    Called from: the thread building the explorer. ``propose`` is awaited on the pipeline's
    event loop.
    """


@hookspec
def register_validators(register: Callable[..., None]) -> None:
    """Register validators (numbers -> the values an update may carry): ``explorer.validator``.

    :param register: call ``register(name, factory)``; ``factory(context, **options)`` returns an
        object implementing :class:`~explorer_pipeline.stages.Validator` (a plain ``def
        validate``). A validator raises :class:`~explorer_pipeline.errors.ValidationRejected`
        with a reason; nothing reaches the cache then.

    Called from: the thread building the explorer. Validators run on the pipeline thread.
    """


@hookspec
def register_parsers(register: Callable[..., None]) -> None:
    """Register reply parsers (model text -> numbers), used by text-reading proposers.

    :param register: call ``register(name, factory)``; ``factory(context, **options)`` returns an
        object implementing :class:`~explorer_pipeline.stages.Parser`. A parser raises
        :class:`~explorer_pipeline.errors.ParseError` for a reply it cannot read. The default
        proposer builds the one its ``parser`` option names (``explorer.proposer.options.parser``)
        and re-prompts with the error.

    Called from: the thread building the explorer. Parsers run on the pipeline thread.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``llm-explorer`` command line.

    :param cli: the top-level click group; call ``cli.add_command(command)``.

    Called from: the main thread, once, when the command line starts.
    """


# --------------------------------------------------------------------------- observer hooks
# Called on the pipeline's event-loop thread, plugin by plugin. They must return quickly and must
# not block: a slow observer delays the next update. An exception is logged and contained: the
# other observers still see the update.


@hookspec
def exploration_update_published(update: ExplorationUpdate) -> None:
    """Observe every update published to the exploration cache.

    :param update: the validated, immutable update, with its provenance.

    Called from: the pipeline's event-loop thread, right after the cache swap. Must not block.
    """


@hookspec
def exploration_request_failed(failure: RequestFailure) -> None:
    """Observe every request that produced no update (the previous update stays in force).

    :param failure: the reason (a counter key such as ``parse_error`` or
        ``validation:negative``), a one-line detail, attempts and latency.

    Called from: the pipeline's event-loop thread. Must not block.
    """


def hook_names() -> list[str]:
    """Names of every hook specified here, in file order."""
    return [name for name, value in globals().items() if callable(value) and hasattr(value, PROJECT + "_spec")]

