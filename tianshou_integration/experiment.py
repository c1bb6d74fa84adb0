"""One training run from start to finish: env, explorer, algorithm, run directory, summary.

:func:`run_experiment` is what ``llm-explorer train`` calls; the Python API and an ablation run
call it with a resolved :class:`~tianshou_integration.config.RunConfig`::

    config = resolve(overrides=[(("env",), "CartPole-v1", "api"), (("algo",), "dqn", "api")])
    summary = run_experiment(config, out="runs/cartpole")
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from explorer_pipeline.cache import ExplorationCache
from explorer_pipeline.rundir_format import CONFIG_FILE, EXCHANGES_FILE
from explorer_pipeline.session import Explorer, open_explorer

from .algorithms import build_setup, resolve_device
from .config import RunConfig, dump_config
from .counter import EnvStepCounter
from .envs import EnvInfo, describe_env
from .rundir import RunDir
from .tap import EpisodeTap
from .training import TrainResult, train

log = logging.getLogger(__name__)

__all__ = ["CONFIG_FILE", "run_experiment"]


def _open_explorer(config: RunConfig, out: Path, env: EnvInfo, rundir_ref: list[RunDir]) -> Explorer | None:
    """Build (not start) the explorer; raises UsageError before anything is written."""
    if config.baseline:
        return None
    explorer = config.explorer.model_copy(update={"exchange_log": out / EXCHANGES_FILE})
    # the callbacks run only once the runtime has started, after the run directory exists
    return open_explorer(explorer, env.env_id, env.spec, seed=config.seed,
                         on_update=(lambda update: rundir_ref[0].on_update(update),),
                         on_failure=(lambda failure: rundir_ref[0].on_failure(failure),))


def run_experiment(config: RunConfig, out: str | Path, *, progress: bool | None = None) -> dict[str, Any]:
    """Run one experiment and write its run directory ``out``; returns the summary.

    Raises :class:`UsageError` for bad input before anything is trained or written. Ctrl-C
    during training stops it; the run directory is completed and the summary says
    ``interrupted``.
    """
    out = Path(out)
    resolve_device(config.device)  # a GPU that is not there is bad input, found before anything is written
    env = describe_env(config.env, config.atari)
    started = time.perf_counter()
    rundir_ref: list[RunDir] = []
    with contextlib.ExitStack() as stack:
        explorer = _open_explorer(config, out, env, rundir_ref)
        if explorer is not None:
            stack.callback(explorer.close)
        rundir = RunDir(out)
        stack.callback(rundir.close)
        rundir_ref.append(rundir)
        cache = explorer.cache if explorer is not None else ExplorationCache(env.spec)
        rundir.track(cache)
        (out / CONFIG_FILE).write_text(dump_config(config), encoding="utf-8")
        rundir.write_manifest(config.model_dump(mode="json"), seed=config.seed,
                              explorer=explorer.manifest() if explorer is not None else None)
        counter = EnvStepCounter()
        setup = build_setup(config, env, cache=cache, rng=np.random.default_rng(config.seed), counter=counter)
        stack.callback(setup.close)
        timeout = config.explorer.request_timeout_s if explorer is not None else None
        tap = EpisodeTap(explorer.runtime if explorer is not None else None, env.env_id, env.spec,
                         mode=config.explorer.mode, timeout_s=timeout, counter=counter)

        def progress_info() -> dict[str, Any]:
            return {"upd": rundir.updates_applied, "inf": rundir.updates_informative, "fb": rundir.fallbacks}

        if explorer is not None:
            stack.enter_context(explorer)  # starts the runtime thread
        result = train(setup, steps=config.steps, eval_every=config.eval.every, eval_episodes=config.eval.episodes,
                       tap=tap, on_train_episode=rundir.log_train_episode, on_eval=rundir.log_eval,
                       after_collect=rundir.poll, progress=progress, progress_info=progress_info)
        stats: dict[str, Any] = {}
        if explorer is not None:
            explorer.close()  # stop the runtime: every update it published is known now
            stats = explorer.stats()
        rundir.flush_pending()
        summary = _summary(config, env, result, stats, rundir, tap, time.perf_counter() - started)
        labels = (explorer.manifest().get("action_spec", {}).get("labels") if explorer is not None else None)
        rundir.write_plots(title=f"{config.algo} on {env.env_id} (seed {config.seed})",
                           labels=labels or env.spec.labels)
        rundir.write_summary(summary)  # last: a run directory with a summary is complete
        return summary
    raise AssertionError("unreachable")  # pragma: no cover


def _summary(config: RunConfig, env: EnvInfo, result: TrainResult, stats: dict[str, Any], rundir: RunDir,
             tap: EpisodeTap, wall_s: float) -> dict[str, Any]:
    summary = {
        "env": env.env_id,
        "algo": config.algo,
        "seed": config.seed,
        "preset": config.preset,
        "baseline": config.baseline,
        "mode": config.explorer.mode,
        "interrupted": result.interrupted,
        "env_steps": result.env_steps,
        "episodes": result.episodes,
        "gradient_steps": result.gradient_steps,
        "wall_s": round(wall_s, 3),
        "train_wall_s": round(result.wall_s, 3),
        "steps_per_s": round(result.steps_per_s, 2),
        "final_eval_return": RunDir.finite(result.final_eval_return),
        "best_eval_return": RunDir.finite(result.best_eval_return),
        "reward_threshold": env.reward_threshold,
        "threshold_step": result.threshold_step,
        "eval_history": [[s, RunDir.finite(m)] for s, m in result.eval_history],
        "llm_requests": stats.get("llm_requests", 0),
        "updates_published": stats.get("updates_published", 0),
        "updates_applied": rundir.updates_applied,
        "fallbacks": rundir.fallbacks,
        "parse_failures": stats.get("parse_failures", 0),
        "validation_rejections": stats.get("validation_rejections", 0),
        "provider_errors": stats.get("provider_errors", 0),
        "dropped_stale": stats.get("dropped_stale", 0),
        "failures": stats.get("failures", {}),
        "tokens": stats.get("tokens", {}),
        "blocking_timeouts": tap.blocking_timeouts,
        "tap_errors": tap.errors,
    }
    summary.update(rundir.guidance_summary())
    return summary
