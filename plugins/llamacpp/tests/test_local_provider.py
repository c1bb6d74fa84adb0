"""The local provider: generated grammars compile, and constrain the real model's answer."""

from __future__ import annotations

import re

import llama_cpp
import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from llama_cpp import Llama, LlamaGrammar
from llm_explorer_llamacpp import LocalProvider, default_model_path
from llm_explorer_llamacpp.grammar import proposal_grammar

from explorer_pipeline import ActionSpec, ProviderSettings, UsageError
from explorer_pipeline.parsing import DefaultParser

GRAMMAR_SPECS = ([ActionSpec.discrete(n) for n in (1, 2, 6, 18)]
                 + [ActionSpec.continuous([-1.0] * n, [1.0] * n) for n in (1, 6, 17)])


def answer_pattern(spec: ActionSpec) -> re.Pattern:
    """What ``proposal_grammar`` promises, written independently of it."""
    number = r"-?(?:0\.[0-9][0-9]?|1\.0)" if not spec.is_discrete else r"(?:0\.[0-9][0-9]?|1\.0)"
    key = "probabilities" if spec.is_discrete else "bias"
    return re.compile(r'\{"' + key + r'": \[' + ", ".join([number] * spec.n) + r"\]\}")


@pytest.fixture(scope="module")
def llama():
    """The embedded SmolLM2 model, loaded like the local provider loads it (one thread)."""
    model = Llama(model_path=str(default_model_path()), n_ctx=1024, n_threads=1, n_threads_batch=1, seed=0,
                  verbose=False)
    yield model
    model.close()


def compiles(llama, grammar: str) -> bool:
    """Whether llama.cpp's own grammar parser accepts ``grammar`` for this model's vocabulary.

    ``LlamaGrammar.from_string`` only stores the text (llama-cpp-python 0.3.x); the parse happens
    when a sampler is built, and a failed parse returns NULL (which a generation would dereference).
    """
    sampler = llama_cpp.llama_sampler_init_grammar(llama._model.vocab, grammar.encode(), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


def test_the_grammar_check_rejects_a_broken_grammar(llama):
    assert not compiles(llama, 'root ::= "{" num\n')  # num is undefined
    assert not compiles(llama, 'root ::= ("a"\n')


@pytest.mark.integration
@pytest.mark.parametrize("spec", GRAMMAR_SPECS, ids=[f"{s.update_kind}-{s.n}" for s in GRAMMAR_SPECS])
def test_each_generated_grammar_compiles_and_constrains_a_real_generation(llama, spec):
    grammar = proposal_grammar(spec)
    assert compiles(llama, grammar), grammar
    key = "probabilities" if spec.is_discrete else "bias"
    # a prompt that invites a wrong answer (prose, the wrong count, the other key, out-of-range
    # numbers): only the grammar makes the reply right; sampled as well as greedy
    messages = [{"role": "user", "content": f"Write {spec.n + 2} numbers between -5 and 5 as a sentence, "
                                            f"not as {key}."}]
    for temperature in (0.0, 1.0):
        out = llama.create_chat_completion(messages=messages, grammar=LlamaGrammar.from_string(grammar),
                                           max_tokens=8 * spec.n + 24, temperature=temperature, seed=spec.n)
        text = out["choices"][0]["message"]["content"]
        assert out["choices"][0]["finish_reason"] == "stop", text  # the grammar ended the answer, not the cap
        assert answer_pattern(spec).fullmatch(text), text
        values = DefaultParser().parse(text, spec)
        assert len(values) == spec.n
        assert all((0.0 if spec.is_discrete else -1.0) <= v <= 1.0 for v in values)


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
