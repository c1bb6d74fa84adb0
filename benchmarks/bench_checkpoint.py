"""Wall-time cost of checkpoints: the same run with checkpoints off, at the default cadence, and often.

Two workloads, each as interleaved repetitions of separate ``llm-explorer train`` processes
(same env, algo, steps and seed; only ``checkpoint.*`` differs between the arms):

cartpole    DQN on CartPole-v1 with the ``default`` preset as it is (20 000 env steps).
atari       DQN on ALE/Pong-v5 with the ``paper`` preset, shrunk to fit a 2-core CPU: ``--steps``
            (default 2 500) instead of 310 000, gradient steps from step 500 instead of 10 000,
            batch 32 instead of 256, evaluation with 1 episode at the end only, device cpu.
            The replay buffer keeps the paper's 10 000 frames (it holds ``--steps`` of them).
atari-full  the paper-scale checkpoint itself: the ``paper`` Pong setup with its replay buffer
            full (10 000 frames from random play), ``--saves`` checkpoints written and timed one
            by one, and the share of wall time that is at the default cadence (one per 10 minutes).

Arms: ``off`` (``checkpoint.enabled=false``), ``default`` (the configuration's defaults: before
the first step, then every 10 minutes) and ``often`` (every ``--often`` env steps). Reported per
arm: training wall time (``train_wall_s``: the loop, without start-up), the checkpoints written,
the seconds the checkpoint writer measured inside the run, and the overhead two ways: the
difference of the median wall times to ``off`` (includes noise from the shared machine) and the
writer's own seconds over the run's wall time (precise, but misses effects outside the writer).

    .venv/bin/python benchmarks/bench_checkpoint.py cartpole --reps 3
    .venv/bin/python benchmarks/bench_checkpoint.py atari --reps 2 --steps 2500
    .venv/bin/python benchmarks/bench_checkpoint.py atari-full --saves 5

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = str(Path(sys.executable).with_name("llm-explorer"))

WORKLOADS = {
    "cartpole": ["--env", "CartPole-v1", "--algo", "dqn", "--provider", "none"],
    "atari": ["--env", "ALE/Pong-v5", "--algo", "dqn", "--preset", "paper", "--provider", "none",
              "--set", "device=cpu", "--set", "algorithm.learning_starts=500", "--set", "algorithm.batch_size=32",
              "--eval-episodes", "1"],
}


def arms(often: int, steps: int | None) -> dict[str, list[str]]:
    evaluate_at_end = ["--set", f"eval.every={steps}"] if steps else []
    return {"off": [*evaluate_at_end, "--set", "checkpoint.enabled=false"],
            "default": [*evaluate_at_end],
            "often": [*evaluate_at_end, "--set", f"checkpoint.every_steps={often}"]}


def run(out: Path, workload: list[str], steps: int | None, seed: int, extra: list[str]) -> dict:
    cmd = [CLI, "train", *workload, "--seed", str(seed), "--out", str(out), *extra]
    if steps:
        cmd += ["--steps", str(steps)]
    load = os.getloadavg()[0]
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "TQDM_DISABLE": "1"})
    summary = json.loads((out / "summary.json").read_text())
    summary["load_1m"] = round(load, 2)
    return summary


def compare(args: argparse.Namespace) -> dict:
    workload = WORKLOADS[args.workload]
    steps = args.steps if args.workload == "atari" else None
    arms_of = arms(args.often, steps)
    results: dict[str, list[dict]] = {arm: [] for arm in arms_of}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for arm, extra in arms_of.items():  # interleaved: load drifts hit every arm
                summary = run(Path(tmp) / f"{arm}-{rep}", workload, steps, args.seed, extra)
                results[arm].append(summary)
                print(json.dumps({"rep": rep, "arm": arm, "train_wall_s": summary["train_wall_s"],
                                  "checkpoints": summary["checkpoints"], "load_1m": summary["load_1m"]}),
                      file=sys.stderr, flush=True)
    report: dict = {"workload": args.workload, "command": [CLI, "train", *workload], "steps": steps or "preset",
                    "reps": args.reps, "often": args.often, "arms": {}}
    off = statistics.median(s["train_wall_s"] for s in results["off"])
    for arm, summaries in results.items():
        walls = [s["train_wall_s"] for s in summaries]
        inside = [s["checkpoints"]["seconds"] for s in summaries]
        median = statistics.median(walls)
        report["arms"][arm] = {
            "train_wall_s": walls,
            "median_train_wall_s": round(median, 2),
            "env_steps": summaries[0]["env_steps"],
            "checkpoints_written": [s["checkpoints"]["written"] for s in summaries],
            "checkpoint_mib": [s["checkpoints"]["mib"] for s in summaries],
            "checkpoint_s": inside,
            "overhead_vs_off_pct": round(100 * (median / off - 1), 2),
            "overhead_inside_pct": round(100 * statistics.median(c / w for c, w in zip(inside, walls, strict=True)), 3),
            "load_1m": [s["load_1m"] for s in summaries],
        }
    return report


def full_buffer(args: argparse.Namespace) -> dict:
    """Build the paper Pong setup, fill its buffer with random play, time ``--saves`` checkpoints."""
    import numpy as np
    from tianshou.data import Collector

    from explorer_pipeline.cache import ExplorationCache
    from tianshou_integration.algorithms import build_setup
    from tianshou_integration.checkpoint import Checkpointer, RunParts, buffer_nbytes
    from tianshou_integration.config import make_config
    from tianshou_integration.counter import EnvStepCounter
    from tianshou_integration.envs import describe_env
    from tianshou_integration.rundir import RunDir
    from tianshou_integration.tap import EpisodeTap
    from tianshou_integration.training import LoopState, TrainResult, collector_state

    config = make_config("ALE/Pong-v5", "dqn", {"device": "cpu", "explorer.provider": "none"}, preset="paper")
    env = describe_env(config.env, config.atari)
    cache = ExplorationCache(env.spec)
    rng = np.random.default_rng(config.seed)
    counter = EnvStepCounter()
    setup = build_setup(config, env, cache=cache, rng=rng, counter=counter)
    tap = EpisodeTap(None, env.env_id, env.spec, counter=counter)
    collector = Collector(setup.algorithm, setup.train_envs, setup.buffer, exploration_noise=True,
                          on_episode_done_hook=tap)
    collector.reset()
    t0 = time.perf_counter()
    collector.collect(n_step=config.algorithm.buffer_size, random=True)
    fill_s = time.perf_counter() - t0
    times = []
    with tempfile.TemporaryDirectory() as tmp, RunDir(Path(tmp), tensorboard=False) as rundir:
        rundir.track(cache)
        parts = RunParts(setup, rng, tap, cache, rundir)
        writer = Checkpointer(Path(tmp), config.checkpoint, config, parts)
        loop = LoopState(env_step=config.algorithm.buffer_size, credit=0.0, next_eval=0, last_eval=None,
                         last_return=[], result=TrainResult(), collector=collector_state(collector))
        for _ in range(args.saves):
            loop.env_step += 1  # a new directory each time
            started = time.perf_counter()
            writer.save(loop)
            times.append(round(time.perf_counter() - started, 3))
        mib = writer.bytes_written / args.saves / 2**20
    setup.close()
    per_save = statistics.median(times)
    cadence_s = 60.0 * config.checkpoint.every_minutes
    return {"workload": "atari-full", "preset": "paper", "env": "ALE/Pong-v5",
            "buffer_frames": len(setup.buffer), "buffer_mib": round(buffer_nbytes(setup.buffer) / 2**20, 1),
            "fill_s": round(fill_s, 1), "save_s": times, "median_save_s": per_save,
            "checkpoint_mib": round(mib, 1), "every_minutes": config.checkpoint.every_minutes,
            # in a run much longer than the cadence: one save per every_minutes of training
            "overhead_pct_at_default_cadence": round(100 * per_save / cadence_s, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=[*WORKLOADS, "atari-full"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2500, help="atari: env steps per run")
    parser.add_argument("--often", type=int, default=None,
                        help="env steps between checkpoints in the 'often' arm (cartpole 2000, atari 500)")
    parser.add_argument("--saves", type=int, default=5, help="atari-full: checkpoints timed")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.often is None:
        args.often = 2000 if args.workload == "cartpole" else 500
    report = full_buffer(args) if args.workload == "atari-full" else compare(args)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
