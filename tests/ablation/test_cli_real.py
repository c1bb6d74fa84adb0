"""End to end with real components: ``llm-explorer ablate`` running the real ``llm-explorer train``
(Tianshou, CartPole-v1, the scripted provider) on the local backend, after a SIGKILL of the
runner, and on a real local Ray instance.

Kept tiny for a shared 2-core machine: 2 arms x 2 seeds x 1 env x 300 steps, 2 eval episodes.
The local-backend study also shows that an arm's hyperparameters reach the real run.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from .helpers import cli_env, status_events, wait_for

SPEC = """
name: tiny
base: {algo: dqn, steps: 300, eval_episodes: 2, provider: scripted, prompt_set: paper}
arms:
  - name: paper
  - name: baseline
    provider: none
baseline: baseline
environments: [CartPole-v1]
seeds: 2
"""
RUN_IDS = ["paper/CartPole-v1/seed-0", "baseline/CartPole-v1/seed-0", "paper/CartPole-v1/seed-1",
           "baseline/CartPole-v1/seed-1"]


def check_study(out: Path) -> list[dict[str, str]]:
    """Every run complete, written by the real train command, seeds paired; the report exists."""
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(f"{r['arm']}/{r['env']}/seed-{r['seed']}" for r in rows) == sorted(RUN_IDS)
    assert all(r["status"] == "complete" and int(r["env_steps"]) >= 300 for r in rows), rows
    for row in rows:
        run_dir = out / row["run_dir"]
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["seed"] == int(row["seed"])  # the same seed for both arms: paired
        assert (manifest["config"]["explorer"]["provider"] == "none") is (row["arm"] == "baseline")
        for name in ("metrics.csv", "updates.jsonl", "learning_curve.png", "exploration.png"):
            assert (run_dir / name).exists(), name
    paper = [r for r in rows if r["arm"] == "paper"]
    assert all(int(r["llm_requests"]) > 0 and int(r["input_tokens"]) > 0 for r in paper)
    assert all(r["llm_requests"] == "0" for r in rows if r["arm"] == "baseline")
    report = (out / "report.md").read_text()
    assert "**2 per arm and environment**" in report and "> **Warning:** Only 2 complete runs" in report
    assert "| paper | " in report and (out / "figures" / "learning_curves.png").exists()
    return rows


def test_tiny_study_with_the_local_backend(write_spec, run_cli, tmp_path: Path):
    # the paper arm overrides a hyperparameter, an epsilon setting and the budget
    hyper = "  - name: paper\n    steps: 320\n    config: {algorithm: {lr: 0.0005, epsilon: {end: 0.2}}}\n"
    spec = write_spec(SPEC.replace("  - name: paper\n", hyper))
    out = tmp_path / "study"
    done = run_cli("ablate", str(spec), "--out", str(out), "--workers", "2", cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[4/4 done, 0 running, 0 failed, done]" in done.stderr
    assert done.stdout.splitlines()[0] == f"report: {out / 'report.md'}"
    check_study(out)
    # the run directory's config.yaml is the real train command's resolved configuration
    for seed in (0, 1):
        paper = yaml.safe_load((out / f"runs/paper/CartPole-v1/seed-{seed}/config.yaml").read_text())
        baseline = yaml.safe_load((out / f"runs/baseline/CartPole-v1/seed-{seed}/config.yaml").read_text())
        assert paper["algorithm"]["lr"] == 0.0005 and paper["steps"] == 320 and paper["seed"] == seed
        assert paper["algorithm"]["epsilon"]["end"] == 0.2
        assert paper["algorithm"]["epsilon"]["decay_steps"] == baseline["algorithm"]["epsilon"]["decay_steps"]
        assert baseline["algorithm"]["lr"] == 0.001 and baseline["steps"] == 300  # the preset's, the base's
        assert baseline["algorithm"]["epsilon"]["end"] == 0.04
        assert (paper["explorer"]["provider"], baseline["explorer"]["provider"]) == ("scripted", "none")
        assert paper["eval"]["episodes"] == baseline["eval"]["episodes"] == 2
    # the report can be rebuilt on its own
    again = run_cli("report", str(out), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"figure: {out / 'figures' / 'cost.png'}" in again.stdout


def test_sigkill_the_runner_mid_study_then_resume(write_spec, run_cli, tmp_path: Path):
    spec = write_spec(SPEC)
    out = tmp_path / "study"
    runner = subprocess.Popen([sys.executable, "-m", "explorer_pipeline", "ablate", str(spec), "--out", str(out),
                               "--workers", "1", "--no-report"], cwd=tmp_path, env=cli_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # the first run finished; the second one has started writing its run directory
        second = out / "runs/baseline/CartPole-v1/seed-0"
        wait_for(lambda: (second / "manifest.json").exists(), 300, "the second run to write its manifest")
        first_summary = out / "runs/paper/CartPole-v1/seed-0/summary.json"
        stamp = (first_summary.stat().st_ino, first_summary.stat().st_mtime_ns)
        child = next(e["pid"] for e in status_events(out) if e["event"] == "started" and e["run"] == RUN_IDS[1])
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(timeout=30)
    finally:
        if runner.poll() is None:
            runner.kill()
    # the child dies with the runner (parent-death signal), so it cannot race the resume
    wait_for(lambda: not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2],
             30, "the orphaned train process to die")
    assert not (second / "summary.json").exists()
    done = run_cli("ablate", str(spec), "--out", str(out), "--resume", "--workers", "2", cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 already complete, 3 to run" in done.stderr, done.stderr
    assert (first_summary.stat().st_ino, first_summary.stat().st_mtime_ns) == stamp, "a finished run was redone"
    assert (second.parent / "seed-0.failed-1" / "manifest.json").exists()  # the half-written one, moved aside
    check_study(out)


def test_tiny_study_on_a_real_local_ray_instance(write_spec, run_cli, tmp_path: Path):
    # Ray is a required test component (`make setup` installs the ablation-ray extra): no skip
    assert importlib.util.find_spec("ray") is not None, "Ray is missing: pip install -e '.[ablation-ray]'"
    spec = write_spec(SPEC)
    out = tmp_path / "study"
    done = run_cli("ablate", str(spec), "--out", str(out), "--backend", "ray", cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on the ray backend" in done.stderr
    check_study(out)
    events = status_events(out)
    session = next(e for e in events if e["event"] == "session")
    assert session["backend"] == "ray" and session["workers"] >= 1
    assert sum(e["event"] == "done" and bool(e.get("host")) for e in events) == 4
