"""A stand-in for ``llm-explorer train --config FILE --out DIR`` with the same run directory,
for the runner's fault tests (crashes, hangs, half-written directories) where the real command
would only be slow. It reads ``env``, ``algo``, ``seed``, ``steps``, ``explorer.provider`` and
``explorer.provider_options`` from the configuration file.

Its behaviour comes from provider options ``fake_*`` (``options: {fake_exit: 1}`` in a spec):

``fake_return=X``   final greedy return (default: ``100 + 10 * seed + fake_bonus`` plus a
                    deterministic wobble per env and seed); the curve rises linearly to it
``fake_bonus=B``    added to the default final return
``fake_sleep=S``    sleep S seconds after writing the manifest and half the metrics
``fake_exit=N``     exit with N after the half-written files, without a summary
``fake_fail_once=PATH``  exit 1 (half-written) unless PATH exists; creates PATH first
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml


def write_atomic(path: Path, data: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def main() -> int:
    p = argparse.ArgumentParser(prog="fake-train")
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    config = yaml.safe_load(Path(args.config).read_text())
    env, algo = config["env"], config["algo"]
    seed, steps = int(config.get("seed", 0)), int(config.get("steps", 1000))
    explorer = config.get("explorer") or {}
    provider = explorer.get("provider")
    options = {str(k): str(v) for k, v in (explorer.get("provider_options") or {}).items()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=False)  # like a fresh run: the runner must have moved old ones aside
    write_atomic(out / "manifest.json", {"config": config, "env": env, "algo": algo, "seed": seed,
                                             "pid": os.getpid()})
    bonus = float(options.get("fake_bonus", 0))
    wobble = (seed * 7919 + len(env) * 31 + int(bonus)) % 13
    final = float(options.get("fake_return", 100 + 10 * seed + bonus + wobble))
    evals = [(int(steps * i / 4), final * i / 4) for i in range(1, 5)]
    with open(out / "metrics.csv", "w") as f:
        f.write("step,train_return,eval_return\n")
        f.write(f"{evals[0][0]},{evals[0][1] * 0.9},\n{evals[0][0]},,{evals[0][1]}\n")
        f.flush()
        if "fake_sleep" in options:
            time.sleep(float(options["fake_sleep"]))
        if "fake_exit" in options:
            print("fake-train: failing on purpose", file=sys.stderr)
            return int(options["fake_exit"])
        marker = options.get("fake_fail_once")
        if marker and not Path(marker).exists():
            Path(marker).touch()
            print("fake-train: failing once on purpose", file=sys.stderr)
            return 1
        for step, value in evals[1:]:
            f.write(f"{step},{value * 0.9},\n{step},,{value}\n")
    llm = provider not in (None, "none")
    requests = 10 if llm else 0
    (out / "updates.jsonl").write_text("".join(
        json.dumps({"version": i + 1, "source": "llm", "latency_s": 0.5, "values": [0.5, 0.5]}) + "\n"
        for i in range(requests)) + (json.dumps({"source": "fallback", "latency_s": 1.0}) + "\n" if llm else ""))
    (out / "exchanges.jsonl").write_text("")
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for name in ("learning_curve.png", "exploration.png"):
        (out / name).write_bytes(b"")
    write_atomic(out / "summary.json", {
        "env_steps": steps, "episodes": 20, "wall_s": 1.5, "steps_per_s": steps / 1.5,
        "llm_requests": requests, "updates_published": requests, "updates_applied": requests,
        "parse_failures": 0, "validation_rejections": 0, "provider_errors": 1 if llm else 0, "dropped_stale": 0,
        "final_eval_return": final,
        "tokens": {"analysis": {"input": 100 * requests, "output": 20 * requests},
                   "proposal": {"input": 50 * requests, "output": 10 * requests}} if llm else {},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
