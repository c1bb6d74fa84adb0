"""Benchmark: the cost of ``submit()`` on the training thread, intake behaviour, and memory.

While a provider with 2 s latency is busy, the training thread submits episodes as fast as it
can. We report the per-call latency of ``submit()`` (p50/p99/max), how many requests actually ran
(the rest must be dropped, not queued), and the resident memory the pipeline adds beside an
in-process model.

    .venv/bin/python benchmarks/bench_submit.py [--n 20000] [--latency 2.0]
"""

from __future__ import annotations

import argparse
import gc
import json
import time

import numpy as np
import psutil

from explorer_pipeline import ActionSpec, EpisodeRecord, ExplorerConfig, open_explorer


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="episodes submitted")
    parser.add_argument("--latency", type=float, default=2.0, help="scripted provider latency per call (s)")
    parser.add_argument("--no-model", action="store_true", help="skip loading the in-process SmolLM2 model")
    args = parser.parse_args()

    spec = ActionSpec.discrete(6)
    if not args.no_model:  # the baseline memory: the embedded model loaded in this process
        from llm_explorer_llamacpp import LlamaCppChatModel, default_model_path

        model = LlamaCppChatModel(model_path=str(default_model_path()))
        model._model()
    base_rss = rss_mb()

    config = ExplorerConfig(provider="scripted", provider_options={"latency": str(args.latency)})
    records = [EpisodeRecord(float(i), 500, "ALE/Pong-v5", i, tuple(np.arange(500) % 6)) for i in range(64)]
    timings = np.empty(args.n, dtype=np.int64)
    with open_explorer(config, "ALE/Pong-v5", spec) as explorer:
        runtime = explorer.runtime
        runtime.submit(records[0])
        while runtime.stats.requests == 0:  # the first request is now in flight (2 s)
            time.sleep(0.001)
        started = time.perf_counter()
        for i in range(args.n):
            rec = records[i % len(records)]
            t0 = time.perf_counter_ns()
            runtime.submit(rec)
            timings[i] = time.perf_counter_ns() - t0
        submit_wall = time.perf_counter() - started
        while runtime.stats.episodes_seen < args.n + 1:
            time.sleep(0.01)
        pending_rss = rss_mb()
        while runtime.stats.updates_published < 2:
            time.sleep(0.05)
        stats = explorer.stats()
    us = timings / 1000.0
    result = {
        "submitted": args.n,
        "provider_latency_s": args.latency,
        "submit_us": {"p50": round(float(np.percentile(us, 50)), 2), "p99": round(float(np.percentile(us, 99)), 2),
                      "max": round(float(us.max()), 1), "mean": round(float(us.mean()), 2)},
        "submit_loop_wall_s": round(submit_wall, 3),
        "llm_requests": stats["llm_requests"],
        "dropped_stale": stats["dropped_stale"],
        "updates_published": stats["updates_published"],
        "rss_with_model_mb" if not args.no_model else "rss_base_mb": round(base_rss, 1),
        "rss_added_by_pipeline_mb": round(pending_rss - base_rss, 1),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
