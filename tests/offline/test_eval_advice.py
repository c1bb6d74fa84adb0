"""``llm-explorer scenarios`` and ``llm-explorer eval-advice`` on real recorded scenario sets: the
format, the scripted controls' order, failures counted, bad input refused with exit status 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from explorer_rundir.scenarios import MANIFEST, ScenarioSetError, load_set

LLM_EXPLORER = str(Path(sys.executable).with_name("llm-explorer"))
CONTROLS = ["control-best", "control-good", "control-none", "control-bad", "control-worst"]


def llm_explorer(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([LLM_EXPLORER, *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TQDM_DISABLE": "1"})


def write_spec(path: Path, env_id: str, algo: str, arms: str) -> Path:
    path.write_text(f"name: t\nbase: {{algo: {algo}, provider: scripted, prompt_set: paper}}\narms:\n{arms}"
                    f"environments: [{env_id}]\nseeds: 1\n", encoding="utf-8")
    return path


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_the_set_holds_snapshots_and_a_reference(cartpole_set):
    manifest = json.loads((cartpole_set / MANIFEST).read_text())
    assert (manifest["format"], manifest["version"]) == ("llm-explorer-scenarios", 1)
    assert manifest["env_id"] == "CartPole-v1" and manifest["algo"] == "dqn"
    steps = [s["step"] for s in manifest["scenarios"]]
    assert steps == sorted(steps) and len(steps) >= 2 and max(steps) < manifest["reference"]["step"]
    sset = load_set(cartpole_set)
    for scenario, entry in zip(sset.scenarios, manifest["scenarios"], strict=True):
        assert scenario.history[-1] == scenario.record and scenario.record.actions
        assert scenario.arrays["states"].shape[1] == 4 and scenario.arrays["q_ref"].shape[1] == 2
        assert len(scenario.arrays["states"]) == entry["states"] <= 64
        assert (cartpole_set / scenario.id / "networks.pt").is_file()


def test_q_ref_is_the_reference_networks_output(cartpole_set):
    """The stored Q-values are those of the reference networks rebuilt from the set alone."""
    from tianshou_integration.scenarios import load_reference, q_values

    sset = load_set(cartpole_set)
    reference = load_reference(cartpole_set)
    try:
        scenario = sset.scenarios[-1]
        np.testing.assert_allclose(q_values(reference.setup, scenario.arrays["states"]), scenario.arrays["q_ref"],
                                   rtol=1e-5, atol=1e-5)
    finally:
        reference.close()


def test_scripted_arms_and_controls_on_cartpole(cartpole_set, tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", "CartPole-v1", "dqn",
                      "  - {name: baseline, provider: none}\n"
                      "  - {name: left, options: {reply: '{\"probabilities\": [0.9, 0.1]}'}}\n"
                      "  - {name: garbage, options: {reply: 'no idea'}}\n")
    before = files_under(tmp_path)
    result = llm_explorer("eval-advice", str(spec), str(cartpole_set), "--controls", "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert {p for p in files_under(tmp_path) - before if out not in p.parents and p != out} == set()
    assert {"results.json", "scores.csv", "table.md", "scores.png"} <= {p.name for p in out.iterdir()}
    results = json.loads((out / "results.json").read_text())
    arms = {r["arm"]: r for r in results["arms"]}
    n = len(load_set(cartpole_set).scenarios)
    assert arms["baseline"]["score"] == 0.0 and arms["baseline"]["metrics"]["greedy_mass"] == pytest.approx(1.0)
    assert arms["garbage"]["scored"] == 0 and arms["garbage"]["parse_failures"] == n
    assert arms["left"]["scored"] == n and arms["left"]["input_tokens"] > 0
    # what the validator let through (5 % uniform floor) is what was scored
    left_rows = [r for r in results["scenarios"] if r["arm"] == "left"]
    assert left_rows[0]["values"] == pytest.approx([0.95 * 0.9 + 0.025, 0.95 * 0.1 + 0.025])
    scores = [arms[c]["score"] for c in CONTROLS]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0 > scores[-1]
    greedy = [arms[c]["metrics"]["greedy_mass"] for c in CONTROLS]
    assert greedy[0] > 1.0 > greedy[-1]
    assert "| CartPole-v1/dqn | left |" in result.stdout


def test_controls_are_ordered_on_pendulum(pendulum_set, tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", "Pendulum-v1", "td3",
                      "  - {name: up, options: {reply: '{\"bias\": [0.5]}'}}\n")
    result = llm_explorer("eval-advice", str(spec), str(pendulum_set), "--controls", "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    arms = {r["arm"]: r for r in json.loads((tmp_path / "out/results.json").read_text())["arms"]}
    scores = [arms[c]["score"] for c in CONTROLS]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[2] == 0.0 > scores[-1]
    assert arms["control-best"]["metrics"]["cosine"] >= 0 >= arms["control-worst"]["metrics"]["cosine"]
    rows = [r for r in json.loads((tmp_path / "out/results.json").read_text())["scenarios"] if r["arm"] == "up"]
    assert rows and all(r["values"] == [0.5] and np.isfinite(r["q_gain"]) for r in rows)


def one_line_exit_2(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_a_set_from_another_environment_is_refused(cartpole_set, tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", "FrozenLake-v1", "dqn", "  - {name: a}\n")
    one_line_exit_2(llm_explorer("eval-advice", str(spec), str(cartpole_set), "--out", "out", cwd=tmp_path),
                    "CartPole-v1", "FrozenLake-v1")
    assert not (tmp_path / "out").exists()


def test_a_missing_reference_is_refused(cartpole_set, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(cartpole_set, broken)
    (broken / "reference" / "networks.pt").unlink()
    with pytest.raises(ScenarioSetError, match="reference is missing"):
        load_set(broken)
    spec = write_spec(tmp_path / "spec.yaml", "CartPole-v1", "dqn", "  - {name: a}\n")
    one_line_exit_2(llm_explorer("eval-advice", str(spec), str(broken), "--out", "out", cwd=tmp_path),
                    "reference is missing")
    one_line_exit_2(llm_explorer("eval-advice", str(spec), str(tmp_path), "--out", "out", cwd=tmp_path),
                    "not a scenario set")
    assert not (tmp_path / "out").exists()


def test_an_unknown_arm_and_an_occupied_out_are_refused(cartpole_set, tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", "CartPole-v1", "dqn", "  - {name: a}\n")
    one_line_exit_2(llm_explorer("eval-advice", str(spec), str(cartpole_set), "--arm", "b", "--out", "out",
                                 cwd=tmp_path), "--arm 'b'", "its arms: a")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    one_line_exit_2(llm_explorer("eval-advice", str(spec), str(cartpole_set), "--out", "full", cwd=tmp_path),
                    "not empty")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_an_arm_whose_provider_fails(cartpole_set, tmp_path):
    """An unreachable server: refused up front by the preflight (exit 2), or, with the preflight
    off, every request a counted provider_error while the other arms are scored."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    arm = (f"  - {{name: down, provider: openai, model: m, base_url: 'http://127.0.0.1:{port}/v1', "
           f"config: {{explorer: {{call_timeout_s: 2, max_attempts: 1}}}}, options: {{preflight: {{}}}}}}\n")
    spec = write_spec(tmp_path / "spec.yaml", "CartPole-v1", "dqn", arm.replace("preflight: {}", "preflight: 'on'"))
    one_line_exit_2(llm_explorer("eval-advice", str(spec), str(cartpole_set), "--out", "out", cwd=tmp_path))
    spec = write_spec(tmp_path / "spec2.yaml", "CartPole-v1", "dqn",
                      arm.replace("preflight: {}", "preflight: 'off'") + "  - {name: baseline, provider: none}\n")
    result = llm_explorer("eval-advice", str(spec), str(cartpole_set), "--out", "out2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    arms = {r["arm"]: r for r in json.loads((tmp_path / "out2/results.json").read_text())["arms"]}
    n = len(load_set(cartpole_set).scenarios)
    assert arms["down"]["scored"] == 0 and arms["down"]["failures"] == {"provider_error": n}
    assert arms["baseline"]["scored"] == n


def test_scenarios_refuses_a_run_without_checkpoints(tmp_path, cartpole_set):
    one_line_exit_2(llm_explorer("scenarios", str(tmp_path), "--out", "s", cwd=tmp_path), "not a run directory")
    one_line_exit_2(llm_explorer("scenarios", "--out", "s", cwd=tmp_path), "RUN_DIR or --builtin")
    assert not (tmp_path / "s").exists()
