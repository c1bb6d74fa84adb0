"""One training run from start to finish: env, explorer, algorithm, run directory, summary.

:func:`run_experiment` is what ``llm-explorer train`` calls; an ablation runner can call it
directly with a :class:`RunSpec`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from explorer_pipeline.cache import ExplorationCache
from explorer_pipeline.errors import UsageError
from explorer_pipeline.session import Explorer, ExplorerConfig, open_explorer

from .algorithms import build_setup, default_hyperparams
from .counter import EnvStepCounter
from .envs import EnvInfo, describe_env
from .names import ALGORITHMS, CONTINUOUS_ALGOS, DISCRETE_ALGOS
from .rundir import RunDir
from .tap import EpisodeTap
from .training import TrainResult, train

log = logging.getLogger(__name__)

__all__ = ["RunSpec", "check_algo_fits", "run_experiment"]


@dataclass
class RunSpec:
    """What one run is. ``explorer`` None is the baseline (the algorithm's own exploration).

    :param steps: env steps (None: the algorithm's default budget for the env family).
    :param mode: ``async`` (never wait for the LLM) or ``blocking`` (wait after every episode,
        paper parity; waits at most ``explorer.request_timeout_s``).
    :param sigma: Gaussian exploration noise (continuous; None: the algorithm's default).
    :param apply_fraction: probability a continuous step gets the LLM bias (1.0: paper).
    :param eval_every: env steps between greedy evaluations (None: the default).
    """

    env: str
    algo: str
    out: Path
    steps: int | None = None
    seed: int = 0
    explorer: ExplorerConfig | None = None
    mode: Literal["async", "blocking"] = "async"
    eval_episodes: int = 10
    eval_every: int | None = None
    sigma: float | None = None
    apply_fraction: float = 1.0
    progress: bool | None = None


def check_algo_fits(algo: str, env: EnvInfo) -> None:
    """UsageError when ``algo`` is unknown or does not fit ``env``'s action space."""
    if algo not in ALGORITHMS:
        raise UsageError(f"unknown algorithm {algo!r}; available: {', '.join(ALGORITHMS)}")
    if algo in DISCRETE_ALGOS and not env.is_discrete:
        raise UsageError(f"{algo} needs discrete actions but {env.env_id} has continuous ones; "
                         f"use one of {', '.join(CONTINUOUS_ALGOS)}")
    if algo in CONTINUOUS_ALGOS and env.is_discrete:
        raise UsageError(f"{algo} needs continuous actions but {env.env_id} has discrete ones; "
                         f"use one of {', '.join(DISCRETE_ALGOS)}")


def _check_numbers(spec: RunSpec) -> None:
    checks = [
        (spec.steps is None or spec.steps >= 1, f"--steps must be >= 1, got {spec.steps}"),
        (spec.eval_episodes >= 1, f"--eval-episodes must be >= 1, got {spec.eval_episodes}"),
        (spec.eval_every is None or spec.eval_every >= 1, f"eval_every must be >= 1, got {spec.eval_every}"),
        (spec.sigma is None or (np.isfinite(spec.sigma) and spec.sigma >= 0),
         f"--sigma must be >= 0, got {spec.sigma}"),
        (0.0 <= spec.apply_fraction <= 1.0, f"apply_fraction must be in [0, 1], got {spec.apply_fraction}"),
        (spec.mode in ("async", "blocking"), f"mode must be async or blocking, got {spec.mode!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)


def _open_explorer(spec: RunSpec, env: EnvInfo, rundir_ref: list[RunDir]) -> Explorer | None:
    """Build (not start) the explorer; raises UsageError before anything is written."""
    if spec.explorer is None:
        return None
    config = spec.explorer
    if config.exchange_log is None:
        config = replace(config, exchange_log=Path(spec.out) / "exchanges.jsonl")
    # the callbacks run only once the runtime has started, after the run directory exists
    return open_explorer(config, env.env_id, env.spec, seed=spec.seed,
                         on_update=(lambda update: rundir_ref[0].on_update(update),),
                         on_failure=(lambda failure: rundir_ref[0].on_failure(failure),))


def run_experiment(spec: RunSpec) -> dict[str, Any]:
    """Run one experiment and write its run directory; returns the summary.

    Raises :class:`UsageError` for bad input before anything is trained or written. Ctrl-C
    during training stops it; the run directory is completed and the summary says
    ``interrupted``.
    """
    _check_numbers(spec)
    env = describe_env(spec.env)
    check_algo_fits(spec.algo, env)
    hp = default_hyperparams(spec.algo, env)
    steps = spec.steps if spec.steps is not None else hp.steps
    started = time.perf_counter()
    rundir_ref: list[RunDir] = []
    with contextlib.ExitStack() as stack:
        explorer = _open_explorer(spec, env, rundir_ref)
        if explorer is not None:
            stack.callback(explorer.close)
        rundir = RunDir(spec.out)
        stack.callback(rundir.close)
        rundir_ref.append(rundir)
        cache = explorer.cache if explorer is not None else ExplorationCache(env.spec)
        rundir.track(cache)
        rundir.write_manifest(_config_dict(spec, steps, hp), seed=spec.seed,
                              explorer=explorer.manifest() if explorer is not None else None)
        counter = EnvStepCounter()
        setup = build_setup(spec.algo, env, cache=cache, seed=spec.seed, rng=np.random.default_rng(spec.seed),
                            counter=counter, hp=hp, sigma=spec.sigma, apply_fraction=spec.apply_fraction,
                            eval_envs=min(spec.eval_episodes, 10))
        stack.callback(setup.close)
        timeout = spec.explorer.request_timeout_s if spec.explorer is not None else None
        tap = EpisodeTap(explorer.runtime if explorer is not None else None, env.env_id, env.spec,
                         mode=spec.mode, timeout_s=timeout, counter=counter)

        def progress_info() -> dict[str, Any]:
            return {"upd": rundir.updates_applied, "fb": rundir.fallbacks}

        if explorer is not None:
            stack.enter_context(explorer)  # starts the runtime thread
        result = train(setup, steps=steps, eval_every=spec.eval_every, eval_episodes=spec.eval_episodes,
                       tap=tap, on_train_episode=rundir.log_train_episode, on_eval=rundir.log_eval,
                       after_collect=rundir.poll, progress=spec.progress, progress_info=progress_info)
        stats: dict[str, Any] = {}
        if explorer is not None:
            explorer.close()  # stop the runtime: every update it published is known now
            stats = explorer.stats()
        rundir.flush_pending()
        summary = _summary(spec, env, result, stats, rundir, tap, time.perf_counter() - started)
        labels = (explorer.manifest().get("action_spec", {}).get("labels") if explorer is not None else None)
        rundir.write_plots(title=f"{spec.algo} on {env.env_id} (seed {spec.seed})", labels=labels or env.spec.labels)
        rundir.write_summary(summary)  # last: a run directory with a summary is complete
        return summary
    raise AssertionError("unreachable")  # pragma: no cover


def _config_dict(spec: RunSpec, steps: int, hp: Any) -> dict[str, Any]:
    config = {
        "env": spec.env, "algo": spec.algo, "steps": steps, "seed": spec.seed, "mode": spec.mode,
        "eval_episodes": spec.eval_episodes, "eval_every": spec.eval_every or hp.eval_every,
        "sigma": spec.sigma if spec.sigma is not None else hp.sigma, "apply_fraction": spec.apply_fraction,
        "baseline": spec.explorer is None, "out": str(spec.out),
        "hyperparams": asdict(hp),
    }
    if spec.explorer is not None:
        config["explorer"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(spec.explorer).items()}
    return config


def _summary(spec: RunSpec, env: EnvInfo, result: TrainResult, stats: dict[str, Any], rundir: RunDir,
             tap: EpisodeTap, wall_s: float) -> dict[str, Any]:
    return {
        "env": env.env_id,
        "algo": spec.algo,
        "seed": spec.seed,
        "baseline": spec.explorer is None,
        "mode": spec.mode,
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
