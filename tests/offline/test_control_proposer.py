"""The ``reference-control`` proposer: the graded controls of ``eval-advice --controls``, replayed in
a training run (the validation study of docs/offline-eval.md), on a real recorded CartPole set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from explorer_ablation.offline.control_proposer import LEVELS, ReferenceControlProposer, reference_control_proposer
from explorer_ablation.offline.controls import scenario_at
from explorer_pipeline.types import ActionSpec
from explorer_rundir.scenarios import load_set

LLM_EXPLORER = str(Path(sys.executable).with_name("llm-explorer"))


def llm_explorer(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([LLM_EXPLORER, *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TQDM_DISABLE": "1"})


def train_args(set_dir: Path, env_id: str, level: str, steps: int = 300) -> list[str]:
    return ["train", "--env", env_id, "--algo", "dqn", "--steps", str(steps), "--mode", "blocking", "--k", "1",
            "--provider", "scripted", "--prompt-set", "single-stage", "--eval-episodes", "1",
            "--set", "explorer.floor=0.0", "--set", "explorer.proposer.name=reference-control",
            "--set", f"explorer.proposer.options.scenarios={set_dir}",
            "--set", f"explorer.proposer.options.level={level}"]


def test_the_newest_scenario_at_or_before_the_env_step_answers(cartpole_set):
    sset = load_set(cartpole_set)
    steps = [s.step for s in sset.scenarios]
    assert len(steps) >= 2 and steps == sorted(steps)
    first, second = sset.scenarios[0], sset.scenarios[1]
    assert scenario_at(sset, 0) is first  # a learner younger than every scenario gets the first
    assert scenario_at(sset, first.step - 1) is first
    assert scenario_at(sset, first.step) is first
    assert scenario_at(sset, second.step - 1) is first
    assert scenario_at(sset, second.step) is second
    assert scenario_at(sset, 10**9) is sset.scenarios[-1]
    proposer = ReferenceControlProposer(sset, "best")
    assert proposer.values_at(second.step + 1)[1:] == (second.id, second.step)


def test_discrete_values_are_what_eval_advice_scores(cartpole_set, tmp_path):
    """For every scenario and level, the proposer's distribution is the one `--controls` scored."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: t\nbase: {algo: dqn}\narms:\n  - {name: baseline, provider: none}\n"
                    "environments: [CartPole-v1]\nseeds: 1\n", encoding="utf-8")
    result = llm_explorer("eval-advice", str(spec), str(cartpole_set), "--controls", "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "out/results.json").read_text())["scenarios"]
    scored = {(r["arm"], r["scenario"]): r["values"] for r in rows if r["arm"].startswith("control-")}
    sset = load_set(cartpole_set)
    assert len(scored) == len(LEVELS) * len(sset.scenarios)
    for level in LEVELS:
        proposer = ReferenceControlProposer(sset, level)
        for scenario in sset.scenarios:
            values, scenario_id, _ = proposer.values_at(scenario.step)
            assert scenario_id == scenario.id
            assert list(values) == pytest.approx(scored[(f"control-{level}", scenario.id)], abs=1e-12)
    best = ReferenceControlProposer(sset, "best").values_at(0)[0]
    worst = ReferenceControlProposer(sset, "worst").values_at(0)[0]
    assert best != pytest.approx(worst)  # the levels differ: the comparison above can fail


def test_a_wrong_level_or_environment_is_one_line_and_exit_2(cartpole_set, tmp_path):
    for args, needles in [(train_args(cartpole_set, "CartPole-v1", "great"), ("'great'", "best, good, none")),
                          (train_args(cartpole_set, "Acrobot-v1", "best"), ("CartPole-v1", "Acrobot-v1"))]:
        result = llm_explorer(*args, "--out", "run", cwd=tmp_path)
        assert result.returncode == 2, (result.stdout, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert all(needle in lines[0] for needle in needles), lines[0]
        assert not (tmp_path / "run").exists()


def test_an_action_space_mismatch_is_refused(cartpole_set):
    # the factory reads only the task's environment and the action spec of the context
    context = SimpleNamespace(task=SimpleNamespace(env_id="CartPole-v1"),
                              spec=ActionSpec.continuous(low=(-1.0,), high=(1.0,)))
    with pytest.raises(ValueError, match=r"has 2 discrete actions, this run 1 continuous") as caught:
        reference_control_proposer(context, scenarios=str(cartpole_set), level="best")
    assert "\n" not in str(caught.value)


def test_a_training_run_publishes_the_control(cartpole_set, tmp_path):
    """A short real run: every update carries the control of the scenario for its env step."""
    result = llm_explorer(*train_args(cartpole_set, "CartPole-v1", "worst"), "--out", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    updates = [json.loads(line) for line in (tmp_path / "run/updates.jsonl").read_text().splitlines()]
    assert sum(u["applied_at_step"] is not None for u in updates) >= 5
    sset = load_set(cartpole_set)
    by_id = {s.id: s for s in sset.scenarios}
    worst = ReferenceControlProposer(sset, "worst")
    for update in updates:
        note = update["notes"]["proposer"]
        assert (update["kind"], update["source"], note["name"], note["level"]) == (
            "distribution", "llm", "reference-control", "worst")
        expected, scenario_id, _ = worst.values_at(by_id[note["scenario"]].step)
        assert note["scenario"] == scenario_id
        if update["applied_at_step"] is not None:  # the last answer may come after training ended
            assert note["scenario"] == scenario_at(sset, update["applied_at_step"]).id
        # floor 0: what training applied is exactly the control
        assert update["values"] == pytest.approx(list(expected), abs=1e-12)


@pytest.mark.parametrize("name", ["validation-controls-cartpole", "validation-controls-pendulum"])
def test_the_validation_study_specs_resolve(name, tmp_path):
    """The studies of docs/offline-eval.md: five levels and the baseline, 5 seeds, every run configured."""
    root = Path(__file__).resolve().parents[2]
    result = llm_explorer("ablate", str(root / "examples" / f"{name}.yaml"), "--dry-run", "--out", "study",
                          cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "30 runs" in result.stderr and not (tmp_path / "study").exists()
    configured = [line for line in result.stdout.splitlines() if '"reference-control"' in line]
    assert len(configured) == 25
    assert {level for level in LEVELS if f'"level": "{level}"' in result.stdout} == set(LEVELS)


@pytest.mark.parametrize(("name", "runs", "model_runs"), [("validation-embedded-cartpole", 15, 10),
                                                          ("validation-embedded-pendulum", 10, 5)])
def test_the_embedded_model_validation_specs_resolve(name, runs, model_runs, tmp_path):
    """The embedded model's arms beside the validation study: blocking, the local provider, 5 seeds."""
    root = Path(__file__).resolve().parents[2]
    result = llm_explorer("ablate", str(root / "examples" / f"{name}.yaml"), "--dry-run", "--out", "study",
                          cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"{runs} runs" in result.stderr and not (tmp_path / "study").exists()
    model = [line for line in result.stdout.splitlines() if '"provider": "local"' in line]
    assert len(model) == model_runs and all('"mode": "blocking"' in line for line in model)
    assert ('"token-probabilities"' in result.stdout) == (name == "validation-embedded-cartpole")
