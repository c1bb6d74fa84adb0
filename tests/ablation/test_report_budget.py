"""The report says per arm how many runs reached their LLM budget, and when."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from explorer_ablation.report import analyse, write_report
from explorer_ablation.results import load_study

from .helpers import fake_study, patch_summary

SPEC = """
name: budget-check
base: {algo: dqn, steps: 400, provider: scripted}
arms:
  - name: capped
  - name: uncapped
  - name: baseline
    provider: none
baseline: baseline
environments: [CartPole-v1]
seeds: 3
"""


def budget_entry(stop: dict | None, max_tokens: int | None = 1000) -> dict:
    return {"max_tokens": max_tokens, "max_cost_usd": None, "price": None, "spent_tokens": 1010,
            "spent_input_tokens": 1000, "spent_output_tokens": 10, "spent_cost_usd": None, "stop": stop,
            "skipped_requests": 3 if stop else 0}


def stop_at(episode: int, env_step: int) -> dict:
    return {"reason": "tokens", "limit": 1000, "spent_tokens": 1010, "spent_cost_usd": None, "episode": episode,
            "env_step": env_step, "time": "2025-01-01T00:00:00Z"}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    out, result = fake_study(tmp_path_factory.mktemp("budget-report"), SPEC)
    assert result.ok and result.done == 9
    runs = out / "runs"
    # capped: two of three runs reached their limit (episodes 4 and 10, env steps 100 and 300)
    patch_summary(runs / "capped" / "CartPole-v1" / "seed-0", budget=budget_entry(stop_at(4, 100)))
    patch_summary(runs / "capped" / "CartPole-v1" / "seed-1", budget=budget_entry(None))
    patch_summary(runs / "capped" / "CartPole-v1" / "seed-2", budget=budget_entry(stop_at(10, 300)))
    for seed in range(3):  # no limit: counted, never reached
        patch_summary(runs / "uncapped" / "CartPole-v1" / f"seed-{seed}", budget=budget_entry(None, max_tokens=None))
    write_report(out)
    return out


def test_report_says_per_arm_how_many_runs_reached_the_budget_and_when(study: Path):
    report = (study / "report.md").read_text()
    section = report.split("### LLM budget", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    # only arms whose runs had a limit are listed
    assert rows == ["| arm | runs that reached the budget | median episode | median env step |",
                    "| capped | 2 of 3 | 7 | 200 |"]
    analysis = analyse(load_study(study))
    assert analysis.cost["capped"]["budget_reached_runs"] == 2
    assert analysis.cost["uncapped"]["budget_limited_runs"] == 0


def test_summary_csv_has_when_each_run_reached_its_budget(study: Path):
    with open(study / "summary.csv", newline="") as f:
        rows = {(r["arm"], int(r["seed"])): r for r in csv.DictReader(f)}
    assert (rows[("capped", 0)]["budget_stop_episode"], rows[("capped", 0)]["budget_stop_step"]) == ("4", "100")
    assert rows[("capped", 1)]["budget_stop_episode"] == "" and rows[("uncapped", 0)]["budget_stop_step"] == ""


def test_no_budget_section_without_limits(tmp_path):
    out, result = fake_study(tmp_path, SPEC)
    assert result.ok
    write_report(out)
    assert "LLM budget" not in (out / "report.md").read_text()
