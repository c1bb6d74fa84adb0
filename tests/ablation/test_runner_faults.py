"""The runner's fault handling, with the fake train command (``fake_train.py``): failing runs,
half-written run directories, resume, Ctrl-C/SIGTERM, refusing to mix studies."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from explorer_ablation.backends import LocalBackend
from explorer_ablation.runner import run_study
from explorer_ablation.spec import load_spec
from explorer_ablation.state import StudyLock
from explorer_pipeline.errors import UsageError
from explorer_rundir.format import run_is_complete

from .helpers import FAKE_TRAIN_COMMAND, ROOT, cli_env, status_events, wait_for

SPEC = """
name: faults
base: {algo: dqn, steps: 300, provider: scripted, eval_episodes: 2}
arms:
  - name: good
  - name: baseline
    provider: none
environments: [CartPole-v1]
seeds: 2
"""


def study(spec_path: Path, out: Path, *, resume: bool = False, workers: int = 2):
    lines: list[str] = []
    result = run_study(load_spec(spec_path), out, LocalBackend(workers=workers), spec_path=spec_path, resume=resume,
                       train_command=FAKE_TRAIN_COMMAND, echo=lines.append)
    return result, lines


def summaries(out: Path) -> dict[str, tuple[int, int]]:
    """run dir -> (inode, mtime_ns) of its summary.json."""
    return {str(p.parent.relative_to(out)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in (out / "runs").glob("*/*/*/summary.json")}


def test_a_failing_run_is_recorded_and_the_study_goes_on(write_spec, run_cli, tmp_path: Path):
    crash_arm = "  - name: good\n  - name: crash\n    options: {fake_exit: 1}\n"
    spec = write_spec(SPEC.replace("  - name: good\n", crash_arm))
    out = tmp_path / "out"
    done = run_cli("ablate", str(spec), "--out", str(out), "--workers", "2", train_command=FAKE_TRAIN_COMMAND)
    assert done.returncode == 1, done.stderr  # some runs failed
    assert "FAILED crash/CartPole-v1/seed-0 (exit 1): fake-train: failing on purpose" in done.stderr
    failed = [e for e in status_events(out) if e["event"] == "failed"]
    assert sorted(e["run"] for e in failed) == ["crash/CartPole-v1/seed-0", "crash/CartPole-v1/seed-1"]
    assert all("failing on purpose" in e["error"] and e["rc"] == 1 for e in failed)
    rows = (out / "summary.csv").read_text().splitlines()
    assert len(rows) == 1 + 6
    assert sum(",complete," in r for r in rows) == 4 and sum(",failed," in r for r in rows) == 2
    assert "fake-train: failing on purpose" in rows[3]
    report = (out / "report.md").read_text()
    assert "## Failed runs" in report and "`crash/CartPole-v1/seed-1`: fake-train: failing on purpose" in report
    assert "2 of 6 planned runs are not complete" in report


def test_resume_keeps_finished_runs_and_reruns_half_written_ones(write_spec, tmp_path: Path):
    spec = write_spec(SPEC)
    out = tmp_path / "out"
    result, _ = study(spec, out)
    assert result.ok and result.done == 4
    before = summaries(out)
    # a run killed half-way: its directory exists but has no summary.json
    half = out / "runs/good/CartPole-v1/seed-1"
    (half / "summary.json").unlink()
    del before["runs/good/CartPole-v1/seed-1"]
    result, lines = study(spec, out, resume=True)
    assert result.ok and result.already_complete == 3 and result.done == 4
    assert "3 already complete, 1 to run" in lines[0]
    after = summaries(out)
    for run_dir, stamp in before.items():
        assert after[run_dir] == stamp, f"{run_dir} was redone"
    assert run_is_complete(half) and (half.parent / "seed-1.failed-1" / "manifest.json").exists()
    moved = [e for e in status_events(out) if e.get("moved_aside")]
    assert [e["run"] for e in moved] == ["good/CartPole-v1/seed-1"]
    # nothing left to do: a third session runs nothing
    result, lines = study(spec, out, resume=True)
    assert result.done == 4 and "0 to run" in lines[0] and summaries(out) == after


def test_an_interrupted_summary_is_not_complete(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    summary = {"env_steps": 300, "final_eval_return": 10.0}
    (run / "summary.json").write_text(json.dumps(summary))
    assert run_is_complete(run, 300)
    assert not run_is_complete(run, 400)  # fewer steps than asked
    (run / "summary.json").write_text(json.dumps({**summary, "interrupted": True}))
    assert not run_is_complete(run)
    (run / "summary.json").write_text('{"env_steps": 3')  # cut short
    assert not run_is_complete(run)


def test_a_failed_run_is_retried_by_resume(write_spec, tmp_path: Path):
    marker = tmp_path / "failed-once"
    spec = write_spec(SPEC.replace("  - name: good\n", f"  - name: good\n    options: {{fake_fail_once: {marker}}}\n"))
    out = tmp_path / "out"
    result, _ = study(spec, out)
    assert len(result.failed) == 1 and result.done == 3
    result, _ = study(spec, out, resume=True)
    assert result.ok and result.done == 4


def test_an_existing_study_needs_resume_and_the_same_spec(write_spec, tmp_path: Path):
    spec = write_spec(SPEC)
    out = tmp_path / "out"
    study(spec, out)
    with pytest.raises(UsageError, match="already holds a study: pass --resume"):
        study(spec, out)
    changed = write_spec(SPEC.replace("steps: 300", "steps: 400"), name="changed.yaml")
    with pytest.raises(UsageError, match="the spec changed for runs that already finished"):
        study(changed, out, resume=True)
    lr = "    provider: none\n    config: {algorithm: {lr: 0.01}}\n"
    hyper = write_spec(SPEC.replace("    provider: none\n", lr), name="hyper.yaml")  # a hyperparameter changed
    with pytest.raises(UsageError, match=r"the spec changed for runs that already finished in .*\(baseline/"):
        study(hyper, out, resume=True)
    more_seeds = write_spec(SPEC.replace("seeds: 2", "seeds: 3"), name="more.yaml")
    result, _ = study(more_seeds, out, resume=True)  # adding seeds is fine: only the new runs run
    assert result.already_complete == 4 and result.done == 6


def test_two_runners_never_share_a_study(write_spec, tmp_path: Path):
    spec = write_spec(SPEC)
    out = tmp_path / "out"
    with StudyLock(out), pytest.raises(UsageError, match="another 'llm-explorer ablate' is running"):
        study(spec, out)


def test_each_run_receives_its_configuration_as_a_file(write_spec, tmp_path: Path):
    hyper = ("  - name: hyper\n    steps: 500\n    options: {fake_bonus: 7}\n"
             "    config: {algorithm: {lr: 0.0005, epsilon: {schedule: multiplicative}}, eval: {episodes: 3}}\n")
    spec = write_spec(SPEC.replace("  - name: good\n", "  - name: good\n" + hyper))
    out = tmp_path / "out"
    result, _ = study(spec, out)
    assert result.ok and result.done == 6
    config_file = out / "configs/hyper__CartPole-v1__seed-1.yaml"
    written = yaml.safe_load(config_file.read_text())
    assert written == {"env": "CartPole-v1", "seed": 1, "algo": "dqn", "steps": 500,
                       "explorer": {"provider": "scripted", "provider_options": {"fake_bonus": 7}},
                       "eval": {"episodes": 3},  # config wins over the base's eval_episodes
                       "algorithm": {"lr": 0.0005, "epsilon": {"schedule": "multiplicative"}}}
    # the train command got --config FILE --out DIR, nothing else
    log = (out / "logs/hyper__CartPole-v1__seed-1.log").read_text().splitlines()[0]
    assert log.endswith(f"fake_train.py --config {config_file} --out {out / 'runs/hyper/CartPole-v1/seed-1'}")
    manifest = json.loads((out / "runs/hyper/CartPole-v1/seed-1/manifest.json").read_text())
    assert manifest["config"] == written and manifest["seed"] == 1
    assert json.loads((out / "runs/hyper/CartPole-v1/seed-1/summary.json").read_text())["env_steps"] == 500
    meta = json.loads((out / "study.json").read_text())
    run = meta["runs"]["hyper/CartPole-v1/seed-1"]
    assert run["config"] == written and run["config_file"] == "configs/hyper__CartPole-v1__seed-1.yaml"
    assert run["settings"]["steps"] == 500 and run["settings"]["provider"] == "scripted"
    assert sorted(p.name for p in (out / "configs").iterdir()) == sorted(
        f"{arm}__CartPole-v1__seed-{seed}.yaml" for arm in ("good", "hyper", "baseline") for seed in (0, 1))


def test_bad_spec_exits_2_before_anything_runs(write_spec, run_cli, tmp_path: Path):
    spec = write_spec(SPEC.replace("provider: none", "provider: none\n    prompt_st: x"))
    out = tmp_path / "out"
    done = run_cli("ablate", str(spec), "--out", str(out), train_command=FAKE_TRAIN_COMMAND)
    assert done.returncode == 2
    assert f"{spec}:7:5: arms[1].prompt_st: unknown field 'prompt_st'" in done.stderr
    assert not out.exists()
    done = run_cli("ablate", str(spec), "--out", str(out), "--ray-address", "auto", train_command=FAKE_TRAIN_COMMAND)
    assert done.returncode == 2 and "--ray-address needs --backend ray" in done.stderr
    done = run_cli("report", str(tmp_path))
    assert done.returncode == 2 and "is not an ablation study directory" in done.stderr


@pytest.mark.parametrize(("arm", "expected"), [
    ("    config: {algorithm: {lrr: 1}}\n",
     ":7:26: arms[1].config.algorithm.lrr: unknown key 'algorithm.lrr'; allowed: lr, critic_lr,"),
    ("    config:\n      network: {hidden_sizes: [64]}\n      eval: {every: 0}\n",
     ":9:14: arms[1].config.eval.every: eval.every must be >= 1 (got 0) (arm 'baseline' on CartPole-v1)"),
    ("    algo: ddpg\n",
     ":7:5: arms[1].algo: ddpg needs continuous actions but CartPole-v1 has discrete ones; use one of dqn,"),
], ids=["unknown-key", "out-of-range", "wrong-action-space"])
def test_a_bad_arm_configuration_exits_2_with_one_located_problem(write_spec, run_cli, tmp_path: Path, arm: str,
                                                                  expected: str):
    spec = write_spec(SPEC.replace("    provider: none\n", "    provider: none\n" + arm))
    out = tmp_path / "out"
    done = run_cli("ablate", str(spec), "--out", str(out), train_command=FAKE_TRAIN_COMMAND)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0] == "Error: invalid ablation spec (1 problem):", lines
    assert len(lines) == 2 and lines[1].startswith(f"  {spec}{expected}"), lines
    assert not out.exists()  # no study directory, no run directory


def test_a_discrete_algorithm_on_a_continuous_environment(write_spec, run_cli, tmp_path: Path):
    spec = write_spec(SPEC.replace("environments: [CartPole-v1]", "environments: [Pendulum-v1]"))
    out = tmp_path / "out"
    done = run_cli("ablate", str(spec), "--out", str(out), train_command=FAKE_TRAIN_COMMAND)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[1] == (
        f"  {spec}:2:8: base.algo: dqn needs discrete actions but Pendulum-v1 has continuous ones; use one of "
        "ddpg, td3, sac (arms 'good', 'baseline' on Pendulum-v1)")
    assert not out.exists()


def test_dry_run_prints_every_configuration_and_command(write_spec, run_cli, tmp_path: Path):
    lr = "    provider: none\n    config: {algorithm: {lr: 0.0005}}\n"
    spec = write_spec(SPEC.replace("    provider: none\n", lr))
    out = tmp_path / "out"
    done = run_cli("ablate", str(spec), "--out", str(out), "--dry-run", train_command=FAKE_TRAIN_COMMAND)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 8
    configs, commands = lines[0::2], lines[1::2]
    assert configs[1].startswith("# baseline/CartPole-v1/seed-0: ")
    assert json.loads(configs[1].split(": ", 1)[1])["algorithm"] == {"lr": 0.0005}
    assert json.loads(configs[1].split(": ", 1)[1])["explorer"] == {"provider": "none"}
    config_file = out.resolve() / "configs/baseline__CartPole-v1__seed-0.yaml"
    assert commands[1].endswith(f"fake_train.py --config {config_file} "
                                f"--out {out.resolve() / 'runs/baseline/CartPole-v1/seed-0'}")
    assert not out.exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_cleanly_and_resume_completes(write_spec, tmp_path: Path, sig: signal.Signals):
    spec = write_spec(SPEC.replace("eval_episodes: 2", "eval_episodes: 2, options: {fake_sleep: 30}"))
    out = tmp_path / "out"
    runner = subprocess.Popen([sys.executable, "-m", "explorer_pipeline", "ablate", str(spec), "--out", str(out),
                               "--workers", "2", "--no-report"], cwd=ROOT, env=cli_env(FAKE_TRAIN_COMMAND),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: sum(e["event"] == "started" for e in status_events(out)) == 2, 60, "two runs to start")
        children = [e["pid"] for e in status_events(out) if e["event"] == "started"]
        runner.send_signal(sig)
        _, stderr = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 130, stderr
    assert "continue with --resume" in stderr and "--resume" in stderr.splitlines()[-1]
    events = status_events(out)
    assert sorted(e["run"] for e in events if e["event"] == "interrupted") == [
        "baseline/CartPole-v1/seed-0", "good/CartPole-v1/seed-0"]
    for pid in children:  # the children were stopped, not left running
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    # resume (without the sleep: no run had finished, so changing the spec is allowed)
    result, _ = study(write_spec(SPEC.replace("eval_episodes: 2", "eval_episodes: 2, options: {fake_sleep: 0}")),
                      out, resume=True)
    assert result.ok and result.done == 4 and result.already_complete == 0
