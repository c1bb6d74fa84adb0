"""LLM-Explorer's core: an asyncio pipeline that turns finished episodes into exploration updates.

This package never imports torch or tianshou (a test checks it).
"""

from .cache import ExplorationCache
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
from .session import Explorer, ExplorerConfig, StageChoice, open_explorer
from .stages import StageContext
from .types import ActionSpec, EpisodeRecord, ExplorationUpdate, Provenance, RequestFailure, StageUsage

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
