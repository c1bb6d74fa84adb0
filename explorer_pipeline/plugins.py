"""Building the plugin manager and reading its catalogues.

Nothing loads at import time: :func:`make_plugin_manager` builds a fresh manager each call.

Environment variables:

``LLM_EXPLORER_DISABLE_PLUGIN_AUTOLOAD``
    when set to a non-empty value, entry points of the ``llm_explorer`` group are not loaded
    (the built-in default plugins still are).
``LLM_EXPLORER_BLOCK_PLUGINS``
    comma-separated plugin names (entry-point names) that must not load.
``LLM_EXPLORER_TRACE_PLUGINS``
    when set, every hook call is logged at DEBUG level on the ``explorer_pipeline.plugins`` logger:
    the hook, its arguments and the plugins it runs, then whether it returned or raised.

Every hook is called through pluggy's hook callers, so tracing and hook wrappers see every call.
Catalogue and observer hooks are called plugin by plugin (:func:`callers_by_plugin`): each entry
is attributed to the plugin that registered it, and one failing observer does not silence the
others. A hook wrapper (``@hookimpl(wrapper=True)``) runs around each plugin's call.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import DuplicateRegistrationError, UnknownNameError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = hookspecs.PROJECT
AUTOLOAD_ENV = "LLM_EXPLORER_DISABLE_PLUGIN_AUTOLOAD"
BLOCK_ENV = "LLM_EXPLORER_BLOCK_PLUGINS"
TRACE_ENV = "LLM_EXPLORER_TRACE_PLUGINS"

DEFAULT_PLUGINS = (
    "explorer_pipeline.default_plugins.stages",
    "explorer_pipeline.default_plugins.scripted",
    "explorer_pipeline.default_plugins.builtin_prompts",
)


def make_plugin_manager(
    *,
    autoload: bool | None = None,
    blocked: Iterable[str] = (),
    extra_plugins: Iterable[object] = (),
) -> pluggy.PluginManager:
    """Build a plugin manager: hookspecs, then entry points, then the default plugins.

    :param autoload: load ``llm_explorer`` entry points; ``None`` reads
        ``LLM_EXPLORER_DISABLE_PLUGIN_AUTOLOAD``.
    :param blocked: plugin names never to load (also read from ``LLM_EXPLORER_BLOCK_PLUGINS``).
        Default plugins can be blocked by their module name.
    :param extra_plugins: objects (modules, instances) to register as well, e.g. in tests.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    env_blocked = [name.strip() for name in os.environ.get(BLOCK_ENV, "").split(",") if name.strip()]
    for name in (*blocked, *env_blocked):
        pm.set_blocked(name)
    if autoload is None:
        autoload = not os.environ.get(AUTOLOAD_ENV)
    if autoload:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for module_name in DEFAULT_PLUGINS:
        if not pm.is_blocked(module_name):
            pm.register(importlib.import_module(module_name), name=module_name)
    for plugin in extra_plugins:
        pm.register(plugin)
    pm.check_pending()
    if os.environ.get(TRACE_ENV):
        pm.add_hookcall_monitoring(_trace_before, _trace_after)
    return pm


def _trace_before(name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
    arguments = ", ".join(f"{key}={_short(value)}" for key, value in kwargs.items())
    log.debug("hook %s(%s) -> %s", name, arguments, [impl.plugin_name for impl in impls])


def _trace_after(outcome: pluggy.Result[Any], name: str, impls: Sequence[pluggy.HookImpl],
                 kwargs: Mapping[str, Any]) -> None:
    if outcome.exception is not None:
        log.debug("hook %s raised %s: %s", name, type(outcome.exception).__name__, outcome.exception)
    else:
        log.debug("hook %s returned", name)


def _short(value: object) -> str:
    text = getattr(value, "__qualname__", None) or type(value).__name__
    return str(text)[:60]


def callers_by_plugin(pm: pluggy.PluginManager, hook_name: str) -> list[tuple[str, pluggy.HookCaller]]:
    """One pluggy hook caller per plugin implementing ``hook_name``, in pluggy's order.

    Each caller runs that plugin's implementation and every hook wrapper of the hook, through
    the plugin manager (so tracing applies): the host knows which plugin it is calling, and can
    contain one plugin's exception without skipping the others.
    """
    impls = getattr(pm.hook, hook_name).get_hookimpls()
    plain = [impl for impl in impls if not (impl.wrapper or impl.hookwrapper)]
    callers: list[tuple[str, pluggy.HookCaller]] = []
    seen: set[int] = set()
    for impl in reversed(plain):  # pluggy calls the last registered implementation first
        if id(impl.plugin) in seen:
            continue
        seen.add(id(impl.plugin))
        others = [other.plugin for other in plain if other.plugin is not impl.plugin]
        callers.append((impl.plugin_name, pm.subset_hook_caller(hook_name, remove_plugins=others)))
    return callers


def no_coroutines(results: Iterable[object], hook_name: str, plugin: str) -> None:
    """Hooks are synchronous: fail loudly when an implementation returned an awaitable."""
    for result in results or ():
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()  # never awaited: close it so Python does not warn later
            raise TypeError(f"plugin {plugin!r} implements {hook_name} as a coroutine; hooks are synchronous "
                            "(do I/O in the async methods of the objects you register)")


@dataclass(frozen=True)
class PluginInfo:
    """A registered plugin: its name, distribution, version and the hooks it implements."""

    name: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]


def list_plugins(pm: pluggy.PluginManager) -> list[PluginInfo]:
    """Every registered plugin with its distribution, version and implemented hooks."""
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # blocked
            continue
        dist = dists.get(id(plugin))
        hooks = tuple(sorted(caller.name for caller in pm.get_hookcallers(plugin) or ()))
        if dist is not None:
            infos.append(PluginInfo(name, dist.metadata["name"], dist.version, hooks))
        else:
            infos.append(PluginInfo(name, "llm-explorer" if name in DEFAULT_PLUGINS else None,
                                    _own_version() if name in DEFAULT_PLUGINS else None, hooks))
    return sorted(infos, key=lambda info: info.name)


def _own_version() -> str | None:
    try:
        return metadata.version("llm-explorer")
    except metadata.PackageNotFoundError:
        return None


class Catalogue:
    """Entries one catalogue hook registered, by name, remembering which plugin registered each."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, Any] = {}
        self._owners: dict[str, str] = {}

    def add(self, name: str, entry: Any, owner: str) -> None:
        """Add ``entry`` as ``name``, registered by plugin ``owner``; a taken name is an error."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.what} names must be non-empty strings, got {name!r} from plugin {owner!r}")
        if name in self._entries:
            raise DuplicateRegistrationError(
                f"{self.what} {name!r} is registered twice: by plugin {self._owners[name]!r} "
                f"and by plugin {owner!r}; block one of them"
            )
        self._entries[name] = entry
        self._owners[name] = owner

    def get(self, name: str) -> Any:
        """The entry registered as ``name``; ``UnknownNameError`` listing the names there are."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.what, name, self._entries) from None

    def owner(self, name: str) -> str:
        """The plugin that registered ``name``."""
        return self._owners[name]

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


def collect(pm: pluggy.PluginManager, hook_name: str, what: str, *,
            name_of: Callable[[Any], str] | None = None) -> Catalogue:
    """Call catalogue hook ``hook_name`` plugin by plugin (through pluggy) and gather what each
    registers.

    ``name_of(entry)`` derives the name when the hook registers objects (``register(obj)``)
    rather than ``register(name, obj)``.
    """
    catalogue = Catalogue(what)
    for owner, caller in callers_by_plugin(pm, hook_name):

        def register(*args: Any, _owner: str = owner) -> None:
            if len(args) == 1 and name_of is not None:
                catalogue.add(name_of(args[0]), args[0], _owner)
            elif len(args) == 2:
                catalogue.add(args[0], args[1], _owner)
            else:
                raise TypeError(f"{hook_name}: register() takes (name, entry) or (entry,), got {len(args)} arguments")

        no_coroutines(caller(register=register), hook_name, owner)
    return catalogue
