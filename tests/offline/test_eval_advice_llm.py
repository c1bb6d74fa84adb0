"""A real scoring run through the embedded model (llama.cpp, SmolLM2), text and token-probability
proposals, on a real CartPole scenario set."""

from __future__ import annotations

import json

import pytest

from .test_eval_advice import llm_explorer, write_spec

pytestmark = pytest.mark.integration


def test_embedded_model_arms_are_scored(cartpole_set, tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", "CartPole-v1", "dqn",
                      "  - {name: paper-text, provider: local}\n"
                      "  - name: paper-tokenprob\n    provider: local\n    prompt_set: paper-logprobs\n"
                      "    config: {explorer: {proposer: {name: token-probabilities}}}\n")
    result = llm_explorer("eval-advice", str(spec), str(cartpole_set), "--limit", "2", "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "out/results.json").read_text())
    arms = {r["arm"]: r for r in results["arms"]}
    for name in ("paper-text", "paper-tokenprob"):
        arm = arms[name]
        assert arm["scenarios"] == 2 and arm["input_tokens"] > 0 and arm["latency_s_total"] > 0
        assert arm["scored"] + sum(arm["failures"].values()) == 2
    # token probabilities always give a distribution: both scenarios are scored
    assert arms["paper-tokenprob"]["scored"] == 2
    rows = [r for r in results["scenarios"] if r["arm"] == "paper-tokenprob"]
    for row in rows:
        assert sum(row["values"]) == pytest.approx(1.0) and -5 < row["advantage"] < 5
    exchanges = (tmp_path / "out/paper-text/exchanges.jsonl").read_text().splitlines()
    assert exchanges and all(json.loads(line) for line in exchanges)
    # a second run answers from the response cache the first one filled
    again = llm_explorer("eval-advice", str(spec), str(cartpole_set), "--limit", "2", "--out", "out2",
                         "--response-cache", str(tmp_path / "out/responses.sqlite"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    first = [r["values"] for r in results["scenarios"]]
    second = [r["values"] for r in json.loads((tmp_path / "out2/results.json").read_text())["scenarios"]]
    assert first == second
