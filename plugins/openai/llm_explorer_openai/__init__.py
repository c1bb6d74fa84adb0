"""The ``openai`` provider plugin: LangChain ``ChatOpenAI`` for OpenAI and OpenAI-compatible
servers (:mod:`llm_explorer_openai.provider` documents it).

Loading the plugin (every ``llm-explorer`` command does) imports neither LangChain nor the
``openai`` client: they load when the provider is registered in a catalogue, or on first use of
a name below.
"""

from __future__ import annotations

import importlib
from typing import Any

from explorer_pipeline import hookimpl

__all__ = ["LOCAL_PLACEHOLDER_KEY", "OpenAIProvider", "check_base_url", "is_loopback"]


def __getattr__(name: str) -> Any:
    provider = importlib.import_module(".provider", __name__)
    try:
        return getattr(provider, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


@hookimpl
def register_providers(register):
    """Register the ``openai`` provider."""
    from .provider import OpenAIProvider

    register("openai", OpenAIProvider())
