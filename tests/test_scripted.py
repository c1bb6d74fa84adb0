"""The scripted provider: fixed reply, replies file, rotating default, latency, option errors."""

from __future__ import annotations

import json

import pytest

from explorer_pipeline.default_plugins import scripted_model as scripted_module
from explorer_pipeline.default_plugins.parsing import DefaultParser
from explorer_pipeline.default_plugins.scripted_model import ScriptedChatModel, ScriptedProvider
from explorer_pipeline.errors import UsageError
from explorer_pipeline.providers import ProviderSettings
from explorer_pipeline.types import ActionSpec

PROVIDER = ScriptedProvider()
PROMPT = "Episode 3 returned 12.0."


def create(**options) -> ScriptedChatModel:
    return PROVIDER.create(ProviderSettings(options={k: str(v) for k, v in options.items()}))


def stages(model, spec):
    settings = ProviderSettings()
    return (PROVIDER.stage_model(model, "analysis", settings, spec),
            PROVIDER.stage_model(model, "proposal", settings, spec))


def two_stage_replies(model, spec, requests: int) -> list[str]:
    """What stage 2 answers over ``requests`` two-stage requests (analysis call, then proposal call)."""
    analysis, proposal = stages(model, spec)
    out = []
    for _ in range(requests):
        analysis.invoke(PROMPT)
        out.append(proposal.invoke(PROMPT).content)
    return out


# --------------------------------------------------------------------------- provider contract


def test_provider_declares_itself():
    assert PROVIDER.name == "scripted"
    assert PROVIDER.structured_output_methods == ("none",)
    assert PROVIDER.model_name(ProviderSettings(model="whatever")) == "scripted"


def test_answers_carry_usage_and_model_name(discrete_spec):
    _, proposal = stages(create(), discrete_spec)
    reply = proposal.invoke(PROMPT)
    assert reply.usage_metadata["input_tokens"] == len(PROMPT.split())
    assert reply.usage_metadata["output_tokens"] >= 1
    assert reply.response_metadata["model_name"] == "scripted"


# --------------------------------------------------------------------------- fixed reply


def test_fixed_reply_for_stage_two_and_analysis_for_stage_one(discrete_spec):
    model = create(reply='{"probabilities": [1, 0, 0, 0]}', analysis="Explore action 0.")
    analysis, proposal = stages(model, discrete_spec)
    assert analysis.invoke(PROMPT).content == "Explore action 0."
    assert [proposal.invoke(PROMPT).content for _ in range(3)] == ['{"probabilities": [1, 0, 0, 0]}'] * 3


async def test_fixed_reply_async(discrete_spec):
    _, proposal = stages(create(reply="[0.25, 0.25, 0.25, 0.25]"), discrete_spec)
    assert (await proposal.ainvoke(PROMPT)).content == "[0.25, 0.25, 0.25, 0.25]"


def test_default_analysis_text(discrete_spec):
    analysis, _ = stages(create(), discrete_spec)
    assert analysis.invoke(PROMPT).content == ScriptedChatModel().analysis


# --------------------------------------------------------------------------- replies file


def test_replies_file_is_cycled_line_by_line(tmp_path, discrete_spec):
    path = tmp_path / "replies.txt"
    path.write_text("[1, 0, 0, 0]\n\n[0, 1, 0, 0]\n   \n[0, 0, 1, 0]\n")
    model = create(file=path)
    assert model.replies == ["[1, 0, 0, 0]", "[0, 1, 0, 0]", "[0, 0, 1, 0]"]
    _, proposal = stages(model, discrete_spec)
    assert [proposal.invoke(PROMPT).content for _ in range(5)] == [
        "[1, 0, 0, 0]", "[0, 1, 0, 0]", "[0, 0, 1, 0]", "[1, 0, 0, 0]", "[0, 1, 0, 0]"]


def test_replies_file_wins_over_a_fixed_reply(tmp_path, discrete_spec):
    path = tmp_path / "replies.txt"
    path.write_text("from the file\n")
    _, proposal = stages(create(file=path, reply="fixed"), discrete_spec)
    assert proposal.invoke(PROMPT).content == "from the file"


def test_replies_file_is_cycled_with_a_two_stage_prompt_set(tmp_path, discrete_spec):
    path = tmp_path / "replies.txt"
    path.write_text("A\nB\n")
    assert two_stage_replies(create(file=path), discrete_spec, 4) == ["A", "B", "A", "B"]


# --------------------------------------------------------------------------- rotating default


def test_rotating_default_emphasises_each_action_in_turn():
    spec = ActionSpec.discrete(3)
    _, proposal = stages(create(), spec)
    parsed = [DefaultParser().parse(proposal.invoke(PROMPT).content, spec) for _ in range(4)]
    assert [max(range(3), key=p.__getitem__) for p in parsed] == [0, 1, 2, 0]
    assert all(sum(p) == pytest.approx(1.0) for p in parsed)


def test_rotating_default_bias_alternates_sign(continuous_spec):
    _, proposal = stages(create(), continuous_spec)
    replies = [json.loads(proposal.invoke(PROMPT).content)["bias"] for _ in range(3)]
    assert replies == [[0.2], [-0.2], [0.2]]


def test_rotating_default_single_action():
    _, proposal = stages(create(), ActionSpec.discrete(1))
    assert json.loads(proposal.invoke(PROMPT).content) == {"probabilities": [1.0]}


def test_rotating_default_differs_between_calls_with_two_actions():
    spec = ActionSpec.discrete(2)
    _, proposal = stages(create(), spec)
    first, second = (DefaultParser().parse(proposal.invoke(PROMPT).content, spec) for _ in range(2))
    assert first != second


def test_rotating_default_alternates_with_a_two_stage_prompt_set(continuous_spec):
    replies = [json.loads(r)["bias"] for r in two_stage_replies(create(), continuous_spec, 3)]
    assert replies == [[0.2], [-0.2], [0.2]]


# --------------------------------------------------------------------------- latency


def test_latency_option_is_parsed():
    assert create(latency="0.25").latency_s == 0.25
    assert create().latency_s == 0.0


async def test_latency_is_awaited_before_each_async_answer(monkeypatch, discrete_spec):
    slept: list[float] = []

    async def fake_sleep(seconds):
        slept.append(seconds)

    monkeypatch.setattr(scripted_module.asyncio, "sleep", fake_sleep)
    _, proposal = stages(create(latency="1.5"), discrete_spec)
    await proposal.ainvoke(PROMPT)
    await proposal.ainvoke(PROMPT)
    assert slept == [1.5, 1.5]


def test_latency_is_slept_before_each_sync_answer(monkeypatch, discrete_spec):
    slept: list[float] = []
    monkeypatch.setattr(scripted_module.time, "sleep", slept.append)
    _, proposal = stages(create(latency="0.75"), discrete_spec)
    proposal.invoke(PROMPT)
    assert slept == [0.75]


def test_no_latency_means_no_sleep(monkeypatch, discrete_spec):
    monkeypatch.setattr(scripted_module.time, "sleep", lambda s: pytest.fail("slept"))
    _, proposal = stages(create(), discrete_spec)
    proposal.invoke(PROMPT)


# --------------------------------------------------------------------------- bad options


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"repl": "x"}, r"unknown scripted provider option\(s\) \['repl'\]; allowed: reply, file, analysis, latency"),
        ({"latency": "fast"}, "latency must be a number of seconds, got 'fast'"),
        ({"latency": "-1"}, "latency must be a finite number >= 0"),
        ({"file": "/nonexistent/replies.txt"}, "cannot read scripted replies file /nonexistent/replies.txt"),
    ],
)
def test_bad_options_are_usage_errors(options, message):
    with pytest.raises(UsageError, match=message):
        create(**options)


@pytest.mark.parametrize("latency", ["nan", "inf"])
def test_non_finite_latency_is_a_usage_error(latency):
    with pytest.raises(UsageError, match="latency"):
        create(latency=latency)


def test_an_empty_replies_file_is_a_usage_error(tmp_path):
    path = tmp_path / "replies.txt"
    path.write_text("\n  \n")
    with pytest.raises(UsageError, match="replies"):
        create(file=path)
