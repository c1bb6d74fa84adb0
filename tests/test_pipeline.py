"""ExplorationPipeline with fake chat models: stages, retries with re-prompt, and bad input."""

from __future__ import annotations

import asyncio
import math

import pytest

from explorer_pipeline import ActionSpec, EpisodeRecord, ExplorationCache, ExplorationUpdate, ExplorerRuntime
from explorer_pipeline.session import ExplorerConfig
from explorer_pipeline.types import RequestFailure

from .fakes import ReplayChatModel
from .pipelines import make_context, make_models, pipeline_for

DISCRETE = ActionSpec.discrete(3, ["left", "stay", "right"])
CONTINUOUS = ActionSpec.continuous([-2.0], [2.0], ["torque"])
RECORD = EpisodeRecord(12.5, 40, "Test-v0", 7, tuple([0, 1, 2, 2] * 10))
ANALYSIS = "The agent mostly pushes right; it should try staying still."


def make_pipeline(replies, *, spec=DISCRETE, prompt_set="paper", attempts=3, transient=(ConnectionError,),
                  call_timeout_s=5.0, analysis=None, **stages):
    """A pipeline of the stages ``stages`` choose (``proposer={...}``), the built-in ones otherwise."""
    analysis_model = ReplayChatModel(script=analysis or [ANALYSIS])
    proposal_model = ReplayChatModel(script=list(replies))
    models = make_models({"analysis": analysis_model, "proposal": proposal_model}, transient=transient,
                         call_timeout_s=call_timeout_s)
    config = ExplorerConfig(prompt_set=prompt_set, sample_m=8, floor=0.0, max_bias=0.5, max_attempts=attempts,
                            **stages)
    pipeline = pipeline_for(make_context(spec, prompt_set, models=models, config=config))
    return pipeline, analysis_model, proposal_model


async def test_two_stage_update_has_provenance():
    pipeline, analysis_model, proposal_model = make_pipeline(['{"probabilities": [0.2, 0.3, 0.5]}'])
    update = await pipeline.handle(RECORD, [RECORD], version=4)
    assert isinstance(update, ExplorationUpdate)
    assert update.version == 4 and update.kind == "distribution" and update.source == "llm"
    assert update.values == pytest.approx((0.2, 0.3, 0.5))
    p = update.provenance
    assert (p.source_episode, p.provider, p.model, p.prompt_set, p.attempts) == (7, "fake", "fake-1", "paper", 2)
    assert p.template_hash == pipeline.prompt_set.template_hash()
    assert p.tokens["analysis"].input_tokens == 10 and p.tokens["proposal"].output_tokens == 5
    # stage 2 saw stage 1's analysis; stage 1 saw the episode data
    assert ANALYSIS in proposal_model.calls[0][-1].content
    assert "12.50" in analysis_model.calls[0][-1].content and "A test task." in analysis_model.calls[0][-1].content


async def test_parse_error_reprompts_with_the_error():
    pipeline, _, proposal_model = make_pipeline(["I think action 2 is best!", '{"probabilities": [0, 0, 1]}'])
    update = await pipeline.handle(RECORD, [RECORD], version=1)
    assert isinstance(update, ExplorationUpdate)
    assert update.provenance.attempts == 3  # analysis + two proposals
    retry_messages = proposal_model.calls[1]
    assert retry_messages[-2].content == "I think action 2 is best!"
    assert "could not be used" in retry_messages[-1].content and "expected 3 numbers" in retry_messages[-1].content


async def test_transient_errors_are_retried_others_are_not():
    pipeline, _, proposal_model = make_pipeline([ConnectionError("reset"), '{"probabilities": [1, 1, 1]}'])
    assert isinstance(await pipeline.handle(RECORD, [], version=1), ExplorationUpdate)
    assert len(proposal_model.calls) == 2

    pipeline, _, proposal_model = make_pipeline([PermissionError("401 bad key"), '{"probabilities": [1, 1, 1]}'])
    failure = await pipeline.handle(RECORD, [], version=1)
    assert isinstance(failure, RequestFailure) and failure.reason == "provider_error"
    assert "PermissionError" in failure.detail and len(proposal_model.calls) == 1


async def test_attempts_are_bounded():
    pipeline, _, proposal_model = make_pipeline(["no numbers here"], attempts=3)
    failure = await pipeline.handle(RECORD, [], version=1)
    assert failure.reason == "parse_error" and len(proposal_model.calls) == 3


async def test_a_slow_call_times_out_and_is_retried():
    pipeline, _, proposal_model = make_pipeline(['{"probabilities": [1, 2, 3]}'], call_timeout_s=0.05, attempts=2)
    proposal_model.delay_s = 1.0
    failure = await pipeline.handle(RECORD, [], version=1)
    assert failure.reason == "provider_error" and "TimeoutError" in failure.detail
    assert len(proposal_model.calls) == 0  # both attempts were cut off before answering


BAD_REPLIES = {
    "malformed": ("{probabilities: [0.2, 0.3", "parse_error"),
    "truncated": ('{"probabilities": [0.2, 0.3', "parse_error"),
    "nan": ('{"probabilities": [NaN, 0.5, 0.5]}', "validation:non_finite"),
    "inf": ('{"probabilities": [Infinity, 0.5, 0.5]}', "validation:non_finite"),
    "negative": ('{"probabilities": [-0.2, 0.6, 0.6]}', "validation:negative"),
    "wrong_length": ('{"probabilities": [0.5, 0.5]}', "parse_error"),
    "all_zero": ('{"probabilities": [0, 0, 0]}', "validation:all_zero"),
    "empty": ("", "parse_error"),
    "huge": ("9" * 200_000, "parse_error"),
}


@pytest.mark.parametrize("case", sorted(BAD_REPLIES))
async def test_bad_replies_never_reach_the_cache(case):
    reply, reason = BAD_REPLIES[case]
    pipeline, _, _ = make_pipeline([reply], attempts=2)
    cache = ExplorationCache(DISCRETE)
    previous = cache.publish(ExplorationUpdate(1, "distribution", (0.1, 0.1, 0.8)))
    runtime = ExplorerRuntime(pipeline, cache)
    with runtime:
        outcome = await asyncio.to_thread(runtime.submit_and_wait, RECORD, 10)
    assert isinstance(outcome, RequestFailure), outcome
    assert outcome.reason == reason
    assert cache.current() is previous
    assert runtime.stats.failures[reason] == 1


async def test_huge_but_finite_values_are_normalised():
    pipeline, _, _ = make_pipeline(['{"probabilities": [1e300, 1e300, 0]}'])
    update = await pipeline.handle(RECORD, [], version=1)
    assert update.values == pytest.approx((0.5, 0.5, 0.0))
    assert all(math.isfinite(v) for v in update.values)


async def test_continuous_bias_keeps_sign_and_is_clipped():
    pipeline, _, proposal_model = make_pipeline(['{"bias": [-0.9]}'], spec=CONTINUOUS)
    record = EpisodeRecord(-300.0, 200, "Test-v0", 3, tuple((0.1,) for _ in range(200)))
    update = await pipeline.handle(record, [], version=1)
    assert update.kind == "bias" and update.values == (-0.5,)
    assert '"bias"' in proposal_model.calls[0][-1].content


async def test_single_stage_makes_one_call():
    pipeline, analysis_model, proposal_model = make_pipeline(['{"probabilities": [1, 0, 0]}'],
                                                             prompt_set="single-stage")
    update = await pipeline.handle(RECORD, [RECORD], version=1)
    assert isinstance(update, ExplorationUpdate)
    assert analysis_model.calls == [] and len(proposal_model.calls) == 1
    assert "12.50" in proposal_model.calls[0][-1].content


async def test_name_only_hides_the_description():
    pipeline, analysis_model, _ = make_pipeline(['{"probabilities": [1, 0, 0]}'], prompt_set="name-only")
    await pipeline.handle(RECORD, [], version=1)
    prompt = analysis_model.calls[0][-1].content
    assert "A test task." not in prompt and "The task is Test." in prompt


async def test_think_blocks_in_analysis_are_dropped():
    pipeline, _, proposal_model = make_pipeline(['{"probabilities": [1, 0, 0]}'],
                                                analysis=["<think>secret reasoning</think>Try action 0."])
    update = await pipeline.handle(RECORD, [], version=1)
    assert update.provenance.analysis == "Try action 0."
    assert "secret reasoning" not in proposal_model.calls[0][-1].content
