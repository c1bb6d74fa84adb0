"""Token-probability proposals from the real SmolLM2 model: through the llama.cpp server (the
``openai`` provider, and the ``local`` provider's own server) and in process (``local``).

The symmetric prompt: four buttons that, the task says, do exactly the same thing. Whatever the
model prefers among them is position bias or noise, so the distribution averaged over the
cyclic label orders must be closer to uniform than what the listed order alone gives.
"""

from __future__ import annotations

import math

import pytest

from explorer_pipeline import ActionSpec, EpisodeRecord, ExplorationUpdate, ExplorerConfig, open_explorer

pytestmark = pytest.mark.integration

BUTTONS = ActionSpec.discrete(4, ["press the red button", "press the blue button", "press the green button",
                                  "press the yellow button"])
SYMMETRIC = ("A game with four buttons: red, blue, green and yellow. All four buttons do exactly the same thing, "
             "so no button is better than another.")
BUTTON_RECORD = EpisodeRecord(5.0, 20, "Buttons-v0", 3, tuple([0, 1, 2, 3] * 5))
PENDULUM = ActionSpec.continuous([-2.0], [2.0])
PENDULUM_RECORD = EpisodeRecord(-1250.0, 200, "Pendulum-v1", 2, tuple((0.3,) for _ in range(200)))


def kl_from_uniform(p) -> float:
    return sum(x * math.log(x * len(p)) for x in p if x > 0)


def propose(config: ExplorerConfig, env_id: str, spec: ActionSpec, record: EpisodeRecord) -> ExplorationUpdate:
    with open_explorer(config, env_id, spec) as explorer:
        update = explorer.runtime.submit_and_wait(record, timeout=300)
    assert isinstance(update, ExplorationUpdate), update
    return update


def symmetric_config(permutations: str = "cyclic", **provider) -> ExplorerConfig:
    return ExplorerConfig(prompt_set="paper-logprobs", task_description=SYMMETRIC, floor=0.0, max_tokens_analysis=40,
                          proposer={"name": "token-probabilities", "options": {"permutations": permutations}},
                          **provider)


def assert_debiased(update: ExplorationUpdate) -> None:
    notes = update.provenance.notes["proposer"]
    assert notes["name"] == "token-probabilities" and notes["orders"] == notes["calls"] == 4
    assert update.provenance.tokens["proposal"].output_tokens == 4  # one output token per label order
    assert 0.05 < notes["valid_mass"] <= 1.0  # the model did answer with labels
    listed = notes["listed_order"]
    assert sum(update.values) == pytest.approx(1.0) and sum(listed) == pytest.approx(1.0, abs=1e-3)
    # SmolLM2 favours the first position: one order is skewed, the average over orders much less so
    assert notes["position_preference"][0] == max(notes["position_preference"])
    assert kl_from_uniform(listed) > 0.005
    assert kl_from_uniform(update.values) < 0.5 * kl_from_uniform(listed)


def test_token_probabilities_through_the_llama_cpp_server(llama_server):
    update = propose(symmetric_config(provider="openai", base_url=llama_server.base_url, model="smollm2"),
                     "Buttons-v0", BUTTONS, BUTTON_RECORD)
    assert update.provenance.provider == "openai"
    assert_debiased(update)


def test_token_probabilities_in_process_and_one_order_alone():
    cyclic = propose(symmetric_config(provider="local", provider_options={"process": "in"}),
                     "Buttons-v0", BUTTONS, BUTTON_RECORD)
    assert_debiased(cyclic)
    alone = propose(symmetric_config("none", provider="local", provider_options={"process": "in"}),
                    "Buttons-v0", BUTTONS, BUTTON_RECORD)
    assert alone.provenance.notes["proposer"]["orders"] == 1
    assert alone.provenance.tokens["proposal"].output_tokens == 1
    # the same prompt (temperature 0): one order alone is exactly the listed order of the averaged run
    assert alone.values == pytest.approx(cyclic.provenance.notes["proposer"]["listed_order"], abs=2e-3)
    assert kl_from_uniform(cyclic.values) < kl_from_uniform(alone.values)


def test_token_probabilities_through_the_local_providers_own_server():
    update = propose(symmetric_config(provider="local", provider_options={"process": "server"}),
                     "Buttons-v0", BUTTONS, BUTTON_RECORD)
    assert_debiased(update)


def test_continuous_bias_from_level_probabilities_in_process():
    config = ExplorerConfig(provider="local", provider_options={"process": "in"}, prompt_set="paper-logprobs",
                            max_tokens_analysis=40, proposer="token-probabilities")
    update = propose(config, "Pendulum-v1", PENDULUM, PENDULUM_RECORD)
    notes = update.provenance.notes["proposer"]
    assert update.kind == "bias" and notes["calls"] == 5 and notes["valid_mass"] > 0.05
    (levels,) = notes["level_probabilities"]
    expected = sum(p * v for p, v in zip(levels, notes["levels"], strict=True))
    assert update.values[0] == pytest.approx(max(-0.5, min(0.5, expected)), abs=1e-3)  # clipped to max_bias
