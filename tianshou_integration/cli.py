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

import click

from explorer_pipeline.errors import UsageError

from .names import ALGORITHMS

__all__ = ["BadInput", "default_provider", "train"]


class BadInput(click.ClickException):
    """Bad input: ``Error: <message>`` on one line, exit status 2."""

    exit_code = 2


def default_provider() -> str:
    """``local`` when the llama.cpp plugin is installed, else ``scripted``."""
    return "local" if importlib.util.find_spec("llm_explorer_llamacpp") is not None else "scripted"


def _parse_options(values: tuple[str, ...]) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"--option needs KEY=VALUE, got {item!r}")
        options[key.strip()] = value
    return options


def _default_out(env: str, algo: str, seed: int) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", env.split(":")[-1])
    return Path("runs") / f"{name}-{algo}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"


@click.command("train")
@click.option("--env", "env_id", required=True, metavar="ENV",
              help="Gymnasium id (CartPole-v1) or module:EnvId for a custom env.")
@click.option("--algo", required=True, metavar="ALGO", help=f"One of: {', '.join(ALGORITHMS)}.")
@click.option("--steps", type=int, default=None, metavar="N",
              help="Env steps to train (default: the algorithm's budget for the env family).")
@click.option("--seed", type=int, default=0, show_default=True, metavar="S")
@click.option("--provider", default=None, metavar="NAME",
              help="LLM provider: local, openai, scripted, or none for the baseline "
                   "(default: local if installed, else scripted).")
@click.option("--model", default=None, metavar="NAME", help="Model name or GGUF path, per provider.")
@click.option("--base-url", default=None, metavar="URL", help="OpenAI-compatible server URL.")
@click.option("--prompt-set", default="paper", show_default=True, metavar="ID")
@click.option("--k", "every_k", type=int, default=1, show_default=True, metavar="K",
              help="Ask for an update every K episodes.")
@click.option("--m", "sample_m", type=int, default=100, show_default=True, metavar="M",
              help="Actions sampled from an episode for the prompt.")
@click.option("--temperature", type=float, default=0.0, show_default=True,
              help="Sampling temperature of the LLM (the paper uses 0).")
@click.option("--mode", type=click.Choice(["async", "blocking"]), default="async", show_default=True,
              help="async never waits for the LLM; blocking waits after every episode (paper parity).")
@click.option("--task-description", default=None, metavar="TEXT|@FILE",
              help="Task description for envs without a built-in one.")
@click.option("--eval-episodes", type=int, default=10, show_default=True, metavar="E",
              help="Greedy evaluation episodes at each evaluation.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None, metavar="DIR",
              help="Run directory (default: runs/ENV-ALGO-sSEED-TIME).")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="Provider option (repeatable).")
@click.option("--sigma", type=float, default=None,
              help="Gaussian exploration noise, normalised action units (DDPG/TD3/SAC; "
                   "the DQN family ignores it).")
@click.option("--llm-timeout", type=float, default=60.0, show_default=True, metavar="SECONDS",
              help="Limit for one LLM call; a whole request (both stages, retries) gets 3x that.")
@click.option("--response-cache", type=click.Path(path_type=Path, dir_okay=False), default=None, metavar="PATH",
              help="SQLite file caching LLM responses.")
@click.option("--replay", is_flag=True, help="Answer only from --response-cache (offline reproduction).")
def train(env_id: str, algo: str, steps: int | None, seed: int, provider: str | None, model: str | None,
          base_url: str | None, prompt_set: str, every_k: int, sample_m: int, temperature: float, mode: str,
          task_description: str | None, eval_episodes: int, out: Path | None, options: tuple[str, ...],
          sigma: float | None, llm_timeout: float, response_cache: Path | None, replay: bool) -> None:
    """Train ALGO on ENV with LLM-guided exploration and write a run directory."""
    if algo not in ALGORITHMS:
        raise BadInput(f"unknown algorithm {algo!r}; available: {', '.join(ALGORITHMS)}")
    provider = provider or default_provider()
    provider_options = _parse_options(options)
    if not llm_timeout > 0:
        raise BadInput(f"--llm-timeout must be > 0 seconds, got {llm_timeout}")
    if replay and response_cache is None:
        raise BadInput("--replay needs --response-cache PATH")

    from explorer_pipeline.session import ExplorerConfig

    from .experiment import RunSpec, run_experiment

    explorer = None
    if provider != "none":
        explorer = ExplorerConfig(
            provider=provider, model=model, base_url=base_url, prompt_set=prompt_set,
            task_description=task_description, every_k=every_k, sample_m=sample_m, temperature=temperature,
            provider_options=provider_options, response_cache=response_cache, replay=replay,
            call_timeout_s=llm_timeout, request_timeout_s=3 * llm_timeout,
        )
    spec = RunSpec(env=env_id, algo=algo, out=out or _default_out(env_id, algo, seed), steps=steps, seed=seed,
                   explorer=explorer, mode=mode, eval_episodes=eval_episodes, sigma=sigma)  # type: ignore[arg-type]
    try:
        summary = run_experiment(spec)
    except UsageError as exc:
        raise BadInput(str(exc)) from None
    except KeyboardInterrupt:
        click.echo(f"interrupted before training started; partial run directory: {spec.out}", err=True)
        raise click.exceptions.Exit(1) from None
    final = summary.get("final_eval_return")
    line = (f"{summary['algo']} on {summary['env']}: {summary['env_steps']} env steps, "
            f"{summary['episodes']} episodes, final greedy return "
            f"{'n/a' if final is None else f'{final:.2f}'}, "
            f"{summary['updates_applied']} LLM updates applied, {summary['fallbacks']} fallbacks; "
            f"run directory: {spec.out}")
    if summary.get("interrupted"):
        click.echo(f"interrupted: {line}", err=True)
        raise click.exceptions.Exit(1)
    click.echo(line)
    click.echo(f"plots: {spec.out / 'learning_curve.png'}, {spec.out / 'exploration.png'}; "
               f"summary: {spec.out / 'summary.json'}")
