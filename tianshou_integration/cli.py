"""``llm-explorer train``: train a Tianshou agent with (or without) LLM-guided exploration.

The options of the settings (``--steps``, ``--k``, ``--provider`` ...) are generated from the run
configuration's fields (:func:`setting_options`); the options here are those that are no setting.
Importing this module is cheap (click, pydantic and the configuration models); torch, Tianshou and
LangChain load when the command runs, LangChain only when a provider is used.
Exit status: 0 done; 2 bad input (one line, no traceback); 1 anything else, including Ctrl-C
(after the run directory has been completed).
"""

from __future__ import annotations

import importlib.util
import re
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from explorer_pipeline.config import SettingInfo, settings
from explorer_pipeline.errors import BadInput, UsageError

from .names import PRESETS

__all__ = ["SETTING_FLAGS", "BadInput", "default_provider", "setting_option", "setting_options", "train"]


def default_provider() -> str:
    """``local`` when the llama.cpp plugin is installed, else ``scripted``."""
    return "local" if importlib.util.find_spec("llm_explorer_llamacpp") is not None else "scripted"


def _default_out(env: str, algo: str, seed: int) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", env.split(":")[-1])
    return Path("runs") / f"{name}-{algo}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"


# --------------------------------------------------------------------------- generated options
def _setting_flags() -> list[tuple[str, SettingInfo]]:
    """``(click parameter name, setting)`` for every run-configuration field that declares a flag."""
    from .config import RunConfig

    return [("__".join(info.path), info) for info in settings(RunConfig) if info.setting.flag]


SETTING_FLAGS = _setting_flags()


def _is_mapping(info: SettingInfo) -> bool:
    return typing.get_origin(info.value_type) is dict


def setting_option(name: str, info: SettingInfo) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The click option of one setting, from its declaration: flag, type (a ``Literal`` gives a
    choice, a mapping a repeatable ``KEY=VALUE``, a boolean a flag), help (the docstring) followed
    by the key, the range and the default. The value is left to the configuration model to check
    (``resolve``), so a bad one is reported in one line naming the flag and the allowed range."""
    flag, kind = info.setting.flag, info.value_type
    assert flag is not None
    notes = [info.key]
    if info.bounds():
        notes.append(info.bounds())
    if _is_mapping(info):
        notes.append("repeatable")
    elif kind is not bool and info.default_text() is not None:
        notes.append(f"default: {info.default_text()}")
    text = f"{info.help()} [{'; '.join(notes)}]"
    if kind is bool:
        return click.option(flag, name, is_flag=True, default=None, help=text)
    if _is_mapping(info):
        return click.option(flag, name, multiple=True, metavar=info.setting.metavar or "KEY=VALUE", help=text)
    choices = info.choices()
    click_type: Any = (click.Choice(choices) if choices else click.INT if kind is int else click.FLOAT
                       if kind is float else click.Path(path_type=Path, dir_okay=False) if kind is Path
                       else click.STRING)
    return click.option(flag, name, type=click_type, default=None, metavar=info.setting.metavar, help=text)


def setting_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate ``command`` with the options of every setting that declares a flag, in declaration order."""
    for name, info in reversed(SETTING_FLAGS):
        command = setting_option(name, info)(command)
    return command


def _overrides(values: dict[str, Any], llm_timeout: float | None,
               assignments: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any, str]]:
    """The command line as ``(key path, value, flag)``: setting flags first, then ``--set`` in order."""
    from .config import ConfigError, parse_assignment

    out: list[tuple[tuple[str, ...], Any, str]] = []
    for name, info in SETTING_FLAGS:
        value, flag = values.get(name), info.setting.flag
        if value is None or value == ():
            continue
        if _is_mapping(info):
            for item in value:
                key, sep, text = item.partition("=")
                if not sep or not key.strip():
                    raise ConfigError([f"{flag} needs KEY=VALUE, got {item!r}"])
                out.append(((*info.path, key.strip()), text, f"{flag} {key.strip()}"))
        else:
            out.append((info.path, str(value) if isinstance(value, Path) else value, str(flag)))
    if llm_timeout is not None:
        out.append((("explorer", "call_timeout_s"), llm_timeout, "--llm-timeout"))
        if llm_timeout > 0:
            out.append((("explorer", "request_timeout_s"), 3 * llm_timeout, "--llm-timeout"))
    for text in assignments:
        path, value = parse_assignment(text)
        out.append((path, value, f"--set {text}"))
    return out


def _provider_given(config_file: Path | None, overrides: list[tuple[tuple[str, ...], Any, str]]) -> bool:
    if any(path == ("explorer", "provider") for path, _, _ in overrides):
        return True
    if config_file is None:
        return False
    from .config import load_config_file

    data, _ = load_config_file(config_file)
    explorer = data.get("explorer")
    return isinstance(explorer, dict) and "provider" in explorer


def _config_of_run(resume_dir: str | None, schedule_dir: str | None, config_file: Path | None, preset: str | None,
                   overrides: list[tuple[tuple[str, ...], Any, str]]) -> Any:
    """The configuration of the run that ``--resume`` continues or ``--replay-schedule`` replays:
    its own ``config.yaml``. Other settings on the command line may change only ``checkpoint.*``."""
    from .checkpoint import config_differences
    from .config import resolve
    from .rundir import resume_problem

    if resume_dir is not None and schedule_dir is not None:
        raise BadInput("--resume and --replay-schedule exclude each other (a replay resumes with --resume alone)")
    flag, run_dir = ("--resume", Path(resume_dir)) if resume_dir is not None else \
        ("--replay-schedule", Path(schedule_dir or "."))
    if config_file is not None:
        raise BadInput(f"{flag} uses {run_dir / 'config.yaml'}; drop --config (--set checkpoint.KEY=VALUE may "
                       "change how checkpoints are written)")
    if resume_dir is not None:
        problem = resume_problem(run_dir)
        if problem:
            raise BadInput(f"--resume: {problem}")
    elif not (run_dir / "config.yaml").is_file():
        raise BadInput(f"--replay-schedule: {str(run_dir)!r} is not a complete run directory (no config.yaml)")
    stored = resolve(file=run_dir / "config.yaml")
    if not overrides and preset is None:
        return stored
    given = resolve(file=run_dir / "config.yaml", overrides=overrides, preset=preset)
    differences = config_differences(stored.model_dump(mode="json"), given)
    if differences:
        raise BadInput(f"{flag} runs with the configuration in {run_dir / 'config.yaml'}; these settings differ "
                       f"from it: {'; '.join(differences)} (only checkpoint.* and --option preflight may be changed)")
    return given


@click.command("train")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              metavar="FILE.yaml", help="Run configuration (a run directory's config.yaml reruns that run).")
@click.option("--preset", default=None, metavar="NAME",
              help=f"Settings to start from: {', '.join(PRESETS)} (default: the file's, else default).")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Set any configuration key, e.g. algorithm.lr=1e-4 or network.hidden_sizes=[64,64] "
                   "(repeatable; applied last, in order).")
@click.option("--show-config", is_flag=True, help="Print the resolved configuration as YAML and exit.")
@setting_options
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None, metavar="DIR",
              help="Run directory (default: runs/ENV-ALGO-sSEED-TIME).")
@click.option("--llm-timeout", type=float, default=None, metavar="SECONDS",
              help="Limit for one LLM call (default 60); a whole request (both stages, retries) gets 3x that.")
@click.option("--resume", "resume_dir", default=None, metavar="RUN_DIR",
              help="Continue the unfinished run in RUN_DIR from its newest complete checkpoint, with the run's "
                   "own configuration (only checkpoint.* and --option preflight may be changed).")
@click.option("--replay-schedule", "schedule_dir", default=None, metavar="RUN_DIR",
              help="Rerun the finished run in RUN_DIR without any LLM: each update it recorded is applied at the "
                   "env step it was first applied (updates.jsonl); writes a new --out.")
def train(config_file: Path | None, preset: str | None, assignments: tuple[str, ...], show_config: bool,
          out: Path | None, llm_timeout: float | None, resume_dir: str | None, schedule_dir: str | None,
          **setting_values: Any) -> None:
    """Train ALGO on ENV with LLM-guided exploration and write a run directory.

    Settings come from the preset, then --config FILE, then the flags, then --set KEY=VALUE.
    With --resume RUN_DIR or --replay-schedule RUN_DIR they come from RUN_DIR/config.yaml.
    A default shown below is the configuration's own; the preset may change it (--show-config
    prints the resolved values).
    """
    from .config import ConfigError, resolve
    from .rundir import occupied_message

    try:
        overrides = _overrides(setting_values, llm_timeout, assignments)
        if resume_dir is not None or schedule_dir is not None:
            config = _config_of_run(resume_dir, schedule_dir, config_file, preset, overrides)
        else:
            defaults = [] if _provider_given(config_file, overrides) else \
                [(("explorer", "provider"), default_provider(), "the default provider")]
            config = resolve(file=config_file, overrides=[*defaults, *overrides], preset=preset)
    except ConfigError as exc:
        raise BadInput(str(exc)) from None
    if show_config:
        from .config import dump_config

        click.echo(dump_config(config), nl=False)
        return
    if resume_dir is not None:
        if out is not None:
            raise BadInput(f"--resume writes into {resume_dir} itself; drop --out")
        out = Path(resume_dir)
    else:
        out = out or _default_out(config.env, config.algo, config.seed)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise BadInput(occupied_message(out))

    from explorer_pipeline.budget import stop_message

    from .experiment import run_experiment

    try:
        summary = run_experiment(config, out, resume=resume_dir is not None, replay_schedule=schedule_dir)
    except UsageError as exc:
        raise BadInput(str(exc)) from None
    except KeyboardInterrupt:
        click.echo(f"interrupted before training started; partial run directory: {out}", err=True)
        raise click.exceptions.Exit(1) from None
    final = summary.get("final_eval_return")
    informative = summary.get("updates_informative")
    budget_note = stop_message(summary.get("budget"))
    line = (f"{summary['algo']} on {summary['env']}: {summary['env_steps']} env steps, "
            f"{summary['episodes']} episodes, final greedy return "
            f"{'n/a' if final is None else f'{final:.2f}'}, "
            f"{summary['updates_applied']} LLM updates applied"
            f"{'' if informative is None else f' ({informative} informative)'}, {summary['fallbacks']} fallbacks; "
            f"{budget_note + '; ' if budget_note else ''}run directory: {out}")
    if summary.get("interrupted"):
        click.echo(f"interrupted: {line}", err=True)
        if (summary.get("checkpoints") or {}).get("enabled"):
            click.echo(f"continue it with: llm-explorer train --resume {out}", err=True)
        raise click.exceptions.Exit(1)
    click.echo(line)
    click.echo(f"plots: {out / 'learning_curve.png'}, {out / 'exploration.png'}; "
               f"summary: {out / 'summary.json'}; configuration: {out / 'config.yaml'}")
