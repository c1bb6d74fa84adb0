"""A 16-run scripted study on a local multi-node Ray cluster vs the same runs on the local backend.

    .venv/bin/python benchmarks/bench_ray_study.py [--steps 300] [--seeds 8] [--slots 2]

Both run the same study (2 arms x 1 env x SEEDS seeds, real ``llm-explorer train``, CartPole-v1,
scripted provider): first on the local backend with SLOTS workers (child processes back to back),
then on a ``ray.cluster_utils.Cluster`` (a head without CPUs, SLOTS worker nodes of 1 CPU each),
every run submitted at once. Printed for each: the study's wall time, the sum of the runs' own
wall times, and the packing efficiency ``sum / (SLOTS x wall)`` (1.0: the slots never idle and
nothing is spent outside the runs); then the Ray study's wall time relative to the local one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")

SPEC = """
name: bench-ray
base: {{algo: dqn, steps: {steps}, eval_episodes: 2, provider: scripted, prompt_set: paper}}
arms:
  - name: paper
  - name: baseline
    provider: none
environments: [CartPole-v1]
seeds: {seeds}
resources: {{num_cpus: 1}}
runtime: {{heartbeat_s: 5}}
"""


def run_once(backend, spec_path: Path, out: Path) -> dict[str, float]:
    from explorer_ablation.runner import run_study
    from explorer_ablation.spec import load_spec

    t0 = time.perf_counter()
    result = run_study(load_spec(spec_path), out, backend, spec_path=spec_path, echo=lambda line: None)
    wall = time.perf_counter() - t0
    runs = [json.loads(line) for line in (out / "status.jsonl").read_text().splitlines()]
    if not result.ok:
        raise SystemExit(f"the study failed: {[e for e in runs if e['event'] == 'failed']}")
    run_s = sum(e["wall_s"] for e in runs if e["event"] == "done")
    return {"wall_s": wall, "runs_s": run_s, "runs": result.done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--slots", type=int, default=2)
    args = parser.parse_args()
    import ray
    from ray.cluster_utils import Cluster

    from explorer_ablation.backends import LocalBackend, RayBackend

    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    spec_path = root / "spec.yaml"
    spec_path.write_text(SPEC.format(steps=args.steps, seeds=args.seeds))
    try:
        local = run_once(LocalBackend(workers=args.slots), spec_path, root / "local")
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        for _ in range(args.slots):
            cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        try:
            from explorer_ablation.spec import load_spec

            on_ray = run_once(RayBackend(address=cluster.address, runtime=load_spec(spec_path).runtime), spec_path,
                              root / "ray")
        finally:
            ray.shutdown()
            cluster.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{2 * args.seeds} runs x {args.steps} steps on {args.slots} slots")
    for name, m in (("local backend", local), ("Ray cluster", on_ray)):
        print(f"{name:14s} wall {m['wall_s']:7.1f} s, runs' own time {m['runs_s']:7.1f} s, "
              f"packing efficiency {m['runs_s'] / (args.slots * m['wall_s']):.2f}")
    print(f"Ray study wall / local study wall: {on_ray['wall_s'] / local['wall_s']:.2f} "
          f"(efficiency vs back to back on {args.slots} workers: {local['wall_s'] / on_ray['wall_s']:.2f})")


if __name__ == "__main__":
    main()
