"""Building a pipeline from chat-model doubles, the way ``open_explorer`` builds it from a provider."""

from __future__ import annotations

from collections.abc import Mapping

from langchain_core.runnables import Runnable

from explorer_pipeline.llm import RetryPolicy, StageModels
from explorer_pipeline.pipeline import ExplorationPipeline
from explorer_pipeline.plugins import make_plugin_manager
from explorer_pipeline.prompts import PromptSet, load_prompt_set
from explorer_pipeline.resources import prompts_dir
from explorer_pipeline.session import Catalogues, ExplorerConfig, build_pipeline
from explorer_pipeline.stages import StageContext
from explorer_pipeline.tasks import TaskDescription, custom_task
from explorer_pipeline.types import ActionSpec

_DEFAULTS: list[Catalogues] = []


def default_catalogues() -> Catalogues:
    """The default plugins' catalogues, read once (they are never changed)."""
    if not _DEFAULTS:
        _DEFAULTS.append(Catalogues(make_plugin_manager(autoload=False)))
    return _DEFAULTS[0]


def prompt_set(name: str) -> PromptSet:
    return load_prompt_set(prompts_dir() / "sets" / f"{name}.yaml")


def make_context(spec: ActionSpec, set_name: str = "paper", *, models: StageModels | None = None,
                 config: ExplorerConfig | None = None, task: TaskDescription | None = None, seed: int = 0,
                 retry: RetryPolicy | None = None, catalogues: Catalogues | None = None) -> StageContext:
    """A stage context without waits between retries (``initial_wait_s=0``)."""
    config = config or ExplorerConfig(prompt_set=set_name)
    catalogues = catalogues or default_catalogues()
    return StageContext(
        spec=spec, prompt_set=prompt_set(set_name), task=task or custom_task("Test-v0", "A test task.", spec.labels),
        config=config, seed=seed, models=models,
        retry=retry or RetryPolicy(max_attempts=config.max_attempts, initial_wait_s=0), parsers=catalogues.parsers,
    )


def make_models(runnables: Mapping[str, Runnable], *, provider: str = "fake", model: str = "fake-1",
                transient: tuple[type[BaseException], ...] = (ConnectionError,), call_timeout_s: float = 5.0,
                **kwargs) -> StageModels:
    return StageModels(runnables, provider=provider, model=model, transient_errors=transient,
                       call_timeout_s=call_timeout_s, **kwargs)


def pipeline_for(context: StageContext, catalogues: Catalogues | None = None) -> ExplorationPipeline:
    """The stages ``context.config`` chooses, from the default plugins (or ``catalogues``)."""
    return build_pipeline(catalogues or default_catalogues(), context)
