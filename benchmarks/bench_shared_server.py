"""The openai provider against an overloaded or misbehaving shared server (tests/fault_server.py,
in a process of its own on 127.0.0.1).

``retry``: the server answers HTTP 429 with ``Retry-After: R`` for R seconds from its first
request on, then answers. Each trial (a fresh server) times one request from submit to outcome and
counts the 429s the server sent. A client that honours ``Retry-After`` waits R once and succeeds; one
that retries sooner hits the busy window again.

``rss``: the server answers with a reply of N MiB (a valid answer padded with spaces). The peak RSS
of this process (``ru_maxrss``) before and after one request shows what the reply cost in memory.

``preflight``: the server sends every answer one byte every 0.2 s (``/drip/v1``); the time
``open_explorer`` (which runs the provider's preflight) takes to give up, with default options.

All three only use the public API, so the same command measures an older checkout (put it first on
``PYTHONPATH``). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from explorer_pipeline import ActionSpec, EpisodeRecord, ExplorationUpdate, ExplorerConfig, open_explorer  # noqa: E402
from tests.fault_server import ServerProcess  # noqa: E402

SPEC = ActionSpec.discrete(3)
RECORD = EpisodeRecord(5.0, 30, "Acrobot-v1", 1, (0, 1, 2) * 10)


def retry(args: argparse.Namespace) -> dict:
    trials = []
    for _ in range(args.trials):
        with ServerProcess(retry_after_s=args.retry_after) as server:
            config = ExplorerConfig(provider="openai", base_url=server.base_url, model="ratelimited",
                                    prompt_set="single-stage", max_attempts=args.max_attempts,
                                    provider_options={"preflight": "off"})
            with open_explorer(config, "Acrobot-v1", SPEC) as explorer:
                started = time.perf_counter()
                outcome = explorer.runtime.submit_and_wait(RECORD, timeout=120)
                took = time.perf_counter() - started
            statuses = [status for _, status in server.counters()["statuses"]]
        trials.append({"seconds": round(took, 3), "ok": isinstance(outcome, ExplorationUpdate),
                       "429s": statuses.count(429)})
    return {"bench": "retry", "retry_after_s": args.retry_after, "max_attempts": args.max_attempts,
            "succeeded": sum(t["ok"] for t in trials), "trials": len(trials),
            "median_s": round(statistics.median(t["seconds"] for t in trials), 3),
            "mean_429s": round(statistics.mean(t["429s"] for t in trials), 2), "each": trials}


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def rss(args: argparse.Namespace) -> dict:
    with ServerProcess(huge_bytes=args.mib << 20) as server:
        config = ExplorerConfig(provider="openai", base_url=server.base_url, model=args.model,
                                prompt_set="single-stage", max_attempts=1, call_timeout_s=120,
                                provider_options={"preflight": "off"})
        with open_explorer(config, "Acrobot-v1", SPEC) as explorer:
            warm = ExplorerConfig(provider="openai", base_url=server.base_url, model="good",
                                  prompt_set="single-stage", provider_options={"preflight": "off"})
            with open_explorer(warm, "Acrobot-v1", SPEC) as warm_explorer:  # imports and clients warmed up
                warm_explorer.runtime.submit_and_wait(RECORD, timeout=60)
            before = rss_mib()
            started = time.perf_counter()
            outcome = explorer.runtime.submit_and_wait(RECORD, timeout=300)
            took = time.perf_counter() - started
            after = rss_mib()
    what = "update" if isinstance(outcome, ExplorationUpdate) else f"failure {outcome.reason}: {outcome.detail[:90]}"
    return {"bench": "rss", "reply_mib": args.mib, "model": args.model, "outcome": what,
            "peak_rss_before_mib": round(before, 1), "peak_rss_after_mib": round(after, 1),
            "added_mib": round(after - before, 1), "seconds": round(took, 2)}


def preflight(args: argparse.Namespace) -> dict:
    from explorer_pipeline import UsageError

    with ServerProcess() as server:
        config = ExplorerConfig(provider="openai", base_url=server.url("drip"), model="good")
        warm = config.model_copy(update={"provider_options": {"preflight": "off"}})
        open_explorer(warm, "Acrobot-v1", SPEC).close()  # imports and plugins loaded: only the preflight is timed
        started = time.perf_counter()
        try:
            open_explorer(config, "Acrobot-v1", SPEC).close()
            what = "passed"
        except UsageError as exc:
            what = f"UsageError: {str(exc)[:120]}"
        took = time.perf_counter() - started
    return {"bench": "preflight", "outcome": what, "seconds": round(took, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="bench", required=True)
    r = sub.add_parser("retry", help="time lost to 429 + Retry-After")
    r.add_argument("--retry-after", type=float, default=2.0)
    r.add_argument("--trials", type=int, default=5)
    r.add_argument("--max-attempts", type=int, default=3)
    m = sub.add_parser("rss", help="memory of one huge reply")
    m.add_argument("--mib", type=int, default=100)
    m.add_argument("--model", choices=("huge", "huge-chunked"), default="huge")
    sub.add_parser("preflight", help="the preflight against a slow-drip server")
    args = parser.parse_args()
    print(json.dumps({"retry": retry, "rss": rss, "preflight": preflight}[args.bench](args)))


if __name__ == "__main__":
    main()
