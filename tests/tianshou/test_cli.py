"""``llm-explorer train`` through click's CliRunner: runs with the scripted provider, the run
directory, the baseline, blocking mode, failures, bad input (exit 2) and Ctrl-C (exit 1)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tianshou_integration import ALGORITHMS, DISCRETE_ALGOS
from tianshou_integration import cli as cli_module
from tianshou_integration.cli import train
from tianshou_integration.names import PIXEL_ALGOS

from . import envs

ONE_HOT = '{"probabilities": [0, 1]}'


def invoke(*args: str):
    return CliRunner().invoke(train, list(args), catch_exceptions=True)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("algo", [a for a in ALGORITHMS if a not in PIXEL_ALGOS])  # curl: test_curl.py, on Atari
def test_every_algorithm_runs_through_the_cli(algo, tmp_path):
    discrete = algo in DISCRETE_ALGOS
    env, steps = ("CartPole-v1", "300") if discrete else ("Pendulum-v1", "1200")
    out = tmp_path / "run"
    result = invoke("--env", env, "--algo", algo, "--steps", steps, "--provider", "scripted",
                    "--eval-episodes", "2", "--out", str(out), "--seed", "1")
    assert result.exit_code == 0, result.output
    assert f"run directory: {out}" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algo"] == algo and summary["env_steps"] >= int(steps) and not summary["interrupted"]
    assert summary["episodes"] > 0 and summary["llm_requests"] > 0
    assert summary["updates_published"] > 0
    assert summary["final_eval_return"] is not None
    if not discrete:  # 1000 random warm-up steps, then 200 with the policy: learning has started
        assert summary["gradient_steps"] > 0 and summary["updates_applied"] > 0


def test_run_directory_contents(tmp_path):
    out = tmp_path / "run"
    result = invoke("--env", "CartPole-v1", "--algo", "dqn", "--steps", "512", "--provider", "scripted",
                    "--option", f"reply={ONE_HOT}", "--eval-episodes", "2", "--out", str(out))
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert {"manifest.json", "metrics.csv", "updates.jsonl", "summary.json", "exchanges.jsonl",
            "learning_curve.png", "exploration.png", "tensorboard"} <= names
    assert not [n for n in names if n.endswith(".tmp")]

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["config"]["algo"] == "dqn" and manifest["config"]["steps"] == 512
    assert {"python", "torch", "tianshou", "gymnasium", "explorer"} <= set(manifest["versions"])
    assert manifest["explorer"]["provider"] == "scripted"
    assert manifest["explorer"]["prompt_set"]["id"] == "paper" and manifest["explorer"]["prompt_set"]["hash"]
    assert manifest["explorer"]["plugins"]

    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,train_return,eval_return"
    train_rows = [r.split(",") for r in rows[1:] if r.split(",")[1]]
    eval_rows = [r.split(",") for r in rows[1:] if r.split(",")[2]]
    assert len(train_rows) > 5 and len(eval_rows) == 1 and int(eval_rows[0][0]) >= 512

    updates = read_jsonl(out / "updates.jsonl")
    summary = json.loads((out / "summary.json").read_text())
    assert len(updates) == summary["updates_published"] > 0
    assert [u["version"] for u in updates] == sorted(u["version"] for u in updates)
    for u in updates:
        assert u["source"] == "llm" and u["kind"] == "distribution"
        assert u["values"][1] > 0.9 and abs(sum(u["values"]) - 1) < 1e-9  # one-hot, mixed with a uniform floor
        assert {"applied_at_step", "latency_s", "reason"} <= set(u)
    applied = [u["applied_at_step"] for u in updates if u["applied_at_step"] is not None]
    assert len(applied) == summary["updates_applied"] > 0
    assert applied == sorted(applied) and applied[-1] <= summary["env_steps"]

    for key in ("env_steps", "episodes", "wall_s", "steps_per_s", "llm_requests", "updates_published",
                "updates_applied", "parse_failures", "validation_rejections", "provider_errors", "dropped_stale",
                "final_eval_return", "tokens"):
        assert key in summary
    assert {"analysis", "proposal"} <= set(summary["tokens"])
    # the evaluations' wall time (one at 512 steps, the final one) is part of the training's
    assert 0 < summary["eval_wall_s"] < summary["train_wall_s"] <= summary["wall_s"]
    for png in ("learning_curve.png", "exploration.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tensorboard").iterdir())
    assert read_jsonl(out / "exchanges.jsonl")


def test_baseline_runs_without_an_explorer(tmp_path):
    out = tmp_path / "base"
    result = invoke("--env", "CartPole-v1", "--algo", "double-dqn", "--steps", "256", "--provider", "none",
                    "--eval-episodes", "1", "--out", str(out))
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["baseline"] is True and summary["llm_requests"] == 0 and summary["updates_published"] == 0
    assert (out / "updates.jsonl").read_text() == ""
    assert not (out / "exchanges.jsonl").exists()
    assert json.loads((out / "manifest.json").read_text())["explorer"] is None


def test_blocking_mode_asks_after_every_episode(tmp_path):
    out = tmp_path / "blocking"
    result = invoke("--env", "CartPole-v1", "--algo", "dqn", "--steps", "256", "--provider", "scripted",
                    "--mode", "blocking", "--eval-episodes", "1", "--out", str(out))
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] > 3
    assert summary["llm_requests"] == summary["updates_published"] == summary["episodes"]
    assert summary["dropped_stale"] == 0 and summary["blocking_timeouts"] == 0


def test_failed_requests_are_fallback_lines(tmp_path):
    out = tmp_path / "garbage"
    result = invoke("--env", "CartPole-v1", "--algo", "dqn", "--steps", "128", "--provider", "scripted",
                    "--option", "reply=no numbers here", "--mode", "blocking", "--eval-episodes", "1",
                    "--out", str(out))
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["updates_published"] == 0 and summary["parse_failures"] > 0
    lines = read_jsonl(out / "updates.jsonl")
    assert len(lines) == summary["fallbacks"] == summary["llm_requests"] > 0
    for line in lines:
        assert line["source"] == "fallback" and line["reason"].startswith("parse")
        assert line["version"] == 0 and line["values"] == [0.5, 0.5]  # the default stayed in force


def test_custom_env_by_module_path_with_action_masks(tmp_path):
    description = tmp_path / "task.txt"
    description.write_text("Four actions; action 0 is never legal. Reward 1 for action 3.")
    out = tmp_path / "masked"
    result = invoke("--env", "tests.tianshou.envs:MaskedChoice-v0", "--algo", "dqn", "--steps", "400",
                    "--provider", "scripted", "--option", 'reply={"probabilities": [1, 0, 0, 0]}',
                    "--task-description", f"@{description}", "--eval-episodes", "1", "--out", str(out))
    # the env raises on an illegal action, so exit 0 means every action respected the mask
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] >= 400 // envs.MaskedChoiceEnv.LENGTH - 8


def test_ctrl_c_finishes_the_run_directory(tmp_path):
    envs.InterruptingCartPole.steps_taken = 0
    envs.InterruptingCartPole.BUDGET = 300
    out = tmp_path / "interrupted"
    result = invoke("--env", "tests.tianshou.envs:InterruptingCartPole-v0", "--algo", "dqn", "--steps", "5000",
                    "--provider", "scripted", "--task-description", "Balance a pole on a cart.",
                    "--eval-episodes", "1", "--out", str(out))
    assert result.exit_code == 1
    # a real SIGINT, and the absence of a traceback, are checked in test_cli_subprocess.py
    assert "interrupted" in result.output and isinstance(result.exception, SystemExit)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and 0 < summary["env_steps"] <= 300
    assert summary["final_eval_return"] is None
    assert len((out / "metrics.csv").read_text().splitlines()) > 1
    assert (out / "learning_curve.png").exists()


# Bad input: exit 2 and one line "Error: ...". Checked here through CliRunner (the message), and in
# test_cli_subprocess.py through a real process (no traceback on stderr, exit status 2): CliRunner
# catches exceptions instead of printing them, so it cannot see a traceback.
BAD_INPUT = [
    (["--env", "NoSuchEnv-v9", "--algo", "dqn"], "unknown environment 'NoSuchEnv-v9'"),
    (["--env", "no_such_module:Env-v0", "--algo", "dqn"], "cannot import the module"),
    (["--env", "CartPole-v1", "--algo", "ppo"], "unknown algorithm 'ppo'; available: dqn"),
    (["--env", "Pendulum-v1", "--algo", "dqn"], "dqn needs discrete actions"),
    (["--env", "CartPole-v1", "--algo", "td3"], "td3 needs continuous actions"),
    (["--env", "CartPole-v1", "--algo", "dqn", "--provider", "nope"], "unknown provider 'nope'"),
    (["--env", "CartPole-v1", "--algo", "dqn", "--provider", "scripted", "--prompt-set", "nope"],
     "unknown prompt set 'nope'"),
    (["--env", "tests.tianshou.envs:Undescribed-v0", "--algo", "dqn", "--provider", "scripted"],
     "--task-description"),
    (["--env", "CartPole-v1", "--algo", "dqn", "--provider", "scripted", "--task-description", "@/no/such/file"],
     "cannot read task description file"),
    (["--env", "CartPole-v1", "--algo", "dqn", "--steps", "0"], "--steps: steps must be >= 1"),
    (["--env", "CartPole-v1", "--algo", "dqn", "--eval-episodes", "0"], "--eval-episodes: eval.episodes must be >= 1"),
    (["--env", "Pendulum-v1", "--algo", "td3", "--sigma", "-1"], "--sigma: algorithm.noise.sigma must be >= 0"),
    (["--env", "CartPole-v1", "--algo", "dqn", "--provider", "scripted", "--k", "0"], "must be >= 1"),
    (["--env", "CartPole-v1", "--algo", "dqn", "--provider", "scripted", "--m", "-3"], "must be >= 1"),
    (["--env", "CartPole-v1", "--algo", "dqn", "--provider", "scripted", "--temperature", "5"],
     "--temperature: explorer.temperature must be <= 2"),
    (["--env", "CartPole-v1", "--algo", "dqn", "--option", "novalue"], "--option needs KEY=VALUE"),
    (["--env", "CartPole-v1", "--algo", "dqn", "--replay"], "--replay: explorer.replay is invalid: replay needs"),
]
UNPARSABLE = [["--env", "CartPole-v1", "--algo", "dqn", "--steps", "many"],
              ["--env", "CartPole-v1", "--algo", "dqn", "--mode", "sometimes"],
              ["--algo", "dqn"]]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT)
def test_bad_input_exits_2_with_one_line(args, message, tmp_path):
    out = tmp_path / "never"
    result = invoke(*args, "--out", str(out))
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # click's exit, not an escaped error
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert message in lines[0]
    assert not out.exists()  # nothing written for bad input


@pytest.mark.parametrize("args", UNPARSABLE)
def test_unparsable_options_exit_2(args):
    result = invoke(*args)
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.output.splitlines()[-1].startswith("Error: "), result.output


def test_plugin_adds_the_command():
    from tianshou_integration import plugin

    group = click.Group("llm-explorer")
    plugin.register_commands(group)
    assert group.commands["train"] is train


def test_default_provider(monkeypatch):
    monkeypatch.setattr(cli_module.importlib.util, "find_spec", lambda name: None)
    assert cli_module.default_provider() == "scripted"
    monkeypatch.setattr(cli_module.importlib.util, "find_spec", lambda name: object())
    assert cli_module.default_provider() == "local"
