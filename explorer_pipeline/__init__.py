"""LLM-Explorer's core: an asyncio pipeline that turns finished episodes into exploration updates.

This package never imports torch or tianshou (a test checks it). Its names load on first use
(PEP 562), so importing one module of it (``explorer_pipeline.config``, ``.errors``) does not
import LangChain or the provider layer: a run without an LLM never loads them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cache import ExplorationCache
    from .config import ExplorerConfig, StageChoice
    from .errors import (
        DuplicateRegistrationError,
        ExplorerError,
        ParseError,
        PromptError,
        UnknownNameError,
        UsageError,
        ValidationRejected,
    )
    from .hookspecs import hookimpl
    from .plugins import make_plugin_manager
    from .providers import Provider, ProviderSettings
    from .runtime import ExplorerRuntime
    from .session import Explorer, open_explorer
    from .stages import StageContext
    from .types import ActionSpec, EpisodeRecord, ExplorationUpdate, Provenance, RequestFailure, StageUsage

#: public name -> the module that defines it
_WHERE = {
    "ActionSpec": "types", "DuplicateRegistrationError": "errors", "EpisodeRecord": "types",
    "ExplorationCache": "cache", "ExplorationUpdate": "types", "Explorer": "session", "ExplorerConfig": "config",
    "ExplorerError": "errors", "ExplorerRuntime": "runtime", "ParseError": "errors", "PromptError": "errors",
    "Provenance": "types", "Provider": "providers", "ProviderSettings": "providers", "RequestFailure": "types",
    "StageChoice": "config", "StageContext": "stages", "StageUsage": "types", "UnknownNameError": "errors",
    "UsageError": "errors", "ValidationRejected": "errors", "hookimpl": "hookspecs",
    "make_plugin_manager": "plugins", "open_explorer": "session",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


__all__ = [
    "ActionSpec",
    "DuplicateRegistrationError",
    "EpisodeRecord",
    "ExplorationCache",
    "ExplorationUpdate",
    "Explorer",
    "ExplorerConfig",
    "ExplorerError",
    "ExplorerRuntime",
    "ParseError",
    "PromptError",
    "Provenance",
    "Provider",
    "ProviderSettings",
    "RequestFailure",
    "StageChoice",
    "StageContext",
    "StageUsage",
    "UnknownNameError",
    "UsageError",
    "ValidationRejected",
    "hookimpl",
    "make_plugin_manager",
    "open_explorer",
]
