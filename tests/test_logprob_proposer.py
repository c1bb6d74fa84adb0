"""The token-probability proposer without a real model: the debiasing arithmetic, temperature,
valid-label mass, continuous expectations, what it records, and what happens when the provider
has no log-probabilities (a one-line error, or the text proposer with the fallback recorded)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from explorer_pipeline.default_plugins.logprob_proposer import (
    action_question,
    combine,
    first_token_top_logprobs,
    label_orders,
    label_probabilities,
    level_question,
    sharpen,
)
from explorer_pipeline.default_plugins.scripted_model import ScriptedProvider
from explorer_pipeline.errors import ParseError, UsageError
from explorer_pipeline.providers import Provider, ProviderSettings
from explorer_pipeline.session import ExplorerConfig, open_explorer
from explorer_pipeline.types import ActionSpec, EpisodeRecord, ExplorationUpdate, RequestFailure, StageUsage

from .fakes import ReplayChatModel
from .pipelines import make_context, make_models, pipeline_for

SPEC = ActionSpec.discrete(3, ["go left", "wait", "go right"])
BOX = ActionSpec.continuous([-1.0, -2.0], [1.0, 2.0], ["hip torque", "knee torque"])
RECORD = EpisodeRecord(12.5, 40, "Test-v0", 7, tuple([0, 1, 2, 2] * 10))
BOX_RECORD = EpisodeRecord(-3.0, 20, "Test-v0", 2, tuple([(0.1, -0.2)] * 20))
OPTION = re.compile(r"^(\S+)\. (.+)$", re.MULTILINE)


def kl_from_uniform(p) -> float:
    return sum(x * math.log(x * len(p)) for x in p if x > 0)


class OptionReader(BaseChatModel):
    """A model with a position prior and a taste for some options: it reads the labelled options
    of the last message, and the first answer token is label j with probability proportional to
    ``position[j] * taste(option text)``, scaled to ``valid`` (the rest goes to ``The``)."""

    position: list[float]
    tastes: dict[str, float] = Field(default_factory=dict)
    valid: float = 1.0
    calls: list[dict] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "option-reader"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        self.calls.append({"prompt": str(messages[-1].content), **kwargs})
        options = OPTION.findall(str(messages[-1].content).rsplit("?\n", 1)[-1])  # the lines after the question
        weights = [self.position[j] * next((w for key, w in self.tastes.items() if key in text), 1.0)
                   for j, (_, text) in enumerate(options)]
        total = sum(weights)
        probs = {label: self.valid * w / total for (label, _), w in zip(options, weights, strict=True)}
        if self.valid < 1:
            probs["The"] = 1 - self.valid
        top = [{"token": t, "logprob": math.log(p), "bytes": None}
               for t, p in sorted(probs.items(), key=lambda kv: -kv[1]) if p > 0][:kwargs.get("top_logprobs", 20)]
        metadata = {"logprobs": {"content": [{**top[0], "top_logprobs": top}]}}
        usage = {"input_tokens": 50, "output_tokens": 1, "total_tokens": 51}
        message = AIMessage(content=top[0]["token"], usage_metadata=usage, response_metadata=metadata)
        return ChatResult(generations=[ChatGeneration(message=message)])


def pipeline_with(model, spec=SPEC, *, options=None, name="token-probabilities", **config):
    models = make_models({"analysis": ReplayChatModel(script=["An analysis."]), "proposal": model})
    config = ExplorerConfig(prompt_set="paper-logprobs", floor=0.0, max_bias=2.0,
                            proposer={"name": name, "options": options or {}}, **config)
    return pipeline_for(make_context(spec, "paper-logprobs", models=models, config=config))


# --------------------------------------------------------------------------- the arithmetic


@pytest.mark.parametrize("average", ["arithmetic", "geometric"])
def test_a_model_that_always_prefers_position_a_gives_uniform_after_cyclic_averaging(average):
    position_only = [0.9, 0.06, 0.04]
    readings = [(shift, position_only) for shift in label_orders("cyclic", 3)]
    combined = combine(readings, average=average)
    assert combined.probabilities == pytest.approx((1 / 3,) * 3)
    assert combined.position_preference == pytest.approx(position_only)
    single = combine([(0, position_only)], average=average)
    assert single.probabilities == pytest.approx(position_only)  # one order: the position prior is the answer


def test_the_geometric_average_cancels_a_multiplicative_position_prior_exactly():
    prior, taste = [0.7, 0.2, 0.1], [0.2, 0.3, 0.5]
    readings = []
    for shift in range(3):  # position j shows action (j + shift) % 3
        raw = [prior[j] * taste[(j + shift) % 3] for j in range(3)]
        readings.append((shift, [x / sum(raw) * 0.8 for x in raw]))
    assert combine(readings, average="geometric").probabilities == pytest.approx(taste)
    arithmetic = combine(readings).probabilities
    single = combine(readings[:1]).probabilities
    # the plain average is not exact, but much closer to the model's taste than one order
    assert sum(abs(a - b) for a, b in zip(arithmetic, taste, strict=True)) < \
        0.5 * sum(abs(a - b) for a, b in zip(single, taste, strict=True))
    assert combine(readings).valid_mass == pytest.approx((0.8, 0.8, 0.8))


def test_temperature_sharpens_and_flattens():
    p = [0.5, 0.3, 0.2]
    assert sharpen(p, 1.0) == p
    squared = [x * x for x in p]
    assert sharpen(p, 0.5) == pytest.approx([x / sum(squared) for x in squared])
    assert kl_from_uniform(sharpen(p, 4.0)) < kl_from_uniform(p) < kl_from_uniform(sharpen(p, 0.5))
    assert sharpen([0.6, 0.4, 0.0], 0.1)[2] == 0.0  # a label the model never gave stays at 0
    assert combine([(0, p)], temperature=0.5).probabilities == pytest.approx(sharpen(p, 0.5))


def test_orders_that_missed_every_label_are_left_out_and_none_at_all_is_a_parse_error():
    combined = combine([(0, [0.0, 0.0]), (1, [0.3, 0.1])])
    assert combined.probabilities == pytest.approx((0.25, 0.75))  # only shift 1: position A shows action 1
    assert combined.valid_mass == (0.0, pytest.approx(0.4))
    with pytest.raises(ParseError, match="did not answer the question"):
        combine([(0, [0.0, 0.0]), (1, [0.0, 0.0])])


def test_label_orders():
    assert label_orders("cyclic", 4) == (0, 1, 2, 3)
    assert label_orders("none", 4) == (0,)
    assert label_orders(2, 4) == (0, 2) and label_orders("3", 6) == (0, 2, 4)
    for bad in (0, 5, "some", True, 1.5):
        with pytest.raises(ValueError, match="permutations"):
            label_orders(bad, 4)


def test_reading_a_reply():
    reply = AIMessage("A", response_metadata={"logprobs": {"content": [{"token": "A", "logprob": -0.2, "top_logprobs": [
        {"token": "A", "logprob": math.log(0.5)}, {"token": " A", "logprob": math.log(0.1)},
        {"token": "C", "logprob": math.log(0.2)}, {"token": "The", "logprob": math.log(0.15)},
        {"token": "a", "logprob": math.log(0.05)}]}]}})
    probs = label_probabilities(first_token_top_logprobs(reply), ["A", "B", "C"])
    assert probs == pytest.approx([0.6, 0.0, 0.2])  # " A" counts for A; "a" and "The" are no labels
    with pytest.raises(RuntimeError, match="no token log-probabilities"):
        first_token_top_logprobs(AIMessage("A"))


def test_the_questions_list_the_options_in_the_shifted_order_and_end_the_prompt():
    assert action_question(SPEC, "ABC", 1) == ("Which action should exploration try most often?\n"
                                               "A. wait\nB. go right\nC. go left\nAnswer with one letter.")
    question = level_question(BOX, 1, (-1.0, -0.5, 0.0, 0.5, 1.0), "ABCDE", 2)
    assert question.startswith("Action dimension 2 of 2: knee torque.\n")
    assert "A. leave it alone (0)\nB. push it up a little (+0.5)\nC. push it up strongly (+1)\n" \
           "D. push it down strongly (-1)\nE. push it down a little (-0.5)\n" in question
    assert action_question(SPEC, ["x1", "x2", "x3"], 0).endswith("Answer with one of: x1, x2, x3.")


# --------------------------------------------------------------------------- in the pipeline


async def test_proposals_from_token_probabilities_and_what_the_update_records():
    model = OptionReader(position=[0.6, 0.25, 0.15], tastes={"go right": 3.0}, valid=0.8)
    pipeline = pipeline_with(model)
    update = await pipeline.handle(RECORD, [RECORD], version=1)
    assert isinstance(update, ExplorationUpdate)
    assert max(range(3), key=lambda a: update.values[a]) == 2  # the model's taste, despite its prior for A
    assert len(model.calls) == 3 and all(c["logprobs"] and c["max_tokens"] == 1 for c in model.calls)
    assert update.provenance.tokens["proposal"] == StageUsage(150, 3)  # one output token per label order
    notes = update.to_json()["notes"]["proposer"]
    assert notes["name"] == "token-probabilities" and notes["orders"] == 3 and notes["calls"] == 3
    assert notes["valid_mass"] == pytest.approx(0.8) and notes["valid_mass_min"] == pytest.approx(0.8)
    assert notes["position_preference"][0] > notes["position_preference"][1] > notes["position_preference"][2]
    assert notes["spread"] > 0
    assert notes["listed_order"] == pytest.approx([0.6 / 1.3, 0.25 / 1.3, 0.45 / 1.3], abs=1e-4)  # shift 0 alone
    # every order shares the prompt up to the options, which come last
    prompts = [c["prompt"] for c in model.calls]
    prefix = prompts[0].split("Which action should")[0]
    assert prefix and all(p.startswith(prefix) for p in prompts) and "An analysis." in prefix
    assert len(set(prompts)) == 3


async def test_one_order_keeps_the_position_preference_and_cyclic_orders_cancel_it():
    values, notes = {}, {}
    for permutations in ("none", "cyclic"):
        pipeline = pipeline_with(OptionReader(position=[0.7, 0.2, 0.1]), options={"permutations": permutations})
        update = await pipeline.handle(RECORD, [RECORD], version=1)
        values[permutations], notes[permutations] = update.values, update.provenance.notes["proposer"]
    assert values["none"] == pytest.approx((0.7, 0.2, 0.1))
    assert values["cyclic"] == pytest.approx((1 / 3,) * 3)
    assert notes["cyclic"]["listed_order"] == notes["none"]["listed_order"] == pytest.approx([0.7, 0.2, 0.1])


async def test_a_count_of_orders_and_custom_labels():
    model = OptionReader(position=[0.5, 0.3, 0.2])
    pipeline = pipeline_with(model, options={"permutations": 2, "labels": ["1", "2", "3"], "top_logprobs": 5})
    update = await pipeline.handle(RECORD, [RECORD], version=1)
    assert len(model.calls) == 2 and all(c["top_logprobs"] == 5 for c in model.calls)
    assert "\n1. go left\n2. wait\n3. go right\nAnswer with one of: 1, 2, 3." in model.calls[0]["prompt"]
    assert "\n1. wait\n2. go right\n3. go left\n" in model.calls[1]["prompt"]
    # shift 0 reads (0.5, 0.3, 0.2); shift 1 shows action 1 first, so it reads (0.2, 0.5, 0.3) by action
    assert update.values == pytest.approx((0.35, 0.4, 0.25))
    assert update.provenance.notes["proposer"]["orders"] == 2


async def test_low_valid_mass_fails_only_below_min_valid_mass():
    model = OptionReader(position=[1.0, 1.0, 1.0], valid=0.1)
    used = await pipeline_with(model).handle(RECORD, [RECORD], version=1)
    assert isinstance(used, ExplorationUpdate) and used.provenance.notes["proposer"]["valid_mass"] == pytest.approx(0.1)
    failure = await pipeline_with(model, options={"min_valid_mass": 0.3}).handle(RECORD, [RECORD], version=1)
    assert isinstance(failure, RequestFailure) and failure.reason == "parse_error"
    assert failure.detail == ("only 10.0% of the first-token probability fell on the labels (min_valid_mass 0.3): "
                              "the model was not answering the question")


async def test_continuous_biases_are_expected_levels_per_dimension():
    model = OptionReader(position=[0.5, 0.2, 0.1, 0.1, 0.1], tastes={"up a little": 9.0})
    update = await pipeline_with(model, BOX).handle(BOX_RECORD, [BOX_RECORD], version=1)
    assert isinstance(update, ExplorationUpdate) and update.kind == "bias"
    assert len(model.calls) == 2 * 5  # two dimensions, five label orders each
    notes = update.provenance.notes["proposer"]
    assert notes["levels"] == [-1.0, -0.5, 0.0, 0.5, 1.0] and len(notes["level_probabilities"]) == 2
    for dim, probs in enumerate(notes["level_probabilities"]):
        expected = sum(p * v for p, v in zip(probs, notes["levels"], strict=True))
        assert update.values[dim] == pytest.approx(expected, abs=1e-4)
        assert max(range(5), key=lambda i: probs[i]) == 3  # +0.5, what the model likes
    assert all(0.2 < v < 0.5 for v in update.values)  # towards +0.5, pulled back by the other levels' mass
    # a model that only sees positions gives no push at all once its preference is spread
    flat = await pipeline_with(OptionReader(position=[0.9, 0.04, 0.03, 0.02, 0.01]), BOX).handle(
        BOX_RECORD, [BOX_RECORD], version=1)
    assert flat.values == pytest.approx((0.0, 0.0), abs=1e-9)
    custom = await pipeline_with(OptionReader(position=[1.0, 1.0, 1.0]), BOX,
                                 options={"levels": [-0.2, 0.0, 0.6], "permutations": "none"}).handle(
        BOX_RECORD, [BOX_RECORD], version=1)
    assert custom.values == pytest.approx((0.4 / 3, 0.4 / 3))


@pytest.mark.parametrize(("options", "message"), [
    ({"sharpen_temperature": 0}, "sharpen_temperature must be a finite number > 0"),
    ({"permutations": 9}, "permutations must be between 1 and the number of options"),
    ({"labels": ["A", "A", "B"]}, "labels must be distinct"),
    ({"labels": ["A", "B"]}, "3 options need as many labels"),
    ({"min_valid_mass": 2}, "min_valid_mass must be between 0 and 1"),
    ({"average": "median"}, "average must be one of arithmetic, geometric"),
    ({"fallback": "retry"}, "fallback must be one of error, text"),
    ({"colour": "red"}, r"does not accept option\(s\) \['colour'\]"),
])
def test_bad_options_are_one_line_usage_errors(options, message):
    config = ExplorerConfig(prompt_set="paper-logprobs", proposer={"name": "token-probabilities", "options": options},
                            provider_options={"logprobs": "0.5,0.5"})
    with pytest.raises(UsageError, match=message) as info:
        open_explorer(config, "CartPole-v1", ActionSpec.discrete(3))
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- providers without log-probabilities


def test_choosing_it_with_a_provider_without_log_probabilities_is_a_one_line_error():
    config = ExplorerConfig(prompt_set="paper-logprobs", proposer="token-probabilities")
    with pytest.raises(UsageError) as info:
        open_explorer(config, "CartPole-v1", ActionSpec.discrete(2))
    assert str(info.value) == (
        "proposer 'token-probabilities' (from plugin 'explorer_pipeline.default_plugins.stages'): provider "
        "'scripted' returns token log-probabilities only with --option logprobs=P_A,P_B,... (first-token "
        "probabilities of the labels by position); choose a provider that does, or proposer 'auto' (text "
        "proposals instead)")


def test_auto_falls_back_to_text_proposals_and_records_it():
    config = ExplorerConfig(prompt_set="paper-logprobs", proposer="auto", floor=0.0)
    with open_explorer(config, "CartPole-v1", ActionSpec.discrete(2)) as explorer:
        update = explorer.runtime.submit_and_wait(RECORD, timeout=30)
    assert isinstance(update, ExplorationUpdate) and update.values == pytest.approx((0.7, 0.3))  # the scripted text
    notes = update.to_json()["notes"]["proposer"]
    assert notes["name"] == "default" and notes["requested"] == "auto"
    assert notes["fallback"].startswith("provider 'scripted' returns token log-probabilities only with")


def test_auto_uses_token_probabilities_where_the_provider_has_them():
    config = ExplorerConfig(prompt_set="paper-logprobs", proposer="auto", floor=0.0,
                            provider_options={"logprobs": "0.7,0.2"})
    with open_explorer(config, "CartPole-v1", ActionSpec.discrete(2)) as explorer:
        update = explorer.runtime.submit_and_wait(RECORD, timeout=30)
    assert update.values == pytest.approx((0.5, 0.5))  # the scripted model only sees positions
    notes = update.provenance.notes["proposer"]
    assert notes["name"] == "auto" and notes["valid_mass"] == pytest.approx(0.9) and "fallback" not in notes
    assert update.provenance.tokens["proposal"].output_tokens == 2


class Ignoring(Provider):
    """Claims log-probabilities, but its replies carry none (a server that ignores the request)."""

    name = "ignoring"
    supports_logprobs = True

    def create(self, settings):
        return ReplayChatModel(script=['{"probabilities": [1, 1, 2]}'])


def models_of(provider: Provider):
    settings = ProviderSettings()
    chat = provider.create(settings)
    return make_models({"analysis": ReplayChatModel(script=["An analysis."]), "proposal": chat},
                       provider=provider.name, chat_model=chat, provider_impl=provider, settings=settings)


@pytest.mark.parametrize("name", ["token-probabilities", "auto"])
async def test_replies_without_log_probabilities_fail_or_fall_back_as_configured(name):
    models = models_of(Ignoring())
    config = ExplorerConfig(prompt_set="paper-logprobs", floor=0.0, proposer=name)
    pipeline = pipeline_for(make_context(SPEC, "paper-logprobs", models=models, config=config))
    first = await pipeline.handle(RECORD, [RECORD], version=1)
    second = await pipeline.handle(RECORD, [RECORD], version=2)
    calls = models.chat_model.calls
    if name == "token-probabilities":
        assert isinstance(first, RequestFailure) and first.reason == "provider_error"
        assert first.detail == ("LogprobsUnavailable: provider 'ignoring': the reply carried no token "
                                "log-probabilities; proposer 'token-probabilities' needs them")
        assert isinstance(second, RequestFailure)
    else:
        assert first.values == pytest.approx((0.25, 0.25, 0.5)) and second.values == first.values
        assert first.provenance.notes["proposer"] == {
            "name": "default", "requested": "auto",
            "fallback": "provider 'ignoring': the reply carried no token log-probabilities"}
        assert len(calls) == 3  # one probe, then one text proposal per request: no more probing


# --------------------------------------------------------------------------- providers and the response cache


def test_the_scripted_logprobs_option():
    provider = ScriptedProvider()
    assert provider.logprobs_unsupported(ProviderSettings()) is not None
    settings = ProviderSettings(options={"logprobs": "0.5,0.3"})
    assert provider.logprobs_unsupported(settings) is None
    runnable = provider.logprob_model(provider.create(settings), settings, SPEC, 2)
    reply = runnable.invoke("question")
    assert reply.content == "A" and reply.usage_metadata["output_tokens"] == 1
    top = reply.response_metadata["logprobs"]["content"][0]["top_logprobs"]
    assert [(t["token"], round(math.exp(t["logprob"]), 6)) for t in top] == [("A", 0.5), ("B", 0.3)]
    for bad in ("0.7,0.6", "-0.1", "x"):
        with pytest.raises(UsageError, match="scripted option logprobs"):
            provider.create(ProviderSettings(options={"logprobs": bad}))


def test_the_openai_provider_declares_log_probabilities_per_server():
    from llm_explorer_openai import OpenAIProvider

    provider = OpenAIProvider()
    local = ProviderSettings(base_url="http://127.0.0.1:1/v1")
    assert provider.logprobs_unsupported(local) is None
    assert provider.logprobs_unsupported(ProviderSettings(options={"server": "vllm"}, base_url="http://x")) is None
    ollama = ProviderSettings(options={"server": "ollama"}, base_url="http://x")
    assert provider.logprobs_unsupported(ollama) == ("provider 'openai' returns no token log-probabilities with "
                                                     "server 'ollama' (--option logprobs=on if it does)")
    assert provider.logprobs_unsupported(ProviderSettings(options={"server": "ollama", "logprobs": "on"},
                                                          base_url="http://x")) is None
    assert "--option logprobs=off" in provider.logprobs_unsupported(
        ProviderSettings(options={"logprobs": "off"}, base_url="http://x"))
    with pytest.raises(UsageError, match="logprobs must be on or off"):
        provider.create(ProviderSettings(options={"logprobs": "maybe"}, base_url="http://x"))
    bound = provider.logprob_model(provider.create(local), local, SPEC, 7)
    assert bound.kwargs == {"logprobs": True, "top_logprobs": 7, "extra_body": {"max_tokens": 1}}


def test_the_local_provider_binds_log_probabilities_in_both_modes():
    from llm_explorer_llamacpp import LlamaCppChatModel, LocalProvider

    provider = LocalProvider()
    assert provider.supports_logprobs and provider.logprobs_unsupported(ProviderSettings()) is None
    in_process = LlamaCppChatModel(model_path="unused.gguf")
    assert provider.logprob_model(in_process, ProviderSettings(), SPEC, 5).kwargs == {
        "logprobs": True, "top_logprobs": 5, "max_tokens": 1}


async def test_cached_replies_keep_their_log_probabilities_for_replay(tmp_path):
    cache = tmp_path / "responses.sqlite"
    live = ExplorerConfig(prompt_set="paper-logprobs", proposer="token-probabilities", floor=0.0,
                          provider_options={"logprobs": "0.5,0.3,0.1"}, response_cache=cache)
    spec = ActionSpec.discrete(3)
    with open_explorer(live, "CartPole-v1", spec) as explorer:
        recorded = explorer.runtime.submit_and_wait(RECORD, timeout=30)
    replay = live.model_copy(update={"replay": True})
    with open_explorer(replay, "CartPole-v1", spec) as explorer:
        replayed = explorer.runtime.submit_and_wait(RECORD, timeout=30)
    assert isinstance(replayed, ExplorationUpdate) and replayed.values == recorded.values
    assert replayed.provenance.notes["proposer"]["valid_mass"] == pytest.approx(0.9)


# --------------------------------------------------------------------------- the command line


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LLM_EXPLORER_BLOCK_PLUGINS": "local,openai"}
    return subprocess.run([sys.executable, "-m", "explorer_pipeline", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def test_train_with_token_probabilities_and_no_log_probabilities_exits_2_with_one_line(tmp_path):
    result = run_cli("train", "--env", "CartPole-v1", "--algo", "dqn", "--steps", "200", "--provider", "scripted",
                     "--prompt-set", "paper-logprobs", "--set", "explorer.proposer.name=token-probabilities",
                     "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: proposer 'token-probabilities'")
    assert "provider 'scripted' returns token log-probabilities only with --option logprobs=" in result.stderr
    assert not (tmp_path / "run").exists()


def test_train_with_auto_records_the_fallback_in_updates_jsonl(tmp_path):
    from click.testing import CliRunner

    from tianshou_integration.cli import train

    out = tmp_path / "run"
    result = CliRunner().invoke(train, ["--env", "CartPole-v1", "--algo", "dqn", "--steps", "300", "--provider",
                                        "scripted", "--prompt-set", "paper-logprobs", "--set",
                                        "explorer.proposer.name=auto", "--eval-episodes", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (out / "updates.jsonl").read_text().splitlines() if line.strip()]
    updates = [line for line in lines if line["source"] == "llm"]
    assert updates and all(u["notes"]["proposer"]["requested"] == "auto" for u in updates)
    assert all("--option logprobs=" in u["notes"]["proposer"]["fallback"] for u in updates)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["explorer"]["stages"]["proposer"]["name"] == "auto"
