"""Control arms: shuffled (derangement), random (entropy-matched), frozen (first answer only)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from explorer_pipeline.controls import Control, entropy, entropy_matched, make_control
from explorer_pipeline.default_plugins.scripted_model import ScriptedChatModel, ScriptedProvider
from explorer_pipeline.pipeline import ExplorationPipeline
from explorer_pipeline.providers import ProviderSettings
from explorer_pipeline.session import ExplorerConfig
from explorer_pipeline.types import ActionSpec, EpisodeRecord, ExplorationUpdate

from .pipelines import make_context, make_models, pipeline_for, prompt_set


def control(kind, spec, seed=0, **options) -> Control:
    return Control(kind, spec, np.random.default_rng(seed), options)


def make_pipeline(set_name, spec, model: ScriptedChatModel | None = None, seed=0) -> ExplorationPipeline:
    provider, settings = ScriptedProvider(), ProviderSettings()
    model = model or ScriptedChatModel()
    runnables = {stage: provider.stage_model(model, stage, settings, spec) for stage in ("analysis", "proposal")}
    models = make_models(runnables, provider="scripted", model="scripted")
    config = ExplorerConfig(prompt_set=set_name, sample_m=8, floor=0.0, max_attempts=1)
    return pipeline_for(make_context(spec, set_name, models=models, config=config, seed=seed))


def episode(i=0) -> EpisodeRecord:
    return EpisodeRecord(10.0 + i, 4, "Test-v0", i, (0, 1, 1, 0))


# --------------------------------------------------------------------------- make_control


def test_make_control_follows_the_prompt_set(discrete_spec):
    rng = np.random.default_rng(0)
    assert make_control(prompt_set("paper"), discrete_spec, rng) is None
    for kind in ("shuffled", "random", "frozen"):
        made = make_control(prompt_set(kind), discrete_spec, rng)
        assert made is not None and made.kind == kind
    assert make_control(prompt_set("random"), discrete_spec, rng).options["target_entropy"] == 0.8


# --------------------------------------------------------------------------- shuffled


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8, 18])
@pytest.mark.parametrize("seed", range(5))
def test_shuffled_permutation_is_a_derangement(n, seed):
    c = control("shuffled", ActionSpec.discrete(n), seed)
    perm = c.permutation
    assert sorted(perm.tolist()) == list(range(n))
    assert not np.any(perm == np.arange(n))


@pytest.mark.parametrize("n", [2, 3, 6])
def test_shuffled_moves_every_probability(n):
    c = control("shuffled", ActionSpec.discrete(n), seed=1)
    values = tuple(float(i + 1) / (n * (n + 1) / 2) for i in range(n))  # all distinct
    out = c.transform(values)
    assert sorted(out) == sorted(values)
    assert all(o != v for o, v in zip(out, values, strict=True))
    assert out == tuple(values[i] for i in c.permutation)


def test_shuffled_permutation_is_fixed_for_the_run(discrete_spec):
    c = control("shuffled", discrete_spec, seed=3)
    values = (0.1, 0.2, 0.3, 0.4)
    assert c.transform(values) == c.transform(values)


def test_shuffled_depends_on_the_seed_and_is_reproducible():
    spec = ActionSpec.discrete(6)
    assert np.array_equal(control("shuffled", spec, 7).permutation, control("shuffled", spec, 7).permutation)
    perms = {tuple(control("shuffled", spec, seed).permutation) for seed in range(10)}
    assert len(perms) > 1


def test_shuffled_negates_a_one_dimensional_bias(continuous_spec):
    c = control("shuffled", continuous_spec)
    assert c.transform((0.3,)) == (-0.3,)
    assert c.transform((-0.25,)) == (0.25,)


def test_shuffled_permutes_a_multi_dimensional_bias():
    c = control("shuffled", ActionSpec.continuous([-1.0, -1.0], [1.0, 1.0]))
    assert c.transform((0.3, -0.1)) == (-0.1, 0.3)


def test_shuffled_single_discrete_action_is_unchanged():
    assert control("shuffled", ActionSpec.discrete(1)).transform((1.0,)) == (1.0,)


def test_shuffled_never_skips_the_llm(discrete_spec):
    c = control("shuffled", discrete_spec)
    c.transform((0.1, 0.2, 0.3, 0.4))
    assert not c.skip_llm()


async def test_shuffled_arm_in_the_pipeline():
    spec = ActionSpec.discrete(3)
    pipeline = make_pipeline("shuffled", spec, ScriptedChatModel(reply='{"probabilities": [0.7, 0.2, 0.1]}'))
    update = await pipeline.handle(episode(), [episode()], version=1)
    assert isinstance(update, ExplorationUpdate) and update.source == "control"
    expected = tuple((0.7, 0.2, 0.1)[i] for i in pipeline.control.permutation)
    assert update.values == pytest.approx(expected)
    assert update.values[0] != pytest.approx(0.7)


# --------------------------------------------------------------------------- random


@pytest.mark.parametrize("n", [2, 3, 4, 6, 18])
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.8, 0.95])
def test_random_arm_matches_the_target_entropy(n, fraction):
    c = control("random", ActionSpec.discrete(n), seed=n, target_entropy=fraction)
    assert c.skip_llm()
    for _ in range(3):
        values = np.asarray(c.values())
        assert values.shape == (n,)
        assert np.all(np.isfinite(values)) and np.all(values >= 0)
        assert values.sum() == pytest.approx(1.0, abs=1e-9)
        assert abs(entropy(values) - fraction * math.log(n)) <= 1e-6


def test_random_arm_default_target_is_eight_tenths(discrete_spec):
    values = np.asarray(control("random", discrete_spec).values())
    assert abs(entropy(values) - 0.8 * math.log(4)) <= 1e-6


def test_random_arm_draws_a_new_distribution_each_time_reproducibly(discrete_spec):
    a, b = control("random", discrete_spec, seed=5), control("random", discrete_spec, seed=5)
    first, second = a.values(), a.values()
    assert first != second
    assert (first, second) == (b.values(), b.values())


def test_random_arm_with_full_entropy_is_uniform(discrete_spec):
    values = np.asarray(control("random", discrete_spec, target_entropy=1.0).values())
    assert values == pytest.approx(np.full(4, 0.25), abs=1e-3)


def test_random_arm_bias_has_the_configured_size():
    spec = ActionSpec.continuous([-1.0] * 3, [1.0] * 3)
    c = control("random", spec, seed=2, bias_scale=0.3)
    draws = [c.values() for _ in range(20)]
    assert all(len(d) == 3 and all(abs(v) == pytest.approx(0.3) for v in d) for d in draws)
    assert {v > 0 for d in draws for v in d} == {True, False}  # both signs occur


def test_entropy_matched_single_action():
    assert entropy_matched(np.array([0.3]), 0.5).tolist() == [1.0]


async def test_random_arm_in_the_pipeline_never_calls_the_llm(discrete_spec):
    model = ScriptedChatModel()
    pipeline = make_pipeline("random", discrete_spec, model)
    update = await pipeline.handle(episode(), [episode()], version=1)
    assert isinstance(update, ExplorationUpdate) and update.source == "control"
    assert model.calls == 0 and update.provenance.attempts == 0
    assert abs(entropy(update.array) - 0.8 * math.log(4)) <= 1e-6


# --------------------------------------------------------------------------- frozen


def test_frozen_control_directly(discrete_spec):
    c = control("frozen", discrete_spec)
    assert not c.skip_llm()
    assert c.transform((0.1, 0.2, 0.3, 0.4)) == (0.1, 0.2, 0.3, 0.4)
    assert c.skip_llm()
    assert c.values() is None
    assert c.frozen == (0.1, 0.2, 0.3, 0.4)


async def test_frozen_keeps_the_first_answer(discrete_spec):
    model = ScriptedChatModel()  # rotating answers: each call would give a different distribution
    pipeline = make_pipeline("frozen", discrete_spec, model)
    first = await pipeline.handle(episode(0), [episode(0)], version=1)
    assert isinstance(first, ExplorationUpdate) and first.source == "control"
    calls = model.calls
    for i in range(1, 4):
        assert await pipeline.handle(episode(i), [episode(i)], version=2) is None
    assert model.calls == calls  # no more LLM calls once frozen


async def test_frozen_waits_for_the_first_valid_answer(discrete_spec):
    model = ScriptedChatModel(replies=["no idea", "no idea", '{"probabilities": [0.4, 0.3, 0.2, 0.1]}'])
    pipeline = make_pipeline("frozen", discrete_spec, model)
    outcomes = [await pipeline.handle(episode(i), [episode(i)], version=1) for i in range(3)]
    assert [o.reason for o in outcomes[:2]] == ["parse_error", "parse_error"]
    assert isinstance(outcomes[2], ExplorationUpdate)
    assert outcomes[2].values == pytest.approx((0.4, 0.3, 0.2, 0.1))
    assert pipeline.control.frozen == outcomes[2].values
    assert await pipeline.handle(episode(3), [episode(3)], version=2) is None
