"""The report's comparison of each LLM arm with its plain twin and with the exploration baselines
(noisy-dqn, rnd-dqn arms), against probabilities of improvement counted here from the summaries."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from explorer_ablation.report import analyse, pairings, write_report
from explorer_ablation.results import load_study

from .helpers import fake_study, patch_summary

SPEC = """
name: baselines-check
description: Two algorithms with and without an LLM, and the two exploration baselines; fake training.
base: {steps: 400, provider: scripted}
arms:
  - {name: dqn, algo: dqn, provider: none}
  - {name: dqn-llm, algo: dqn}
  - {name: dueling, algo: dueling-dqn, provider: none}
  - {name: dueling-llm, algo: dueling-dqn}
  - {name: noisy, algo: noisy-dqn, provider: none}
  - {name: rnd, algo: rnd-dqn, provider: none}
baseline: dqn
environments: [CartPole-v1, Acrobot-v1]
seeds: 3
"""

# final returns given to every run: each LLM arm beats its twin on some seeds only, and the
# baselines sit in between, so no probability is 0 or 1 by construction
FINALS = {
    "dqn": [100, 140, 120], "dqn-llm": [130, 110, 150],
    "dueling": [90, 160, 125], "dueling-llm": [150, 95, 170],
    "noisy": [115, 135, 105], "rnd": [125, 100, 145],
}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    out, result = fake_study(tmp_path_factory.mktemp("baselines"), SPEC)
    assert result.ok and result.done == 36
    for (arm, values), (e, env) in itertools.product(FINALS.items(), enumerate(["CartPole-v1", "Acrobot-v1"])):
        for seed, value in enumerate(values):
            patch_summary(out / "runs" / arm / env / f"seed-{seed}", final_eval_return=value + 7 * e * seed)
    write_report(out)
    return out


def finals(out: Path) -> dict[tuple[str, str], list[float]]:
    values: dict[tuple[str, str], list[float]] = {}
    for path in sorted((out / "runs").glob("*/*/seed-*/summary.json")):
        value = json.loads(path.read_text())["final_eval_return"]
        values.setdefault((path.parts[-4], path.parts[-3]), []).append(value)
    return values


def counted_poi(xs, ys) -> float:
    return sum(1.0 if x > y else 0.5 if x == y else 0.0 for x, y in itertools.product(xs, ys)) / (len(xs) * len(ys))


def test_each_llm_arm_is_paired_with_its_plain_twin_and_both_baselines(study: Path):
    assert pairings(load_study(study)) == {"dqn-llm": ["dqn", "noisy", "rnd"],
                                           "dueling-llm": ["dueling", "noisy", "rnd"]}


def test_the_pairs_are_probabilities_of_improvement_counted_from_the_runs(study: Path):
    raw = finals(study)
    analysis = analyse(load_study(study))
    for arm, others in (("dqn-llm", ("dqn", "noisy", "rnd")), ("dueling-llm", ("dueling", "noisy", "rnd"))):
        for other in others:
            expected = (counted_poi(raw[(arm, "CartPole-v1")], raw[(other, "CartPole-v1")])
                        + counted_poi(raw[(arm, "Acrobot-v1")], raw[(other, "Acrobot-v1")])) / 2
            est = analysis.pairs[arm][other]
            assert est.value == pytest.approx(expected)
            assert 0.0 < est.value < 1.0 and est.low <= est.value <= est.high
    # the baselines stay ordinary arms: an IQM each and a probability against the study's baseline
    assert {"noisy", "rnd"} <= set(analysis.iqm) and {"noisy", "rnd", "dueling"} <= set(analysis.poi)
    assert analysis.pairs["dqn-llm"]["dqn"] == analysis.poi["dqn-llm"]  # its twin is the baseline


def test_the_report_has_a_row_per_llm_arm_and_a_column_per_baseline(study: Path):
    report = (study / "report.md").read_text()
    analysis = analyse(load_study(study))
    assert "## LLM arms against their plain twins and the exploration baselines" in report
    assert ("| arm | P(arm > plain twin), final return | P(arm > noisy) (noisy-dqn) | P(arm > rnd) (rnd-dqn) |"
            in report)
    pairs = analysis.pairs["dueling-llm"]
    section = report.split("## LLM arms against their plain twins")[1]
    row = next(line for line in section.splitlines() if line.startswith("| dueling-llm | "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1].startswith(f"{pairs['dueling'].value:.3g} [") and cells[1].endswith("vs `dueling`")
    assert cells[2].startswith(f"{pairs['noisy'].value:.3g} [") and cells[3].startswith(f"{pairs['rnd'].value:.3g} [")


PLAIN_SPEC = """
name: no-baselines
base: {algo: dqn, steps: 400, provider: scripted}
arms:
  - name: llm
  - name: baseline
    provider: none
baseline: baseline
environments: [CartPole-v1]
seeds: 2
"""


def test_without_baseline_arms_and_with_the_twin_as_the_baseline_there_is_no_extra_section(tmp_path):
    out, result = fake_study(tmp_path, PLAIN_SPEC)
    assert result.ok
    write_report(out)
    report = (out / "report.md").read_text()
    assert pairings(load_study(out)) == {"llm": ["baseline"]}
    assert "## Does an arm beat the baseline?" in report
    assert "plain twins" not in report
