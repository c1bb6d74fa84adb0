"""End-to-end cost of LLM-guided exploration on training, through `llm-explorer train`.

Three comparisons, each as interleaved repetitions of the same env / algo / steps / seed:

overhead    env steps/s with the plug-in (K = 1, scripted provider answering after 2 s, async)
            divided by steps/s with ``--provider none``. Goal: >= 0.98.
latency     wall time of the same scripted run in ``--mode async`` vs ``--mode blocking``.
local       steps/s with the embedded SmolLM2 model (``--provider local``, async) vs ``none``:
            the CPU the model takes from training on this machine.
embedded    the embedded model beside training, one lever at a time: where it runs (in the
            training process, ``process=in``, or in a private server process, ``process=server``),
            llama.cpp's prompt cache (``cache=on|off``), a shorter stage 1
            (``explorer.max_tokens_analysis``), a lower CPU priority for the server (``nice=10``)
            and token-probability proposals (``paper-logprobs`` with ``token-probabilities``).
            Per arm: update latency (median and p90 of ``latency_s`` of the LLM updates in
            updates.jsonl), updates applied, steps/s and its
            ratio to ``--provider none`` (of the medians, and the median of the per-repetition
            ratios: each repetition runs every arm back to back, so load drifts hit all of them),
            and the 1-minute load average before each run. ``--arms`` picks a subset.

    .venv/bin/python benchmarks/bench_training.py overhead --reps 3 --steps 5000
    .venv/bin/python benchmarks/bench_training.py latency --reps 1 --steps 2000
    .venv/bin/python benchmarks/bench_training.py local --reps 2 --steps 5000
    .venv/bin/python benchmarks/bench_training.py embedded --reps 3 --steps 3000
    .venv/bin/python benchmarks/bench_training.py embedded --reps 2 --steps 20000 --arms none,in,server-cache

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
    "embedded": {
        "none": ["--provider", "none"],
        "in": ["--provider", "local", "--option", "process=in", "--option", "cache=off"],
        "in-cache": ["--provider", "local", "--option", "process=in", "--option", "cache=on"],
        "server": ["--provider", "local", "--option", "process=server", "--option", "cache=off"],
        "server-cache": ["--provider", "local", "--option", "process=server", "--option", "cache=on"],
        "server-cache-s1cap100": ["--provider", "local", "--option", "process=server", "--option", "cache=on",
                                  "--set", "explorer.max_tokens_analysis=100"],
        "server-cache-nice10": ["--provider", "local", "--option", "process=server", "--option", "cache=on",
                                "--option", "nice=10"],
        # stage 2 as one label read from token log-probabilities: a single output token per label order
        "server-tokenprob": ["--provider", "local", "--option", "process=server", "--option", "cache=on",
                             "--prompt-set", "paper-logprobs", "--set", "explorer.proposer.name=token-probabilities"],
        "server-tokenprob-s1cap100": ["--provider", "local", "--option", "process=server", "--option", "cache=on",
                                      "--prompt-set", "paper-logprobs",
                                      "--set", "explorer.proposer.name=token-probabilities",
                                      "--set", "explorer.max_tokens_analysis=100"],
    },
}


def run(out: Path, env: str, algo: str, steps: int, seed: int, extra: list[str]) -> dict:
    """One train process; its summary plus ``load_1m`` (before the run) and ``update_latency_s``
    (``latency_s`` of each LLM update in updates.jsonl, applied or not)."""
    cmd = [CLI, "train", "--env", env, "--algo", algo, "--steps", str(steps), "--seed", str(seed),
           "--eval-episodes", "1", "--out", str(out), *extra]
    load = os.getloadavg()[0]
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "TQDM_DISABLE": "1"})
    summary = json.loads((out / "summary.json").read_text())
    updates = out / "updates.jsonl"
    lines = updates.read_text().splitlines() if updates.exists() else []
    summary["update_latency_s"] = [u["latency_s"] for u in map(json.loads, filter(None, lines))
                                   if u.get("source") == "llm" and u.get("latency_s") is not None]
    summary["load_1m"] = round(load, 2)
    return summary


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (pos - low), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("comparison", choices=sorted(ARMS))
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--algo", default="dqn")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arms", help="comma-separated subset of the comparison's arms (the first is the "
                                       "reference of the ratios)")
    args = parser.parse_args()

    arms_of = ARMS[args.comparison]
    if args.arms:
        unknown = [a for a in args.arms.split(",") if a not in arms_of]
        if unknown:
            parser.error(f"unknown arm(s) {unknown}; {args.comparison} has: {', '.join(arms_of)}")
        arms_of = {a: arms_of[a] for a in args.arms.split(",")}
    results: dict[str, list[dict]] = {arm: [] for arm in arms_of}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for arm, extra in arms_of.items():  # interleaved: load drifts hit every arm
                summary = run(Path(tmp) / f"{arm}-{rep}", args.env, args.algo, args.steps, args.seed, extra)
                results[arm].append(summary)
                print(json.dumps({"rep": rep, "arm": arm, "steps_per_s": summary["steps_per_s"],
                                  "updates_applied": summary["updates_applied"], "load_1m": summary["load_1m"],
                                  "update_latency_s": summary["update_latency_s"]}), file=sys.stderr, flush=True)
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
            "load_1m": [s["load_1m"] for s in summaries],
        }
        latencies = [x for s in summaries for x in s["update_latency_s"]]
        if latencies:
            report["arms"][arm].update(update_latency_s=latencies, median_update_latency_s=percentile(latencies, 0.5),
                                       p90_update_latency_s=percentile(latencies, 0.9))
    names = list(report["arms"])
    arms = list(report["arms"].values())
    if len(arms) == 2:
        report["ratio_steps_per_s"] = round(arms[1]["median_steps_per_s"] / arms[0]["median_steps_per_s"], 4)
        report["ratio_wall_s"] = round(arms[1]["median_wall_s"] / arms[0]["median_wall_s"], 4)
    if len(arms) > 2 or args.comparison == "embedded":
        reference = results[names[0]]
        for name in names[1:]:
            paired = [s["steps_per_s"] / r["steps_per_s"] for s, r in zip(results[name], reference, strict=True)]
            report["arms"][name]["ratio_steps_per_s"] = round(
                report["arms"][name]["median_steps_per_s"] / report["arms"][names[0]]["median_steps_per_s"], 4)
            report["arms"][name]["paired_ratios"] = [round(x, 4) for x in paired]
            report["arms"][name]["median_paired_ratio"] = round(statistics.median(paired), 4)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
