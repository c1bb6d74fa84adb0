"""DefaultValidator: the rules of DESIGN.md ("the collector only ever sees valid updates")."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from explorer_pipeline.default_plugins.validation import DefaultValidator
from explorer_pipeline.errors import ValidationRejected
from explorer_pipeline.types import ActionSpec


def assert_distribution(out, n):
    assert isinstance(out, tuple) and len(out) == n
    assert all(math.isfinite(p) and p >= 0.0 for p in out), out
    assert math.fsum(out) == pytest.approx(1.0, abs=1e-9)


# --------------------------------------------------------------------------- discrete


def test_renormalises_to_one(discrete_spec):
    out = DefaultValidator(floor=0.0).validate([1, 2, 3, 4], discrete_spec)
    assert_distribution(out, 4)
    assert out == pytest.approx((0.1, 0.2, 0.3, 0.4))


def test_already_normalised_input_is_kept_without_floor(discrete_spec):
    out = DefaultValidator(floor=0.0).validate([0.1, 0.2, 0.3, 0.4], discrete_spec)
    assert out == pytest.approx((0.1, 0.2, 0.3, 0.4))


@pytest.mark.parametrize("floor", [0.01, 0.05, 0.2, 0.5])
def test_uniform_floor_keeps_every_action_explorable(floor, discrete_spec):
    out = DefaultValidator(floor=floor).validate([1.0, 0.0, 0.0, 0.0], discrete_spec)
    assert_distribution(out, 4)
    assert min(out) == pytest.approx(floor / 4)
    assert all(p >= floor / 4 - 1e-15 for p in out)
    assert out[0] == pytest.approx(1.0 - floor + floor / 4)


def test_floor_one_gives_uniform(discrete_spec):
    assert DefaultValidator(floor=1.0).validate([9, 1, 0, 0], discrete_spec) == pytest.approx((0.25,) * 4)


def test_mask_zeroes_illegal_actions_and_spreads_floor_over_legal_only(discrete_spec):
    validator = DefaultValidator(floor=0.2, legal=[True, False, True, True])
    out = validator.validate([0.7, 0.9, 0.3, 0.0], discrete_spec)
    assert_distribution(out, 4)
    assert out[1] == 0.0  # exactly zero, not just small
    assert min(out[0], out[2], out[3]) == pytest.approx(0.2 / 3)
    assert out[0] == pytest.approx(0.8 * 0.7 + 0.2 / 3)
    assert out[2] == pytest.approx(0.8 * 0.3 + 0.2 / 3)


def test_mask_with_all_mass_on_illegal_actions_is_rejected(discrete_spec):
    with pytest.raises(ValidationRejected) as info:
        DefaultValidator(legal=[True, False, True, True]).validate([0, 5, 0, 0], discrete_spec)
    assert info.value.reason == "all_zero"


def test_mask_of_the_wrong_length_is_rejected(discrete_spec):
    with pytest.raises(ValidationRejected) as info:
        DefaultValidator(legal=[True, True]).validate([1, 1, 1, 1], discrete_spec)
    assert info.value.reason == "wrong_length"


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ([0.5, -0.1, 0.3, 0.3], "negative"),
        ([0.0, 0.0, 0.0, 0.0], "all_zero"),
        ([math.nan, 0.2, 0.3, 0.5], "non_finite"),
        ([math.inf, 0.2, 0.3, 0.5], "non_finite"),
        ([-math.inf, 0.2, 0.3, 0.5], "non_finite"),
        ([0.5, 0.5], "wrong_length"),
        ([0.2] * 5, "wrong_length"),
        ([], "wrong_length"),
    ],
)
def test_discrete_rejections_carry_a_reason(values, reason, discrete_spec):
    with pytest.raises(ValidationRejected) as info:
        DefaultValidator().validate(values, discrete_spec)
    assert info.value.reason == reason
    assert str(info.value).startswith(reason + ":")
    assert info.value.detail


@pytest.mark.parametrize("values", [[1e308] * 4, [1e308, 0, 0, 0], [1e308, 1e308, 1e-308, 5e-324], [5e-324, 0, 0, 0]])
def test_extreme_finite_values_still_give_a_valid_distribution(values, discrete_spec):
    out = DefaultValidator().validate(values, discrete_spec)
    assert_distribution(out, 4)
    assert int(np.argmax(out)) == int(np.argmax(values))


def test_negative_zero_is_not_negative(discrete_spec):
    out = DefaultValidator(floor=0.0).validate([-0.0, 1.0, 0.0, 0.0], discrete_spec)
    assert out == pytest.approx((0.0, 1.0, 0.0, 0.0))


def test_single_action_space():
    assert DefaultValidator().validate([3.0], ActionSpec.discrete(1)) == (1.0,)


# --------------------------------------------------------------------------- continuous


@pytest.mark.parametrize(
    ("value", "max_bias", "expected"),
    [(-0.3, 0.5, -0.3), (0.3, 0.5, 0.3), (-3.0, 0.5, -0.5), (3.0, 0.5, 0.5), (-0.3, 0.2, -0.2),
     (1e308, 0.5, 0.5), (-1e308, 1.0, -1.0), (0.0, 0.5, 0.0)],
)
def test_bias_is_clipped_and_keeps_its_sign(value, max_bias, expected, continuous_spec):
    assert DefaultValidator(max_bias=max_bias).validate([value], continuous_spec) == (expected,)


def test_bias_of_several_dimensions_is_clipped_per_dimension():
    spec = ActionSpec.continuous([-1.0, -1.0, -1.0], [1.0, 1.0, 1.0])
    assert DefaultValidator(max_bias=0.5).validate([-0.9, 0.1, 0.7], spec) == (-0.5, 0.1, 0.5)


def test_negative_biases_are_not_rejected(continuous_spec):
    # "negative" is a discrete rule only
    assert DefaultValidator().validate([-0.1], continuous_spec) == (-0.1,)


@pytest.mark.parametrize(("values", "reason"), [([math.nan], "non_finite"), ([math.inf], "non_finite"),
                                                ([0.1, 0.2], "wrong_length"), ([], "wrong_length")])
def test_continuous_rejections(values, reason, continuous_spec):
    with pytest.raises(ValidationRejected) as info:
        DefaultValidator().validate(values, continuous_spec)
    assert info.value.reason == reason


# --------------------------------------------------------------------------- constructor


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"floor": -0.1}, "floor must be in [0, 1], got -0.1"),
        ({"floor": 1.5}, "floor must be in [0, 1], got 1.5"),
        ({"floor": math.nan}, "floor must be in [0, 1], got nan"),
        ({"max_bias": 0.0}, "max_bias must be in (0, 2], got 0.0"),
        ({"max_bias": -0.5}, "max_bias must be in (0, 2], got -0.5"),
        ({"max_bias": 3.0}, "max_bias must be in (0, 2], got 3.0"),
        ({"max_bias": math.inf}, "max_bias must be in (0, 2], got inf"),
    ],
)
def test_constructor_rejects_bad_settings_with_a_clear_message(kwargs, message):
    with pytest.raises(ValueError) as info:
        DefaultValidator(**kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize("kwargs", [{"floor": 0.0}, {"floor": 1.0}, {"max_bias": 2.0}, {"max_bias": 1e-6}])
def test_constructor_accepts_the_bounds(kwargs):
    DefaultValidator(**kwargs)


# --------------------------------------------------------------------------- properties

non_negative = st.floats(min_value=0.0, max_value=1e308, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.data(), n=st.integers(1, 16), floor=st.floats(0.0, 1.0))
def test_any_valid_input_gives_a_valid_distribution(data, n, floor):
    values = data.draw(st.lists(non_negative, min_size=n, max_size=n), label="values")
    assume(any(v > 0 for v in values))
    spec = ActionSpec.discrete(n)
    out = DefaultValidator(floor=floor).validate(values, spec)
    assert_distribution(out, n)
    assert all(p >= floor / n * (1 - 1e-12) for p in out)
    if floor < 1.0:
        # the largest input stays (one of) the largest outputs, and order is never inverted
        assert out[int(np.argmax(values))] == max(out)
        for i in range(n):
            for j in range(n):
                if values[i] > values[j]:
                    assert out[i] >= out[j]


@settings(max_examples=200, deadline=None, database=None)
@given(data=st.data(), n=st.integers(1, 8), floor=st.floats(0.0, 0.99))
def test_masked_outputs_are_valid(data, n, floor):
    values = data.draw(st.lists(non_negative, min_size=n, max_size=n), label="values")
    legal = data.draw(st.lists(st.booleans(), min_size=n, max_size=n), label="legal")
    assume(any(v > 0 and ok for v, ok in zip(values, legal, strict=True)))
    out = DefaultValidator(floor=floor, legal=legal).validate(values, ActionSpec.discrete(n))
    assert_distribution(out, n)
    assert all(p == 0.0 for p, ok in zip(out, legal, strict=True) if not ok)
    assert all(p >= floor / sum(legal) * (1 - 1e-12) for p, ok in zip(out, legal, strict=True) if ok)


@settings(max_examples=200, deadline=None, database=None)
@given(data=st.data(), n=st.integers(1, 6), max_bias=st.floats(1e-3, 2.0))
def test_any_finite_bias_is_clipped_with_its_sign(data, n, max_bias):
    values = data.draw(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=n, max_size=n))
    spec = ActionSpec.continuous([-1.0] * n, [1.0] * n)
    out = DefaultValidator(max_bias=max_bias).validate(values, spec)
    assert len(out) == n
    for v, o in zip(values, out, strict=True):
        assert abs(o) <= max_bias
        assert o == v or abs(o) == max_bias
        assert (o > 0) == (v > 0) and (o < 0) == (v < 0)
