"""The study-wide ledger (explorer_pipeline.ledger) and the run budget that charges it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from explorer_pipeline.budget import Budget, BudgetConfig, Price, stop_message
from explorer_pipeline.errors import UsageError
from explorer_pipeline.ledger import FileLedger, LocalLedger
from explorer_pipeline.types import EpisodeRecord, StageUsage

AT = EpisodeRecord(1.0, 10, "CartPole-v1", 7, (0, 1), env_step=700)


def request(tokens_in, tokens_out):
    return {"analysis": StageUsage(tokens_in, 0), "proposal": StageUsage(0, tokens_out)}


def test_runs_sharing_a_ledger_stop_at_the_study_limit():
    ledger = LocalLedger(max_tokens=250)
    first, second = Budget(BudgetConfig(), ledger), Budget(BudgetConfig(max_tokens=1000), ledger)
    first.add(request(100, 20))
    assert not first.check(AT) and not second.check(AT)
    second.add(request(100, 30))  # 250 for the study; each run is far from its own limit
    assert first.check(AT) and second.check(AT)
    assert first.stop["reason"] == "study_tokens" and first.stop["limit"] == 250
    assert first.spent_tokens == 120 and second.spent_tokens == 130
    assert first.summary()["study"]["input_tokens"] == 200 and first.summary()["study"]["requests"] == 2
    assert stop_message(first.summary()) == ("the study's LLM budget reached at episode 7, env step 700 "
                                             "(tokens limit 250)")


def test_the_run_s_price_gives_the_study_its_cost():
    ledger = LocalLedger(max_cost_usd=0.01)
    budget = Budget(BudgetConfig(price=Price(input=10.0, output=30.0)), ledger)
    budget.add(request(500, 100))  # 0.005 + 0.003
    assert not budget.check(AT)
    budget.add(request(200, 0))  # + 0.002
    assert budget.check(AT) and budget.stop["reason"] == "study_cost"
    assert ledger.totals()["cost_usd"] == pytest.approx(0.01)


def test_a_cost_limited_ledger_needs_a_run_price():
    with pytest.raises(UsageError, match="no price"):
        Budget(BudgetConfig(), LocalLedger(max_cost_usd=1.0))


def test_a_missing_ledger_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match=r"explorer.budget.ledger: no study ledger at .*ledger.json"):
        Budget(BudgetConfig(ledger=tmp_path / "ledger.json"))


def test_the_file_ledger_counts_every_charge_of_every_process(tmp_path):
    path = tmp_path / "ledger.json"
    FileLedger.create(path, max_tokens=10_000)
    code = ("import sys; from explorer_pipeline.ledger import FileLedger\n"
            "ledger = FileLedger(sys.argv[1])\n"
            "for _ in range(100): ledger.charge(2, 1, 0.5)\n")
    root = Path(__file__).resolve().parent.parent
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=root) for _ in range(4)]
    assert [p.wait(120) for p in procs] == [0] * 4
    totals = json.loads(path.read_text())
    assert totals["requests"] == 400 and totals["input_tokens"] == 800 and totals["output_tokens"] == 400
    assert totals["cost_usd"] == pytest.approx(200.0) and totals["max_tokens"] == 10_000


def test_a_run_configured_with_the_file_ledger_charges_it(tmp_path):
    path = tmp_path / "ledger.json"
    FileLedger.create(path, max_tokens=100)
    FileLedger.create(path, max_tokens=5)  # an existing ledger is kept: a resumed study goes on
    budget = Budget(BudgetConfig(ledger=path))
    budget.add(request(60, 40))
    assert budget.check(AT) and budget.stop["reason"] == "study_tokens"
    assert json.loads(path.read_text())["input_tokens"] == 60
