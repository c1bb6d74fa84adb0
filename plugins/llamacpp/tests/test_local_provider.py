"""The local provider: generated grammars compile, and constrain the real model's answer."""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from llama_cpp import LlamaGrammar
from llm_explorer_llamacpp import LocalProvider, default_model_path
from llm_explorer_llamacpp.grammar import proposal_grammar

from explorer_pipeline import ActionSpec, ProviderSettings, UsageError
from explorer_pipeline.parsing import DefaultParser


@pytest.mark.parametrize("spec", [ActionSpec.discrete(n) for n in (1, 2, 6, 18)]
                         + [ActionSpec.continuous([-1.0] * n, [1.0] * n) for n in (1, 6, 17)])
def test_grammar_compiles(spec):
    assert LlamaGrammar.from_string(proposal_grammar(spec), verbose=False) is not None


def test_default_model_ships_in_the_wheel():
    path = default_model_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


@pytest.mark.parametrize(("options", "message"), [
    ({"threads": "two"}, "integers"), ({"threads": "0"}, "threads >= 1"), ({"colour": "red"}, "unknown local"),
])
def test_bad_options(options, message):
    with pytest.raises(UsageError, match=message):
        LocalProvider().create(ProviderSettings(options=options))


def test_missing_gguf_path():
    with pytest.raises(UsageError, match="does not exist"):
        LocalProvider().create(ProviderSettings(model="/nowhere/model.gguf"))


@pytest.mark.integration
@pytest.mark.parametrize("spec", [ActionSpec.discrete(4), ActionSpec.continuous([-2.0, -1.0], [2.0, 1.0])])
def test_grammar_constrains_the_embedded_model(spec):
    provider = LocalProvider()
    settings = ProviderSettings(max_tokens={"proposal": 60})
    model = provider.create(settings)
    runnable = provider.stage_model(model, "proposal", settings, spec)
    reply = runnable.invoke([SystemMessage("You help an RL agent explore."),
                             HumanMessage(f"Give {spec.n} numbers as JSON.")])
    values = DefaultParser().parse(reply.content, spec)
    assert len(values) == spec.n
    low = 0.0 if spec.is_discrete else -1.0
    assert all(low <= v <= 1.0 for v in values)
    assert reply.usage_metadata["output_tokens"] > 0
    model.close()
