"""``env_workers``: the vector envs in worker processes (Tianshou's Subproc/Shmem vector envs) step the
same environments as the in-process one: the same observations for a recorded action sequence, and
a seeded run writes the same metrics."""

from __future__ import annotations

import os
import subprocess
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from tianshou_integration.algorithms import _make_envs
from tianshou_integration.config import resolve
from tianshou_integration.envs import describe_env

ROOT = Path(__file__).resolve().parents[2]
LLM_EXPLORER = Path(sysconfig.get_path("scripts")) / "llm-explorer"


def _envs(env_id: str, algo: str, workers: str, n: int):
    config = resolve(overrides=[(("env",), env_id, "test"), (("algo",), algo, "test"),
                                (("env_workers",), workers, "test")])
    return _make_envs(config, describe_env(env_id, config.atari), n, training=True)


@pytest.mark.parametrize("workers", ["subproc", "shmem"])
def test_worker_processes_give_the_same_atari_frames(workers):
    """Breakout with our preprocessing (frame skip, max-pool, 84x84 grey, 4-frame stack, FIRE on
    reset): 60 vector steps of a recorded action sequence, frame for frame."""
    actions = np.random.default_rng(0).integers(0, 4, size=(60, 2))
    observed = {}
    for kind in ("dummy", workers):
        envs = _envs("ALE/Breakout-v5", "dqn", kind, 2)
        try:
            assert type(envs).__name__ == {"dummy": "DummyVectorEnv", "subproc": "SubprocVectorEnv",
                                           "shmem": "ShmemVectorEnv"}[kind]
            envs.seed(7)
            frames = [envs.reset()[0]]
            for act in actions:
                obs, _rew, term, trunc, _ = envs.step(act)
                frames.append(obs)
                done = np.flatnonzero(term | trunc)
                if len(done):
                    frames.append(envs.reset(done)[0])
            observed[kind] = np.concatenate([f.reshape(-1, 4, 84, 84) for f in frames])
        finally:
            envs.close()
    assert observed["dummy"].dtype == np.uint8 and observed["dummy"].shape[0] >= 122
    assert observed["dummy"].std() > 0  # real frames, not a blank screen
    np.testing.assert_array_equal(observed[workers], observed["dummy"])


def test_a_seeded_run_with_worker_processes_writes_the_same_metrics(tmp_path):
    common = ["train", "--env", "CartPole-v1", "--algo", "dqn", "--steps", "1500", "--seed", "3",
              "--provider", "none", "--eval-episodes", "2", "--set", "eval.every=1000",
              "--set", "algorithm.learning_starts=300", "--set", "train_envs=3"]
    env = {**os.environ, "MPLBACKEND": "Agg", "TQDM_DISABLE": "1"}
    for kind in ("dummy", "shmem"):
        result = subprocess.run([str(LLM_EXPLORER), *common, "--set", f"env_workers={kind}",
                                 "--out", str(tmp_path / kind)],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 0, result.stderr[-3000:]
    metrics = (tmp_path / "dummy" / "metrics.csv").read_bytes()
    assert len(metrics.splitlines()) > 10
    assert (tmp_path / "shmem" / "metrics.csv").read_bytes() == metrics
    assert "env_workers: shmem" in (tmp_path / "shmem" / "config.yaml").read_text()


def test_an_unknown_env_workers_value_is_a_usage_error(tmp_path):
    result = subprocess.run([str(LLM_EXPLORER), "train", "--env", "CartPole-v1", "--algo", "dqn", "--steps", "10",
                             "--provider", "none", "--set", "env_workers=threads", "--out", str(tmp_path / "x")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2
    assert "env_workers" in result.stderr and "subproc" in result.stderr
    assert not (tmp_path / "x").exists()
