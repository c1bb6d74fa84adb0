"""CURL at its preset on this CPU: env steps/s of the learning phase, peak RSS, and the projected
wall time of a 100k-step Atari run.

    .venv/bin/python benchmarks/bench_curl.py --game ALE/Pong-v5 --learn-steps 400

Two ``llm-explorer train --algo curl`` processes at the ``default`` preset (the CURL paper's
Atari-100k settings: one gradient step of batch 32 per env step, 20-step returns, prioritised
replay, learning from env step 1 600), ``--provider none``, one torch thread, CPU:

1. *collect*: the preset's 1 600 warm-up steps with learning switched off;
2. *learn*: the same 1 600 steps, then ``--learn-steps`` steps each followed by a gradient step.

Both end with the same single random evaluation episode, so the learning phase's rate is
``learn_steps / (wall(learn) - wall(collect))`` (training wall times from ``summary.json``).
Peak RSS is the kernel's count for the *learn* process (``os.wait4``). It already covers a full
replay buffer: Tianshou allocates the 100 000 frames (706 MB) with ``np.full`` at the first
transition, so every page is written from the start. The projected wall time of a 100k run is
``1 600 / collect rate + 98 400 / learning rate`` (evaluations not counted). On a shared machine
the wall-clock rates fall with the load; the processes' CPU time (``os.wait4``) does not, and gives
what one idle core would do: ``learning_phase_cpu_ms_per_step`` and ``projected_100k_cpu_h``.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = str(Path(sys.executable).with_name("llm-explorer"))
WARMUP = 1600  # the preset's learning_starts
RUN_STEPS = 100_000  # the preset's steps (Atari 100k)
QUICK_EVAL = ["--set", "eval.episodes=1", "--set", "eval.every=100000000", "--set", "test_envs=1",
              "--set", "algorithm.epsilon.eval=1.0"]  # one short random episode at the end


def run(out: Path, game: str, *args: str) -> dict:
    """One train process; returns its summary plus ``peak_rss_mb`` and ``process_wall_s``."""
    cmd = [CLI, "train", "--env", game, "--algo", "curl", "--provider", "none", "--device", "cpu", "--out", str(out),
           *QUICK_EVAL, *args]
    started = time.perf_counter()
    with open(out.with_suffix(".log"), "wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TQDM_DISABLE": "1"})
        _, status, usage = os.wait4(process.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"train failed ({code}): {' '.join(cmd)}; see {out.with_suffix('.log')}")
    summary = json.loads((out / "summary.json").read_text())
    summary["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # Linux reports KiB
    summary["cpu_s"] = usage.ru_utime + usage.ru_stime
    summary["process_wall_s"] = round(time.perf_counter() - started, 2)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="ALE/Pong-v5")
    parser.add_argument("--learn-steps", type=int, default=400, help="env steps (= gradient steps) after warm-up")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        collect = run(Path(tmp) / "collect", args.game, "--steps", str(WARMUP),
                      "--set", "algorithm.learning_starts=1000000000")
        learn = run(Path(tmp) / "learn", args.game, "--steps", str(WARMUP + args.learn_steps))
    collect_rate = collect["env_steps"] / collect["train_wall_s"]
    learn_steps = learn["env_steps"] - collect["env_steps"]
    learn_rate = learn_steps / (learn["train_wall_s"] - collect["train_wall_s"])
    projected_s = WARMUP / collect_rate + (RUN_STEPS - WARMUP) / learn_rate
    cpu_per_step = (learn["cpu_s"] - collect["cpu_s"]) / learn_steps  # load-independent: one idle core's rate
    collect_cpu_per_step = collect["cpu_s"] / collect["env_steps"]  # an upper bound: includes start-up
    report = {
        "benchmark": "curl", "game": args.game, "preset": "default", "device": "cpu", "torch_threads": 1,
        "collect_only_steps_per_s": round(collect_rate, 1),
        "learning_phase_steps_per_s": round(learn_rate, 2),
        "learning_phase_env_steps": learn_steps, "gradient_steps": learn["gradient_steps"],
        "learning_phase_cpu_ms_per_step": round(1000 * cpu_per_step, 1),
        "learning_phase_steps_per_cpu_s": round(1 / cpu_per_step, 2),
        "projected_100k_cpu_h": round((WARMUP * collect_cpu_per_step + (RUN_STEPS - WARMUP) * cpu_per_step) / 3600, 2),
        "peak_rss_mb": learn["peak_rss_mb"],
        "projected_100k_wall_h": round(projected_s / 3600, 2),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
