"""Reproduce an async run offline: record it with a real llama.cpp server, stop the server, replay
the recorded update schedule (``llm-explorer train --replay-schedule``) and get the same metrics.

In async mode *when* an answer lands depends on the model's latency, so rerunning the command
gives other results; the replay applies every update at the env step the recorded run first
applied it, with no model at all, and must match the recording byte for byte.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

LLM_EXPLORER = str(Path(sys.executable).with_name("llm-explorer"))


def train(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([LLM_EXPLORER, "train", *args], capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)


def applied_lines(out: Path) -> list[dict]:
    lines = [json.loads(line) for line in (out / "updates.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in line.items() if k != "t_s"} for line in lines
            if line["source"] != "fallback" and line["applied_at_step"] is not None]


def test_an_async_run_replays_offline_to_the_same_metrics(fresh_llama_server, tmp_path):
    recorded, replayed = tmp_path / "recorded", tmp_path / "replayed"
    # one short call per request, so several answers land during training; ε decays slowly, so
    # exploratory draws (which apply updates) go on while they arrive. An answer takes ~6.5 s here
    # (a 600-token prompt on 2 busy cores) and 8 000 steps trained in ~13 s once training got faster,
    # which left room for a single applied update: 20 000 steps leave room for several.
    result = train("--env", "CartPole-v1", "--algo", "dqn", "--steps", "20000", "--seed", "2", "--provider", "openai",
                   "--base-url", fresh_llama_server.base_url, "--model", "smollm2", "--mode", "async", "--k", "1",
                   "--prompt-set", "single-stage", "--set", "explorer.max_tokens_proposal=40",
                   "--eval-episodes", "2", "--set", "algorithm.epsilon.decay_steps=20000", "--out", str(recorded))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((recorded / "summary.json").read_text())
    assert summary["mode"] == "async" and summary["updates_applied"] >= 2, summary
    assert summary["llm_requests"] >= summary["updates_applied"]

    fresh_llama_server.stop()  # from here on nothing answers at that address
    assert fresh_llama_server.proc is not None and fresh_llama_server.proc.poll() is not None

    result = train("--replay-schedule", str(recorded), "--out", str(replayed))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (replayed / "metrics.csv").read_bytes() == (recorded / "metrics.csv").read_bytes()
    assert applied_lines(replayed) == applied_lines(recorded)
    replay = json.loads((replayed / "summary.json").read_text())
    assert replay["llm_requests"] == 0 and replay["schedule_mismatches"] == 0
    assert replay["replayed_updates"] == summary["updates_applied"] == replay["updates_applied"]
    assert not (replayed / "exchanges.jsonl").exists()  # no model was asked
    manifest = json.loads((replayed / "manifest.json").read_text())
    assert manifest["replay_schedule"]["replay_of"] == str(recorded.resolve())
