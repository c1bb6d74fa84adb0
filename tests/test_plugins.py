"""The plugin manager: defaults, entry points, blocking, duplicates, unknown names, observers, CLI."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from explorer_pipeline import hookimpl
from explorer_pipeline.cli import cli
from explorer_pipeline.errors import DuplicateRegistrationError, UnknownNameError, UsageError
from explorer_pipeline.plugins import (
    AUTOLOAD_ENV,
    BLOCK_ENV,
    DEFAULT_PLUGINS,
    Catalogue,
    list_plugins,
    make_plugin_manager,
)
from explorer_pipeline.scripted import ScriptedProvider
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
    for name in (AUTOLOAD_ENV, BLOCK_ENV):
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
    assert cat.summarisers.names() == cat.parsers.names() == cat.validators.names() == ["default"]
    assert {"paper", "name-only", "single-stage", "shuffled", "random", "frozen"} <= set(cat.prompt_sets.names())
    assert "CartPole-v1" in cat.tasks and cat.tasks.owner("CartPole-v1") == PROMPTS_MODULE


def test_each_call_builds_a_fresh_manager():
    a, b = make_plugin_manager(autoload=False), make_plugin_manager(autoload=False)
    assert a is not b
    a.set_blocked(SCRIPTED_MODULE)
    assert SCRIPTED_MODULE in names(b)


def test_list_plugins_reports_hooks_and_our_version(pm):
    infos = {info.name: info for info in list_plugins(pm)}
    assert set(infos) == set(DEFAULT_PLUGINS)
    assert infos[STAGES_MODULE].hooks == ("register_parsers", "register_summarisers", "register_validators")
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
