"""``llm-explorer ablate --emit-jobs FILE``: every run as one line for a SLURM array or any other
scheduler, run here exactly as written (real ``llm-explorer train``, CartPole). A line run twice
leaves the complete run alone; SIGTERM (a preemption) makes ``train`` write a checkpoint where it
stops, and the same line run again continues the run from it.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from tianshou_integration.checkpoint import complete_checkpoints

from .helpers import cli_env, status_events, wait_for

SPEC = """
name: jobs
base: {algo: dqn, steps: 300, eval_episodes: 2, provider: none}
arms:
  - name: short
  - name: long
    steps: 3000
    config: {network: {hidden_sizes: [32, 32]}, eval: {every: 1000}}
environments: [CartPole-v1]
seeds: [0, 1]
resources: {num_cpus: 1}
"""


def _run_line(line: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(["bash", "-c", line], env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)


def _steps_written(run_dir: Path) -> int:
    path = run_dir / "metrics.csv"
    if not path.exists():
        return 0
    rows = [line.split(",") for line in path.read_text().splitlines()[1:]]
    return max([int(r[0]) for r in rows if len(r) == 3 and r[0].isdigit()], default=0)


def test_emitted_jobs_run_as_written_and_continue_after_sigterm(write_spec, run_cli, tmp_path: Path):
    spec = write_spec(SPEC)
    out = tmp_path / "study"
    jobs = tmp_path / "jobs.txt"
    done = run_cli("ablate", str(spec), "--out", str(out), "--emit-jobs", str(jobs), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = jobs.read_text().splitlines()
    assert len(lines) == 4 and all("-m explorer_ablation.job --config" in line for line in lines)
    assert not (out / "runs").exists()  # nothing ran
    study = json.loads((out / "study.json").read_text())
    assert sorted(study["runs"]) == sorted(f"{a}/CartPole-v1/seed-{s}" for a in ("short", "long") for s in (0, 1))
    # the JSON-lines form names each run, its configuration and its resources
    as_json = tmp_path / "jobs.jsonl"
    again = run_cli("ablate", str(spec), "--out", str(out), "--resume", "--emit-jobs", str(as_json), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    entries = [json.loads(line) for line in as_json.read_text().splitlines()]
    assert [e["command"] for e in entries] == lines and all(e["resources"] == {"num_cpus": 1.0} for e in entries)

    # a SLURM array task: line N+1 of the file, run by the shell as written
    first = entries[0]
    assert first["run"] == "short/CartPole-v1/seed-0"
    proc = _run_line(lines[0])
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    run_dir = Path(first["run_dir"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] >= 300 and summary["interrupted"] is False
    stamp = (run_dir / "summary.json").stat().st_mtime_ns
    proc = _run_line(lines[0])  # a requeued task: the complete run is left alone
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "already complete" in stderr
    assert (run_dir / "summary.json").stat().st_mtime_ns == stamp
    status = run_cli("status", str(out), cwd=tmp_path)
    assert status.returncode == 0 and status.stdout.startswith("4 runs: 3 queued, 0 running, 1 done,"), status.stdout

    # a preempted task: SIGTERM, train writes a checkpoint where it stops; the same line continues it
    long_entry = next(e for e in entries if e["run"] == "long/CartPole-v1/seed-0")
    long_dir = Path(long_entry["run_dir"])
    proc = _run_line(f"exec {long_entry['command']}")
    try:
        wait_for(lambda: _steps_written(long_dir) >= 400, 300, "400 env steps")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, stderr[-3000:]
    stopped = json.loads((long_dir / "summary.json").read_text())
    assert stopped["interrupted"] is True and 400 <= stopped["env_steps"] < 3000
    assert complete_checkpoints(long_dir)[0].step == stopped["env_steps"]  # the stop wrote a checkpoint there
    proc = _run_line(long_entry["command"])
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    manifest = json.loads((long_dir / "manifest.json").read_text())
    assert manifest["resumes"][-1]["from_step"] == stopped["env_steps"]
    assert json.loads((long_dir / "summary.json").read_text())["env_steps"] >= 3000
    assert [e["event"] for e in status_events(out)] == ["emitted", "emitted"]
