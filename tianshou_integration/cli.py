"""``llm-explorer train``: train a Tianshou agent with (or without) LLM-guided exploration.

Importing this module is cheap (click only); torch and Tianshou load when the command runs.
Exit status: 0 done; 2 bad input (one line, no traceback); 1 anything else, including Ctrl-C
(after the run directory has been completed).
"""

from __future__ import annotations

import importlib.util
import re
import time
from pathlib import Path
from typing import Any

import click

from explorer_pipeline.errors import BadInput, UsageError

from .names import ALGORITHMS, PRESETS

__all__ = ["BadInput", "default_provider", "train"]


def default_provider() -> str:
    """``local`` when the llama.cpp plugin is installed, else ``scripted``."""
    return "local" if importlib.util.find_spec("llm_explorer_llamacpp") is not None else "scripted"


def _parse_options(values: tuple[str, ...]) -> dict[str, str]:
    from .config import ConfigError

    options: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError([f"--option needs KEY=VALUE, got {item!r}"])
        options[key.strip()] = value
    return options


def _default_out(env: str, algo: str, seed: int) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", env.split(":")[-1])
    return Path("runs") / f"{name}-{algo}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"


#: shortcut flag -> key path in the run configuration
SHORTCUTS: dict[str, tuple[str, ...]] = {
    "env_id": ("env",), "algo": ("algo",), "steps": ("steps",), "seed": ("seed",), "device": ("device",),
    "provider": ("explorer", "provider"), "model": ("explorer", "model"), "base_url": ("explorer", "base_url"),
    "prompt_set": ("explorer", "prompt_set"), "every_k": ("explorer", "every_k"),
    "sample_m": ("explorer", "sample_m"), "temperature": ("explorer", "temperature"),
    "mode": ("explorer", "mode"), "task_description": ("explorer", "task_description"),
    "eval_episodes": ("eval", "episodes"), "sigma": ("algorithm", "noise", "sigma"),
    "response_cache": ("explorer", "response_cache"),
}
FLAG_NAMES = {"env_id": "--env", "every_k": "--k", "sample_m": "--m"}


def _flag(name: str) -> str:
    return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def _overrides(shortcuts: dict[str, Any], options: tuple[str, ...], llm_timeout: float | None, replay: bool,
               assignments: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any, str]]:
    """The command line as ``(key path, value, flag)``: shortcuts first, then ``--set`` in order."""
    out: list[tuple[tuple[str, ...], Any, str]] = []
    for name, value in shortcuts.items():
        if value is not None:
            out.append((SHORTCUTS[name], str(value) if isinstance(value, Path) else value, _flag(name)))
    for key, value in _parse_options(options).items():
        out.append((("explorer", "provider_options", key), value, f"--option {key}"))
    if llm_timeout is not None:
        out.append((("explorer", "call_timeout_s"), llm_timeout, "--llm-timeout"))
        if llm_timeout > 0:
            out.append((("explorer", "request_timeout_s"), 3 * llm_timeout, "--llm-timeout"))
    if replay:
        out.append((("explorer", "replay"), True, "--replay"))
    from .config import parse_assignment

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
@click.option("--env", "env_id", default=None, metavar="ENV",
              help="Gymnasium id (CartPole-v1, ALE/Pong-v5, Hopper-v5) or module:EnvId for a custom env.")
@click.option("--algo", default=None, metavar="ALGO", help=f"One of: {', '.join(ALGORITHMS)}.")
@click.option("--steps", type=int, default=None, metavar="N",
              help="Env steps to train (default: the preset's budget for the env family).")
@click.option("--seed", type=int, default=None, metavar="S", help="Random seed (default 0).")
@click.option("--device", default=None, metavar="auto|cpu|cuda", help="Where the networks live.")
@click.option("--provider", default=None, metavar="NAME",
              help="LLM provider: local, openai, scripted, or none for the baseline "
                   "(default: local if installed, else scripted).")
@click.option("--model", default=None, metavar="NAME", help="Model name or GGUF path, per provider.")
@click.option("--base-url", default=None, metavar="URL", help="OpenAI-compatible server URL.")
@click.option("--prompt-set", default=None, metavar="ID", help="Prompt set (default: paper).")
@click.option("--k", "every_k", type=int, default=None, metavar="K",
              help="Ask for an update every K episodes (default 1).")
@click.option("--m", "sample_m", type=int, default=None, metavar="M",
              help="Actions sampled from an episode for the prompt (default 100).")
@click.option("--temperature", type=float, default=None,
              help="Sampling temperature of the LLM (default 0, as the paper).")
@click.option("--mode", type=click.Choice(["async", "blocking"]), default=None,
              help="async (default) never waits for the LLM; blocking waits after every episode (paper parity).")
@click.option("--task-description", default=None, metavar="TEXT|@FILE",
              help="Task description for envs without a built-in one.")
@click.option("--eval-episodes", type=int, default=None, metavar="E",
              help="Greedy evaluation episodes at each evaluation.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None, metavar="DIR",
              help="Run directory (default: runs/ENV-ALGO-sSEED-TIME).")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="Provider option (repeatable).")
@click.option("--sigma", type=float, default=None,
              help="Gaussian exploration noise σ (DDPG/TD3/SAC), in algorithm.noise.units "
                   "(normalised by default: 1 = half the action range).")
@click.option("--llm-timeout", type=float, default=None, metavar="SECONDS",
              help="Limit for one LLM call (default 60); a whole request (both stages, retries) gets 3x that.")
@click.option("--response-cache", type=click.Path(path_type=Path, dir_okay=False), default=None, metavar="PATH",
              help="SQLite file caching LLM responses.")
@click.option("--replay", is_flag=True, help="Answer only from --response-cache (offline reproduction).")
@click.option("--resume", "resume_dir", default=None, metavar="RUN_DIR",
              help="Continue the unfinished run in RUN_DIR from its newest complete checkpoint, with the run's "
                   "own configuration (only checkpoint.* and --option preflight may be changed).")
@click.option("--replay-schedule", "schedule_dir", default=None, metavar="RUN_DIR",
              help="Rerun the finished run in RUN_DIR without any LLM: each update it recorded is applied at the "
                   "env step it was first applied (updates.jsonl); writes a new --out.")
def train(config_file: Path | None, preset: str | None, assignments: tuple[str, ...], show_config: bool,
          out: Path | None, options: tuple[str, ...], llm_timeout: float | None, replay: bool,
          resume_dir: str | None, schedule_dir: str | None, **shortcuts: Any) -> None:
    """Train ALGO on ENV with LLM-guided exploration and write a run directory.

    Settings come from the preset, then --config FILE, then the flags, then --set KEY=VALUE.
    With --resume RUN_DIR or --replay-schedule RUN_DIR they come from RUN_DIR/config.yaml.
    """
    from .config import ConfigError, resolve
    from .rundir import occupied_message

    try:
        overrides = _overrides(shortcuts, options, llm_timeout, replay, assignments)
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
