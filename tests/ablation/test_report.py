"""The report's numbers against values computed here, independently, from the run directories."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from explorer_ablation.report import analyse, write_report
from explorer_ablation.results import load_study

from .helpers import fake_study, patch_summary

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
    out, result = fake_study(tmp_path_factory.mktemp("report"), SPEC)
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
    # no metric in the spec: compared on the final greedy return, and the report says so
    assert "Arms are compared on the **final greedy return** (metric `final`)" in report
    assert "## Final greedy return" in report and "| arm | IQM of normalised final return [95% CI] |" in report
    for name in ("learning_curves", "final_returns", "performance_profile", "cost"):
        png = finished / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(figures/{name}.png)" in report


# --------------------------------------------------------------------------- informativeness per arm
GUIDANCE_SPEC = """
name: guidance-check
base: {algo: dqn, steps: 400, provider: scripted}
arms:
  - name: guided
  - name: mostly-flat
  - name: flat
  - name: baseline
    provider: none
baseline: baseline
environments: [CartPole-v1]
seeds: 2
"""


def update_line(version, values, applied, source_episode):
    return {"version": version, "kind": "distribution", "values": list(values), "source": "llm",
            "source_episode": source_episode, "applied_at_step": applied, "latency_s": 0.5}


def rewrite_run(run_dir: Path, lines: list[dict], **summary_fields) -> None:
    """Replace a fake run's updates.jsonl (and patch its summary) with what a real run would write."""
    (run_dir / "updates.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    patch_summary(run_dir, **summary_fields)


@pytest.fixture(scope="module")
def guided_study(tmp_path_factory) -> Path:
    from explorer_rundir import informativeness

    out, result = fake_study(tmp_path_factory.mktemp("guidance"), GUIDANCE_SPEC)
    assert result.ok and result.done == 8
    # the fake's training episodes end at steps 100, 200, 300, 400 (metrics.csv)
    for seed in (0, 1):
        runs = out / "runs"
        # lines as written before updates.jsonl carried the measures: the report computes them
        rewrite_run(runs / "guided" / "CartPole-v1" / f"seed-{seed}",
                    [update_line(1, (0.25, 0.75), 250, 0), update_line(2, (0.9, 0.1), None, 1),
                     update_line(3, (0.2, 0.8), 350, 2)], updates_applied=2)
        # lines as RunDir writes them now, and the summary's own count
        measured = informativeness.measure_lines(
            [update_line(v, p, 100 * v + 50, v - 1) for v, p in enumerate(((0.5, 0.5),) * 3 + ((0.3, 0.7),), 1)],
            episode_end_steps=[100, 200, 300, 400])
        rewrite_run(runs / "mostly-flat" / "CartPole-v1" / f"seed-{seed}", measured, updates_applied=4,
                    updates_informative=1, informative_share=0.25)
        rewrite_run(runs / "flat" / "CartPole-v1" / f"seed-{seed}",
                    [update_line(v, (0.5, 0.5), 100 * v + 10, v - 1) for v in (1, 2, 3)], updates_applied=3)
    write_report(out)
    return out


def test_report_shows_informativeness_per_arm(guided_study: Path):
    report = (guided_study / "report.md").read_text()
    assert ("| arm | updates applied / run | informative / run | informative share | median KL from uniform (nats) "
            "| median normalised entropy | median change (TV distance) | median staleness (episodes) "
            "| median staleness (env steps) |") in report
    assert "median max abs bias" not in report  # no continuous arm in this study
    # guided, by hand: KL(0.25/0.75) = 0.130812 and KL(0.2/0.8) = 0.192745 -> median 0.161779; entropies
    # 0.811278 and 0.721928 -> 0.766603; changes 0.25 (from uniform) and 0.7 (from 0.9/0.1, never applied)
    # -> 0.475; staleness: version 1 from episode 0 (ended 100) used at 250 -> 1 episode, 150 steps,
    # version 3 from episode 2 (ended 300) used at 350 -> 0 episodes, 50 steps
    assert "| guided | 2 | 2 | 100% | 0.162 | 0.767 | 0.475 | 0.5 | 100 |" in report
    assert "| mostly-flat | 4 | 1 | 25% | 0 | 1 | 0 | 0 | 50 |" in report
    assert "| flat | 3 | 0 | 0% | 0 | 1 | 0 | 0 | 10 |" in report
    assert "| baseline | 0 | 0 | – | – | – | – | – | – |" in report
    analysis = analyse(load_study(guided_study))
    assert analysis.guidance["guided"]["median_kl_uniform_nats"] == pytest.approx(0.161779, abs=1e-6)
    assert analysis.cost["guided"]["updates_informative"] == 2


def test_report_warns_when_an_llm_arm_explored_like_the_default(guided_study: Path):
    report = (guided_study / "report.md").read_text()
    warnings = [line for line in report.splitlines() if line.startswith("> **Warning:**")]
    (flat,) = [w for w in warnings if "`flat`" in w]
    assert flat.startswith("> **Warning:** Arm `flat` applied 3 updates per run, but none of them was informative "
                           "(KL from uniform below 0.01 nats")
    assert "indistinguishable from the algorithm's own" in flat
    (mostly,) = [w for w in warnings if "`mostly-flat`" in w]
    assert mostly.startswith("> **Warning:** Only 25% of the updates arm `mostly-flat` applied were informative")
    assert not [w for w in warnings if "`guided`" in w or "`baseline`" in w]


def test_summary_csv_has_informativeness_per_run(guided_study: Path):
    with open(guided_study / "summary.csv", newline="") as f:
        rows = {(r["arm"], int(r["seed"])): r for r in csv.DictReader(f)}
    for seed in (0, 1):
        guided = rows[("guided", seed)]
        assert (guided["updates_applied"], guided["updates_informative"], guided["informative_share"]) == ("2", "2",
                                                                                                        "1.0")
        assert float(guided["median_kl_uniform_nats"]) == pytest.approx(0.161779, abs=1e-5)  # of rounded values
        assert float(guided["median_staleness_steps"]) == 100 and guided["median_bias_max_abs"] == ""
        assert (rows[("mostly-flat", seed)]["updates_informative"], rows[("mostly-flat", seed)]["informative_share"]) \
            == ("1", "0.25")
        assert rows[("flat", seed)]["updates_informative"] == "0"
        assert rows[("baseline", seed)]["informative_share"] == ""


def test_latency_counts_every_request_that_asked_the_model(tmp_path: Path):
    """Controls that ask the model (shuffled, frozen) have a request latency; the random control,
    which asks nothing, does not."""
    from explorer_ablation.results import _read_updates

    def line(source: str, latency: float, tokens: dict) -> str:
        return json.dumps({"version": 1, "kind": "distribution", "values": [0.5, 0.5], "source": source,
                           "source_episode": 0, "latency_s": latency, "tokens": tokens, "applied_at_step": 10})

    asked = {"analysis": {"input": 600, "output": 40}}
    path = tmp_path / "updates.jsonl"
    path.write_text("\n".join([line("llm", 12.0, asked), line("control", 20.0, asked),
                               line("control", 0.001, {}), line("fallback", 3.0, asked)]) + "\n")
    latencies, fallbacks, _ = _read_updates(path, [10])
    assert latencies == [12.0, 20.0, 3.0] and fallbacks == 1
