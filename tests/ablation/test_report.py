"""The report's numbers against values computed here, independently, from the run directories."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from explorer_pipeline.ablation.backends import LocalBackend
from explorer_pipeline.ablation.report import analyse, write_report
from explorer_pipeline.ablation.results import load_study
from explorer_pipeline.ablation.runner import run_study
from explorer_pipeline.ablation.spec import load_spec

from .helpers import FAKE_TRAIN_COMMAND

SPEC = """
name: report-check
description: Three arms on two environments, fake training.
base: {algo: dqn, steps: 400, provider: scripted}
arms:
  - name: strong
    options: {fake_bonus: 40}
  - name: weak
    options: {fake_bonus: -5}
  - name: baseline
    provider: none
baseline: baseline
environments: [CartPole-v1, {id: Acrobot-v1, min_score: 90, max_score: 200}]
seeds: 3
prices:
  scripted: {input: 2.0, output: 8.0}
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    spec_path = root / "spec.yaml"
    spec_path.write_text(SPEC)
    out = root / "out"
    result = run_study(load_spec(spec_path), out, LocalBackend(workers=2), spec_path=spec_path,
                       train_command=FAKE_TRAIN_COMMAND, echo=lambda line: None)
    assert result.ok and result.done == 18
    write_report(out)
    return out


def finals(out: Path) -> dict[tuple[str, str], list[float]]:
    """(arm, env) -> final greedy returns, read straight from each summary.json."""
    values: dict[tuple[str, str], list[float]] = {}
    for path in sorted((out / "runs").glob("*/*/seed-*/summary.json")):
        arm, env = path.parts[-4], path.parts[-3]
        values.setdefault((arm, env), []).append(json.loads(path.read_text())["final_eval_return"])
    return values


def numpy_iqm(values) -> float:
    x = np.sort(np.asarray(values, float))
    cut = int(len(x) * 0.25)
    return float(x[cut:len(x) - cut].mean())


def counted_poi(xs, ys) -> float:
    return sum(1.0 if x > y else 0.5 if x == y else 0.0 for x, y in itertools.product(xs, ys)) / (len(xs) * len(ys))


def test_summary_csv_has_one_row_per_run_with_its_numbers(finished: Path):
    with open(finished / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 18
    by_run = {(r["arm"], r["env"], int(r["seed"])): r for r in rows}
    for (arm, env, seed), row in by_run.items():
        run_dir = finished / "runs" / arm / env / f"seed-{seed}"
        summary = json.loads((run_dir / "summary.json").read_text())
        assert row["status"] == "complete"
        assert float(row["final_return"]) == pytest.approx(summary["final_eval_return"])
        assert int(row["env_steps"]) == summary["env_steps"] == 400
        # AUC: trapezoid under the greedy curve / step span, computed here by hand
        with open(run_dir / "metrics.csv", newline="") as f:
            evals = [(float(r["step"]), float(r["eval_return"])) for r in csv.DictReader(f) if r["eval_return"]]
        area = sum((s1 - s0) * (v0 + v1) / 2 for (s0, v0), (s1, v1) in itertools.pairwise(evals))
        assert float(row["auc"]) == pytest.approx(area / (evals[-1][0] - evals[0][0]))
        if arm == "baseline":
            assert row["llm_requests"] == "0" and row["cost_usd"] == ""
        else:
            tokens_in = sum(v["input"] for v in summary["tokens"].values())
            tokens_out = sum(v["output"] for v in summary["tokens"].values())
            assert int(row["input_tokens"]) == tokens_in and int(row["output_tokens"]) == tokens_out
            assert float(row["cost_usd"]) == pytest.approx((2.0 * tokens_in + 8.0 * tokens_out) / 1e6)
            assert row["fallbacks"] == "1"


def test_iqm_and_probability_of_improvement_match_independent_values(finished: Path):
    raw = finals(finished)
    analysis = analyse(load_study(finished))
    # normalisation: CartPole by the baseline's mean and the best run; Acrobot by the spec's scores
    cart_low = float(np.mean(raw[("baseline", "CartPole-v1")]))
    cart_high = max(v for (arm, env), vs in raw.items() if env == "CartPole-v1" for v in vs)
    n_cart = analysis.normalisers["CartPole-v1"]
    assert (n_cart.low, n_cart.high) == pytest.approx((cart_low, cart_high))
    n_acro = analysis.normalisers["Acrobot-v1"]
    assert (n_acro.low, n_acro.high, n_acro.low_from) == (90.0, 200.0, "spec min_score")
    for arm in ("strong", "weak", "baseline"):
        normalised = [(v - cart_low) / (cart_high - cart_low) for v in raw[(arm, "CartPole-v1")]]
        normalised += [(v - 90.0) / 110.0 for v in raw[(arm, "Acrobot-v1")]]
        est = analysis.iqm[arm]
        assert est.value == pytest.approx(numpy_iqm(normalised))
        assert est.low <= est.value <= est.high
    for arm in ("strong", "weak"):
        expected = np.mean([counted_poi(raw[(arm, env)], raw[("baseline", env)])
                            for env in ("CartPole-v1", "Acrobot-v1")])
        assert analysis.poi[arm].value == pytest.approx(expected)
    assert analysis.poi["strong"].value == 1.0  # a +40 bonus beats every baseline run


def test_report_states_the_seeds_warns_and_shows_the_figures(finished: Path):
    report = (finished / "report.md").read_text()
    analysis = analyse(load_study(finished))
    assert "Seeds 0, 1, 2: **3 per arm and environment**, paired across arms" in report
    assert "> **Warning:** Only 3 complete runs per arm and environment (fewer than 5)" in report
    assert f"| strong | {analysis.poi['strong'].value:.3g} [" in report
    assert f"| weak | {analysis.iqm['weak'].value:.3g} [" in report
    assert "18 runs planned (3 arms x 2 environments x 3 seeds): 18 complete, 0 failed" in report
    for name in ("learning_curves", "final_returns", "performance_profile", "cost"):
        png = finished / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(figures/{name}.png)" in report
