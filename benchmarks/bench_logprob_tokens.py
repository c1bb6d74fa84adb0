"""Output tokens per update: the text proposer against the token-probability proposer.

Both arms use the real local model (SmolLM2-135M through llama.cpp) and the paper's stage 1; the
text arm asks stage 2 with the ``paper`` set (the provider's grammar-constrained JSON, parsed,
retried), the token-probability arm with ``paper-logprobs`` (one token per label order, cyclic
orders). For each environment, the same ``--updates`` synthetic episodes go through both arms;
the script reports, per arm, stage-2 output tokens per update, stage-2 model calls, stage-2
seconds, and how many requests produced an update. Prints one JSON object and a Markdown table.

    .venv/bin/python benchmarks/bench_logprob_tokens.py --updates 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from explorer_pipeline import ActionSpec, EpisodeRecord, ExplorationUpdate, ExplorerConfig, open_explorer

ENVS = {
    "CartPole-v1": ActionSpec.discrete(2),
    "Acrobot-v1": ActionSpec.discrete(3),
    "Pendulum-v1": ActionSpec.continuous([-2.0], [2.0]),
}
ARMS = {
    "text": {"prompt_set": "paper", "proposer": "default"},
    "token-probabilities": {"prompt_set": "paper-logprobs", "proposer": "token-probabilities"},
}


def records(env_id: str, spec: ActionSpec, count: int) -> list[EpisodeRecord]:
    """``count`` different episodes of ``env_id`` (returns and actions vary)."""
    out = []
    for i in range(count):
        length = 15 + 7 * i
        if spec.is_discrete:
            actions = tuple((j * (i + 1) // 3) % spec.n for j in range(length))
        else:
            actions = tuple((round(((j * (i + 2)) % 9 - 4) / 5, 2),) for j in range(length))
        out.append(EpisodeRecord(float(length if spec.is_discrete else -100.0 * length), length, env_id, i, actions))
    return out


def stage2_seconds(exchanges: Path) -> list[float]:
    """Seconds of each stage-2 call in an exchange log."""
    lines = [json.loads(line) for line in exchanges.read_text().splitlines() if line.strip()]
    return [line["latency_s"] for line in lines if line["stage"] == "proposal"]


def run_arm(arm: str, env_id: str, spec: ActionSpec, episodes: list[EpisodeRecord], process: str) -> dict:
    """One explorer, ``len(episodes)`` blocking requests; per-update stage-2 figures."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "exchanges.jsonl"
        config = ExplorerConfig(provider="local", provider_options={"process": process}, max_tokens_analysis=60,
                                exchange_log=log, **ARMS[arm])
        tokens, calls, ok = [], [], 0
        with open_explorer(config, env_id, spec) as explorer:
            for record in episodes:
                outcome = explorer.runtime.submit_and_wait(record, timeout=600)
                usage = outcome.provenance.tokens.get("proposal") if isinstance(outcome, ExplorationUpdate) \
                    else outcome.tokens.get("proposal")
                tokens.append(usage.output_tokens if usage else 0)
                ok += isinstance(outcome, ExplorationUpdate)
            stats = explorer.stats()
        seconds = stage2_seconds(log)
        calls = len(seconds)
    return {"updates": ok, "requests": len(episodes), "stage2_output_tokens": tokens,
            "stage2_output_tokens_mean": statistics.fmean(tokens), "stage2_calls_per_request": calls / len(episodes),
            "stage2_seconds_per_request": sum(seconds) / len(episodes), "failures": stats.get("failures", {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--process", choices=("in", "server"), default="in")
    parser.add_argument("--envs", nargs="*", default=list(ENVS))
    args = parser.parse_args()
    started = time.time()
    results: dict[str, dict[str, dict]] = {}
    for env_id in args.envs:
        spec = ENVS[env_id]
        episodes = records(env_id, spec, args.updates)
        results[env_id] = {arm: run_arm(arm, env_id, spec, episodes, args.process) for arm in ARMS}
    print(json.dumps({"updates": args.updates, "process": args.process, "results": results,
                      "wall_s": round(time.time() - started, 1)}, indent=2))
    print("\n| environment | proposer | stage-2 output tokens per update (mean) | stage-2 calls per request "
          "| stage-2 s per request | updates / requests |")
    print("| --- | --- | --- | --- | --- | --- |")
    for env_id, arms in results.items():
        for arm, r in arms.items():
            print(f"| {env_id} | {arm} | {r['stage2_output_tokens_mean']:.1f} | {r['stage2_calls_per_request']:.1f} "
                  f"| {r['stage2_seconds_per_request']:.2f} | {r['updates']} / {r['requests']} |")


if __name__ == "__main__":
    main()
