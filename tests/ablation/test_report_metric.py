"""The report compares arms on a chosen metric: final greedy return, AUC, or mean training return."""

from __future__ import annotations

import csv
import json
import typing
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from explorer_ablation.cli import ablate, report
from explorer_ablation.metrics import METRIC_NAMES, study_metric
from explorer_ablation.report import analyse, write_report
from explorer_ablation.results import load_study
from explorer_ablation.spec import StudySpec, load_spec, parse_spec

from .helpers import FAKE_TRAIN_COMMAND, ROOT

# FrozenLake-like runs (reward 1 at the goal): `greedy` ends every run with a successful greedy
# evaluation but rarely reached the goal while training; `explorer` reached it in most training
# episodes but its final evaluation mostly failed. The final return and the training return
# rank them in opposite orders.
SPEC = """
name: metric-check
base: {algo: dqn, steps: 400, provider: scripted}
arms:
  - name: explorer
  - name: greedy
  - name: baseline
    provider: none
baseline: baseline
environments: [{id: FrozenLake8x8-v1, min_score: 0, max_score: 1}]
seeds: 3
metric: train
"""
FINAL = {"explorer": [0, 0, 1], "greedy": [1, 1, 1], "baseline": [0, 1, 0]}
GOALS = {"explorer": [6, 5, 7], "greedy": [1, 0, 2], "baseline": [2, 1, 2]}  # of 8 training episodes
EPISODES = 8


def rewrite_run(run_dir: Path, final: float, goals: int) -> None:
    """metrics.csv as train writes it (one row per training episode or evaluation), with ``goals``
    of its 8 training episodes reaching the goal; the summary's final greedy return is ``final``."""
    lines = ["step,train_return,eval_return"]
    for episode in range(EPISODES):
        lines.append(f"{50 * (episode + 1)},{1.0 if episode < goals else 0.0},")
        if episode % 4 == 3:  # an evaluation every 4 episodes; the last one is the final return
            lines.append(f"{50 * (episode + 1)},,{float(final) if episode == EPISODES - 1 else 0.5}")
    (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["final_eval_return"] = float(final)
    (run_dir / "summary.json").write_text(json.dumps(summary))


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """The study, run by ``llm-explorer ablate`` (fake training), its runs then rewritten."""
    root = tmp_path_factory.mktemp("metric")
    spec_path = root / "spec.yaml"
    spec_path.write_text(SPEC)
    out = root / "out"
    result = CliRunner().invoke(ablate, [str(spec_path), "--out", str(out), "--workers", "2",
                                         "--train-command", " ".join(FAKE_TRAIN_COMMAND)])
    assert result.exit_code == 0, result.output
    # ablate's own report already compares on the spec's metric
    assert "Arms are compared on the **mean training return** (metric `train`)" in (out / "report.md").read_text()
    for arm, finals in FINAL.items():
        for seed, (final, goals) in enumerate(zip(finals, GOALS[arm], strict=True)):
            rewrite_run(out / "runs" / arm / "FrozenLake8x8-v1" / f"seed-{seed}", final, goals)
    return out


def hand_train_mean(run_dir: Path) -> float:
    with open(run_dir / "metrics.csv", newline="") as f:
        values = [float(row["train_return"]) for row in csv.DictReader(f) if row["train_return"]]
    return sum(values) / len(values)


def test_train_mean_is_the_mean_of_every_training_episode(study: Path):
    write_report(study)
    with open(study / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert "train_mean" in rows[0] and {"final_return", "auc"} <= set(rows[0])  # added, nothing removed
    loaded = {(r.arm, r.seed): r for r in load_study(study).runs}
    for row in rows:
        run_dir = study / row["run_dir"]
        by_hand = hand_train_mean(run_dir)
        assert by_hand == pytest.approx(GOALS[row["arm"]][int(row["seed"])] / EPISODES)  # the share of goals
        assert float(row["train_mean"]) == pytest.approx(by_hand)
        assert loaded[(row["arm"], int(row["seed"]))].train_mean == pytest.approx(by_hand)


def test_the_metric_changes_the_ranking_when_final_and_training_returns_disagree(study: Path):
    studied = load_study(study)
    final = analyse(studied, metric="final")
    train = analyse(studied, metric="train")
    assert final.metric.name == "final" and train.metric.name == "train"
    # FrozenLake scores are normalised by the spec's 0 and 1 for every metric: normalised == raw, and the
    # IQM of 3 runs is their mean
    assert final.iqm["greedy"].value == pytest.approx(1.0)
    assert final.iqm["explorer"].value == pytest.approx(1 / 3)
    assert train.iqm["explorer"].value == pytest.approx(np.mean(GOALS["explorer"]) / EPISODES)
    assert train.iqm["greedy"].value == pytest.approx(np.mean(GOALS["greedy"]) / EPISODES)
    assert final.iqm["greedy"].value > final.iqm["explorer"].value
    assert train.iqm["explorer"].value > train.iqm["greedy"].value
    assert train.poi["explorer"].value == 1.0 and train.poi["greedy"].value < 0.5
    assert final.poi["greedy"].value > final.poi["explorer"].value
    assert train.raw["FrozenLake8x8-v1"]["explorer"] == pytest.approx([g / EPISODES for g in GOALS["explorer"]])
    auc = analyse(studied, metric="auc")
    assert auc.raw["FrozenLake8x8-v1"]["greedy"] == pytest.approx([r.auc for r in studied.complete("greedy")])


def test_the_report_uses_the_specs_metric_and_report_metric_overrides_it(study: Path):
    assert study_metric(json.loads((study / "study.json").read_text())) == "train"
    result = CliRunner().invoke(report, [str(study)])
    assert result.exit_code == 0, result.output
    text = (study / "report.md").read_text()
    assert "Arms are compared on the **mean training return** (metric `train`)" in text
    assert "## Mean training return" in text and "## Final greedy return" not in text
    assert "| arm | IQM of normalised mean training return [95% CI] | FrozenLake8x8-v1 mean ± sd (raw) |" in text
    assert "| arm | P(arm > baseline), mean training return [95% CI] | reading |" in text
    assert "| explorer | 1 (no interval)" not in text and "| explorer | 1 [" in text  # P(explorer > baseline)
    assert "![Mean training return](figures/train_returns.png)" in text
    assert (study / "figures" / "train_returns.png").read_bytes()[:4] == b"\x89PNG"
    assert f"figure: {study / 'figures' / 'train_returns.png'}" in result.output

    result = CliRunner().invoke(report, [str(study), "--metric", "final"])
    assert result.exit_code == 0, result.output
    text = (study / "report.md").read_text()
    assert "Arms are compared on the **final greedy return** (metric `final`)" in text
    assert "## Final greedy return" in text and "## Mean training return" not in text
    assert "| arm | IQM of normalised final return [95% CI] |" in text
    assert "![Final greedy return](figures/final_returns.png)" in text
    assert any(line.startswith("| greedy | 1 [1, 1] |") for line in text.splitlines())  # its IQM on final

    result = CliRunner().invoke(report, [str(study), "--metric", "bogus"])
    assert result.exit_code == 2 and "'bogus' is not one of 'final', 'auc', 'train'" in result.output


def test_a_bogus_metric_in_the_spec_is_one_located_line_and_exit_2(tmp_path: Path):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(SPEC.lstrip().replace("metric: train", "metric: bogus"))
    result = CliRunner().invoke(ablate, [str(spec_path), "--dry-run"])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "Error: invalid ablation spec (1 problem):",
        f"  {spec_path}:11:1: metric: Input should be 'final', 'auc' or 'train' (got 'bogus')",
    ]
    assert not (tmp_path / "runs").exists()


def test_the_spec_metric_defaults_to_final_and_matches_the_report_metrics():
    spec, _ = parse_spec(SPEC.replace("metric: train\n", ""))
    assert spec.metric == "final"
    assert typing.get_args(StudySpec.model_fields["metric"].annotation) == METRIC_NAMES
    assert study_metric({"runs": {}}) is None  # a study.json written before metric existed: final
    assert study_metric({"spec": {"metric": "auc"}}) == "auc"


def test_the_guidance_example_compares_on_training_return():
    assert load_spec(ROOT / "examples/ablation-guidance.yaml", names=False).metric == "train"
