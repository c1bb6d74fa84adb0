"""The local provider's model without training: why it runs in a process of its own, and what its
prompt cache buys.

gil        generation beside a busy Python thread, in the training process (``process=in``) and
           in the private server (``process=server``). For each mode and condition, one call
           generates up to ``--tokens`` tokens from a short prompt (SmolLM2 rambles, so the cap is
           what stops it). Conditions: ``alone``; ``thread`` (a pure-Python busy loop in a thread
           of this process, like a training loop's Python side); ``process`` (the same loop in a
           separate process).
updates    whole updates (stage 1 + stage 2, the ``paper`` prompt set, CartPole-v1) through the
           explorer pipeline, server mode, ``cache=off`` vs ``cache=on``: the latency of the first
           (cold) update and of the later ones, and the server's resident memory after them.

Repetitions are interleaved; the 1-minute load average is recorded before each call or update.
Prints one JSON object (progress lines go to stderr).

    .venv/bin/python benchmarks/bench_local_model.py gil --reps 3 --tokens 200
    .venv/bin/python benchmarks/bench_local_model.py updates --reps 2 --updates 3
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import statistics
import sys
import threading
import time

import psutil
from langchain_core.messages import HumanMessage
from llm_explorer_llamacpp import LocalProvider

from explorer_pipeline import (
    ActionSpec,
    EpisodeRecord,
    ExplorationUpdate,
    ExplorerConfig,
    ProviderSettings,
    open_explorer,
)

PROMPT = [HumanMessage("Tell a long story about a cart that balances a pole on a track.")]


def spin(stop) -> None:
    """Pure-Python work until ``stop`` is set (it holds the GIL whenever it runs)."""
    x = 0
    while not stop.is_set():
        for _ in range(1000):
            x += 1


def busy(condition: str):
    """Start the background load of ``condition``; returns a function that stops it."""
    if condition == "alone":
        return lambda: None
    if condition == "thread":
        stop = threading.Event()
        worker = threading.Thread(target=spin, args=(stop,), daemon=True)
    else:
        stop = multiprocessing.Event()
        worker = multiprocessing.Process(target=spin, args=(stop,), daemon=True)
    worker.start()
    time.sleep(0.5)

    def end() -> None:
        stop.set()
        worker.join()

    return end


def progress(row: dict) -> None:
    print(json.dumps(row), file=sys.stderr, flush=True)


def gil(reps: int, tokens: int) -> dict:
    """Seconds per ``tokens`` generated tokens, per mode and condition."""
    provider = LocalProvider()
    runs: dict[str, list[dict]] = {}
    models = {}
    try:
        for mode in ("in", "server"):
            settings = ProviderSettings(options={"process": mode, "cache": "off"}, max_tokens={"analysis": tokens})
            model = provider.create(settings)
            models[mode] = (model, provider.stage_model(model, "analysis", settings, None))
            models[mode][1].invoke(PROMPT)  # load and warm up
        for rep in range(reps):
            for mode, (_, runnable) in models.items():
                for condition in ("alone", "thread", "process"):
                    load = os.getloadavg()[0]
                    end = busy(condition)
                    try:
                        started = time.perf_counter()
                        reply = runnable.invoke(PROMPT)
                        seconds = time.perf_counter() - started
                    finally:
                        end()
                    n = reply.usage_metadata["output_tokens"]
                    row = {"rep": rep, "mode": mode, "condition": condition, "seconds": round(seconds, 2),
                           "tokens": n, "tokens_per_s": round(n / seconds, 1), "load_1m": round(load, 2)}
                    progress(row)
                    runs.setdefault(f"{mode}/{condition}", []).append(row)
    finally:
        for model, _ in models.values():
            model.close()
    return {"tokens": tokens, "reps": reps, "runs": {
        key: {"median_seconds": statistics.median(r["seconds"] for r in rows),
              "median_tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows),
              "seconds": [r["seconds"] for r in rows], "load_1m": [r["load_1m"] for r in rows]}
        for key, rows in runs.items()}}


def episode(i: int) -> EpisodeRecord:
    """A short CartPole episode; each one different, as in training."""
    actions = tuple((i + k // 3) % 2 for k in range(15 + i))
    return EpisodeRecord(float(len(actions)), len(actions), "CartPole-v1", i, actions)


def server_rss_mb() -> int:
    """Resident memory of this process's llama.cpp server children, in MiB."""
    total = 0
    for child in psutil.Process().children():
        if "llama_cpp.server" in child.cmdline():
            total += child.memory_info().rss
    return total >> 20


def updates(reps: int, n: int) -> dict:
    """Latency of ``n`` consecutive updates per cache setting, and the server's memory after them."""
    spec = ActionSpec.discrete(2)
    runs: dict[str, list[dict]] = {}
    for rep in range(reps):
        for cache in ("off", "on"):
            config = ExplorerConfig(provider="local", provider_options={"process": "server", "cache": cache})
            latencies = []
            with open_explorer(config, "CartPole-v1", spec) as explorer:
                load = os.getloadavg()[0]
                for i in range(n):
                    started = time.perf_counter()
                    outcome = explorer.runtime.submit_and_wait(episode(i), timeout=600)
                    if not isinstance(outcome, ExplorationUpdate):
                        raise SystemExit(f"update {i} failed: {outcome}")
                    latencies.append(round(time.perf_counter() - started, 2))
                rss = server_rss_mb()
            # the explorer core does not close provider models yet: the server stops with its
            # model, when the garbage collector takes it
            del explorer
            gc.collect()
            row = {"rep": rep, "cache": cache, "latency_s": latencies, "server_rss_mb": rss, "load_1m": round(load, 2)}
            progress(row)
            runs.setdefault(f"cache={cache}", []).append(row)
    later = {key: [x for r in rows for x in r["latency_s"][1:]] for key, rows in runs.items()}
    return {"updates": n, "reps": reps, "runs": {
        key: {"first_update_s": [r["latency_s"][0] for r in rows],
              "median_later_update_s": statistics.median(later[key]) if later[key] else None,
              "latency_s": [r["latency_s"] for r in rows], "server_rss_mb": [r["server_rss_mb"] for r in rows],
              "load_1m": [r["load_1m"] for r in rows]}
        for key, rows in runs.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("comparison", choices=["gil", "updates"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=200, help="gil: generated tokens per call")
    parser.add_argument("--updates", type=int, default=3, help="updates: consecutive updates per explorer")
    args = parser.parse_args()
    report = gil(args.reps, args.tokens) if args.comparison == "gil" else updates(args.reps, args.updates)
    print(json.dumps({"comparison": args.comparison, **report}, indent=2))


if __name__ == "__main__":
    main()
