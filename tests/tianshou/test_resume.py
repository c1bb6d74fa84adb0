"""Checkpoints, ``llm-explorer train --resume`` and ``--replay-schedule``, with real processes.

The reference is one uninterrupted run (scripted provider, blocking mode). A run SIGKILLed in the
middle, or stopped with Ctrl-C, and then resumed must end with the same ``metrics.csv`` byte for
byte, and the same ``updates.jsonl`` and ``exchanges.jsonl`` apart from wall-clock fields. A
checkpoint cut in half is skipped for the previous one. Bad input exits 2 with the reason.
"""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import shutil
import signal
import subprocess
import sysconfig
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from click.testing import CliRunner
from gymnasium.utils import EzPickle

from tianshou_integration.checkpoint import (
    CHECKPOINTS_DIR,
    EnvNotSaved,
    capture_env_states,
    complete_checkpoints,
)
from tianshou_integration.cli import train as train_command
from tianshou_integration.config import make_config
from tianshou_integration.experiment import run_experiment

ROOT = Path(__file__).resolve().parents[2]
LLM_EXPLORER = Path(sysconfig.get_path("scripts")) / "llm-explorer"
STEPS = 3000
RUN = ["--env", "CartPole-v1", "--algo", "dqn", "--steps", str(STEPS), "--seed", "3", "--provider", "scripted",
       "--mode", "blocking", "--eval-episodes", "2", "--set", "eval.every=1000",
       "--set", "network.hidden_sizes=[32,32]", "--set", "checkpoint.every_steps=500"]
WALL_CLOCK = {"t_s", "latency_s", "time"}  # the only fields two identical runs may differ in


def child_env() -> dict[str, str]:
    return {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([str(LLM_EXPLORER), "train", *args], cwd=ROOT, env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LLM_EXPLORER), "train", *args], cwd=ROOT, env=child_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


def invoke(*args: str):
    return CliRunner().invoke(train_command, list(args), catch_exceptions=True)


def wait_for(predicate, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the run ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def jsonl(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in WALL_CLOCK}
            for line in path.read_text().splitlines() if line.strip()]


def metric_steps(path: Path) -> list[int]:
    rows = [line.split(",") for line in path.read_text().splitlines()[1:]]
    return [int(row[0]) for row in rows if len(row) == 3 and row[0].isdigit()]  # not a line being written


def assert_same_run(reference: Path, out: Path) -> None:
    assert (out / "metrics.csv").read_bytes() == (reference / "metrics.csv").read_bytes()
    assert jsonl(out / "updates.jsonl") == jsonl(reference / "updates.jsonl")
    assert jsonl(out / "exchanges.jsonl") == jsonl(reference / "exchanges.jsonl")
    ref, got = (json.loads((d / "summary.json").read_text()) for d in (reference, out))
    timing = {"wall_s", "train_wall_s", "eval_wall_s", "steps_per_s", "checkpoints"}
    assert {k: v for k, v in got.items() if k not in timing} == {k: v for k, v in ref.items() if k not in timing}


def newest_checkpoint(out: Path) -> int:
    return complete_checkpoints(out)[0].step


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "run"
    result = run(*RUN, "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["updates_applied"] >= 5 and summary["checkpoints"]["written"] >= 6  # at 0, 512, ... 2560
    return out


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    """A run SIGKILLed after its checkpoint at 1500+ steps, once it has written rows past that checkpoint."""
    out = tmp_path_factory.mktemp("killed") / "run"
    proc = sigkill_after_checkpoint(RUN, out, 1500)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists()
    return out


def sigkill_after_checkpoint(args: tuple[str, ...] | list[str], out: Path, at_step: int, *,
                             checkpoint_s: float = 240, rows_s: float = 60) -> subprocess.Popen:
    """Start ``train *args --out out`` and SIGKILL it once it has a complete checkpoint at
    ``at_step`` or later and has written metrics rows past its newest checkpoint; returns the
    finished process."""
    proc = start(*args, "--out", str(out))
    try:
        ready = lambda: any(c.step >= at_step for c in complete_checkpoints(out))  # noqa: E731
        wait_for(ready, proc, checkpoint_s, f"a checkpoint at {at_step} steps")
        step = newest_checkpoint(out)
        wait_for(lambda: max(metric_steps(out / "metrics.csv")) > step, proc, rows_s, "rows after the checkpoint")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    return out


# --------------------------------------------------------------------------- resume ends like the uninterrupted run
def test_a_sigkilled_run_resumes_to_the_same_results(reference, killed, tmp_path):
    out = copy_of(killed, tmp_path)
    step = newest_checkpoint(out)
    assert max(metric_steps(out / "metrics.csv")) > step  # rows written after the checkpoint are cut back
    result = run("--resume", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_run(reference, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resumes"][-1]["from_step"] == step and manifest["resumes"][-1]["exact"] is True
    summary = json.loads((out / "summary.json").read_text())
    assert summary["checkpoints"]["resumed_from_step"] == step
    assert len(complete_checkpoints(out)) == 2  # checkpoint.keep


def test_ctrl_c_stops_at_a_checkpoint_and_resume_finishes_the_run(reference, tmp_path):
    out = tmp_path / "run"
    proc = start(*RUN, "--out", str(out))
    try:
        wait_for(lambda: (out / "metrics.csv").exists() and max([0, *metric_steps(out / "metrics.csv")]) > 700,
                 proc, 240, "700 env steps")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, stderr
    assert f"--resume {out}" in stderr and "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and 700 < summary["env_steps"] < STEPS
    assert newest_checkpoint(out) == summary["env_steps"]  # the stop wrote a checkpoint where it stopped
    result = run("--resume", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_run(reference, out)


def test_a_checkpoint_cut_in_half_is_skipped_for_the_previous_one(reference, killed, tmp_path):
    out = copy_of(killed, tmp_path)
    newest, previous = complete_checkpoints(out)[:2]
    state = newest.path / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    # what a writer killed mid-way leaves: a partial directory, never renamed into place
    partial = out / CHECKPOINTS_DIR / f".partial-step-{newest.step + 500:012d}-1"
    partial.mkdir()
    (partial / "state.pt").write_bytes(b"\x80\x02half")
    assert [c.step for c in complete_checkpoints(out)] == [previous.step]
    # changing how checkpoints are written is allowed on resume
    result = run("--resume", str(out), "--set", "checkpoint.keep=3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ignoring checkpoint" in result.stderr
    assert_same_run(reference, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resumes"][-1]["from_step"] == previous.step
    assert not partial.exists()
    assert "keep: 3" in (out / "config.yaml").read_text()


def test_a_damaged_file_of_the_right_size_is_skipped_too(killed, tmp_path):
    out = copy_of(killed, tmp_path)
    newest, previous = complete_checkpoints(out)[:2]
    envs = newest.path / "envs.pkl"
    envs.write_bytes(b"\0" * envs.stat().st_size)  # sizes match meta.json; unpickling fails
    config = make_config("CartPole-v1", "dqn", file=out / "config.yaml")
    summary = run_experiment(config, out, progress=False, resume=True)
    assert summary["checkpoints"]["resumed_from_step"] == previous.step and summary["env_steps"] >= STEPS


def test_checkpoints_do_not_change_what_a_run_computes(reference, tmp_path):
    out = tmp_path / "run"
    result = invoke(*RUN, "--set", "checkpoint.enabled=false", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert not (out / CHECKPOINTS_DIR).exists()
    assert (out / "metrics.csv").read_bytes() == (reference / "metrics.csv").read_bytes()
    assert jsonl(out / "updates.jsonl") == jsonl(reference / "updates.jsonl")


def test_resume_without_the_buffer_finishes_and_says_it_is_not_exact(tmp_path):
    out = tmp_path / "run"
    config = make_config("CartPole-v1", "dqn", {"steps": 1200, "seed": 1, "eval.every": 600, "eval.episodes": 1,
                                                "network.hidden_sizes": [16], "checkpoint.every_steps": 400,
                                                "checkpoint.include_buffer": "never"})
    run_experiment(config, out, progress=False)
    (out / "summary.json").unlink()  # as if the process had died after its last checkpoint
    step = newest_checkpoint(out)
    assert complete_checkpoints(out)[0].meta["buffer"] is False
    summary = run_experiment(config, out, progress=False, resume=True)
    assert summary["env_steps"] >= 1200 and not summary["interrupted"]
    assert summary["checkpoints"]["resume_exact"] is False
    limits = json.loads((out / "manifest.json").read_text())["resumes"][-1]["limits"]
    assert any("replay buffer not saved" in limit for limit in limits)
    assert max(metric_steps(out / "metrics.csv")) > step


def test_the_ablation_runner_resumes_a_half_finished_run_instead_of_redoing_it(reference, killed, tmp_path):
    from explorer_ablation.launch import Job, run_blocking

    out = copy_of(killed, tmp_path)
    log = tmp_path / "run.log"
    job = Job("arm/CartPole-v1/seed-3", ("--config", str(out / "config.yaml"), "--out", str(out)), out, log,
              steps=STEPS, train_command=(str(LLM_EXPLORER), "train"))
    outcome = run_blocking(job)
    assert outcome.complete and outcome.moved_aside is None, outcome.error
    assert f"train --resume {out}" in log.read_text().splitlines()[0]
    assert_same_run(reference, out)
    assert not list(tmp_path.glob("run.failed-*"))


# --------------------------------------------------------------------------- bad input: exit 2 with the reason
def test_resume_of_a_directory_that_is_not_a_run(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hello")
    for target in ("empty", "other", "missing"):
        result = invoke("--resume", str(tmp_path / target))
        assert result.exit_code == 2, result.output
        assert "is not a run directory" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "other"]  # nothing written


def test_resume_of_a_finished_run(reference):
    before = (reference / "metrics.csv").read_bytes()
    result = invoke("--resume", str(reference))
    assert result.exit_code == 2 and "is finished" in result.output and "nothing to resume" in result.output
    assert (reference / "metrics.csv").read_bytes() == before


@pytest.mark.parametrize(("args", "named"), [
    (["--set", "algorithm.lr=0.5"], "algorithm.lr"),
    (["--steps", "4000"], "steps"),
    (["--provider", "none"], "explorer.provider"),
])
def test_resume_with_a_different_configuration(killed, tmp_path, args, named):
    out = copy_of(killed, tmp_path)
    result = invoke("--resume", str(out), *args)
    assert result.exit_code == 2, result.output
    assert "settings differ" in result.output and named in result.output
    assert not (out / "summary.json").exists() and (out / "metrics.csv").read_bytes() == \
        (killed / "metrics.csv").read_bytes()


def test_the_preflight_switch_is_not_part_of_a_runs_identity():
    """A resume may turn the provider's preflight off (to continue while the server is still
    down); every other provider option still makes a different run."""
    from tianshou_integration.checkpoint import config_differences, config_fingerprint

    def config(**options):
        return make_config("CartPole-v1", "dqn", {"explorer.provider": "openai",
                                                  "explorer.base_url": "http://127.0.0.1:8080/v1",
                                                  "explorer.provider_options": options})

    run, resumed = config(), config(preflight="off")
    assert config_fingerprint(run) == config_fingerprint(resumed)
    assert config_differences(run.model_dump(mode="json"), resumed) == []
    other = config(server="vllm")
    assert config_fingerprint(run) != config_fingerprint(other)
    assert config_differences(run.model_dump(mode="json"), other) == [
        "explorer.provider_options.server (run: None, given: 'vllm')"]


def test_resume_when_config_yaml_no_longer_matches_the_checkpoint(killed, tmp_path):
    out = copy_of(killed, tmp_path)
    config = out / "config.yaml"
    config.write_text(config.read_text().replace("seed: 3", "seed: 4"))
    result = invoke("--resume", str(out))
    assert result.exit_code == 2, result.output
    assert "different configuration" in result.output and "seed" in result.output


def test_resume_without_a_complete_checkpoint(killed, tmp_path):
    out = copy_of(killed, tmp_path)
    for stored in complete_checkpoints(out):
        (stored.path / "meta.json").unlink()
    result = invoke("--resume", str(out))
    assert result.exit_code == 2 and "no complete checkpoint" in result.output, result.output


def test_resume_of_a_run_another_process_is_writing(killed, tmp_path):
    out = copy_of(killed, tmp_path)
    with open(out / ".lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        result = invoke("--resume", str(out))
    assert result.exit_code == 2 and "in use by another process" in result.output, result.output


def test_resume_rejects_out_and_config(killed, tmp_path):
    out = copy_of(killed, tmp_path)
    result = invoke("--resume", str(out), "--out", str(tmp_path / "elsewhere"))
    assert result.exit_code == 2 and "drop --out" in result.output
    result = invoke("--resume", str(out), "--config", str(out / "config.yaml"))
    assert result.exit_code == 2 and "drop --config" in result.output


def test_a_new_run_never_overwrites_an_existing_one(killed, tmp_path):
    out = copy_of(killed, tmp_path)
    result = invoke(*RUN, "--out", str(out))
    assert result.exit_code == 2 and f"--resume {out}" in result.output, result.output
    assert (out / "metrics.csv").read_bytes() == (killed / "metrics.csv").read_bytes()
    config = make_config("CartPole-v1", "dqn", file=out / "config.yaml")
    with pytest.raises(Exception, match="unfinished run"):
        run_experiment(config, out)


# --------------------------------------------------------------------------- environment state
def test_atari_environments_continue_exactly_after_a_restore():
    from tianshou.env import DummyVectorEnv

    from tianshou_integration.atari import make_atari_env
    from tianshou_integration.checkpoint import restore_env_states

    def venv() -> DummyVectorEnv:
        return DummyVectorEnv([lambda: make_atari_env("ALE/Breakout-v5") for _ in range(2)])

    a, b = venv(), venv()
    a.seed(5)
    a.reset()
    rng = np.random.default_rng(0)
    for _ in range(40):
        a.step(rng.integers(0, 4, size=2))
    b.seed(99)  # everything b's seeds decided is replaced by the restore
    b.reset()
    restore_env_states(b, pickle.loads(pickle.dumps(capture_env_states(a))))
    for _ in range(300):
        actions = rng.integers(0, 4, size=2)
        obs_a, rew_a, term_a, trunc_a, _ = a.step(actions)
        obs_b, rew_b, term_b, _, _ = b.step(actions)
        assert np.array_equal(obs_a, obs_b) and np.array_equal(rew_a, rew_b) and np.array_equal(term_a, term_b)
        done = np.flatnonzero(term_a | trunc_a)
        if len(done):
            assert np.array_equal(a.reset(done)[0], b.reset(done)[0])
    assert [w.action_space.sample() for w in a.workers] == [w.action_space.sample() for w in b.workers]
    a.close()
    b.close()


class _RebuiltEnv(gym.Env, EzPickle):
    """Pickled by its constructor arguments (like Box2D's environments): its state would be lost."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,))
    action_space = gym.spaces.Discrete(2)

    def __init__(self) -> None:
        EzPickle.__init__(self)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(1, dtype=np.float32), 0.0, False, False, {}


def test_an_environment_that_cannot_be_saved_is_named():
    from tianshou.env import DummyVectorEnv

    envs = DummyVectorEnv([_RebuiltEnv])
    envs.reset()
    with pytest.raises(EnvNotSaved, match="_RebuiltEnv is rebuilt from scratch"):
        capture_env_states(envs)
    envs.close()
