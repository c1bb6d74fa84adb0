"""SQLiteResponseCache as the ``cache=`` of LangChain chat models: hits, misses, replay, persistence."""

from __future__ import annotations

import sqlite3

import pytest
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from explorer_pipeline.default_plugins.scripted_model import ScriptedChatModel
from explorer_pipeline.errors import ProviderError, ReplayMissError
from explorer_pipeline.response_cache import SQLiteResponseCache

PROMPT = [SystemMessage("You choose probabilities."), HumanMessage("Episode return 12.0. Answer in JSON.")]
OTHER_PROMPT = [SystemMessage("You choose probabilities."), HumanMessage("Episode return 13.0. Answer in JSON.")]


@pytest.fixture
def db(tmp_path):
    return tmp_path / "cache" / "responses.sqlite"


@pytest.fixture
def cache(db):
    cache = SQLiteResponseCache(db)
    yield cache
    cache.close()


def scripted(cache, **kwargs) -> ScriptedChatModel:
    return ScriptedChatModel(cache=cache, **kwargs)


# --------------------------------------------------------------------------- hits and misses


def test_second_identical_call_is_served_from_the_cache(cache):
    model = scripted(cache)
    first = model.invoke(PROMPT, stage="proposal", n=4, kind="distribution")
    assert model.calls == 1 and len(cache) == 1
    second = model.invoke(PROMPT, stage="proposal", n=4, kind="distribution")
    assert model.calls == 1  # not called again
    assert second.content == first.content


def test_fake_model_iterator_is_not_advanced_on_a_hit(cache):
    model = GenericFakeChatModel(messages=iter(["first", "second", "third"]), cache=cache)
    assert model.invoke(PROMPT).content == "first"
    assert model.invoke(PROMPT).content == "first"  # from the cache
    assert model.invoke(OTHER_PROMPT).content == "second"  # a miss takes the next reply, not the third
    assert len(cache) == 2


async def test_async_calls_use_the_cache(cache):
    model = scripted(cache)
    first = await model.ainvoke(PROMPT)
    second = await model.ainvoke(PROMPT)
    assert model.calls == 1 and second.content == first.content


def test_different_messages_miss(cache):
    model = scripted(cache)
    model.invoke(PROMPT)
    model.invoke(OTHER_PROMPT)
    model.invoke([*PROMPT, AIMessage("previous answer"), HumanMessage("try again")])
    assert model.calls == 3 and len(cache) == 3


@pytest.mark.parametrize(
    "kwargs",
    [{"stage": "analysis"}, {"n": 3}, {"kind": "bias"}, {"stop": ["\n"]}],
    ids=["stage", "n", "kind", "stop"],
)
def test_different_call_parameters_miss(cache, kwargs):
    model = scripted(cache)
    base = {"stage": "proposal", "n": 4, "kind": "distribution"}
    model.invoke(PROMPT, **base)
    model.invoke(PROMPT, **{**base, **kwargs})
    assert model.calls == 2


def test_bound_parameters_are_part_of_the_key(cache):
    model = scripted(cache)
    model.bind(max_tokens=100).invoke(PROMPT)
    model.bind(max_tokens=200).invoke(PROMPT)
    assert model.calls == 2
    model.bind(max_tokens=100).invoke(PROMPT)
    assert model.calls == 2


def test_different_model_configuration_misses(cache):
    scripted(cache, reply="[0.25, 0.25, 0.25, 0.25]").invoke(PROMPT)
    other = scripted(cache, reply="[1, 0, 0, 0]")
    assert other.invoke(PROMPT).content == "[1, 0, 0, 0]"
    assert other.calls == 1


def test_a_hit_keeps_content_and_usage(cache):
    model = scripted(cache)
    first = model.invoke(PROMPT)
    second = model.invoke(PROMPT)
    assert second.content == first.content
    assert second.usage_metadata["input_tokens"] == first.usage_metadata["input_tokens"]
    assert second.usage_metadata["output_tokens"] == first.usage_metadata["output_tokens"]
    assert second.response_metadata.get("model_name") == "scripted"


def test_tool_calls_round_trip(cache):
    reply = AIMessage(content="", tool_calls=[{"name": "exploration", "args": {"probabilities": [0.5, 0.5]},
                                               "id": "call_1", "type": "tool_call"}])
    model = GenericFakeChatModel(messages=iter([reply]), cache=cache)
    model.invoke(PROMPT)
    again = model.invoke(PROMPT)
    assert again.tool_calls[0]["name"] == "exploration"
    assert again.tool_calls[0]["args"] == {"probabilities": [0.5, 0.5]}


def test_clear_empties_the_cache(cache):
    model = scripted(cache)
    model.invoke(PROMPT)
    cache.clear()
    assert len(cache) == 0
    model.invoke(PROMPT)
    assert model.calls == 2


# --------------------------------------------------------------------------- replay mode


def test_replay_answers_hits_and_raises_on_a_miss(db):
    recorder = SQLiteResponseCache(db)
    recorded = scripted(recorder).invoke(PROMPT).content
    recorder.close()

    replay = SQLiteResponseCache(db, replay=True)
    try:
        model = scripted(replay)
        assert model.invoke(PROMPT).content == recorded
        with pytest.raises(ReplayMissError, match="replay mode"):
            model.invoke(OTHER_PROMPT)
        assert model.calls == 0  # the model itself is never asked in replay mode
        assert len(replay) == 1
    finally:
        replay.close()


async def test_replay_miss_raises_on_async_calls_too(db):
    replay = SQLiteResponseCache(db, replay=True)
    try:
        with pytest.raises(ReplayMissError):
            await scripted(replay).ainvoke(PROMPT)
    finally:
        replay.close()


def test_replay_miss_is_a_provider_error():
    assert issubclass(ReplayMissError, ProviderError)


def test_replay_mode_never_writes(db):
    replay = SQLiteResponseCache(db, replay=True)
    try:
        replay.update("prompt", "llm", [])
        assert len(replay) == 0
    finally:
        replay.close()


# --------------------------------------------------------------------------- persistence


def test_persisted_across_reopen(db):
    first = SQLiteResponseCache(db)
    answer = scripted(first).invoke(PROMPT, stage="proposal", n=4, kind="distribution").content
    first.close()

    reopened = SQLiteResponseCache(db)
    try:
        model = scripted(reopened)
        assert model.invoke(PROMPT, stage="proposal", n=4, kind="distribution").content == answer
        assert model.calls == 0
        assert len(reopened) == 1
    finally:
        reopened.close()


def test_the_file_is_a_plain_sqlite_database(cache, db):
    scripted(cache).invoke(PROMPT)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT key, llm, value FROM responses").fetchall()
    assert len(rows) == 1
    key, llm, value = rows[0]
    assert len(key) == 64
    assert "scripted" in llm.lower()
    assert "probabilities" in value
