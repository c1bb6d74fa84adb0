"""``llm-explorer train`` as a user runs it: a real process, its exit status and what it prints.

CliRunner (tests/tianshou/test_cli.py) catches exceptions instead of printing them, so "no
traceback" can only be checked here. Bad input: exit 2, one line ``Error: ...`` on stderr, nothing
on stdout, nothing written. Ctrl-C (a real SIGINT): exit 1, the run directory completed.
``--llm-timeout`` limits each LLM call: a slower provider times out and is counted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .test_cli import BAD_INPUT, UNPARSABLE  # the same cases, checked through CliRunner there

ROOT = Path(__file__).resolve().parents[2]
LLM_EXPLORER = Path(sysconfig.get_path("scripts")) / "llm-explorer"


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(MPLBACKEND="Agg", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def train(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LLM_EXPLORER), "train", *args], cwd=ROOT, env=child_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


def nonblank(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory):
    """Every bad-input case, run as its own process (a few at a time: each one imports torch)."""
    base = tmp_path_factory.mktemp("bad-input")
    outs = [base / f"never-{i}" for i in range(len(BAD_INPUT))]
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = list(pool.map(lambda case: train(*case[0][0], "--out", str(case[1])), zip(BAD_INPUT, outs,
                                                                                           strict=True)))
    return list(zip(runs, outs, strict=True))


@pytest.mark.parametrize("index", range(len(BAD_INPUT)), ids=[case[1][:40] for case in BAD_INPUT])
def test_bad_input_exits_2_with_one_line_and_no_traceback(bad_input_runs, index):
    run, out = bad_input_runs[index]
    message = BAD_INPUT[index][1]
    shown = f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert run.returncode == 2, shown
    assert "Traceback" not in run.stdout + run.stderr, shown
    lines = nonblank(run.stderr)
    assert len(lines) == 1 and lines[0].startswith("Error: "), shown
    assert message in lines[0], shown
    assert nonblank(run.stdout) == [], shown
    assert not out.exists()  # nothing written for bad input


@pytest.fixture(scope="module")
def unparsable_runs():
    with ThreadPoolExecutor(max_workers=3) as pool:
        return list(pool.map(lambda args: train(*args), UNPARSABLE))


@pytest.mark.parametrize("index", range(len(UNPARSABLE)), ids=[" ".join(a[-2:]) for a in UNPARSABLE])
def test_unparsable_options_exit_2_without_a_traceback(unparsable_runs, index):
    run = unparsable_runs[index]
    shown = f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert run.returncode == 2, shown
    assert "Traceback" not in run.stdout + run.stderr, shown
    assert nonblank(run.stderr)[-1].startswith("Error: "), shown  # after click's usage lines


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_ctrl_c_exits_1_and_completes_the_run_directory(tmp_path):
    out = tmp_path / "interrupted"
    proc = subprocess.Popen([str(LLM_EXPLORER), "train", "--env", "CartPole-v1", "--algo", "dqn", "--steps",
                             "200000", "--provider", "scripted", "--eval-episodes", "1", "--out", str(out)],
                            cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        metrics = out / "metrics.csv"
        # training has started once the first training episode is in the metrics
        wait_for(lambda: proc.poll() is not None or (metrics.exists() and len(metrics.read_text().splitlines()) > 2),
                 240, "the first training episodes")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal sends
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    shown = f"stdout:\n{stdout}\nstderr:\n{stderr}"
    assert proc.returncode == 1, shown
    assert "Traceback" not in stdout + stderr, shown
    assert "interrupted" in stderr, shown
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and 0 < summary["env_steps"] < 200000
    assert summary["final_eval_return"] is None
    assert (out / "learning_curve.png").exists()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_llm_timeout_limits_each_call_and_timeouts_are_counted(tmp_path):
    # the scripted provider sleeps 0.5 s per call; only --llm-timeout differs between the two runs
    common = ["--env", "CartPole-v1", "--algo", "dqn", "--steps", "128", "--provider", "scripted",
              "--option", "latency=0.5", "--mode", "blocking", "--eval-episodes", "1", "--seed", "3"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        slow_future = pool.submit(train, *common, "--llm-timeout", "0.1", "--out", str(tmp_path / "limited"))
        patient_future = pool.submit(train, *common, "--llm-timeout", "30", "--out", str(tmp_path / "patient"))
        limited, patient = slow_future.result(), patient_future.result()
    assert limited.returncode == 0, limited.stderr[-3000:]
    assert patient.returncode == 0, patient.stderr[-3000:]

    summary = json.loads((tmp_path / "limited" / "summary.json").read_text())
    assert summary["llm_requests"] > 0 and summary["updates_published"] == 0
    assert summary["provider_errors"] == summary["llm_requests"], summary  # every request timed out ...
    assert set(summary["failures"]) <= {"timeout", "provider_error"}, summary["failures"]
    lines = read_jsonl(tmp_path / "limited" / "updates.jsonl")
    assert lines and all(line["source"] == "fallback" for line in lines)
    assert len(lines) == summary["fallbacks"] == summary["llm_requests"]
    errors = [e.get("error") or "" for e in read_jsonl(tmp_path / "limited" / "exchanges.jsonl")]
    assert errors and all("Timeout" in e for e in errors), errors  # ... and each call ended in a timeout

    control = json.loads((tmp_path / "patient" / "summary.json").read_text())
    assert control["llm_requests"] > 0 and control["updates_published"] == control["llm_requests"], control
    assert control["provider_errors"] == 0
