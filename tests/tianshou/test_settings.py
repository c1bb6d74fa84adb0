"""One declaration per setting: the ``train`` options and the ablation spec's shortcut fields are
generated from the run configuration's fields (type, bounds, docstring, ``Setting`` metadata)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import click
import pytest
from click.testing import CliRunner
from pydantic import Field, ValidationError

from explorer_ablation.spec import SHORTCUTS, RunSettings, shortcut_model
from explorer_pipeline.config import ExplorerConfig, Setting, settings
from tianshou_integration.cli import SETTING_FLAGS, setting_option, train
from tianshou_integration.config import RunConfig

ROOT = Path(__file__).resolve().parents[2]

#: the flags and spec shortcuts users' commands and specs already use, with their key paths
LEGACY_FLAGS = {
    "--env": ("env",), "--algo": ("algo",), "--steps": ("steps",), "--seed": ("seed",), "--device": ("device",),
    "--provider": ("explorer", "provider"), "--model": ("explorer", "model"), "--base-url": ("explorer", "base_url"),
    "--prompt-set": ("explorer", "prompt_set"), "--k": ("explorer", "every_k"), "--m": ("explorer", "sample_m"),
    "--temperature": ("explorer", "temperature"), "--mode": ("explorer", "mode"),
    "--task-description": ("explorer", "task_description"), "--eval-episodes": ("eval", "episodes"),
    "--sigma": ("algorithm", "noise", "sigma"), "--response-cache": ("explorer", "response_cache"),
    "--replay": ("explorer", "replay"), "--option": ("explorer", "provider_options"),
}
LEGACY_SHORTCUTS = {
    "preset": ("preset",), "algo": ("algo",), "steps": ("steps",), "provider": ("explorer", "provider"),
    "model": ("explorer", "model"), "base_url": ("explorer", "base_url"), "prompt_set": ("explorer", "prompt_set"),
    "k": ("explorer", "every_k"), "m": ("explorer", "sample_m"), "temperature": ("explorer", "temperature"),
    "mode": ("explorer", "mode"), "task_description": ("explorer", "task_description"),
    "eval_episodes": ("eval", "episodes"), "sigma": ("algorithm", "noise", "sigma"),
    "response_cache": ("explorer", "response_cache"), "replay": ("explorer", "replay"),
    "options": ("explorer", "provider_options"),
}


def option_of(command: click.Command, flag: str) -> click.Option:
    found = [p for p in command.params if isinstance(p, click.Option) and flag in p.opts]
    assert len(found) == 1, flag
    return found[0]


def test_every_existing_flag_and_shortcut_name_still_works():
    flags = {info.setting.flag: info.path for _, info in SETTING_FLAGS}
    assert flags == LEGACY_FLAGS
    assert SHORTCUTS == LEGACY_SHORTCUTS
    for flag in [*LEGACY_FLAGS, "--llm-timeout", "--config", "--preset", "--set", "--out", "--resume"]:
        option_of(train, flag)


def test_a_flag_gets_its_help_type_and_bounds_from_the_field():
    k = option_of(train, "--k")
    assert k.type is click.INT and k.metavar == "K" and k.default is None
    assert k.help is not None and k.help.startswith("K: request an exploration update every K finished training")
    assert "[explorer.every_k; >= 1; default: 1]" in k.help
    temperature = option_of(train, "--temperature")
    assert temperature.type is click.FLOAT and ">= 0.0 and <= 2.0" in str(temperature.help)
    mode = option_of(train, "--mode")
    assert isinstance(mode.type, click.Choice) and list(mode.type.choices) == ["async", "blocking"]
    assert option_of(train, "--replay").is_flag and option_of(train, "--option").multiple
    assert "default: the preset's budget" in str(option_of(train, "--steps").help)


@pytest.mark.parametrize(("args", "flag", "allowed"), [
    (["--k", "0"], "--k", "explorer.every_k must be >= 1 (got 0)"),
    (["--temperature", "2.5"], "--temperature", "explorer.temperature must be <= 2.0 (got 2.5)"),
    (["--eval-episodes", "0"], "--eval-episodes", "eval.episodes must be >= 1 (got 0)"),
    (["--sigma", "-1"], "--sigma", "algorithm.noise.sigma must be >= 0.0 (got -1.0)"),
])
def test_a_bad_value_is_one_line_exit_2_naming_the_flag_and_the_range(args, flag, allowed, tmp_path):
    result = CliRunner().invoke(train, ["--env", "CartPole-v1", "--algo", "dqn", "--provider", "none", *args,
                                        "--out", str(tmp_path / "never")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{flag}: {allowed}" in lines[0], result.output
    assert not (tmp_path / "never").exists()


def test_the_spec_validates_a_shortcut_with_the_fields_own_type_and_bounds():
    assert RunSettings(k=3, temperature=1.5, response_cache="cache.sqlite", options={"latency": 0}).k == 3
    for bad in ({"k": 0}, {"temperature": 2.5}, {"mode": "eager"}, {"steps": True}, {"sigma": -0.1}):
        with pytest.raises(ValidationError) as info:
            RunSettings(**bad)
        assert [e["loc"] for e in info.value.errors()] == [tuple(bad)]
    assert "explorer.every_k" in str(RunSettings.model_fields["k"].description)


def test_a_new_setting_is_one_edit():
    """A field with a docstring and a ``Setting`` is all it takes: the train option (help, bounds)
    and the spec shortcut (type, bounds, key path) follow from it."""

    class Explorer(ExplorerConfig):
        max_tokens_analysis: Annotated[int, Setting(flag="--max-tokens-analysis", shortcut="analysis_tokens")] = \
            Field(200, ge=1, le=4096)
        """Output-token cap of stage 1."""

    class Config(RunConfig):
        explorer: Explorer = Field(default_factory=lambda: Explorer(provider="none"))

    info = next(i for i in settings(Config) if i.setting.flag == "--max-tokens-analysis")
    assert info.path == ("explorer", "max_tokens_analysis") and info.bounds() == ">= 1 and <= 4096"

    @click.command()
    @setting_option("tokens", info)
    def command(tokens: int | None) -> None:
        click.echo(f"tokens={tokens}")

    help_text = " ".join(CliRunner().invoke(command, ["--help"]).output.split())
    assert "Output-token cap of stage 1." in help_text and ">= 1 and <= 4096" in help_text
    assert CliRunner().invoke(command, ["--max-tokens-analysis", "64"]).output == "tokens=64\n"

    model, paths = shortcut_model(Config)
    assert paths["analysis_tokens"] == ("explorer", "max_tokens_analysis")
    assert paths["k"] == ("explorer", "every_k")
    assert model(analysis_tokens=64).analysis_tokens == 64  # type: ignore[attr-defined]
    with pytest.raises(ValidationError, match="less than or equal to 4096"):
        model(analysis_tokens=5000)


def test_a_run_without_an_llm_starts_without_langchain(tmp_path):
    """``llm-explorer train --provider none`` (with every installed plugin loaded, as the command
    does) imports neither LangChain nor the provider layer up to the first env step (a custom env
    records ``sys.modules`` there and ends the process)."""
    (tmp_path / "probe_env.py").write_text(PROBE_ENV)
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-m", "explorer_pipeline", "train",
         "--env", "probe_env:Probe-v0", "--algo", "dqn", "--provider", "none", "--steps", "200",
         "--out", str(tmp_path / "run")],
        cwd=tmp_path, env={**_env(), "PYTHONPATH": f"{tmp_path}:{ROOT}", "PROBE_OUT": str(out)},
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(out.read_text())
    assert {"tianshou.data", "tianshou_integration.training", "explorer_pipeline.config"} <= set(loaded)
    offenders = [m for m in loaded if m.split(".")[0] in ("langchain_core", "langchain", "langsmith")
                 or m in ("explorer_pipeline.providers", "explorer_pipeline.session", "explorer_pipeline.llm")]
    assert offenders == []


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


#: CartPole whose first step (in training: envs are not stepped before) writes the loaded modules
#: to $PROBE_OUT and ends the process
PROBE_ENV = '''
import json, os, sys
import gymnasium
from gymnasium.envs.classic_control import CartPoleEnv


class Probe(CartPoleEnv):
    def step(self, action):
        with open(os.environ["PROBE_OUT"], "w") as f:
            json.dump(sorted(sys.modules), f)
        os._exit(0)


gymnasium.register("Probe-v0", entry_point=Probe, max_episode_steps=200)
'''
