"""Stopping a study on a real Ray cluster (``ray.cluster_utils.Cluster``, loopback): the driver
(``llm-explorer ablate --backend ray --ray-address``) gets Ctrl-C while two runs train and one is
queued. The running ones are cancelled without force: each ``train`` gets SIGTERM and writes a
checkpoint where it stopped; the queued one never starts. While the study runs,
``llm-explorer status`` shows queued and running runs with their heartbeats.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from tianshou_integration.checkpoint import complete_checkpoints

from .helpers import cli_env, status_events, wait_for

SPEC = """
name: cancel
base:
  algo: dqn
  steps: 5000
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


def test_ctrl_c_on_the_driver_lets_each_running_run_checkpoint(write_spec, run_cli, tmp_path: Path):
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=2)  # 2 slots for 4 runs
        spec = write_spec(SPEC)
        out = tmp_path / "study"
        driver = subprocess.Popen([sys.executable, "-m", "explorer_pipeline", "ablate", str(spec), "--out", str(out),
                                   "--backend", "ray", "--ray-address", cluster.address, "--no-report"],
                                  cwd=tmp_path, env={**cli_env(), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: len(_beats(out)) == 2 or driver.poll() is not None, 600, "two runs past 200 steps")
            assert driver.poll() is None, driver.communicate()
            shown = run_cli("status", str(out), cwd=tmp_path)
            assert shown.returncode == 0, shown.stderr
            assert shown.stdout.startswith("4 runs: 2 queued, 2 running, 0 done, 0 failed, 0 interrupted; ETA ")
            running = [line for line in shown.stdout.splitlines() if line.startswith("  running ")]
            assert len(running) == 2 and all("/5000, " in line and "steps/s" in line for line in running), shown.stdout
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
            assert summary["interrupted"] is True and 200 <= summary["env_steps"] < 5000
            assert complete_checkpoints(run_dir)[0].step == summary["env_steps"]  # written where it stopped
        assert not [p for p in (out / "runs").glob("*/*/*") if "/".join(p.parts[-3:]) not in started]
        shown = run_cli("status", str(out), cwd=tmp_path)
        assert shown.stdout.startswith("4 runs: 2 queued, 0 running, 0 done, 0 failed, 2 interrupted (no session")
    finally:
        ray.shutdown()
        cluster.shutdown()
