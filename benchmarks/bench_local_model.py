"""Why the local provider runs the model in a process of its own: generation speed beside a busy
Python thread, in the same process (``process=in``) and in the private server (``process=server``).

For each mode and each condition, one call generates up to ``--tokens`` tokens from a short prompt
(SmolLM2 rambles, so the cap is what stops it); the script reports seconds and generated tokens/s.
Conditions: ``alone``; ``thread`` (a pure-Python busy loop in a thread of this process, like a
training loop's Python side); ``process`` (the same loop in a separate process). Repetitions are
interleaved; the 1-minute load average is printed before each call. Prints one JSON object.

    .venv/bin/python benchmarks/bench_local_model.py --reps 3 --tokens 200
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import threading
import time

from langchain_core.messages import HumanMessage
from llm_explorer_llamacpp import LocalProvider

from explorer_pipeline import ProviderSettings

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=200)
    args = parser.parse_args()

    provider = LocalProvider()
    runs: dict[str, list[dict]] = {}
    models = {}
    try:
        for mode in ("in", "server"):
            settings = ProviderSettings(options={"process": mode, "cache": "off"},
                                        max_tokens={"analysis": args.tokens})
            model = provider.create(settings)
            models[mode] = (model, provider.stage_model(model, "analysis", settings, None))
            models[mode][1].invoke(PROMPT)  # load and warm up
        for rep in range(args.reps):
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
                    tokens = reply.usage_metadata["output_tokens"]
                    row = {"rep": rep, "mode": mode, "condition": condition, "seconds": round(seconds, 2),
                           "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1), "load_1m": round(load, 2)}
                    print(json.dumps(row), file=sys.stderr, flush=True)
                    runs.setdefault(f"{mode}/{condition}", []).append(row)
    finally:
        for model, _ in models.values():
            model.close()
    report = {key: {"median_seconds": statistics.median(r["seconds"] for r in rows),
                    "median_tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows),
                    "seconds": [r["seconds"] for r in rows], "load_1m": [r["load_1m"] for r in rows]}
              for key, rows in runs.items()}
    print(json.dumps({"tokens": args.tokens, "reps": args.reps, "runs": report}, indent=2))


if __name__ == "__main__":
    main()
