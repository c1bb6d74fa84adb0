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
from typing import TYPE_CHECKING, Any

import numpy as np

from explorer_pipeline.cache import ExplorationCache
from explorer_pipeline.errors import UsageError
from explorer_rundir.format import (
    CONFIG_FILE,
    EXCHANGES_FILE,
    SUMMARY_FILE,
    write_text_atomic,
)

from .algorithms import build_setup, resolve_device
from .callbacks import CallbackList, Checkpointing, ExplorationUpdates, MetricsLogging, StopOnSignal
from .checkpoint import Checkpointer, LoadedCheckpoint, RunParts, discard_newer, load_newest, restore_run
from .config import RunConfig, dump_config
from .counter import EnvStepCounter
from .envs import EnvInfo, describe_env
from .rundir import RunDir, occupied_message, resume_problem
from .schedule import (
    SCHEDULE_FILE,
    ScheduledCache,
    ScheduledUpdate,
    load_schedule,
    read_recorded_schedule,
    write_schedule,
)
from .tap import EpisodeTap
from .training import TrainResult, train

if TYPE_CHECKING:  # the session (LangChain, providers) loads only when a run asks an LLM
    from explorer_pipeline.session import Explorer

log = logging.getLogger(__name__)

__all__ = ["CONFIG_FILE", "LOCK_FILE", "occupied_message", "resume_problem", "run_experiment"]

LOCK_FILE = ".lock"
"""Held (``flock``) by the process writing the run directory."""


def _open_explorer(config: RunConfig, out: Path, env: EnvInfo) -> Explorer | None:
    """Build (not start) the explorer; raises UsageError before anything is written. The run
    directory observes it once open (:meth:`Explorer.observe`)."""
    if config.baseline:
        return None
    from explorer_pipeline.session import open_explorer

    explorer = config.explorer.model_copy(update={"exchange_log": out / EXCHANGES_FILE})
    return open_explorer(explorer, env.env_id, env.spec, seed=config.seed)


@contextlib.contextmanager
def _exclusive(out: Path) -> Any:
    """Hold an advisory lock on the run directory: two processes never write one run."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(out / LOCK_FILE, "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UsageError(f"run directory {str(out)!r} is in use by another process") from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def run_experiment(config: RunConfig, out: str | Path, *, progress: bool | None = None, resume: bool = False,
                   replay_schedule: str | Path | None = None) -> dict[str, Any]:
    """Run one experiment and write its run directory ``out``; returns the summary.

    :param resume: continue the unfinished run in ``out`` from its newest complete checkpoint;
        ``config`` must be the run's own (only its ``checkpoint`` section may differ).
    :param replay_schedule: a finished run directory whose recorded update schedule is applied
        instead of asking any LLM (:mod:`tianshou_integration.schedule`); ``config`` is normally
        read from that directory's ``config.yaml``.

    Raises :class:`UsageError` for bad input (an existing run directory when not resuming, one
    that cannot be resumed, an incomplete run to replay) before anything is trained or written.
    The first Ctrl-C during training stops it after a last checkpoint, a second one at once; the
    run directory is completed and the summary says ``interrupted``.
    """
    out = Path(out)
    device = resolve_device(config.device)  # a GPU that is not there is bad input, found before anything is written
    env = describe_env(config.env, config.atari)
    started = time.perf_counter()
    if resume:
        loaded, schedule = _check_resume(config, out, device, replay_schedule)
    else:
        loaded, schedule = None, _check_new_run(config, out, replay_schedule)
    with contextlib.ExitStack() as stack:
        explorer = None if schedule is not None else _open_explorer(config, out, env)
        if explorer is not None:
            stack.callback(explorer.close)
        out.mkdir(parents=True, exist_ok=True)
        stack.enter_context(_exclusive(out))
        rundir = _open_rundir(out, loaded)
        stack.callback(rundir.close)
        if explorer is not None:  # not started yet: the runtime starts after the run directory is open
            explorer.observe(on_update=rundir.on_update, on_failure=rundir.on_failure)
        counter = EnvStepCounter()
        cache = _cache_for(env, explorer, schedule, counter, rundir)
        rundir.track(cache)
        if loaded is None:
            _record_new_run(config, rundir, explorer, schedule, replay_schedule)
        else:
            _record_resume(config, rundir, loaded)
        rng = np.random.default_rng(config.seed)
        setup = build_setup(config, env, cache=cache, rng=rng, counter=counter)
        stack.callback(setup.close)
        timeout = config.explorer.request_timeout_s if explorer is not None else None
        tap = EpisodeTap(explorer.runtime if explorer is not None else None, env.env_id, env.spec,
                         mode=config.explorer.mode, timeout_s=timeout, counter=counter)
        parts = RunParts(setup, rng, tap, cache, rundir, explorer.runtime if explorer is not None else None)
        loop = restore_run(parts, loaded) if loaded is not None else None
        checkpointer = None
        if config.checkpoint.enabled:
            checkpointer = Checkpointer(out, config.checkpoint, config, parts,
                                        last_step=loaded.step if loaded is not None else None)

        if explorer is not None:
            stack.enter_context(explorer)  # starts the runtime thread
        # signals stop the run with a last checkpoint only when there are checkpoints
        with StopOnSignal() if checkpointer is not None else contextlib.nullcontext() as stop:
            callbacks = CallbackList([MetricsLogging(rundir), ExplorationUpdates(rundir), stop,
                                      Checkpointing(checkpointer) if checkpointer is not None else None])
            result = train(setup, steps=config.steps, eval_every=config.eval.every,
                           eval_episodes=config.eval.episodes, tap=tap, callback=callbacks, progress=progress,
                           resume=loop)
        stats: dict[str, Any] = {}
        if explorer is not None:
            explorer.close()  # stop the runtime: every update it published is known now
            stats = explorer.stats()
        rundir.flush_pending()
        summary = _summary(config, env, result, stats, rundir, tap, time.perf_counter() - started)
        summary["checkpoints"] = _checkpoint_summary(checkpointer, loaded)
        if isinstance(cache, ScheduledCache):
            summary.update(_replay_summary(cache, result))
        labels = (explorer.manifest().get("action_spec", {}).get("labels") if explorer is not None else None)
        rundir.write_plots(title=f"{config.algo} on {env.env_id} (seed {config.seed})",
                           labels=labels or env.spec.labels)
        rundir.write_summary(summary)  # last: a run directory with a summary is complete
        return summary
    raise AssertionError("unreachable")  # pragma: no cover


def _open_rundir(out: Path, loaded: LoadedCheckpoint | None) -> RunDir:
    """The run directory, cut back to the checkpoint a resumed run starts from."""
    if loaded is None:
        return RunDir(out)
    gone = discard_newer(out, loaded.step)
    if gone:
        log.warning("resuming from env step %d; discarded newer checkpoints at steps %s", loaded.step, gone)
    (out / SUMMARY_FILE).unlink(missing_ok=True)  # the run is running again
    return RunDir(out, resume={**loaded.state["explorer"]["rundir"], "step": loaded.step})


def _cache_for(env: EnvInfo, explorer: Explorer | None, schedule: list[ScheduledUpdate] | None,
               counter: EnvStepCounter, rundir: RunDir) -> ExplorationCache:
    """What the collector reads: the replayed schedule, the explorer's cache, or (baseline) a
    cache that never changes."""
    if schedule is not None:
        return ScheduledCache(env.spec, schedule, counter, on_publish=(rundir.on_update,))
    return explorer.cache if explorer is not None else ExplorationCache(env.spec)


def _check_resume(config: RunConfig, out: Path, device: Any,
                  replay_schedule: str | Path | None) -> tuple[LoadedCheckpoint, list[ScheduledUpdate] | None]:
    """The checkpoint a resumed run starts from, and the schedule it replays (None: it asks its
    LLM, or none); raises UsageError for a run directory that cannot be resumed."""
    if replay_schedule is not None:
        raise UsageError("resume a replay with resume alone: the replayed schedule is kept in its run directory")
    problem = resume_problem(out)
    if problem:
        raise UsageError(problem)
    loaded = load_newest(out, config, device=device)
    schedule = load_schedule(out / SCHEDULE_FILE) if (out / SCHEDULE_FILE).is_file() else None
    return loaded, schedule


def _check_new_run(config: RunConfig, out: Path,
                   replay_schedule: str | Path | None) -> list[ScheduledUpdate] | None:
    """The schedule a new run replays (None: it asks its LLM, or none); raises UsageError for an
    occupied ``out`` or a run that cannot be replayed."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(occupied_message(out))
    return read_recorded_schedule(replay_schedule, config.steps) if replay_schedule is not None else None


def _record_new_run(config: RunConfig, rundir: RunDir, explorer: Explorer | None,
                    schedule: list[ScheduledUpdate] | None, replay_schedule: str | Path | None) -> None:
    """``config.yaml``, the manifest, and for a replay the schedule and where it comes from."""
    write_text_atomic(rundir.path / CONFIG_FILE, dump_config(config))
    manifest_explorer = explorer.manifest() if explorer is not None else None
    rundir.write_manifest(config.model_dump(mode="json"), seed=config.seed, explorer=manifest_explorer)
    if schedule is not None:
        write_schedule(rundir.path / SCHEDULE_FILE, schedule)
        rundir.note_replay({"replay_of": str(Path(replay_schedule).resolve()) if replay_schedule else None,
                            "updates": len(schedule)})


def _record_resume(config: RunConfig, rundir: RunDir, loaded: LoadedCheckpoint) -> None:
    """``config.yaml`` again (its checkpoint section may have changed) and the resume in the manifest."""
    write_text_atomic(rundir.path / CONFIG_FILE, dump_config(config))
    rundir.note_resume({"from_step": loaded.step, "checkpoint": loaded.stored.path.name,
                        "exact": not loaded.limits, "limits": loaded.limits})
    for limit in loaded.limits:
        log.warning("resumed run is not an exact continuation: %s", limit)


def _replay_summary(cache: ScheduledCache, result: TrainResult) -> dict[str, Any]:
    summary: dict[str, Any] = {"replayed_updates": len(cache.schedule)}
    if not result.interrupted:
        mismatches = cache.mismatches()
        summary["schedule_mismatches"] = len(mismatches)
        if mismatches:
            log.warning("the replay applied %d update(s) at other steps than recorded: %s",
                        len(mismatches), mismatches[:5])
    return summary


def _checkpoint_summary(checkpointer: Checkpointer | None, loaded: LoadedCheckpoint | None) -> dict[str, Any]:
    return {
        "enabled": checkpointer is not None,
        "written": checkpointer.written if checkpointer is not None else 0,
        "seconds": round(checkpointer.seconds, 3) if checkpointer is not None else 0.0,
        "mib": round(checkpointer.bytes_written / 2**20, 2) if checkpointer is not None else 0.0,
        "failed": checkpointer.failed if checkpointer is not None else 0,
        "resumed_from_step": loaded.step if loaded is not None else None,
        "resume_exact": (not loaded.limits) if loaded is not None else None,
    }


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
        "eval_wall_s": round(result.eval_wall_s, 3),
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
        "budget": stats.get("budget"),
        "blocking_timeouts": tap.blocking_timeouts,
        "tap_errors": tap.errors,
    }
    summary.update(rundir.guidance_summary())
    return summary
