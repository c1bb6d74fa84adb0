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
prefix     the same updates (server mode, ``cache=on``) with the ``paper`` prompt set as it was at
           commit 74c0c08 (stage 1 and stage 2 had different system texts) and as it is now (both
           stages start with the same system text and task description): latency, and the prompt
           tokens llama.cpp really evaluated per call (read from the server's log), which the
           machine's load does not change.

Repetitions are interleaved; the 1-minute load average is recorded before each call or update.
Prints one JSON object (progress lines go to stderr).

    .venv/bin/python benchmarks/bench_local_model.py gil --reps 3 --tokens 200
    .venv/bin/python benchmarks/bench_local_model.py updates --reps 2 --updates 3
    .venv/bin/python benchmarks/bench_local_model.py prefix --reps 2 --updates 3
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from langchain_core.messages import HumanMessage
from llm_explorer_llamacpp import LocalProvider

from explorer_pipeline import (
    ActionSpec,
    EpisodeRecord,
    ExplorationUpdate,
    ExplorerConfig,
    ProviderSettings,
    hookimpl,
    make_plugin_manager,
    open_explorer,
)
from explorer_pipeline.prompts import load_prompt_set

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


#: the commit whose ``paper`` prompt set had a different system text per stage
BEFORE_COMMIT = "74c0c08"
#: llama.cpp's timing line for one call: the prompt tokens it evaluated (the rest came from the cache)
PROMPT_EVAL = re.compile(r"prompt eval time =\s*[\d.]+ ms /\s*(\d+) tokens")


class _OldPaperSet:
    """Registers the ``paper`` set of :data:`BEFORE_COMMIT` as ``paper-before``."""

    def __init__(self, path: Path) -> None:
        self.prompt_set = load_prompt_set(path)

    @hookimpl
    def register_prompt_sets(self, register) -> None:
        register(self.prompt_set)


def _old_paper_set(folder: Path) -> Path:
    root = Path(__file__).resolve().parent.parent
    text = subprocess.run(["git", "-C", str(root), "show", f"{BEFORE_COMMIT}:prompts/sets/paper.yaml"],
                          check=True, capture_output=True, text=True).stdout
    path = folder / "paper-before.yaml"
    path.write_text(text.replace("id: paper\n", "id: paper-before\n", 1))
    return path


def prefix(reps: int, n: int) -> dict:
    """Latency and evaluated prompt tokens of ``n`` consecutive updates, old vs shared-prefix prompts."""
    spec = ActionSpec.discrete(2)
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        old = _OldPaperSet(_old_paper_set(Path(tmp)))
        for rep in range(reps):
            for prompt_set in ("paper-before", "paper"):
                pm = make_plugin_manager()
                pm.register(old, name="paper-before")
                log = Path(tmp) / f"server-{rep}-{prompt_set}.log"
                config = ExplorerConfig(provider="local", prompt_set=prompt_set,
                                        provider_options={"process": "server", "cache": "on", "log": str(log)})
                latencies, evaluated = [], []
                with open_explorer(config, "CartPole-v1", spec, plugin_manager=pm) as explorer:
                    load = os.getloadavg()[0]
                    for i in range(n):
                        seen = len(PROMPT_EVAL.findall(log.read_text())) if log.exists() else 0
                        started = time.perf_counter()
                        outcome = explorer.runtime.submit_and_wait(episode(i), timeout=600)
                        if not isinstance(outcome, ExplorationUpdate):
                            raise SystemExit(f"update {i} failed: {outcome}")
                        latencies.append(round(time.perf_counter() - started, 2))
                        time.sleep(0.5)  # the server writes its timing lines after the reply
                        evaluated.append([int(x) for x in PROMPT_EVAL.findall(log.read_text())[seen:]])
                row = {"rep": rep, "prompt_set": prompt_set, "latency_s": latencies,
                       "prompt_tokens_evaluated": evaluated, "load_1m": round(load, 2)}
                progress(row)
                runs.setdefault(prompt_set, []).append(row)
    summary = {}
    for key, rows in runs.items():
        later = [x for r in rows for x in r["latency_s"][1:]]
        summary[key] = {
            "first_update_s": [r["latency_s"][0] for r in rows],
            "median_later_update_s": statistics.median(later) if later else None,
            "first_update_prompt_tokens": [sum(r["prompt_tokens_evaluated"][0]) for r in rows],
            "later_update_prompt_tokens": [sum(calls) for r in rows for calls in r["prompt_tokens_evaluated"][1:]],
            "rows": rows,
        }
    return {"updates": n, "reps": reps, "runs": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("comparison", choices=["gil", "updates", "prefix"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=200, help="gil: generated tokens per call")
    parser.add_argument("--updates", type=int, default=3, help="updates: consecutive updates per explorer")
    args = parser.parse_args()
    if args.comparison == "gil":
        report = gil(args.reps, args.tokens)
    elif args.comparison == "updates":
        report = updates(args.reps, args.updates)
    else:
        report = prefix(args.reps, args.updates)
    print(json.dumps({"comparison": args.comparison, **report}, indent=2))


if __name__ == "__main__":
    main()
