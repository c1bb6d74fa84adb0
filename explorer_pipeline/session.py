"""Wiring: from a user's choices to a running explorer (plugins -> pipeline -> runtime -> cache)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pluggy

from .cache import ExplorationCache
from .errors import UnknownNameError, UsageError
from .exchange_log import ExchangeLog
from .pipeline import ExplorationPipeline, RetryPolicy
from .plugins import collect, list_plugins, make_plugin_manager
from .prompts import PromptSet
from .providers import STRUCTURED_METHODS, Provider, ProviderSettings
from .response_cache import SQLiteResponseCache
from .runtime import ExplorerRuntime
from .tasks import TaskDescription, custom_task
from .types import ActionSpec, ExplorationUpdate, RequestFailure


@dataclass
class ExplorerConfig:
    """Everything a user chooses about the LLM side of a run.

    :param provider: a registered provider name (``llm-explorer plugins`` lists them).
    :param prompt_set: a registered prompt-set id.
    :param task_description: overrides the registered description (text, or ``@path``).
    :param every_k: request an update every K episodes.
    :param sample_m: actions sampled from the episode for the prompt.
    :param request_timeout_s: limit for a whole request (all stages and retries).
    :param call_timeout_s: limit for one model call.
    :param provider_options: provider-specific ``KEY=VALUE`` options.
    :param response_cache: SQLite file caching responses; with ``replay`` only the cache answers.
    :param exchange_log: JSON-lines file with every request and response (redacted).
    """

    provider: str = "scripted"
    model: str | None = None
    base_url: str | None = None
    prompt_set: str = "paper"
    task_description: str | None = None
    every_k: int = 1
    sample_m: int = 100
    temperature: float = 0.0
    request_timeout_s: float = 120.0
    call_timeout_s: float = 60.0
    max_attempts: int = 3
    max_tokens_analysis: int = 200
    max_tokens_proposal: int = 120
    structured_output: str | None = None
    provider_options: dict[str, str] = field(default_factory=dict)
    response_cache: Path | None = None
    replay: bool = False
    exchange_log: Path | None = None
    floor: float = 0.05
    max_bias: float = 0.5

    def check(self) -> None:
        """Raise :class:`UsageError` naming the first bad value."""
        checks = [
            (self.every_k >= 1, f"every_k (--k) must be >= 1, got {self.every_k}"),
            (self.sample_m >= 1, f"sample_m (--m) must be >= 1, got {self.sample_m}"),
            (0.0 <= self.temperature <= 2.0, f"temperature must be in [0, 2], got {self.temperature}"),
            (self.request_timeout_s > 0, f"request timeout must be > 0, got {self.request_timeout_s}"),
            (self.call_timeout_s > 0, f"call timeout must be > 0, got {self.call_timeout_s}"),
            (self.max_attempts >= 1, f"max_attempts must be >= 1, got {self.max_attempts}"),
            (0.0 <= self.floor <= 1.0, f"floor must be in [0, 1], got {self.floor}"),
            (0.0 < self.max_bias <= 2.0, f"max_bias must be in (0, 2], got {self.max_bias}"),
            (self.structured_output in (None, *STRUCTURED_METHODS),
             f"structured output {self.structured_output!r} is not one of {', '.join(STRUCTURED_METHODS)}"),
            (not self.replay or self.response_cache is not None, "replay needs a response cache file"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)


class Catalogues:
    """The catalogues of one plugin manager, read once."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.providers = collect(pm, "register_providers", "provider")
        self.prompt_sets = collect(pm, "register_prompt_sets", "prompt set", name_of=lambda s: s.id)
        self.tasks = collect(pm, "register_task_descriptions", "task description", name_of=lambda t: t.env_id)
        self.summarisers = collect(pm, "register_summarisers", "summariser")
        self.parsers = collect(pm, "register_parsers", "parser")
        self.validators = collect(pm, "register_validators", "validator")


class Explorer:
    """A configured explorer: the runtime, its cache, and what a run manifest needs to know."""

    def __init__(self, runtime: ExplorerRuntime, manifest: dict, closers: Sequence[Callable[[], None]]) -> None:
        self.runtime = runtime
        self.cache = runtime.cache
        self._manifest = manifest
        self._closers = list(closers)

    def manifest(self) -> dict:
        return dict(self._manifest)

    def stats(self) -> dict:
        return self.runtime.stats.as_dict()

    def __enter__(self) -> Explorer:
        self.runtime.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.runtime.close()
        for close in self._closers:
            close()
        self._closers.clear()


def observers(pm: pluggy.PluginManager, hook_name: str, arg: str) -> list[Callable[[object], None]]:
    """One callback per implementation of an observer hook, so that one failing plugin (the
    runtime logs and contains its exception) does not silence the others."""
    def bind(impl) -> Callable[[object], None]:
        def call(value: object) -> None:
            impl.function(**({arg: value} if arg in impl.argnames else {}))
        call.__qualname__ = f"{impl.plugin_name}.{hook_name}"
        return call

    return [bind(impl) for impl in getattr(pm.hook, hook_name).get_hookimpls()]


def resolve_task(catalogues: Catalogues, env_id: str, prompt_set: PromptSet, text: str | None,
                 spec: ActionSpec) -> TaskDescription:
    """The task description for ``env_id``: the user's text, else a registered one, else (for
    name-only and no-LLM prompt sets) just the environment's name."""
    if text:
        return custom_task(env_id, text, spec.labels)
    if env_id in catalogues.tasks:
        return catalogues.tasks.get(env_id)
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

    Raises :class:`UsageError` for an unknown provider, prompt set or stage, or an environment
    without a task description; the message lists what exists.
    """
    config.check()
    pm = plugin_manager or make_plugin_manager()
    cat = Catalogues(pm)
    prompt_set: PromptSet = cat.prompt_sets.get(config.prompt_set)
    task = resolve_task(cat, env_id, prompt_set, config.task_description, spec)
    spec = _labelled(spec, task)
    summariser = cat.summarisers.get("default")(m=config.sample_m)
    parser = cat.parsers.get("default")()
    validator = cat.validators.get("default")(floor=config.floor, max_bias=config.max_bias)
    settings = ProviderSettings(
        model=config.model, base_url=config.base_url, temperature=config.temperature,
        max_tokens={"analysis": config.max_tokens_analysis, "proposal": config.max_tokens_proposal},
        timeout_s=config.call_timeout_s, structured_output=config.structured_output,
        options=dict(config.provider_options), seed=seed,
    )
    closers: list[Callable[[], None]] = []
    provider_name, model_name = "none", ""
    analysis_model = proposal_model = None
    transient: tuple = ()
    if prompt_set.calls_llm:
        provider: Provider = cat.providers.get(config.provider)
        if config.structured_output and config.structured_output not in provider.structured_output_methods:
            supported = ", ".join(provider.structured_output_methods)
            raise UsageError(f"provider {config.provider!r} does not support structured output "
                             f"{config.structured_output!r}; it supports: {supported}")
        chat_model = provider.create(settings)
        if config.response_cache is not None:
            response_cache = SQLiteResponseCache(config.response_cache, replay=config.replay)
            chat_model.cache = response_cache
            closers.append(response_cache.close)
        analysis_model = provider.stage_model(chat_model, "analysis", settings, spec)
        proposal_model = provider.stage_model(chat_model, "proposal", settings, spec)
        provider_name, model_name = config.provider, provider.model_name(settings)
        transient = provider.transient_errors
    exchange_log = None
    if config.exchange_log is not None:
        exchange_log = ExchangeLog(config.exchange_log)
        closers.append(exchange_log.close)
    pipeline = ExplorationPipeline(
        spec=spec, prompt_set=prompt_set, task=task, summariser=summariser, parser=parser,
        validator=validator, analysis_model=analysis_model, proposal_model=proposal_model,
        provider=provider_name, model=model_name, transient_errors=transient,
        retry=RetryPolicy(max_attempts=config.max_attempts), call_timeout_s=config.call_timeout_s,
        exchange_log=exchange_log, seed=seed,
    )
    cache = ExplorationCache(spec)
    runtime = ExplorerRuntime(
        pipeline, cache, every_k=config.every_k, request_timeout_s=config.request_timeout_s,
        on_update=[*on_update, *observers(pm, "exploration_update_published", "update")],
        on_failure=[*on_failure, *observers(pm, "exploration_request_failed", "failure")],
    )
    manifest = {
        "explorer": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "provider": provider_name,
        "model": model_name,
        "prompt_set": {"id": prompt_set.id, "version": prompt_set.version, "hash": prompt_set.template_hash(),
                       "control": prompt_set.control},
        "task": {"env_id": task.env_id, "title": task.title},
        "action_spec": {"kind": spec.kind.value, "n": spec.n, "labels": list(spec.labels)},
        "plugins": [asdict(p) for p in list_plugins(pm)],
        "python": sys.version.split()[0],
    }
    return Explorer(runtime, manifest, closers)


__all__ = ["Catalogues", "Explorer", "ExplorerConfig", "UnknownNameError", "open_explorer"]
