"""The local provider: generated grammars compile, and constrain the real model's answer (in
process and in the private server process); options are checked before anything starts."""

from __future__ import annotations

import json
import re

import llama_cpp
import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from llama_cpp import Llama, LlamaGrammar
from llm_explorer_llamacpp import LlamaCppChatModel, LocalProvider, default_model_path
from llm_explorer_llamacpp.grammar import proposal_grammar
from llm_explorer_llamacpp.server import LlamaServerChatModel

from explorer_pipeline import ActionSpec, ProviderSettings, UsageError
from explorer_pipeline.default_plugins.parsing import DefaultParser

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
    ({"process": "thread"}, "process must be one of server, in, got 'thread'"),
    ({"process": "in", "log": "/tmp/server.log"}, r"unknown local provider option\(s\) \['log'\] with process=in"),
    ({"process": "in", "start_timeout": "5"}, "with process=in"),
    ({"cache": "maybe"}, "cache must be on or off"), ({"start_timeout": "0"}, "start_timeout > 0"),
    ({"start_timeout": "soon"}, "start_timeout a number of seconds"),
    ({"nice": "20"}, "0 <= nice <= 19"), ({"process": "in", "nice": "5"}, "with process=in"),
])
def test_bad_options(options, message):
    with pytest.raises(UsageError, match=message):
        LocalProvider().create(ProviderSettings(options=options))


def test_missing_gguf_path():
    with pytest.raises(UsageError, match="does not exist"):
        LocalProvider().create(ProviderSettings(model="/nowhere/model.gguf"))


@pytest.fixture(scope="module", params=["in", "server"])
def local_model(request):
    """The provider's model in each process mode (one server for the module's server tests)."""
    settings = ProviderSettings(options={"process": request.param})
    model = LocalProvider().create(settings)
    yield request.param, model
    model.close()


def test_process_mode_decides_the_model(local_model):
    mode, model = local_model
    if mode == "in":
        assert isinstance(model, LlamaCppChatModel)
    else:
        assert isinstance(model, LlamaServerChatModel) and model.server.proc.poll() is None
        assert model.openai_api_base == model.server.base_url and model.server.base_url.startswith("http://127.0.0.1:")


@pytest.mark.integration
@pytest.mark.parametrize("method", ["grammar", "json_object_schema"])
@pytest.mark.parametrize("spec", [ActionSpec.discrete(4), ActionSpec.continuous([-2.0, -1.0], [2.0, 1.0])])
def test_stage_2_is_constrained_in_both_process_modes(local_model, spec, method):
    _, model = local_model
    provider = LocalProvider()
    settings = ProviderSettings(max_tokens={"proposal": 60}, structured_output=method)
    runnable = provider.stage_model(model, "proposal", settings, spec)
    # a prompt that invites prose and the wrong count: only the constraint makes the reply right
    reply = runnable.invoke([SystemMessage("You help an RL agent explore."),
                             HumanMessage(f"Write {spec.n + 3} numbers between -5 and 5 as a sentence.")])
    if method == "grammar":
        assert answer_pattern(spec).fullmatch(reply.content), reply.content
    data = json.loads(reply.content)
    key = "probabilities" if spec.is_discrete else "bias"
    assert list(data) == [key] and len(data[key]) == spec.n, reply.content
    values = DefaultParser().parse(reply.content, spec)
    assert len(values) == spec.n
    if method == "grammar":  # the schema's minimum/maximum are not enforced by llama.cpp's json_object mode
        low = 0.0 if spec.is_discrete else -1.0
        assert all(low <= v <= 1.0 for v in values)
    assert reply.usage_metadata["output_tokens"] > 0


@pytest.mark.integration
def test_stage_1_cap_reaches_the_model(local_model):
    """llama.cpp's server ignores the max_completion_tokens that ChatOpenAI sends: the cap must
    travel as max_tokens, or a rambling stage 1 runs to the context size."""
    _, model = local_model
    settings = ProviderSettings(max_tokens={"analysis": 6})
    runnable = LocalProvider().stage_model(model, "analysis", settings, ActionSpec.discrete(2))
    reply = runnable.invoke([HumanMessage("Write a long story about a cart and a pole, at least 300 words.")])
    assert reply.usage_metadata["output_tokens"] == 6
    assert reply.response_metadata["finish_reason"] == "length"
