"""DefaultParser: model text -> exactly ``spec.n`` numbers, or ParseError (nothing else)."""

from __future__ import annotations

import contextlib
import json
import math
import signal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from explorer_pipeline.default_plugins.parsing import DefaultParser
from explorer_pipeline.default_plugins.validation import DefaultValidator
from explorer_pipeline.errors import ParseError, ValidationRejected
from explorer_pipeline.types import ActionSpec

PARSER = DefaultParser()
VALIDATOR = DefaultValidator()
D4 = ActionSpec.discrete(4)
D2 = ActionSpec.discrete(2, ["push left", "push right"])
C1 = ActionSpec.continuous([-2.0], [2.0])
C2 = ActionSpec.continuous([-1.0, -1.0], [1.0, 1.0], ["main engine", "side engine"])
P4 = [0.1, 0.2, 0.3, 0.4]


@contextlib.contextmanager
def no_hang(seconds: float = 5.0):
    """Fail (instead of hanging the suite) when the block runs longer than ``seconds``.

    A guard, not a timing assertion: a healthy parse takes milliseconds. SIGALRM interrupts the
    regex engine, so a catastrophic backtrack becomes a test failure.
    """

    class Hang(Exception):
        pass

    def on_alarm(signum, frame):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except Hang as exc:
        pytest.fail(f"parser hangs: {exc}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------- accepted formats

ACCEPTED = [
    # JSON objects with a known key
    ('{"probabilities": [0.1, 0.2, 0.3, 0.4]}', D4, P4),
    ('{"distribution": [0.1, 0.2, 0.3, 0.4]}', D4, P4),
    ('{"Probabilities": [0.1, 0.2, 0.3, 0.4]}', D4, P4),
    ('Sure! {"probabilities": [0.1, 0.2, 0.3, 0.4]} Hope this helps.', D4, P4),
    ('{"answer": {"probabilities": [0.1, 0.2, 0.3, 0.4]}}', D4, P4),
    ('{"bias": [-0.3]}', C1, [-0.3]),
    ('{"bias": [0.25, -0.75]}', C2, [0.25, -0.75]),
    # bare JSON list
    ("[0.1, 0.2, 0.3, 0.4]", D4, P4),
    ("[[0.1, 0.2, 0.3, 0.4]]", D4, P4),
    ("[-0.3]", C1, [-0.3]),
    # index-keyed and label-keyed objects
    ('{"0": 0.1, "1": 0.2, "2": 0.3, "3": 0.4}', D4, P4),
    ('{"3": 0.4, "1": 0.2, "0": 0.1, "2": 0.3}', D4, P4),
    ('{"action 0": 0.1, "action 1": 0.2, "action 2": 0.3, "action 3": 0.4}', D4, P4),
    ('{"Push Right": 0.7, "push left": 0.3}', D2, [0.3, 0.7]),
    ('{"main engine": -0.5, "side engine": 0.5}', C2, [-0.5, 0.5]),
    # code fences
    ('```json\n{"probabilities": [0.1, 0.2, 0.3, 0.4]}\n```', D4, P4),
    ("Here you go:\n```\n[0.1, 0.2, 0.3, 0.4]\n```\nThe numbers [9, 9] were wrong.", D4, P4),
    # <think> blocks are dropped, even when they contain numbers or JSON
    ("<think>maybe [1, 2, 3, 4, 5]? no.</think>\n[0.1, 0.2, 0.3, 0.4]", D4, P4),
    ("<THINK>0: 0.9, 1: 0.1</THINK>{\"probabilities\": [0.1, 0.2, 0.3, 0.4]}", D4, P4),
    ("<think>a</think> <think>[5, 5, 5]</think> 0.1 0.2 0.3 0.4", D4, P4),
    # an unterminated think block hides only what follows it
    ('{"probabilities": [0.1, 0.2, 0.3, 0.4]} <think> wait, maybe [1, 2, 3]', D4, P4),
    # `i: p` keyed lists, 0-based and 1-based, with or without "Action" and label in parentheses
    ("0: 0.1\n1: 0.2\n2: 0.3\n3: 0.4", D4, P4),
    ("1: 0.1\n2: 0.2\n3: 0.3\n4: 0.4", D4, P4),
    ("Action 1: 0.1\nAction 2: 0.3\nAction 3: 0.2\nAction 4: 0.4", D4, [0.1, 0.3, 0.2, 0.4]),
    ("Action 0: 0.1, Action 1: 0.2, Action 2: 0.3, Action 3: 0.4", D4, P4),
    ("action 3 = 0.4; action 2 = 0.3; action 1 = 0.2; action 0 = 0.1", D4, P4),
    ("Action 1 (push left): 0.25\nAction 2 (push right): 0.75", D2, [0.25, 0.75]),
    ("Dimension 0: -0.3", C1, [-0.3]),
    ("dim 0 = -0.3, dim 1 = +0.2", C2, [-0.3, 0.2]),
    # signed numbers: a negative bias stays negative (the paper's parser lost the sign)
    ("-0.3", C1, [-0.3]),
    ("bias: -0.3", C1, [-0.3]),
    ("I would push it down: -0.3.", C1, [-0.3]),
    ("-.5", C1, [-0.5]),
    ("+0.5", C1, [0.5]),
    ("-3e-1", C1, [-0.3]),
    ("0.5, -0.25", C2, [0.5, -0.25]),
    # integers, exponents and percentages
    ("[1, 2, 3, 4]", D4, [1.0, 2.0, 3.0, 4.0]),
    ("0: 1, 1: 2, 2: 3, 3: 4", D4, [1.0, 2.0, 3.0, 4.0]),
    ('{"probabilities": [1e-1, 2E-1, 3.0e-1, .4]}', D4, P4),
    ("10%, 20%, 30%, 40%", D4, P4),
    ('["10%", "20%", "30%", "40%"]', D4, P4),
    ("Action 0: 10%\nAction 1: 20%\nAction 2: 30%\nAction 3: 40%", D4, P4),
    # one number per action, as plain text
    ("0.1 0.2 0.3 0.4", D4, P4),
]


@pytest.mark.parametrize(("text", "spec", "expected"), ACCEPTED, ids=[repr(c[0][:40]) for c in ACCEPTED])
def test_accepted_replies(text, spec, expected):
    assert PARSER.parse(text, spec) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_negative_bias_keeps_its_sign_in_every_format(continuous_spec):
    for text in ('{"bias": [-0.3]}', "[-0.3]", "-0.3", "Dimension 0: -0.3", "```\n-0.3\n```", "<think>+1</think>-0.3"):
        (value,) = PARSER.parse(text, continuous_spec)
        assert value == pytest.approx(-0.3), text


@pytest.mark.parametrize("minus", ["\u2212", "\u2012", "\u2013", "\u2014"])
def test_typographic_minus_signs_are_read_as_minus(minus, continuous_spec):
    assert PARSER.parse(f"bias: {minus}0.3", continuous_spec) == [pytest.approx(-0.3)]
    assert PARSER.parse(f'{{"bias": [{minus}0.3]}}', continuous_spec) == [pytest.approx(-0.3)]


def test_nan_is_returned_for_the_validator_to_reject(discrete_spec):
    values = PARSER.parse("[NaN, 1, 1, 1]", discrete_spec)
    assert math.isnan(values[0]) and values[1:] == [1.0, 1.0, 1.0]
    with pytest.raises(ValidationRejected) as info:
        VALIDATOR.validate(values, discrete_spec)
    assert info.value.reason == "non_finite"


# --------------------------------------------------------------------------- rejected replies

REJECTED = [
    ('{"probabilities": [0.1, 0.2, 0.3]}', D4, "expected 4"),
    ("[0.1, 0.2, 0.3, 0.2, 0.2]", D4, "expected 4"),
    ("0.1 0.2", D4, "expected 4"),
    ('{"bias": [0.1, 0.2]}', C1, "expected 1"),
    ("0.5 and 0.3", C1, "expected 1"),
    ("I cannot answer that.", D4, "expected 4"),
    ("<think> unterminated [0.1, 0.2, 0.3, 0.4]", D4, "expected 4"),
    ("{}", D4, "expected 4"),
    ('{"probabilities": [true, 1, 1, 1]}', D4, "expected 4"),
    ('{"probabilities": [null, 1, 1, 1]}', D4, "expected 4"),
]


@pytest.mark.parametrize(("text", "spec", "message"), REJECTED, ids=[repr(c[0][:40]) for c in REJECTED])
def test_rejected_replies_raise_parse_error_naming_the_expected_count(text, spec, message):
    with pytest.raises(ParseError, match=message):
        PARSER.parse(text, spec)


def test_wrong_count_message_names_expected_and_found(discrete_spec):
    with pytest.raises(ParseError) as info:
        PARSER.parse('{"probabilities": [0.5, 0.5]}', discrete_spec)
    assert "expected 4" in str(info.value) and "found 2" in str(info.value)


@pytest.mark.parametrize("text", ["", " ", "\n\t  \n", "\u3000"])
def test_empty_or_whitespace_reply(text, discrete_spec):
    with pytest.raises(ParseError, match="empty"):
        PARSER.parse(text, discrete_spec)


def test_non_string_reply_is_a_parse_error(discrete_spec):
    with pytest.raises(ParseError):
        PARSER.parse(None, discrete_spec)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- huge and hostile replies

ONE_MB = 1_000_000


def test_huge_reply_with_the_answer_first_is_parsed(discrete_spec):
    text = '{"probabilities": [0.1, 0.2, 0.3, 0.4]}\n' + "blah " * (ONE_MB // 5)
    with no_hang():
        assert PARSER.parse(text, discrete_spec) == P4


@pytest.mark.parametrize(
    "text",
    [
        "word " * (ONE_MB // 5),
        "1 " * (ONE_MB // 2),
        "1:" * (ONE_MB // 2),
        "{" * ONE_MB,
        "<think>" * (ONE_MB // 7),
        "```" * (ONE_MB // 3),
        "Action 1 (" * (ONE_MB // 10),
    ],
    ids=["words", "numbers", "colons", "braces", "think", "fences", "open-parens"],
)
def test_huge_junk_reply_is_rejected_without_hanging(text, discrete_spec):
    with no_hang(), pytest.raises(ParseError):
        PARSER.parse(text, discrete_spec)


def test_huge_run_of_digits_does_not_hang(discrete_spec):
    # regression: an unbounded (\d+) in the keyed-pair regex backtracked quadratically (~12 s)
    with no_hang(), pytest.raises(ParseError):
        PARSER.parse("1" * ONE_MB, discrete_spec)


def test_deeply_nested_brackets_are_a_parse_error(discrete_spec):
    with pytest.raises(ParseError):
        PARSER.parse('{"probabilities": ' + "[" * 5000, discrete_spec)


# Infinity is not a usable probability or bias. The parser reads an overflowing number as an
# infinity of the right sign, the same way in every format (so the count check still applies), and
# the validator rejects it with the reason "non_finite": nothing infinite reaches the collector
# (a clipped +inf bias would otherwise become a silent +max_bias).
INFINITE = [
    ("[" + "9" * 400 + ", 1, 1, 1]", D4, [math.inf, 1.0, 1.0, 1.0]),  # JSON int beyond float range
    ("[-" + "9" * 400 + ", 1, 1, 1]", D4, [-math.inf, 1.0, 1.0, 1.0]),
    ("[" + "9" * 5000 + ", 1, 1, 1]", D4, [math.inf, 1.0, 1.0, 1.0]),  # over json's int-digit limit
    ("[1e999, 1, 1, 1]", D4, [math.inf, 1.0, 1.0, 1.0]),
    ('{"probabilities": [Infinity, 1, 1, 1]}', D4, [math.inf, 1.0, 1.0, 1.0]),
    ("0: inf\n1: 1\n2: 1\n3: 1", D4, [math.inf, 1.0, 1.0, 1.0]),
    ('{"bias": [' + "9" * 400 + "]}", C1, [math.inf]),
    ('{"bias": [-1e999]}', C1, [-math.inf]),
    ("bias: -" + "9" * 5000, C1, [-math.inf]),
    ("-Infinity", C1, [-math.inf]),
]


@pytest.mark.parametrize(("text", "spec", "expected"), INFINITE, ids=[repr(c[0][:24]) for c in INFINITE])
def test_infinite_numbers_are_read_as_infinity_then_rejected_with_a_reason(text, spec, expected):
    values = PARSER.parse(text, spec)
    assert values == expected
    with pytest.raises(ValidationRejected) as info:
        VALIDATOR.validate(values, spec)
    assert info.value.reason == "non_finite" and "finite" in info.value.detail


# --------------------------------------------------------------------------- properties

finite = st.floats(allow_nan=False, allow_infinity=False)


def _as_json_object(values, spec):
    return json.dumps({"probabilities" if spec.is_discrete else "bias": values})


def _as_fenced(values, spec):
    return "Here is my answer:\n```json\n" + _as_json_object(values, spec) + "\n```"


def _as_index_keyed(values, spec):
    return json.dumps({str(i): v for i, v in enumerate(values)})


def _as_label_keyed(values, spec):
    return json.dumps(dict(zip(spec.labels, values, strict=True)))


def _as_lines(values, spec):
    return "\n".join(f"{i}: {v!r}" for i, v in enumerate(values))


def _as_action_lines(values, spec):
    return "\n".join(f"Action {i + 1}: {v!r}" for i, v in enumerate(values))


def _after_think(values, spec):
    return "<think>I guess [1, 2] or 0: 0.5</think>\n" + json.dumps(values)


FORMATS = {
    "object": _as_json_object,
    "list": lambda values, spec: json.dumps(values),
    "fenced": _as_fenced,
    "index-keyed": _as_index_keyed,
    "label-keyed": _as_label_keyed,
    "lines": _as_lines,
    "action-lines": _as_action_lines,
    "think": _after_think,
}


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    n=st.integers(1, 12),
    discrete=st.booleans(),
    fmt=st.sampled_from(sorted(FORMATS)),
)
def test_serialised_finite_floats_parse_back_exactly(data, n, discrete, fmt):
    spec = ActionSpec.discrete(n) if discrete else ActionSpec.continuous([-1.0] * n, [1.0] * n)
    values = data.draw(st.lists(finite, min_size=n, max_size=n), label="values")
    text = FORMATS[fmt](values, spec)
    assert PARSER.parse(text, spec) == values


TOKENS = st.sampled_from([
    "[", "]", "{", "}", ":", ",", "-", "+", ".", "%", "e", "E", "0", "1", "9", "0.5", "-0.3", "1e308", "1e999",
    "nan", "NaN", "inf", "Infinity", '"', '"probabilities"', '"bias"', "null", "true", "<think>", "</think>",
    "```", "```json", "Action", "dim", "#", "(", ")", "=", " ", "\n", "\u2212", "\x00",
])


@settings(max_examples=300, deadline=None, database=None)
@given(
    text=st.one_of(st.text(), st.lists(st.one_of(TOKENS, st.text(max_size=3)), max_size=60).map("".join)),
    n=st.integers(1, 6),
    discrete=st.booleans(),
)
def test_arbitrary_text_raises_only_parse_error(text, n, discrete):
    spec = ActionSpec.discrete(n) if discrete else ActionSpec.continuous([-1.0] * n, [1.0] * n)
    try:
        values = PARSER.parse(text, spec)
    except ParseError:
        return
    assert len(values) == n
    assert all(isinstance(v, float) for v in values)


# --------------------------------------------------------------------------- which field is read
#
# Regression: {"bias": [-0.5], "probabilities": [0.5]} on a continuous task was read by its
# "probabilities" key (the first of a fixed key list), so the run applied +0.5 where the model said
# -0.5. The key naming the task's update kind wins, whatever the order or letter case; a key naming
# the other kind is never read as this one; an answer given twice with different numbers is an error.

DISCRETE_KEYS = ["probabilities", "Probabilities", "PROBS", "distribution", "Distribution", "probability"]
BIAS_KEYS = ["bias", "Bias", "BIAS", "biases"]
UNKNOWN_KEYS = ["reasoning", "confidence", "answer_text", "note"]


def _spec(discrete: bool, n: int) -> ActionSpec:
    return ActionSpec.discrete(n) if discrete else ActionSpec.continuous([-1.0] * n, [1.0] * n)


def _object(pairs) -> str:
    return "{" + ", ".join(f"{json.dumps(key)}: {json.dumps(value)}" for key, value in pairs) + "}"


WRAPPERS = {
    "bare": lambda obj: obj,
    "prose": lambda obj: f"Looking at the episode, I suggest: {obj} Hope this helps.",
    "fenced": lambda obj: f"```json\n{obj}\n```",
    "nested": lambda obj: '{"answer": ' + obj + "}",
    "in a list": lambda obj: "[" + obj + "]",
    "after think": lambda obj: "<think>[0.5, 0.5] or 0: 1</think>" + obj,
}


@pytest.mark.parametrize(("text", "expected"), [
    ('{"bias": [-0.5], "probabilities": [0.5]}', [-0.5]),
    ('{"probabilities": [0.5], "bias": [-0.5]}', [-0.5]),
    ('{"Probabilities": [0.5], "Bias": [-0.5]}', [-0.5]),
    ('{"distribution": [0.5], "values": [-0.5]}', [-0.5]),  # a neutral key, never the other kind's
])
def test_bias_and_probabilities_keys_on_a_continuous_task(text, expected, continuous_spec):
    assert PARSER.parse(text, continuous_spec) == expected


@pytest.mark.parametrize(("spec", "expected"), [(D2, [0.3, 0.7]), (C2, [-0.5, 0.5])])
def test_a_key_whose_last_word_names_a_kind_counts_as_that_kind(spec, expected):
    text = '{"exploration_bias": [-0.5, 0.5], "action probabilities": [0.3, 0.7]}'
    assert PARSER.parse(text, spec) == expected


@settings(max_examples=200, deadline=None, database=None)
@given(
    data=st.data(),
    n=st.integers(1, 6),
    discrete=st.booleans(),
    wrapper=st.sampled_from(sorted(WRAPPERS)),
)
def test_the_key_naming_the_update_kind_wins_in_any_order(data, n, discrete, wrapper):
    spec = _spec(discrete, n)
    own_key = data.draw(st.sampled_from(DISCRETE_KEYS if discrete else BIAS_KEYS), label="own key")
    other_key = data.draw(st.sampled_from(BIAS_KEYS if discrete else DISCRETE_KEYS), label="other key")
    own = data.draw(st.lists(finite, min_size=n, max_size=n), label="own values")
    other = data.draw(st.lists(finite, min_size=n, max_size=n).filter(lambda v: v != own), label="other values")
    extra = data.draw(st.lists(st.tuples(st.sampled_from(UNKNOWN_KEYS), st.one_of(st.text(max_size=8), finite)),
                               max_size=2, unique_by=lambda kv: kv[0]), label="extra pairs")
    pairs = data.draw(st.permutations([(own_key, own), (other_key, other), *extra]), label="order")
    assert PARSER.parse(WRAPPERS[wrapper](_object(pairs)), spec) == own


@settings(max_examples=200, deadline=None, database=None)
@given(
    data=st.data(),
    n=st.integers(1, 6),
    discrete=st.booleans(),
    wrapper=st.sampled_from(sorted(WRAPPERS)),
)
def test_a_key_naming_the_other_kind_is_never_read_as_this_one(data, n, discrete, wrapper):
    spec = _spec(discrete, n)
    other_key = data.draw(st.sampled_from(BIAS_KEYS if discrete else DISCRETE_KEYS), label="other key")
    other = data.draw(st.lists(finite, min_size=n, max_size=n), label="other values")
    extra = data.draw(st.lists(st.tuples(st.sampled_from(UNKNOWN_KEYS), st.text(max_size=8)),
                               max_size=2, unique_by=lambda kv: kv[0]), label="extra pairs")
    pairs = data.draw(st.permutations([(other_key, other), *extra]), label="order")
    with pytest.raises(ParseError, match="this task needs"):
        PARSER.parse(WRAPPERS[wrapper](_object(pairs)), spec)


@pytest.mark.parametrize(("text", "spec", "expected"), [
    # a list labelled with a kind name in prose counts like that key
    ("probabilities: [0.2, 0.8]\nbias: [-0.5, 0.5]", C2, [-0.5, 0.5]),
    ('"bias": [-0.5, 0.5], "probabilities": [0.2, 0.8]', C2, [-0.5, 0.5]),
    ("bias: [-0.5, 0.5]\nprobabilities: [0.2, 0.8]", D2, [0.2, 0.8]),
])
def test_lists_labelled_with_a_kind_name(text, spec, expected):
    assert PARSER.parse(text, spec) == expected


@pytest.mark.parametrize(("text", "spec", "expected"), [
    # a kind word in prose that labels no number does not decide anything
    ("The bias: towards the left.\nAction 0: 0.7\nAction 1: 0.3", D2, [0.7, 0.3]),
    ("Probability: high for the main engine. main engine = -0.5, side engine = 0.5", C2, [-0.5, 0.5]),
])
def test_kind_words_that_label_no_number_are_ignored(text, spec, expected):
    assert PARSER.parse(text, spec) == expected


@pytest.mark.parametrize(("text", "spec"), [
    ("probabilities: [0.2, 0.8]", C2),
    ("Probabilities: 0.2, 0.8", C2),
    ("bias: -0.5, 0.5", D2),
    ('{"probabilities": [0.3]} and then bias 0.3', C1),
])
def test_an_answer_labelled_only_with_the_other_kind_is_refused(text, spec):
    with pytest.raises(ParseError, match="this task needs"):
        PARSER.parse(text, spec)


@pytest.mark.parametrize(("text", "spec"), [
    # the same key twice (json itself would keep the last one), or in two letter cases
    ('{"bias": [0.5], "bias": [-0.5]}', C1),
    ('{"bias": [0.5], "Bias": [-0.5]}', C1),
    # two synonyms of the same kind that disagree
    ('{"probabilities": [0.9, 0.1], "distribution": [0.1, 0.9]}', D2),
    ('{"bias": [0.5], "biases": [-0.5]}', C1),
    # two unnamed lists of the right length: which one is the answer?
    ('{"confidence": [0.9], "answer": [-0.5]}', C1),
    ('{"first": {"bias": [0.5]}, "second": {"bias": [-0.5]}}', C1),
    # an action keyed twice with different numbers
    ('{"0": 0.9, "1": 0.1, "action 0": 0.2}', D2),
    ("Action 0: 0.9\nAction 1: 0.1\nAction 0: 0.2", D2),
    ("dim 0 = -0.3\ndim 0 = 0.3", C1),
])
def test_the_same_answer_given_twice_differently_is_an_error(text, spec):
    with pytest.raises(ParseError, match="give one answer"):
        PARSER.parse(text, spec)


@pytest.mark.parametrize(("text", "spec", "expected"), [
    ('{"bias": [-0.5], "bias": [-0.5]}', C1, [-0.5]),
    ('{"probabilities": [0.9, 0.1], "Probabilities": [0.9, 0.1]}', D2, [0.9, 0.1]),
    ("Action 0: 0.9\nAction 1: 0.1\nSo: Action 0: 0.9", D2, [0.9, 0.1]),
])
def test_the_same_answer_repeated_identically_is_fine(text, spec, expected):
    assert PARSER.parse(text, spec) == expected


@pytest.mark.parametrize(("text", "spec", "message"), [
    # one action too many is a count error, not "read the first n"
    ('{"0": 0.1, "1": 0.2, "2": 0.3, "3": 0.4, "4": 0.5}', D4, "expected 4"),
    ("0: 0.1\n1: 0.2\n2: 0.3\n3: 0.4\n4: 0.5", D4, "expected 4"),
    ("dim 0 = -0.3, dim 1 = 0.2", C1, "expected 1"),
    # numbers inside JSON that was decoded but not understood are not mined as plain text
    ('{"confidence": 0.9, "reasoning": "push left"}', C1, "expected 1"),
    ('{"steps": 200, "return": -0.5}', C2, "expected 2"),
])
def test_numbers_are_not_taken_from_the_wrong_field(text, spec, message):
    with pytest.raises(ParseError, match=message):
        PARSER.parse(text, spec)


@settings(max_examples=150, deadline=None, database=None)
@given(data=st.data(), n=st.integers(1, 6), discrete=st.booleans())
def test_index_keyed_objects_are_read_by_index_in_any_order(data, n, discrete):
    spec = _spec(discrete, n)
    values = data.draw(st.lists(finite, min_size=n, max_size=n), label="values")
    base = data.draw(st.sampled_from([0, 1]), label="base")
    style = data.draw(st.sampled_from(["{}", "action {}", "Action_{}", "dim {}"]), label="style")
    pairs = data.draw(st.permutations([(style.format(base + i), v) for i, v in enumerate(values)]), label="order")
    assert PARSER.parse(_object(pairs), spec) == values
