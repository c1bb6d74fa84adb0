"""The plugin manager: defaults, entry points, blocking, duplicates, unknown names, observers, CLI."""

from __future__ import annotations

import logging

import click
import pytest
from click.testing import CliRunner

from explorer_pipeline import cli as cli_module
from explorer_pipeline import hookimpl, hookspecs
from explorer_pipeline.cli import cli
from explorer_pipeline.default_plugins.scripted_model import ScriptedProvider
from explorer_pipeline.errors import DuplicateRegistrationError, UnknownNameError, UsageError
from explorer_pipeline.plugins import (
    AUTOLOAD_ENV,
    BLOCK_ENV,
    DEFAULT_PLUGINS,
    TRACE_ENV,
    Catalogue,
    list_plugins,
    make_plugin_manager,
)
from explorer_pipeline.session import Catalogues, ExplorerConfig, open_explorer
from explorer_pipeline.types import ActionSpec, EpisodeRecord, ExplorationUpdate, RequestFailure

#: entry-point plugins installed (editable) from plugins/openai and plugins/llamacpp
ENTRY_POINT_PROVIDERS = {"openai", "local"}
#: the root package's own entry point; blocked until tianshou_integration/plugin.py exists
NOT_UNDER_TEST = ["tianshou"]

SCRIPTED_MODULE = "explorer_pipeline.default_plugins.scripted"
STAGES_MODULE = "explorer_pipeline.default_plugins.stages"
PROMPTS_MODULE = "explorer_pipeline.default_plugins.builtin_prompts"


@pytest.fixture(autouse=True)
def _clean_plugin_env(monkeypatch):
    for name in (AUTOLOAD_ENV, BLOCK_ENV, TRACE_ENV):
        monkeypatch.delenv(name, raising=False)


def names(pm) -> set[str]:
    return {name for name, plugin in pm.list_name_plugin() if plugin is not None}


# --------------------------------------------------------------------------- defaults


def test_default_plugins_are_registered(pm):
    assert names(pm) == set(DEFAULT_PLUGINS)
    cat = Catalogues(pm)
    assert cat.providers.names() == ["scripted"]
    assert cat.providers.owner("scripted") == SCRIPTED_MODULE
    assert isinstance(cat.providers.get("scripted"), ScriptedProvider)
    for catalogue in (cat.summarisers, cat.analysers, cat.validators, cat.parsers):
        assert catalogue.names() == ["default"] and catalogue.owner("default") == STAGES_MODULE
    assert cat.proposers.names() == ["auto", "default", "token-probabilities"]
    assert {cat.proposers.owner(name) for name in cat.proposers.names()} == {STAGES_MODULE}
    assert {"paper", "paper-logprobs", "name-only", "single-stage", "shuffled", "random", "frozen"} <= set(
        cat.prompt_sets.names())
    assert "CartPole-v1" in cat.tasks and cat.tasks.owner("CartPole-v1") == PROMPTS_MODULE


def test_each_call_builds_a_fresh_manager():
    a, b = make_plugin_manager(autoload=False), make_plugin_manager(autoload=False)
    assert a is not b
    a.set_blocked(SCRIPTED_MODULE)
    assert SCRIPTED_MODULE in names(b)


def test_list_plugins_reports_hooks_and_our_version(pm):
    infos = {info.name: info for info in list_plugins(pm)}
    assert set(infos) == set(DEFAULT_PLUGINS)
    assert infos[STAGES_MODULE].hooks == ("register_analysers", "register_parsers", "register_proposers",
                                          "register_summarisers", "register_validators")
    assert infos[SCRIPTED_MODULE].distribution == "llm-explorer"
    assert infos[SCRIPTED_MODULE].version


def test_extra_plugins_are_registered():
    class Extra:
        @hookimpl
        def register_summarisers(self, register):
            register("mine", dict)

    pm = make_plugin_manager(autoload=False, extra_plugins=[Extra()])
    assert Catalogues(pm).summarisers.names() == ["default", "mine"]


def test_an_implementation_may_take_fewer_arguments(pm):
    class NoArgs:
        @hookimpl
        def register_providers(self):
            pass

    pm.register(NoArgs(), name="no-args")
    assert Catalogues(pm).providers.names() == ["scripted"]


# --------------------------------------------------------------------------- duplicates


def test_duplicate_provider_name_names_both_plugins(pm):
    class Impostor:
        @hookimpl
        def register_providers(self, register):
            register("scripted", ScriptedProvider())

    pm.register(Impostor(), name="impostor-plugin")
    with pytest.raises(DuplicateRegistrationError) as info:
        Catalogues(pm)
    message = str(info.value)
    assert "'scripted'" in message and "provider" in message
    assert "impostor-plugin" in message and SCRIPTED_MODULE in message


def test_duplicate_prompt_set_id(pm):
    from explorer_pipeline.prompts import load_prompt_set
    from explorer_pipeline.resources import prompts_dir

    class Copycat:
        @hookimpl
        def register_prompt_sets(self, register):
            register(load_prompt_set(prompts_dir() / "sets" / "paper.yaml"))

    pm.register(Copycat(), name="copycat")
    with pytest.raises(DuplicateRegistrationError, match=r"'paper'.*copycat|copycat.*'paper'"):
        Catalogues(pm)


def test_a_plugin_registering_a_name_twice(pm):
    class Twice:
        @hookimpl
        def register_parsers(self, register):
            register("mine", object)
            register("mine", object)

    pm.register(Twice(), name="twice")
    with pytest.raises(DuplicateRegistrationError, match="twice"):
        Catalogues(pm)


@pytest.mark.parametrize("bad", ["", None, 3])
def test_catalogue_names_must_be_non_empty_strings(bad):
    with pytest.raises(ValueError, match="non-empty strings"):
        Catalogue("provider").add(bad, object(), "someone")


def test_register_with_the_wrong_number_of_arguments(pm):
    class Confused:
        @hookimpl
        def register_providers(self, register):
            register("a", "b", "c")

    pm.register(Confused(), name="confused")
    with pytest.raises(TypeError, match="register_providers"):
        Catalogues(pm)


# --------------------------------------------------------------------------- blocking and autoload


def test_autoload_loads_the_installed_entry_points():
    pm = make_plugin_manager(blocked=NOT_UNDER_TEST)
    assert names(pm) >= ENTRY_POINT_PROVIDERS | set(DEFAULT_PLUGINS)
    providers = Catalogues(pm).providers
    assert set(providers.names()) == ENTRY_POINT_PROVIDERS | {"scripted"}
    assert providers.owner("openai") == "openai" and providers.owner("local") == "local"


def test_entry_point_plugins_report_their_distribution():
    infos = {info.name: info for info in list_plugins(make_plugin_manager(blocked=NOT_UNDER_TEST))}
    assert (infos["openai"].distribution, infos["openai"].version) == ("llm-explorer-openai", "0.1.0")
    assert infos["local"].distribution == "llm-explorer-llamacpp"


def test_disable_autoload_env_var_keeps_only_the_defaults(monkeypatch):
    monkeypatch.setenv(AUTOLOAD_ENV, "1")
    pm = make_plugin_manager(blocked=NOT_UNDER_TEST)
    assert names(pm) == set(DEFAULT_PLUGINS)
    assert Catalogues(pm).providers.names() == ["scripted"]


def test_explicit_autoload_argument_wins_over_the_env_var(monkeypatch):
    monkeypatch.setenv(AUTOLOAD_ENV, "1")
    assert names(make_plugin_manager(autoload=True, blocked=NOT_UNDER_TEST)) >= ENTRY_POINT_PROVIDERS


def test_block_an_entry_point_plugin_by_name():
    pm = make_plugin_manager(blocked=[*NOT_UNDER_TEST, "openai"])
    assert pm.is_blocked("openai")
    assert set(Catalogues(pm).providers.names()) == {"local", "scripted"}


def test_block_plugins_env_var(monkeypatch):
    monkeypatch.setenv(BLOCK_ENV, " tianshou , local,")
    pm = make_plugin_manager()
    assert pm.is_blocked("local") and pm.is_blocked("tianshou")
    assert set(Catalogues(pm).providers.names()) == {"openai", "scripted"}


def test_block_a_default_plugin_by_module_name(monkeypatch):
    pm = make_plugin_manager(autoload=False, blocked=[SCRIPTED_MODULE])
    assert SCRIPTED_MODULE not in names(pm)
    with pytest.raises(UnknownNameError, match="none registered"):
        Catalogues(pm).providers.get("scripted")
    monkeypatch.setenv(BLOCK_ENV, STAGES_MODULE)
    assert Catalogues(make_plugin_manager(autoload=False)).parsers.names() == []


def test_blocked_plugins_are_not_listed():
    infos = list_plugins(make_plugin_manager(blocked=[*NOT_UNDER_TEST, "openai"]))
    assert "openai" not in {info.name for info in infos}


# --------------------------------------------------------------------------- unknown names

CARTPOLE = ActionSpec.discrete(2)


def test_unknown_provider_lists_the_registered_ones(pm):
    with pytest.raises(UnknownNameError) as info:
        open_explorer(ExplorerConfig(provider="gpt-17"), "CartPole-v1", CARTPOLE, plugin_manager=pm)
    assert isinstance(info.value, UsageError) and isinstance(info.value, KeyError)
    assert str(info.value) == "unknown provider 'gpt-17'; available: scripted"


def test_unknown_provider_lists_entry_point_providers_too():
    pm = make_plugin_manager(blocked=NOT_UNDER_TEST)
    with pytest.raises(UnknownNameError, match="available: local, openai, scripted"):
        open_explorer(ExplorerConfig(provider="nope"), "CartPole-v1", CARTPOLE, plugin_manager=pm)


def test_unknown_prompt_set_lists_the_registered_ones(pm):
    with pytest.raises(UnknownNameError) as info:
        open_explorer(ExplorerConfig(prompt_set="papr"), "CartPole-v1", CARTPOLE, plugin_manager=pm)
    message = str(info.value)
    assert message.startswith("unknown prompt set 'papr'; available: ")
    for name in ("frozen", "name-only", "paper", "random", "shuffled", "single-stage"):
        assert name in message


def test_unknown_task_says_how_to_give_one(pm):
    with pytest.raises(UsageError) as info:
        open_explorer(ExplorerConfig(), "MyMaze-v0", CARTPOLE, plugin_manager=pm)
    message = str(info.value)
    assert "'MyMaze-v0'" in message
    assert "--task-description" in message and "llm-explorer tasks" in message


def test_unknown_task_is_fine_with_a_name_only_set_or_a_description(pm):
    with open_explorer(ExplorerConfig(prompt_set="name-only"), "MyMaze-v0", CARTPOLE, plugin_manager=pm) as ex:
        assert ex.manifest()["task"] == {"env_id": "MyMaze-v0", "title": "MyMaze"}
    config = ExplorerConfig(task_description="A maze.")
    with open_explorer(config, "MyMaze-v0", CARTPOLE, plugin_manager=make_plugin_manager(autoload=False)) as ex:
        assert ex.manifest()["task"]["env_id"] == "MyMaze-v0"


def test_unknown_stage_name(pm):
    with pytest.raises(UnknownNameError, match="unknown parser 'fancy'; available: default"):
        Catalogues(pm).parsers.get("fancy")


# --------------------------------------------------------------------------- observer hooks

RECORD = EpisodeRecord(episode_return=12.0, length=3, env_id="CartPole-v1", episode_index=0, actions=(0, 1, 1))


class Observer:
    def __init__(self) -> None:
        self.updates: list[ExplorationUpdate] = []
        self.failures: list[RequestFailure] = []

    @hookimpl
    def exploration_update_published(self, update):
        self.updates.append(update)

    @hookimpl
    def exploration_request_failed(self, failure):
        self.failures.append(failure)


def test_observer_sees_published_updates(pm):
    observer = Observer()
    pm.register(observer, name="observer")
    with open_explorer(ExplorerConfig(), "CartPole-v1", CARTPOLE, plugin_manager=pm) as ex:
        first = ex.runtime.submit_and_wait(RECORD, timeout=30)
        second = ex.runtime.submit_and_wait(RECORD, timeout=30)
    assert isinstance(first, ExplorationUpdate) and isinstance(second, ExplorationUpdate)
    assert observer.updates == [first, second]
    assert [u.version for u in observer.updates] == [1, 2]
    assert observer.failures == []
    assert first.provenance.provider == "scripted" and first.provenance.prompt_set == "paper"


def test_observer_sees_failures(pm):
    observer = Observer()
    pm.register(observer, name="observer")
    config = ExplorerConfig(provider_options={"reply": "no idea"}, max_attempts=1)
    with open_explorer(config, "CartPole-v1", CARTPOLE, plugin_manager=pm) as ex:
        outcome = ex.runtime.submit_and_wait(RECORD, timeout=30)
        assert ex.cache.current().source == "default"
    assert isinstance(outcome, RequestFailure)
    assert observer.updates == []
    assert observer.failures == [outcome]
    assert outcome.reason == "parse_error"
    assert outcome.attempts == 2  # one analysis call, one (unretried) proposal call


def test_a_raising_observer_does_not_stop_the_run(pm):
    class Broken:
        @hookimpl
        def exploration_update_published(self, update):
            raise RuntimeError("observer bug")

    pm.register(Broken(), name="broken")
    with open_explorer(ExplorerConfig(), "CartPole-v1", CARTPOLE, plugin_manager=pm) as ex:
        outcome = ex.runtime.submit_and_wait(RECORD, timeout=30)
        assert ex.cache.current() is outcome
        assert ex.stats()["updates_published"] == 1


def test_a_raising_observer_does_not_starve_the_others(pm):
    class Broken:
        @hookimpl
        def exploration_update_published(self, update):
            raise RuntimeError("observer bug")

    observer = Observer()
    pm.register(observer, name="observer")
    pm.register(Broken(), name="broken")  # pluggy calls the later registration first
    with open_explorer(ExplorerConfig(), "CartPole-v1", CARTPOLE, plugin_manager=pm) as ex:
        outcome = ex.runtime.submit_and_wait(RECORD, timeout=30)
    assert observer.updates == [outcome]


def test_manifest_lists_the_plugins_that_ran(pm):
    pm.register(Observer(), name="observer")
    with open_explorer(ExplorerConfig(), "CartPole-v1", CARTPOLE, plugin_manager=pm) as ex:
        plugins = {p["name"] for p in ex.manifest()["plugins"]}
    assert plugins == set(DEFAULT_PLUGINS) | {"observer"}


# --------------------------------------------------------------------------- the CLI


def test_cli_plugins_lists_plugins_versions_providers_and_prompt_sets(monkeypatch):
    monkeypatch.setenv(BLOCK_ENV, ",".join(NOT_UNDER_TEST))
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"{SCRIPTED_MODULE} (llm-explorer " in out
    assert "openai (llm-explorer-openai 0.1.0): register_providers" in out
    assert "local (llm-explorer-llamacpp 0.1.0): register_providers" in out
    providers = out.split("\nproviders:\n", 1)[1].split("\nprompt sets:\n", 1)[0]
    for name in ("local", "openai", "scripted"):
        assert f"\n  {name}: " in "\n" + providers
    assert "[from openai; structured output: json_schema" in providers
    prompt_sets = out.split("\nprompt sets:\n", 1)[1]
    for name in ("paper", "name-only", "single-stage", "shuffled", "random", "frozen"):
        assert f"  {name}: " in prompt_sets
    assert "[hash " in prompt_sets


def test_cli_plugins_without_autoload(monkeypatch):
    monkeypatch.setenv(AUTOLOAD_ENV, "1")
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    assert "openai" not in result.output and "  scripted: " in result.output


def test_cli_tasks_lists_the_built_in_tasks(monkeypatch):
    monkeypatch.setenv(AUTOLOAD_ENV, "1")
    result = CliRunner().invoke(cli, ["tasks"])
    assert result.exit_code == 0, result.output
    assert "CartPole-v1: CartPole" in result.output.splitlines()


# --------------------------------------------------------------------------- choosing stages by name


class Shouting:
    """A third-party plugin, registered in process: a summariser and a validator that record calls."""

    __name__ = "shouting"  # the plugin's name when registered without one (as pluggy names modules)

    def __init__(self) -> None:
        self.summarised: list[int] = []
        self.validated: list[tuple[float, ...]] = []
        self.options: dict = {}

    @hookimpl
    def register_summarisers(self, register):
        from explorer_pipeline.default_plugins.summariser import DefaultSummariser

        plugin = self

        class Loud:
            """Shouts the trend."""

            def __init__(self, context, *, volume: int = 1) -> None:
                plugin.options["volume"] = volume
                self.volume = volume
                self.inner = DefaultSummariser(m=context.config.sample_m)

            def summarise(self, record, history, spec):
                plugin.summarised.append(record.episode_index)
                variables = dict(self.inner.summarise(record, history, spec))
                variables["return_trend"] = "LOUD " * self.volume + variables["return_trend"]
                return variables

        register("loud", Loud)

    @hookimpl
    def register_validators(self, register):
        plugin = self

        def uniform(context):
            """Ignores the model: always uniform."""

            class Uniform:
                def validate(self, values, spec):
                    out = (1.0 / spec.n,) * spec.n
                    plugin.validated.append(out)
                    return out

            return Uniform()

        register("uniform", uniform)


def test_a_third_party_stage_runs_only_when_chosen(pm):
    plugin = Shouting()
    pm.register(plugin, name="shouting")
    with open_explorer(ExplorerConfig(), "CartPole-v1", CARTPOLE, plugin_manager=pm) as ex:
        default = ex.runtime.submit_and_wait(RECORD, timeout=30)
    assert plugin.summarised == [] and plugin.validated == []
    assert default.values != (0.5, 0.5)  # the scripted answer, through the default validator

    config = ExplorerConfig(summariser={"name": "loud", "options": {"volume": 2}}, validator="uniform",
                            exchange_log=None)
    with open_explorer(config, "CartPole-v1", CARTPOLE, plugin_manager=pm) as ex:
        update = ex.runtime.submit_and_wait(RECORD, timeout=30)
        stages = ex.manifest()["stages"]
    assert plugin.summarised == [RECORD.episode_index] and plugin.options == {"volume": 2}
    assert plugin.validated == [(0.5, 0.5)] and update.values == (0.5, 0.5)
    assert stages["summariser"] == {"name": "loud", "options": {"volume": 2}, "plugin": "shouting"}
    assert stages["validator"]["plugin"] == "shouting"
    assert stages["proposer"] == {"name": "default", "options": {}, "plugin": STAGES_MODULE}


def test_the_summary_of_a_chosen_summariser_reaches_the_prompt(pm, tmp_path):
    pm.register(Shouting(), name="shouting")
    log = tmp_path / "exchanges.jsonl"
    config = ExplorerConfig(summariser="loud", exchange_log=log)
    with open_explorer(config, "CartPole-v1", CARTPOLE, plugin_manager=pm) as ex:
        assert isinstance(ex.runtime.submit_and_wait(RECORD, timeout=30), ExplorationUpdate)
    assert "LOUD " in log.read_text().split("\n")[0]  # the analysis request


@pytest.mark.parametrize("stage", ["summariser", "analyser", "proposer", "validator"])
def test_an_unknown_stage_name_is_one_line_listing_what_exists(pm, stage):
    pm.register(Shouting(), name="shouting")
    with pytest.raises(UnknownNameError) as info:
        open_explorer(ExplorerConfig(**{stage: "nope"}), "CartPole-v1", CARTPOLE, plugin_manager=pm)
    available = {"summariser": "default, loud", "validator": "default, uniform",
                 "proposer": "auto, default, token-probabilities"}.get(stage, "default")
    assert str(info.value) == f"unknown {stage} 'nope'; available: {available}"
    assert isinstance(info.value, UsageError)


def test_an_unknown_parser_name_lists_the_parsers(pm):
    config = ExplorerConfig(proposer={"name": "default", "options": {"parser": "strict"}})
    with pytest.raises(UnknownNameError, match=r"^unknown parser 'strict'; available: default$"):
        open_explorer(config, "CartPole-v1", CARTPOLE, plugin_manager=pm)


@pytest.mark.parametrize(("stage", "options", "message"), [
    ("summariser", {"windw": 3}, r"summariser 'default' \(from plugin '.*stages'\) does not accept option\(s\) "
                                 r"\['windw'\]; it accepts: window$"),
    ("analyser", {"x": 1}, r"analyser 'default' .* does not accept option\(s\) \['x'\]; it accepts: max_chars$"),
    ("analyser", {"max_chars": 0}, r"analyser 'default' .*: max_chars must be a whole number >= 1, got 0$"),
    ("proposer", {"retries": 2}, r"it accepts: parser, parser_options, reprompt$"),
    ("summariser", {"window": 0}, r"summariser 'default' .*: m and window must be >= 1"),
    ("validator", {"legal": [True]}, r"validator 'default' .*: legal needs one boolean per action \(2\), got 1"),
])
def test_bad_stage_options_are_usage_errors(pm, stage, options, message):
    config = ExplorerConfig(**{stage: {"name": "default", "options": options}})
    with pytest.raises(UsageError, match=message):
        open_explorer(config, "CartPole-v1", CARTPOLE, plugin_manager=pm)


@pytest.mark.parametrize("config", [
    {"summariser": {"options": {"window": 0}}},
    {"proposer": {"options": {"parser": "nope"}}},
    {"validator": "nope"},
    {"provider": "nope"},
])
def test_bad_stage_input_writes_nothing(pm, tmp_path, config):
    log = tmp_path / "run" / "exchanges.jsonl"
    with pytest.raises(UsageError):
        open_explorer(ExplorerConfig(**config, exchange_log=log), "CartPole-v1", CARTPOLE, plugin_manager=pm)
    assert not (tmp_path / "run").exists()  # the run directory's exchange log is opened only after every check


def test_a_required_option_is_named(pm):
    class NeedsLog:
        @hookimpl
        def register_validators(self, register):
            register("logged", lambda context, log: None)

    pm.register(NeedsLog(), name="needs-log")
    message = r"validator 'logged' \(from plugin 'needs-log'\) needs option\(s\) \['log'\]"
    with pytest.raises(UsageError, match=message):
        open_explorer(ExplorerConfig(validator="logged"), "CartPole-v1", CARTPOLE, plugin_manager=pm)


def test_stage_choice_accepts_a_bare_name_and_rejects_unknown_keys():
    from pydantic import ValidationError

    from explorer_pipeline.session import StageChoice

    assert ExplorerConfig(proposer="logprobs").proposer == StageChoice(name="logprobs")
    mapping = ExplorerConfig.model_validate({"summariser": {"name": "x", "options": {"k": 1}}})
    assert mapping.summariser == StageChoice(name="x", options={"k": 1})
    with pytest.raises(ValidationError, match="extra"):
        ExplorerConfig.model_validate({"validator": {"nam": "x"}})
    with pytest.raises(ValidationError):
        ExplorerConfig(analyser={"name": ""})


# --------------------------------------------------------------------------- hook callers: tracing, wrappers


def test_tracing_logs_every_hook(monkeypatch, caplog):
    monkeypatch.setenv(TRACE_ENV, "1")
    pm = make_plugin_manager(autoload=False)
    pm.register(Observer(), name="observer")
    caplog.set_level(logging.DEBUG, logger="explorer_pipeline.plugins")
    with open_explorer(ExplorerConfig(), "CartPole-v1", CARTPOLE, plugin_manager=pm) as ex:
        assert isinstance(ex.runtime.submit_and_wait(RECORD, timeout=30), ExplorationUpdate)
    failing = ExplorerConfig(provider_options={"reply": "no idea"}, max_attempts=1)
    with open_explorer(failing, "CartPole-v1", CARTPOLE, plugin_manager=pm) as ex:
        assert isinstance(ex.runtime.submit_and_wait(RECORD, timeout=30), RequestFailure)
    pm.hook.register_commands(cli=click.Group())
    traced = caplog.text
    for hook in hookspecs.hook_names():
        assert f"hook {hook}(" in traced, hook
        assert f"hook {hook} returned" in traced, hook
    assert "hook exploration_update_published(update=ExplorationUpdate) -> ['observer']" in traced
    assert f"hook register_proposers(register=collect.<locals>.register) -> ['{STAGES_MODULE}']" in traced


def test_tracing_reports_a_raising_hook(monkeypatch, caplog):
    class Broken:
        @hookimpl
        def register_providers(self, register):
            raise RuntimeError("cannot register")

    monkeypatch.setenv(TRACE_ENV, "1")
    pm = make_plugin_manager(autoload=False, extra_plugins=[Broken()])
    caplog.set_level(logging.DEBUG, logger="explorer_pipeline.plugins")
    with pytest.raises(RuntimeError, match="cannot register"):
        Catalogues(pm)
    assert "hook register_providers raised RuntimeError: cannot register" in caplog.text


def test_no_tracing_without_the_env_var(pm, caplog):
    caplog.set_level(logging.DEBUG, logger="explorer_pipeline.plugins")
    Catalogues(pm)
    assert "hook register_" not in caplog.text


def test_a_catalogue_hook_wrapper_runs_around_each_plugin(pm):
    seen: list[list[str]] = []

    class Extra:
        @hookimpl
        def register_providers(self, register):
            register("extra", ScriptedProvider())

    class Counting:
        @hookimpl(wrapper=True)
        def register_providers(self, register):
            before = len(seen)
            seen.append([])
            result = yield
            seen[before].append("done")
            return result

    pm.register(Extra(), name="extra")
    pm.register(Counting(), name="counting")
    assert Catalogues(pm).providers.names() == ["extra", "scripted"]
    assert seen == [["done"], ["done"]]  # once around each plugin that registers providers


def test_an_observer_hook_wrapper_can_contain_an_error(pm, caplog):
    caught: list[str] = []

    class Broken:
        @hookimpl
        def exploration_update_published(self, update):
            raise RuntimeError("observer bug")

    class Guard:
        @hookimpl(wrapper=True)
        def exploration_update_published(self, update):
            try:
                return (yield)
            except RuntimeError as exc:
                caught.append(str(exc))
                return []

    observer = Observer()
    pm.register(observer, name="observer")
    pm.register(Broken(), name="broken")
    pm.register(Guard(), name="guard")
    with open_explorer(ExplorerConfig(), "CartPole-v1", CARTPOLE, plugin_manager=pm) as ex:
        outcome = ex.runtime.submit_and_wait(RECORD, timeout=30)
    assert caught == ["observer bug"]
    assert observer.updates == [outcome]
    assert "raised" not in caplog.text  # the wrapper handled it: nothing for the runtime to log


def test_an_explorer_is_observed_by_callbacks_added_before_it_starts(pm):
    seen: list[object] = []
    explorer = open_explorer(ExplorerConfig(), "CartPole-v1", CARTPOLE, plugin_manager=pm)
    explorer.observe(on_update=seen.append, on_failure=seen.append)
    with explorer as ex:
        outcome = ex.runtime.submit_and_wait(RECORD, timeout=30)
        with pytest.raises(RuntimeError):
            ex.observe(on_update=seen.append)
    assert isinstance(outcome, ExplorationUpdate) and seen == [outcome]


def test_a_raising_observer_is_logged_with_its_plugin(pm, caplog):
    class Broken:
        @hookimpl
        def exploration_request_failed(self, failure):
            raise RuntimeError("observer bug")

    pm.register(Broken(), name="broken")
    config = ExplorerConfig(provider_options={"reply": "no idea"}, max_attempts=1)
    with open_explorer(config, "CartPole-v1", CARTPOLE, plugin_manager=pm) as ex:
        assert isinstance(ex.runtime.submit_and_wait(RECORD, timeout=30), RequestFailure)
    assert "<exploration_request_failed of plugin 'broken'> raised" in caplog.text


def test_a_hook_implemented_as_a_coroutine_is_an_error(pm):
    class Async:
        @hookimpl
        async def register_validators(self, register):
            register("never", object)

    pm.register(Async(), name="async-plugin")
    with pytest.raises(TypeError, match="plugin 'async-plugin' implements register_validators as a coroutine"):
        Catalogues(pm)


# --------------------------------------------------------------------------- `llm-explorer plugins`: stages


def stage_section(out: str, stage: str) -> list[str]:
    block = out.split("\nstages (", 1)[1]
    lines = block.split(f"\n  {stage}:\n", 1)[1].splitlines()
    return [line for line in lines[: next((i for i, ln in enumerate(lines) if not ln.startswith("    ")), None)]]


def test_cli_plugins_lists_each_stage_and_marks_the_one_a_run_uses(monkeypatch, tmp_path):
    monkeypatch.setattr(cli_module, "make_plugin_manager",
                        lambda: make_plugin_manager(autoload=False, extra_plugins=[Shouting()]))
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "* = what the default configuration uses" in out
    summarisers = stage_section(out, "summariser")
    assert [line.split()[:2] for line in summarisers] == [["*", "default"], ["loud", "Shouts"]]
    assert summarisers[1].endswith("Shouts the trend. (options: volume) [from shouting]")
    assert summarisers[0].endswith(f"(options: window) [from {STAGES_MODULE}]")
    proposers = stage_section(out, "proposer")
    assert [line.split()[:2] for line in proposers] == [["auto", "`token-probabilities`"], ["*", "default"],
                                                         ["token-probabilities", "One"]]
    assert "(options: parser, parser_options, reprompt)" in proposers[1]
    assert proposers[2].endswith("(options: permutations, sharpen_temperature, labels, levels, min_valid_mass, "
                                 f"average, top_logprobs, concurrency, fallback) [from {STAGES_MODULE}]")
    assert [line.split()[:2] for line in stage_section(out, "analyser")] == [["*", "default"]]
    assert stage_section(out, "validator")[1].split()[:2] == ["uniform", "Ignores"]
    assert "  parsers (the default proposer's option" in out

    config = tmp_path / "run.yaml"
    config.write_text("env: CartPole-v1\nexplorer:\n  summariser: loud\n  validator: {name: nothing}\n")
    result = CliRunner().invoke(cli, ["plugins", "--config", str(config)])
    assert result.exit_code == 0, result.output
    summarisers = stage_section(result.output, "summariser")
    assert [line.split()[0] for line in summarisers] == ["default", "*"] and "loud" in summarisers[1]
    validators = stage_section(result.output, "validator")
    assert validators[-1] == "    ! nothing: chosen but not registered by any plugin"
    assert not any(line.lstrip().startswith("*") for line in validators)


def test_cli_plugins_rejects_a_bad_config_in_one_line(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("explorer:\n  summariser: {name: x, colour: red}\n")
    result = CliRunner().invoke(cli, ["plugins", "--config", str(config)])
    assert result.exit_code == 2
    assert "explorer.summariser.colour: Extra inputs are not permitted" in result.output
