"""Wiring: from a user's choices to a running explorer (plugins -> pipeline -> runtime -> cache).

The choices themselves (:class:`ExplorerConfig`, :class:`StageChoice`) live in
:mod:`explorer_pipeline.config`, which imports no LangChain; they are re-exported here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pluggy

from .budget import Budget
from .cache import ExplorationCache
from .config import NO_PROVIDER, ExplorerConfig, StageChoice
from .errors import UnknownNameError, UsageError
from .exchange_log import ExchangeLog
from .llm import RetryPolicy, StageModels
from .pipeline import ExplorationPipeline
from .plugins import Catalogue, callers_by_plugin, collect, list_plugins, make_plugin_manager, no_coroutines
from .prompts import PromptSet
from .providers import Provider, ProviderSettings
from .response_cache import SQLiteResponseCache
from .runtime import ExplorerRuntime
from .stages import STAGES, StageContext, StageKind, check_options, check_stage
from .tasks import TaskDescription, custom_task
from .types import ActionSpec, ExplorationUpdate, RequestFailure


class Catalogues:
    """The catalogues of one plugin manager, read once."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.providers = collect(pm, "register_providers", "provider")
        self.prompt_sets = collect(pm, "register_prompt_sets", "prompt set", name_of=lambda s: s.id)
        self.tasks = collect(pm, "register_task_descriptions", "task description", name_of=lambda t: t.env_id)
        self.summarisers = collect(pm, "register_summarisers", "summariser")
        self.analysers = collect(pm, "register_analysers", "analyser")
        self.proposers = collect(pm, "register_proposers", "proposer")
        self.validators = collect(pm, "register_validators", "validator")
        self.parsers = collect(pm, "register_parsers", "parser")

    def stage(self, key: str) -> Catalogue:
        """The catalogue of stage ``key`` (``summariser``, ``analyser``, ``proposer``, ``validator``)."""
        return {"summariser": self.summarisers, "analyser": self.analysers, "proposer": self.proposers,
                "validator": self.validators}[key]


class Explorer:
    """A configured explorer: the runtime, its cache, and what a run manifest needs to know."""

    def __init__(self, runtime: ExplorerRuntime, manifest: dict[str, Any],
                 closers: Sequence[Callable[[], None]]) -> None:
        self.runtime = runtime
        self.cache = runtime.cache
        self._manifest = manifest
        self._closers = list(closers)

    def manifest(self) -> dict[str, Any]:
        """What a run manifest records about the explorer (a copy)."""
        return dict(self._manifest)

    def stats(self) -> dict[str, Any]:
        """The runtime's counters (requests, updates, failures by reason, tokens) and, under
        ``budget``, the LLM budget: limits, what was spent, and when a limit was reached."""
        return {**self.runtime.stats.as_dict(), "budget": self.runtime.budget_summary()}

    def observe(
        self,
        *,
        on_update: Callable[[ExplorationUpdate], None] | None = None,
        on_failure: Callable[[RequestFailure], None] | None = None,
    ) -> None:
        """Add callbacks for published updates and failed requests before the explorer starts.

        For an observer created after :func:`open_explorer` (such as a run directory opened once
        the explorer was built); see :meth:`ExplorerRuntime.observe`.

        :raises RuntimeError: once the explorer has started.
        """
        self.runtime.observe(on_update=on_update, on_failure=on_failure)

    def __enter__(self) -> Explorer:
        self.runtime.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the runtime and close the exchange log and response cache. Idempotent."""
        self.runtime.close()
        for close in self._closers:
            close()
        self._closers.clear()


class _Observer:
    """Calls one plugin's implementation of an observer hook, through pluggy."""

    def __init__(self, plugin: str, hook_name: str, arg: str, caller: pluggy.HookCaller) -> None:
        self.plugin, self.hook_name, self.arg, self.caller = plugin, hook_name, arg, caller

    def __call__(self, value: object) -> None:
        no_coroutines(self.caller(**{self.arg: value}), self.hook_name, self.plugin)

    def __repr__(self) -> str:
        return f"<{self.hook_name} of plugin {self.plugin!r}>"


def observers(pm: pluggy.PluginManager, hook_name: str, arg: str) -> list[Callable[[object], None]]:
    """One callback per plugin implementing an observer hook, each calling it through pluggy (so
    tracing and hook wrappers apply); the runtime logs and contains each callback's exception,
    so one failing plugin does not silence the others."""
    return [_Observer(plugin, hook_name, arg, caller) for plugin, caller in callers_by_plugin(pm, hook_name)]


@dataclass(frozen=True)
class ChosenStage:
    """A stage implementation picked by the configuration, before it is built."""

    kind: StageKind
    name: str
    options: dict[str, Any]
    factory: Callable[..., Any]
    plugin: str

    def build(self, context: StageContext) -> object:
        """Call the factory with ``context`` and the options; check the stage it returns."""
        try:
            stage = self.factory(context, **self.options)
        except ValueError as exc:  # a bad option value: the user's to fix
            raise UsageError(f"{self.kind.key} {self.name!r} (from plugin {self.plugin!r}): {exc}") from exc
        check_stage(self.kind, stage, self.name, self.plugin)
        return stage

    def manifest(self) -> dict[str, Any]:
        """Name, options and plugin, as the manifest records them."""
        return {"name": self.name, "options": dict(self.options), "plugin": self.plugin}


def choose_stages(catalogues: Catalogues, config: ExplorerConfig) -> dict[str, ChosenStage]:
    """The implementation of every stage that ``config`` names, with its options checked against
    the factory's signature. Raises :class:`UnknownNameError` (listing what exists) or
    :class:`UsageError` (listing the options it accepts)."""
    chosen = {}
    for kind in STAGES:
        choice: StageChoice = getattr(config, kind.key)
        catalogue = catalogues.stage(kind.key)
        factory = catalogue.get(choice.name)
        plugin = catalogue.owner(choice.name)
        check_options(kind, choice.name, plugin, factory, choice.options)
        chosen[kind.key] = ChosenStage(kind, choice.name, dict(choice.options), factory, plugin)
    return chosen


def build_pipeline(catalogues: Catalogues, context: StageContext,
                   chosen: dict[str, ChosenStage] | None = None) -> ExplorationPipeline:
    """Build the stages ``context.config`` chooses and wire them into a pipeline."""
    chosen = chosen or choose_stages(catalogues, context.config)
    stages = {key: stage.build(context) for key, stage in chosen.items()}
    return ExplorationPipeline(context=context, **stages)  # type: ignore[arg-type]


def resolve_task(catalogues: Catalogues, env_id: str, prompt_set: PromptSet, text: str | None,
                 spec: ActionSpec) -> TaskDescription:
    """The task description for ``env_id``: the user's text, else a registered one, else (for
    name-only and no-LLM prompt sets) just the environment's name."""
    if text:
        return custom_task(env_id, text, spec.labels)
    if env_id in catalogues.tasks:
        task: TaskDescription = catalogues.tasks.get(env_id)
        return task
    if prompt_set.task_view == "name" or not prompt_set.calls_llm:
        return custom_task(env_id, f"The task is {env_id}.", spec.labels)
    raise UsageError(
        f"no built-in task description for {env_id!r}: pass --task-description TEXT or "
        f"--task-description @FILE (or use --prompt-set name-only); "
        f"built-in: {len(catalogues.tasks)} environments (llm-explorer tasks lists them)"
    )


def _labelled(spec: ActionSpec, task: TaskDescription) -> ActionSpec:
    if len(task.action_labels) != spec.n:
        return spec
    return ActionSpec(spec.kind, spec.n, tuple(task.action_labels), spec.low, spec.high)


#: proposers that read token log-probabilities: the provider's preflight checks that they come back
LOGPROB_PROPOSERS = ("token-probabilities", "auto")


def _stage_models(cat: Catalogues, config: ExplorerConfig, prompt_set: PromptSet, spec: ActionSpec, seed: int,
                  closers: list[Callable[[], None]]) -> StageModels | None:
    """The provider's models for the LLM stages (None when the prompt set calls no LLM), without
    the exchange log: that file (in the run directory) is opened once all input has been checked."""
    if not prompt_set.calls_llm:
        return None
    provider: Provider = cat.providers.get(config.provider)
    if config.structured_output and config.structured_output not in provider.structured_output_methods:
        supported = ", ".join(provider.structured_output_methods)
        raise UsageError(f"provider {config.provider!r} does not support structured output "
                         f"{config.structured_output!r}; it supports: {supported}")
    settings = ProviderSettings(
        model=config.model, base_url=config.base_url, temperature=config.temperature,
        max_tokens={"analysis": config.max_tokens_analysis, "proposal": config.max_tokens_proposal},
        timeout_s=config.call_timeout_s, structured_output=config.structured_output,
        options=dict(config.provider_options), seed=seed,
    )
    chat_model = provider.create(settings)
    close_model = getattr(chat_model, "close", None)
    if callable(close_model):  # e.g. the local provider's private llama.cpp server stops with the explorer
        closers.append(close_model)
    if config.replay:  # answers come from the response cache: no server needed
        provider_check: dict[str, Any] = {"checked": "off", "why": "replay"}
    else:  # a setup that cannot work stops here (UsageError), before anything is trained or written
        provider_check = provider.preflight(chat_model, settings, logprobs=config.proposer.name in LOGPROB_PROPOSERS)
    runnables = {stage: provider.stage_model(chat_model, stage, settings, spec) for stage in ("analysis", "proposal")}
    model_name = provider.model_name(settings)
    if config.response_cache is not None:
        response_cache = SQLiteResponseCache(config.response_cache, replay=config.replay)
        chat_model.cache = response_cache
        closers.append(response_cache.close)
    return StageModels(runnables, provider=config.provider, model=model_name,
                       transient_errors=provider.transient_errors, call_timeout_s=config.call_timeout_s,
                       chat_model=chat_model, provider_impl=provider, settings=settings,
                       provider_check=provider_check)


def _open_exchange_log(config: ExplorerConfig, closers: list[Callable[[], None]]) -> ExchangeLog | None:
    if config.exchange_log is None:
        return None
    exchange_log = ExchangeLog(config.exchange_log)
    closers.append(exchange_log.close)
    return exchange_log


def open_explorer(
    config: ExplorerConfig,
    env_id: str,
    spec: ActionSpec,
    *,
    seed: int = 0,
    on_update: Sequence[Callable[[ExplorationUpdate], None]] = (),
    on_failure: Sequence[Callable[[RequestFailure], None]] = (),
    plugin_manager: pluggy.PluginManager | None = None,
) -> Explorer:
    """Build (but do not start) an explorer. Use it as a context manager.

    Raises :class:`UsageError` for an unknown provider, prompt set or stage (or a stage option
    its implementation does not take), or an environment without a task description; the
    message lists what exists. The provider's preflight runs here (it may reach the server) and
    raises :class:`UsageError` for a setup that cannot work: unreachable server, unknown model,
    missing or rejected key.
    """
    pm = plugin_manager or make_plugin_manager()
    cat = Catalogues(pm)
    chosen = choose_stages(cat, config)
    prompt_set: PromptSet = cat.prompt_sets.get(config.prompt_set)
    task = resolve_task(cat, env_id, prompt_set, config.task_description, spec)
    spec = _labelled(spec, task)
    closers: list[Callable[[], None]] = []
    try:
        models = _stage_models(cat, config, prompt_set, spec, seed, closers)
        context = StageContext(spec=spec, prompt_set=prompt_set, task=task, config=config, seed=seed,
                               models=models, retry=(models.retry_policy(config.max_attempts) if models is not None
                                                      else RetryPolicy(max_attempts=config.max_attempts)),
                               parsers=cat.parsers)
        pipeline = build_pipeline(cat, context, chosen)
        exchange_log = _open_exchange_log(config, closers)
        if models is not None:
            models.exchange_log = exchange_log
    except BaseException:
        for close in closers:
            close()
        raise
    cache = ExplorationCache(spec)
    runtime = ExplorerRuntime(
        pipeline, cache, every_k=config.every_k, request_timeout_s=config.request_timeout_s,
        budget=Budget(config.budget),
        on_update=[*on_update, *observers(pm, "exploration_update_published", "update")],
        on_failure=[*on_failure, *observers(pm, "exploration_request_failed", "failure")],
    )
    manifest = {
        "explorer": config.model_dump(mode="json"),
        "provider": pipeline.provider,
        "model": pipeline.model,
        "prompt_set": {"id": prompt_set.id, "version": prompt_set.version, "hash": prompt_set.template_hash(),
                       "control": prompt_set.control},
        "task": {"env_id": task.env_id, "title": task.title},
        "action_spec": {"kind": spec.kind.value, "n": spec.n, "labels": list(spec.labels)},
        "stages": {key: stage.manifest() for key, stage in chosen.items()},
        "provider_check": dict(models.provider_check) if models is not None else None,
        "plugins": [asdict(p) for p in list_plugins(pm)],
        "python": sys.version.split()[0],
    }
    return Explorer(runtime, manifest, closers)


__all__ = ["NO_PROVIDER", "Catalogues", "ChosenStage", "Explorer", "ExplorerConfig", "StageChoice", "UnknownNameError",
           "build_pipeline", "choose_stages", "open_explorer"]
