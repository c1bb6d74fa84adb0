"""A 16-run scripted study on a local multi-node Ray cluster vs the same runs on the local backend.

    nice -n 10 .venv/bin/python benchmarks/bench_ray_study.py [--steps 300] [--seeds 8] [--slots 2] [--reps 1]
                                                              [--topology cluster|one-node]

Both run the same study (2 arms x 1 env x SEEDS seeds, real ``llm-explorer train``, CartPole-v1,
scripted provider): on the local backend with SLOTS workers (child processes back to back), and on
Ray, every run submitted at once: ``cluster`` is a ``ray.cluster_utils.Cluster`` (a head without
CPUs, SLOTS worker nodes of 1 CPU each), ``one-node`` a single Ray node with SLOTS CPUs. The arms
alternate, REPS pairs, so that both see the same load. Printed for each: the study's wall time,
the sum of the runs' own wall times, the packing efficiency ``sum / (SLOTS x wall)`` (1.0: the slots
never idle and nothing is spent outside the runs), the time until the first run started, and the CPU
seconds of the ``train`` processes and of Ray's own processes (GCS, raylets, agents, workers; sampled
with psutil every 0.25 s) while the study ran; then, per pair, local wall / Ray wall (the efficiency
vs back to back).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import threading
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
RAY_MARKERS = ("gcs_server", "raylet", "default_worker.py", "dashboard", "runtime_env", "log_monitor",
               "monitor.py", "ray::", "setup_worker.py")


class CpuSampler:
    """CPU seconds of ``train`` processes and of Ray's processes seen while it runs (a process
    that ended counts with its last sample)."""

    def __init__(self) -> None:
        import psutil

        self.psutil, self.train, self.ray, self._stop = psutil, {}, {}, threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.me = os.getpid()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for proc in self.psutil.process_iter(["cmdline"]):
                cmd = proc.info["cmdline"] or []
                text = " ".join(cmd)
                if "explorer_pipeline" in cmd and "train" in cmd:
                    target, key = self.train, proc.pid
                elif any(marker in text for marker in RAY_MARKERS):
                    target, key = self.ray, (proc.pid, _kind(text))
                else:
                    continue
                try:
                    times = proc.cpu_times()
                    target[key] = times.user + times.system
                except self.psutil.Error:
                    pass
            self._stop.wait(0.25)

    def __enter__(self) -> CpuSampler:
        self.baseline = {}
        for proc in self.psutil.process_iter(["cmdline"]):  # Ray's processes' CPU before the study
            text = " ".join(proc.info["cmdline"] or [])
            if any(marker in text for marker in RAY_MARKERS):
                try:
                    times = proc.cpu_times()
                    self.baseline[(proc.pid, _kind(text))] = times.user + times.system
                except self.psutil.Error:
                    pass
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join()

    def totals(self) -> tuple[float, float, dict[str, float]]:
        kinds: dict[str, float] = {}
        for key, value in self.ray.items():
            kinds[key[1]] = kinds.get(key[1], 0.0) + value - self.baseline.get(key, 0.0)
        return sum(self.train.values()), sum(kinds.values()), {k: round(v, 1) for k, v in sorted(kinds.items())}


def _kind(cmdline: str) -> str:
    """Which of Ray's processes: gcs, raylet, worker (tasks, actors, idle), agent, monitor (by the
    executable first: a raylet's arguments name the worker and agent scripts)."""
    program = os.path.basename(cmdline.split(" ", 1)[0])
    if program in ("raylet", "gcs_server"):
        return "gcs" if program == "gcs_server" else "raylet"
    for marker, kind in (("ray::", "worker"), ("default_worker.py", "worker"), ("setup_worker.py", "worker"),
                         ("dashboard", "agent"), ("runtime_env", "agent"), ("monitor", "monitor"),
                         ("gcs_server", "gcs"), ("raylet", "raylet")):
        if marker in cmdline:
            return kind
    return "other"


def run_once(backend, spec_path: Path, out: Path) -> dict[str, float]:
    from explorer_ablation.runner import run_study
    from explorer_ablation.spec import load_spec

    first: list[float] = []

    def echo(line: str) -> None:
        if " started " in line and not first:
            first.append(time.perf_counter())

    with CpuSampler() as cpu:
        t0 = time.perf_counter()
        result = run_study(load_spec(spec_path), out, backend, spec_path=spec_path, echo=echo)
        wall = time.perf_counter() - t0
    runs = [json.loads(line) for line in (out / "status.jsonl").read_text().splitlines()]
    if not result.ok:
        raise SystemExit(f"the study failed: {[e for e in runs if e['event'] == 'failed']}")
    run_s = sum(e["wall_s"] for e in runs if e["event"] == "done")
    train_cpu, ray_cpu, kinds = cpu.totals()
    return {"wall_s": wall, "runs_s": run_s, "runs": result.done, "first_start_s": (first or [t0])[0] - t0,
            "train_cpu_s": train_cpu, "ray_cpu_s": ray_cpu, "ray_cpu_by_kind": kinds}


def on_ray(spec_path: Path, out: Path, slots: int, topology: str) -> dict[str, float]:
    import ray
    from ray.cluster_utils import Cluster

    from explorer_ablation.backends import RayBackend
    from explorer_ablation.spec import load_spec

    cluster = None
    if topology == "cluster":
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        for _ in range(slots):
            cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(num_cpus=slots, include_dashboard=False, log_to_driver=False)
    try:
        address = cluster.address if cluster is not None else None
        return run_once(RayBackend(address=address, runtime=load_spec(spec_path).runtime), spec_path, out)
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--topology", choices=["cluster", "one-node"], default="cluster")
    args = parser.parse_args()
    from explorer_ablation.backends import LocalBackend

    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    spec_path = root / "spec.yaml"
    spec_path.write_text(SPEC.format(steps=args.steps, seeds=args.seeds))
    pairs = []
    load0 = os.getloadavg()
    try:
        for rep in range(args.reps):
            local = run_once(LocalBackend(workers=args.slots), spec_path, root / f"local-{rep}")
            ray_ = on_ray(spec_path, root / f"ray-{rep}", args.slots, args.topology)
            pairs.append((local, ray_))
            print(f"rep {rep}: local {json.dumps(local)}\n       ray   {json.dumps(ray_)}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load1 = os.getloadavg()
    print(f"{2 * args.seeds} runs x {args.steps} steps on {args.slots} slots, Ray topology {args.topology}; "
          f"load average {load0[0]:.1f} -> {load1[0]:.1f}")
    for rep, (local, ray_) in enumerate(pairs):
        for name, m in (("local backend", local), ("Ray", ray_)):
            print(f"  {rep} {name:13s} wall {m['wall_s']:7.1f} s, runs' own time {m['runs_s']:7.1f} s, "
                  f"packing {m['runs_s'] / (args.slots * m['wall_s']):.2f}, first start {m['first_start_s']:.1f} s, "
                  f"CPU s: train {m['train_cpu_s']:.1f}, Ray processes {m['ray_cpu_s']:.1f}")
        print(f"  {rep} efficiency vs back to back (local wall / Ray wall): {local['wall_s'] / ray_['wall_s']:.2f}")
    ratios = [local["wall_s"] / ray_["wall_s"] for local, ray_ in pairs]
    print(f"median efficiency vs back to back on {args.slots} workers: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
