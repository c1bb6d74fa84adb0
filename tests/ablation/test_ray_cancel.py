"""Stopping runs on a real Ray cluster (``ray.cluster_utils.Cluster``, loopback).

- The driver (``llm-explorer ablate --backend ray --ray-address``) gets Ctrl-C while two runs
  train and two are queued. The running ones are cancelled without force: each ``train`` gets
  SIGTERM and writes a checkpoint where it stopped; the queued ones never start. While the study
  runs, ``llm-explorer status`` shows queued and running runs with their heartbeats.
- A run's ``train`` stopped from outside (SIGTERM, as a preemption sends it), then killed (SIGKILL,
  as the OOM killer does): Ray retries the task each time and the run continues from its newest
  checkpoint to the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from tianshou_integration.checkpoint import complete_checkpoints

from .helpers import cli_env, status_events, wait_for

SPEC = """
name: cancel
base:
  algo: dqn
  steps: 5000000     # never reached: the study is stopped long before (a fast baseline run did reach 50 000)
  provider: scripted
  eval_episodes: 2
  config: {network: {hidden_sizes: [32, 32]}, eval: {every: 2500}}
arms:
  - name: a
  - name: baseline
    provider: none
environments: [CartPole-v1]
seeds: [0, 1]
resources: {num_cpus: 1}
runtime: {heartbeat_s: 1}
"""


def _beats(out: Path) -> dict[str, dict]:
    return {e["run"]: e for e in status_events(out) if e["event"] == "heartbeat" and (e.get("step") or 0) >= 200}


@pytest.fixture(scope="module")
def cluster():
    """A head without CPUs and one worker node with 2 CPUs."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    c.add_node(num_cpus=2)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def test_ctrl_c_on_the_driver_lets_each_running_run_checkpoint(cluster, write_spec, run_cli, tmp_path: Path):
    # 2 slots (the module's node) for 4 runs
    spec = write_spec(SPEC)
    out = tmp_path / "study"
    driver = subprocess.Popen([sys.executable, "-m", "explorer_pipeline", "ablate", str(spec), "--out", str(out),
                               "--backend", "ray", "--ray-address", cluster.address, "--no-report"],
                              cwd=tmp_path, env={**cli_env(), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(_beats(out)) == 2 or driver.poll() is not None, 600, "two runs past 200 steps")
        assert driver.poll() is None, driver.communicate()
        # the ETA needs a speed, i.e. a second heartbeat of some run: ask until it is there
        statuses = []
        wait_for(lambda: statuses.append(run_cli("status", str(out), cwd=tmp_path)) or "; ETA " in statuses[-1].stdout,
                 120, "an ETA in the status")
        shown = statuses[-1]
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith("4 runs: 2 queued, 2 running, 0 done, 0 failed, 0 interrupted; ETA ")
        running = [line for line in shown.stdout.splitlines() if line.startswith("  running ")]
        assert len(running) == 2 and all("/5000000, " in line and "steps/s" in line for line in running), shown.stdout
        driver.send_signal(signal.SIGINT)
        _, stderr = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 130, stderr[-3000:]
    assert "continue with --resume" in stderr
    events = status_events(out)
    started = {e["run"] for e in events if e["event"] == "started"}
    interrupted = {e["run"] for e in events if e["event"] == "interrupted"}
    assert len(started) == 2 and interrupted == started  # the queued runs never started
    for run_id in started:
        run_dir = out / "runs" / run_id
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["interrupted"] is True and 200 <= summary["env_steps"] < 5000000
        assert complete_checkpoints(run_dir)[0].step == summary["env_steps"]  # written where it stopped
    assert not [p for p in (out / "runs").glob("*/*/*") if "/".join(p.parts[-3:]) not in started]
    shown = run_cli("status", str(out), cwd=tmp_path)
    assert shown.stdout.startswith("4 runs: 2 queued, 0 running, 0 done, 0 failed, 2 interrupted (no session")


LOST_SPEC = """
name: lost
base:
  algo: dqn
  steps: 6000        # long enough to be stopped twice on a fast machine
  provider: none
  eval_episodes: 2
  config: {network: {hidden_sizes: [32, 32]}, eval: {every: 2000}, checkpoint: {every_steps: 300}}
arms: [{name: only}]
environments: [CartPole-v1]
seeds: [0]
resources: {num_cpus: 1}
runtime: {heartbeat_s: 1, max_retries: 2}
"""


def _resumes(run_dir: Path) -> int:
    try:
        return len(json.loads((run_dir / "manifest.json").read_text()).get("resumes", []))
    except (OSError, ValueError):
        return 0


def test_a_train_stopped_or_killed_from_outside_is_retried_from_its_checkpoint(cluster, tmp_path: Path):
    from explorer_ablation.backends import RayBackend
    from explorer_ablation.runner import run_study
    from explorer_ablation.spec import load_spec

    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(LOST_SPEC)
    spec, out = load_spec(spec_path), tmp_path / "out"
    run_dir = out / "runs/only/CartPole-v1/seed-0"
    if not ray.is_initialized():
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    result: dict = {}
    driver = threading.Thread(target=lambda: result.update(value=run_study(
        spec, out, RayBackend(address=cluster.address, runtime=spec.runtime), spec_path=spec_path,
        echo=lambda line: None)), daemon=True)
    driver.start()

    def attempt(n: int) -> dict | None:
        starts = [e for e in status_events(out) if e["event"] == "started"]
        return starts[n - 1] if len(starts) >= n else None

    def stepped_past(step: int) -> bool:
        beats = [e for e in status_events(out) if e["event"] == "heartbeat"]
        return bool(beats) and (beats[-1].get("step") or 0) >= step

    wait_for(lambda: attempt(1) is not None and stepped_past(300), 300, "the first attempt past 300 steps")
    os.kill(attempt(1)["pid"], signal.SIGTERM)  # a preemption: train checkpoints and exits 1
    wait_for(lambda: attempt(2) is not None and _resumes(run_dir) == 1, 180, "the second attempt to resume")
    stopped_at = json.loads((run_dir / "manifest.json").read_text())["resumes"][-1]["from_step"]
    wait_for(lambda: any(c.step > stopped_at for c in complete_checkpoints(run_dir)), 300, "a newer checkpoint")
    os.kill(attempt(2)["pid"], signal.SIGKILL)  # the OOM killer
    wait_for(lambda: attempt(3) is not None, 120, "the third attempt")
    driver.join(timeout=600)
    assert not driver.is_alive() and result["value"].ok, result
    starts = [e for e in status_events(out) if e["event"] == "started"]
    assert [(s["attempt"], s["resume"]) for s in starts] == [(1, False), (2, True), (3, True)]
    resumes = json.loads((run_dir / "manifest.json").read_text())["resumes"]
    assert len(resumes) == 2 and resumes[0]["from_step"] >= 300 and resumes[1]["from_step"] > resumes[0]["from_step"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] >= 6000 and summary["interrupted"] is False
    assert [e["event"] for e in status_events(out) if e.get("run")].count("done") == 1
