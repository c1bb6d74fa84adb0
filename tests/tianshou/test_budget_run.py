"""The LLM budget in a real run: summary.json, the CLI's closing line, bad input, and resume.

One short CartPole run with the scripted provider in blocking mode (exact on resume) and a token
limit reached about halfway; copies of it are resumed from a checkpoint before the stop and from
one after it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tianshou_integration.checkpoint import complete_checkpoints, discard_newer
from tianshou_integration.cli import train as train_command
from tianshou_integration.config import make_config
from tianshou_integration.experiment import run_experiment

MAX_TOKENS = 20000
RUN = ["--env", "CartPole-v1", "--algo", "dqn", "--steps", "1200", "--seed", "1", "--provider", "scripted",
       "--mode", "blocking", "--eval-episodes", "1", "--set", "eval.every=600", "--set", "network.hidden_sizes=[16]",
       "--set", "checkpoint.every_steps=300", "--set", "checkpoint.keep=10",
       "--set", f"explorer.budget.max_tokens={MAX_TOKENS}"]


def invoke(*args: str):
    return CliRunner().invoke(train_command, list(args), catch_exceptions=True)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("budget") / "run"
    result = invoke(*RUN, "--out", str(out))
    assert result.exit_code == 0, result.output
    return out, result.output


def test_the_summary_says_when_and_why_the_budget_stopped_the_requests(budget_run):
    out, output = budget_run
    summary = summary_of(out)
    budget = summary["budget"]
    stop = budget["stop"]
    assert stop["reason"] == "tokens" and stop["limit"] == MAX_TOKENS
    assert 0 < stop["episode"] < summary["episodes"] - 1 and 0 < stop["env_step"] < summary["env_steps"]
    assert budget["spent_tokens"] == stop["spent_tokens"] == sum(v["input"] + v["output"]
                                                                  for v in summary["tokens"].values())
    # every request was asked before the limit was reached; the one that crossed it is the last
    lines = [line for line in jsonl(out / "updates.jsonl") if line.get("tokens")]
    spent = [sum(u["input"] + u["output"] for u in line["tokens"].values()) for line in lines]
    assert sum(spent) == budget["spent_tokens"] >= MAX_TOKENS > sum(spent[:-1])
    assert max(line["source_episode"] for line in lines) == stop["episode"]
    # blocking mode: every episode asks, until the stop; after it, each is skipped and gets the update in force
    assert summary["llm_requests"] == stop["episode"] + 1
    assert budget["skipped_requests"] == summary["episodes"] - summary["llm_requests"] > 0
    assert summary["blocking_timeouts"] == 0
    assert (f"LLM budget reached at episode {stop['episode']}, env step {stop['env_step']} "
            f"(tokens {stop['spent_tokens']}/{MAX_TOKENS}); run directory: {out}") in output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["explorer"]["budget"]["max_tokens"] == MAX_TOKENS
    assert manifest["explorer"]["explorer"]["budget"]["max_tokens"] == MAX_TOKENS


def resumed_from(run: Path, tmp_path: Path, before: bool) -> tuple[int, dict]:
    """A copy of ``run`` resumed from its newest checkpoint before (or after) the budget stopped."""
    out = tmp_path / "run"
    shutil.copytree(run, out)
    stop_step = summary_of(run)["budget"]["stop"]["env_step"]
    steps = [c.step for c in complete_checkpoints(out)]
    step = max(s for s in steps if s < stop_step) if before else min(s for s in steps if s > stop_step)
    discard_newer(out, step)
    (out / "summary.json").unlink()  # as if the process had died after that checkpoint
    config = make_config("CartPole-v1", "dqn", file=out / "config.yaml")
    summary = run_experiment(config, out, progress=False, resume=True)
    assert summary["checkpoints"]["resumed_from_step"] == step
    return step, summary


def test_a_run_resumed_before_the_stop_goes_on_with_the_tokens_left(budget_run, tmp_path):
    out, _ = budget_run
    reference = summary_of(out)["budget"]
    step, summary = resumed_from(out, tmp_path, before=True)
    assert step > 0  # some tokens were spent before the checkpoint
    budget = summary["budget"]
    # had the resumed run started from zero, it would have stopped later, or not at all
    without_time = {k: v for k, v in budget["stop"].items() if k != "time"}
    assert without_time == {k: v for k, v in reference["stop"].items() if k != "time"}
    assert {k: v for k, v in budget.items() if k != "stop"} == {k: v for k, v in reference.items() if k != "stop"}


def test_a_run_resumed_after_the_stop_asks_nothing_more(budget_run, tmp_path):
    out, _ = budget_run
    reference = summary_of(out)
    _, summary = resumed_from(out, tmp_path, before=False)
    assert summary["budget"] == reference["budget"]  # the stop record itself, time included, was restored
    assert summary["llm_requests"] == reference["llm_requests"]
    assert summary["blocking_timeouts"] == 0


def test_resume_refuses_a_different_budget(budget_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(budget_run[0], out)
    (out / "summary.json").unlink()
    result = invoke("--resume", str(out), "--set", "explorer.budget.max_tokens=99999")
    assert result.exit_code == 2, result.output
    assert "settings differ" in result.output and "explorer.budget.max_tokens" in result.output


def test_max_cost_without_a_price_exits_2_with_one_line(tmp_path):
    out = tmp_path / "never"
    result = invoke("--env", "CartPole-v1", "--algo", "dqn", "--set", "explorer.budget.max_cost_usd=1",
                    "--out", str(out))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "max_cost_usd needs a price: set explorer.budget.price.input and explorer.budget.price.output" in lines[0]
    assert not out.exists()
