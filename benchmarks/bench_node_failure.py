"""Time lost to a node failure: one run on a local multi-node Ray cluster, uninterrupted vs killed with its node.

    nice -n 10 .venv/bin/python benchmarks/bench_node_failure.py [--steps 3000] [--every 500] [--reps 1] [--storage]
                                                                 [--health-check-ms MS]

A one-run study (real ``llm-explorer train``: DQN on CartPole-v1, blocking mode, scripted provider, a
checkpoint every EVERY env steps) on a ``ray.cluster_utils.Cluster`` (a head without CPUs, two worker
nodes of 1 CPU each). Arm *uninterrupted*: the study as it is. Arm *killed*: once the run has trained
half a checkpoint interval past the checkpoint nearest the middle of the run, its node is removed
without grace (SIGKILL of its raylet, its workers and their train) and a replacement node joins; Ray
retries the run on the other node, which resumes from the checkpoint. The arms alternate (REPS pairs).

Lost time = the killed study's wall time - the uninterrupted one's. It splits into the steps trained
again (from the checkpoint to the kill, at the uninterrupted run's steps/s: at most one checkpoint
interval) and the restart (the rest: Ray noticing the dead node, the retry's start, train's imports
and loading the checkpoint); the time from the kill until the retry's task reported its start
(``detected``) is printed apart: it is mostly Ray's GCS noticing the dead node through its health
checks (by default a check every 3 s, dead after 5 missed). ``--health-check-ms MS`` starts the head
with ``health_check_period_ms`` and ``health_check_timeout_ms`` MS and a threshold of 3, as
``ray start --head --system-config`` would. ``--storage`` puts the study on fsspec storage (``file://`` on a
directory apart from the nodes' scratch), so the retry also downloads the run directory.

CPU time is that of the ``train`` processes (sampled with psutil every 0.2 s; a killed process counts
with its last sample), so the numbers can be read on a loaded machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")

SPEC = """
name: bench-node-failure
base:
  algo: dqn
  steps: {steps}
  provider: scripted
  mode: blocking
  eval_episodes: 2
  config:
    eval: {{every: {eval_every}}}
    network: {{hidden_sizes: [32, 32]}}
    checkpoint: {{every_steps: {every}}}
arms: [{{name: a}}]
environments: [CartPole-v1]
seeds: [0]
resources: {{num_cpus: 1}}
runtime: {{heartbeat_s: 1, max_retries: 2{runtime_env}}}
"""
RUN = "a/CartPole-v1/seed-0"


class TrainCpu:
    """Sums the CPU seconds of every ``explorer_pipeline train`` process seen while it runs."""

    def __init__(self) -> None:
        import psutil

        self.psutil, self.seen, self._stop = psutil, {}, threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for proc in self.psutil.process_iter(["cmdline"]):
                cmd = proc.info["cmdline"] or []
                if "explorer_pipeline" in cmd and "train" in cmd:
                    try:
                        times = proc.cpu_times()
                        self.seen[proc.pid] = times.user + times.system
                    except self.psutil.Error:
                        pass
            self._stop.wait(0.2)

    def __enter__(self) -> TrainCpu:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join()

    @property
    def seconds(self) -> float:
        return sum(self.seen.values())


def _metric_steps(path: Path) -> int:
    try:
        rows = [line.split(",") for line in path.read_text().splitlines()[1:]]
    except OSError:
        return 0
    return max((int(r[0]) for r in rows if len(r) == 3 and r[0].isdigit()), default=0)


def _checkpoints(run_dir: Path) -> list[int]:
    return sorted(int(p.parent.name.split("-")[1]) for p in run_dir.glob("checkpoints/step-*/meta.json"))


def one(root: Path, args: argparse.Namespace, kill: bool, tag: str) -> dict[str, float]:
    import ray
    from ray.cluster_utils import Cluster

    from explorer_ablation.backends import RayBackend
    from explorer_ablation.runner import run_study
    from explorer_ablation.spec import load_spec

    work = root / tag
    work.mkdir()
    scratch = work / "scratch"
    runtime_env = f", runtime_env: {{env_vars: {{LLM_EXPLORER_SCRATCH: '{scratch}'}}}}" if args.storage else ""
    spec_path = work / "spec.yaml"
    spec_path.write_text(SPEC.format(steps=args.steps, every=args.every, eval_every=args.steps // 2,
                                     runtime_env=runtime_env))
    os.environ["LLM_EXPLORER_STUDY_CACHE"] = str(work / "cache")
    out_dir = work / ("bucket" if args.storage else "out")
    out = f"file://{out_dir}" if args.storage else out_dir
    run_dir = out_dir / "runs" / RUN
    head: dict = {"num_cpus": 0, "include_dashboard": False}
    if args.health_check_ms:
        head["_system_config"] = {"health_check_period_ms": args.health_check_ms,
                                  "health_check_timeout_ms": args.health_check_ms,
                                  "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    info: dict[str, float] = {}
    try:
        spec = load_spec(spec_path)
        result: dict = {}
        retried: list[float] = []

        def echo(line: str) -> None:
            if "attempt 2" in line and not retried:
                retried.append(time.perf_counter())

        def study() -> None:
            try:
                result["value"] = run_study(spec, out, RayBackend(address=cluster.address, runtime=spec.runtime),
                                            spec_path=spec_path, echo=echo)
            except BaseException as exc:
                result["error"] = exc

        with TrainCpu() as cpu:
            t0 = time.perf_counter()
            driver = threading.Thread(target=study, daemon=True)
            driver.start()
            if kill:
                middle = args.every * round(args.steps / 2 / args.every)
                while driver.is_alive():
                    local = next(iter(scratch.rglob(f"runs/{RUN}/metrics.csv")), None) if args.storage \
                        else run_dir / "metrics.csv"
                    stored = _checkpoints(run_dir)
                    if stored and stored[-1] >= middle and local is not None \
                            and _metric_steps(local) >= stored[-1] + args.every // 2:
                        info.update(checkpoint=stored[-1], killed_at=_metric_steps(local))
                        break
                    time.sleep(0.1)
                events = [json.loads(line) for line in (out_dir / "status.jsonl").read_text().splitlines()]
                node_id = next(e["node"] for e in events if e["event"] == "started")
                victim = next(n for n in nodes if n.node_id == node_id)
                cluster.remove_node(victim, allow_graceful=False)
                info["t_kill"] = time.perf_counter() - t0
                info["killed_at"] = _metric_steps(local)  # the dead run's newest row: how far it got
                nodes.append(cluster.add_node(num_cpus=1))
            driver.join()
            wall = time.perf_counter() - t0
        if "error" in result or not result["value"].ok:
            raise SystemExit(f"{tag}: the study failed: {result}")
        summary = json.loads((run_dir / "summary.json").read_text())
        manifest = json.loads((run_dir / "manifest.json").read_text())
        if kill and retried:
            info["detected_s"] = retried[0] - t0 - info["t_kill"]
        info.update(wall_s=wall, train_cpu_s=cpu.seconds, steps_per_s=summary.get("steps_per_s") or 0.0,
                    resumed_from=float((manifest.get("resumes") or [{}])[-1].get("from_step", -1)))
    finally:
        ray.shutdown()
        cluster.shutdown()
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=500, help="checkpoint.every_steps")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--storage", action="store_true", help="the study on file:// storage (fsspec)")
    parser.add_argument("--health-check-ms", type=int, default=0, help="the head's GCS health-check period")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-node-failure-"))
    rows = []
    load0 = os.getloadavg()
    try:
        for rep in range(args.reps):
            plain = one(root, args, False, f"plain-{rep}")
            killed = one(root, args, True, f"killed-{rep}")
            rows.append((plain, killed))
            print(f"rep {rep}: uninterrupted {json.dumps(plain)}\n       killed {json.dumps(killed)}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load1 = os.getloadavg()
    print(f"{args.steps} steps, a checkpoint every {args.every} steps, storage: "
          f"{'file:// (fsspec)' if args.storage else 'shared path'}, health checks "
          f"{f'every {args.health_check_ms} ms x 3' if args.health_check_ms else 'Ray default'}; "
          f"load average {load0[0]:.1f} -> {load1[0]:.1f}")
    for plain, killed in rows:
        speed = plain["steps_per_s"]
        interval = args.every / speed
        redone = max(0.0, killed["killed_at"] - killed["resumed_from"]) / speed
        lost = killed["wall_s"] - plain["wall_s"]
        print(f"uninterrupted {plain['wall_s']:.1f} s wall ({plain['train_cpu_s']:.1f} CPU s of train); "
              f"killed {killed['wall_s']:.1f} s wall ({killed['train_cpu_s']:.1f} CPU s), resumed from step "
              f"{killed['resumed_from']:.0f} (killed at ~{killed['killed_at']:.0f})")
        print(f"  lost {lost:.1f} s wall, {killed['train_cpu_s'] - plain['train_cpu_s']:.1f} CPU s; checkpoint "
              f"interval {interval:.1f} s ({speed:.0f} steps/s); trained again {redone:.1f} s; restart "
              f"{lost - redone:.1f} s (of which the retry's start was reported {killed.get('detected_s', -1):.1f} s "
              f"after the kill); goal lost <= interval + restart: redone {redone:.1f} <= {interval:.1f}")


if __name__ == "__main__":
    main()
