"""`llm-explorer train` end to end with real LLMs, and against a faulty OpenAI-compatible server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

LLM_EXPLORER = str(Path(sys.executable).with_name("llm-explorer"))


def train(out: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [LLM_EXPLORER, "train", "--env", "CartPole-v1", "--algo", "dqn", "--eval-episodes", "2",
           "--out", str(out), *args]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def read_run(out: Path) -> tuple[dict, list[dict]]:
    summary = json.loads((out / "summary.json").read_text())
    updates = [json.loads(line) for line in (out / "updates.jsonl").read_text().splitlines() if line.strip()]
    return summary, updates


def assert_llm_update_applied(out: Path, provider: str) -> None:
    summary, updates = read_run(out)
    assert summary["updates_applied"] >= 1, summary
    llm = [u for u in updates if u["source"] == "llm"]
    assert llm and llm[0]["applied_at_step"] is not None
    assert sum(llm[0]["values"]) == pytest.approx(1.0) and len(llm[0]["values"]) == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert provider in json.dumps(manifest)
    assert (out / "exchanges.jsonl").stat().st_size > 0
    assert (out / "learning_curve.png").exists() and (out / "exploration.png").exists()


def test_train_with_the_embedded_model(tmp_path):
    out = tmp_path / "local"
    # blocking mode: training waits for every 5th episode's update, so updates are applied
    result = train(out, "--provider", "local", "--steps", "400", "--mode", "blocking", "--k", "5")
    assert result.returncode == 0, result.stderr[-2000:]
    assert_llm_update_applied(out, "local")


def test_train_through_the_llama_cpp_server(llama_server, tmp_path):
    out = tmp_path / "server"
    result = train(out, "--provider", "openai", "--base-url", llama_server.base_url, "--model", "smollm2",
                   "--steps", "400", "--mode", "blocking", "--k", "5")
    assert result.returncode == 0, result.stderr[-2000:]
    assert_llm_update_applied(out, "openai")


@pytest.mark.parametrize(("model", "counter"), [
    ("garbage", "parse_failures"),
    ("nan", "validation_rejections"),
    ("http500", "provider_errors"),
    ("slow", "provider_errors"),
])
def test_training_survives_a_faulty_llm(fault_server, tmp_path, model, counter):
    out = tmp_path / model
    result = train(out, "--provider", "openai", "--base-url", fault_server.base_url, "--model", model,
                   "--steps", "600", "--mode", "blocking", "--k", "10", "--llm-timeout", "1", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summary, updates = read_run(out)
    assert summary["env_steps"] >= 600
    assert summary["updates_applied"] == 0 and summary["updates_published"] == 0
    assert summary[counter] >= 1
    assert updates and all(u["source"] == "fallback" for u in updates)
