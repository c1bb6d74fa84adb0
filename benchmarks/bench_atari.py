"""Atari at the paper's settings on this machine: memory, speed, and the plug-in's overhead.

Every run is a separate ``llm-explorer train`` process with ``--preset paper`` on
``ALE/Breakout-v5`` (DQN); its peak RSS comes from ``os.wait4`` (the kernel's own count for that
process), its speed from ``summary.json``.

    .venv/bin/python benchmarks/bench_atari.py memory --buffer 10000
    .venv/bin/python benchmarks/bench_atari.py memory --buffer 100000
    .venv/bin/python benchmarks/bench_atari.py speed
    .venv/bin/python benchmarks/bench_atari.py overhead --reps 3

``memory`` fills the buffer (learning starts once it is full, as in the paper) and then takes
``--grad-steps`` gradient steps at the paper's batch of 256. ``speed`` measures collection alone
and then the learning phase (one gradient step per env step). ``overhead`` compares
``--provider none`` with K = 1 and the scripted provider answering after 2 s per call, same run,
interleaved; to keep it affordable on a CPU it shrinks the batch to 32 and the run to
``--steps`` (say so when you quote it). Prints one JSON object.
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
ENV = "ALE/Breakout-v5"
QUICK_EVAL = ["--set", "eval.episodes=1", "--set", "eval.every=100000000", "--set", "test_envs=1",
              "--set", "algorithm.epsilon.eval=1.0"]  # one short random episode at the end


def run(out: Path, *args: str) -> dict:
    """One train process; returns its summary plus ``peak_rss_mb`` and ``process_wall_s``."""
    cmd = [CLI, "train", "--env", ENV, "--algo", "dqn", "--preset", "paper", "--out", str(out), *QUICK_EVAL, *args]
    started = time.perf_counter()
    with open(out.with_suffix(".log"), "wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "TQDM_DISABLE": "1"})
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"train failed ({process.returncode}): {' '.join(cmd)}; see {out.with_suffix('.log')}")
    summary = json.loads((out / "summary.json").read_text())
    summary["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # Linux reports KiB
    summary["process_wall_s"] = round(time.perf_counter() - started, 2)
    return summary


def memory(args: argparse.Namespace, tmp: Path) -> dict:
    steps = args.buffer + args.grad_steps
    s = run(tmp / "memory", "--steps", str(steps), "--provider", "none",
            "--set", f"algorithm.buffer_size={args.buffer}", "--set", f"algorithm.learning_starts={args.buffer}")
    return {"benchmark": "memory", "buffer": args.buffer, "env_steps": s["env_steps"],
            "gradient_steps": s["gradient_steps"], "peak_rss_mb": s["peak_rss_mb"], "wall_s": s["wall_s"]}


def speed(args: argparse.Namespace, tmp: Path) -> dict:
    collect = run(tmp / "collect", "--steps", str(args.steps), "--provider", "none",
                  "--set", "algorithm.learning_starts=100000000")
    rate = collect["steps_per_s"]
    learn_steps = args.grad_steps
    learn = run(tmp / "learn", "--steps", str(256 + learn_steps), "--provider", "none",
                "--set", "algorithm.learning_starts=256")
    learning_time = learn["train_wall_s"] - 256 / rate
    return {"benchmark": "speed", "collect_only_steps_per_s": rate,
            "learning_phase_steps_per_s": round(learn["gradient_steps"] / learning_time, 3),
            "gradient_steps": learn["gradient_steps"], "device": "cpu", "torch_threads": 1}


def overhead(args: argparse.Namespace, tmp: Path) -> dict:
    arms = {"none": ["--provider", "none"],
            "scripted-2s": ["--provider", "scripted", "--option", "latency=2", "--k", "1"]}
    shrink = ["--steps", str(args.steps), "--set", "algorithm.batch_size=32",
              "--set", f"algorithm.learning_starts={args.steps // 3}"]
    results: dict[str, list[dict]] = {arm: [] for arm in arms}
    for rep in range(args.reps):
        for arm, extra in arms.items():  # interleaved: load drifts hit both arms
            results[arm].append(run(tmp / f"{arm}-{rep}", *shrink, *extra))
    report: dict = {"benchmark": "overhead", "steps": args.steps, "reps": args.reps, "batch_size": 32, "arms": {}}
    for arm, summaries in results.items():
        report["arms"][arm] = {
            "steps_per_s": [s["steps_per_s"] for s in summaries],
            "median_steps_per_s": statistics.median(s["steps_per_s"] for s in summaries),
            "llm_requests": [s["llm_requests"] for s in summaries],
            "updates_applied": [s["updates_applied"] for s in summaries],
            "dropped_stale": [s["dropped_stale"] for s in summaries],
        }
    none, llm = report["arms"]["none"], report["arms"]["scripted-2s"]
    report["ratio_steps_per_s"] = round(llm["median_steps_per_s"] / none["median_steps_per_s"], 4)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", choices=["memory", "speed", "overhead"])
    parser.add_argument("--buffer", type=int, default=10_000, help="memory: replay buffer size")
    parser.add_argument("--grad-steps", type=int, default=100, help="memory/speed: gradient steps at batch 256")
    parser.add_argument("--steps", type=int, default=1500, help="speed: collection steps; overhead: run length")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = {"memory": memory, "speed": speed, "overhead": overhead}[args.benchmark](args, Path(tmp))
    report["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
