"""End-to-end cost of LLM-guided exploration on training, through `llm-explorer train`.

Three comparisons, each as interleaved repetitions of the same env / algo / steps / seed:

overhead    env steps/s with the plug-in (K = 1, scripted provider answering after 2 s, async)
            divided by steps/s with ``--provider none``. Goal: >= 0.98.
latency     wall time of the same scripted run in ``--mode async`` vs ``--mode blocking``.
local       steps/s with the embedded SmolLM2 model (``--provider local``, async) vs ``none``:
            the CPU the in-process model takes from training on this machine.

    .venv/bin/python benchmarks/bench_training.py overhead --reps 3 --steps 5000
    .venv/bin/python benchmarks/bench_training.py latency --reps 1 --steps 2000
    .venv/bin/python benchmarks/bench_training.py local --reps 2 --steps 5000

Each run is a separate ``llm-explorer train`` process; its summary.json gives ``steps_per_s``
(training loop only) and ``wall_s``. Prints one JSON object per comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CLI = str(Path(sys.executable).with_name("llm-explorer"))

ARMS = {
    "overhead": {"none": ["--provider", "none"],
                 "scripted-2s": ["--provider", "scripted", "--option", "latency=2", "--k", "1"]},
    "latency": {"async": ["--provider", "scripted", "--option", "latency=2", "--mode", "async"],
                "blocking": ["--provider", "scripted", "--option", "latency=2", "--mode", "blocking"]},
    "local": {"none": ["--provider", "none"], "local": ["--provider", "local", "--k", "1"]},
}


def run(out: Path, env: str, algo: str, steps: int, seed: int, extra: list[str]) -> dict:
    cmd = [CLI, "train", "--env", env, "--algo", algo, "--steps", str(steps), "--seed", str(seed),
           "--eval-episodes", "1", "--out", str(out), *extra]
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "TQDM_DISABLE": "1"})
    return json.loads((out / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("comparison", choices=sorted(ARMS))
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--algo", default="dqn")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    results: dict[str, list[dict]] = {arm: [] for arm in ARMS[args.comparison]}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for arm, extra in ARMS[args.comparison].items():  # interleaved: load drifts hit both arms
                summary = run(Path(tmp) / f"{arm}-{rep}", args.env, args.algo, args.steps, args.seed, extra)
                results[arm].append(summary)
    report = {"comparison": args.comparison, "env": args.env, "algo": args.algo, "steps": args.steps,
              "reps": args.reps, "arms": {}}
    for arm, summaries in results.items():
        report["arms"][arm] = {
            "steps_per_s": [s["steps_per_s"] for s in summaries],
            "wall_s": [s["wall_s"] for s in summaries],
            "median_steps_per_s": statistics.median(s["steps_per_s"] for s in summaries),
            "median_wall_s": statistics.median(s["wall_s"] for s in summaries),
            "llm_requests": [s["llm_requests"] for s in summaries],
            "updates_applied": [s["updates_applied"] for s in summaries],
            "dropped_stale": [s["dropped_stale"] for s in summaries],
        }
    arms = list(report["arms"].values())
    report["ratio_steps_per_s"] = round(arms[1]["median_steps_per_s"] / arms[0]["median_steps_per_s"], 4)
    report["ratio_wall_s"] = round(arms[1]["median_wall_s"] / arms[0]["median_wall_s"], 4)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
