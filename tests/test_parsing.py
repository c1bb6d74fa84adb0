"""DefaultParser: model text -> exactly ``spec.n`` numbers, or ParseError (nothing else)."""

from __future__ import annotations

import contextlib
import json
import math
import signal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from explorer_pipeline.errors import ParseError
from explorer_pipeline.parsing import DefaultParser
from explorer_pipeline.types import ActionSpec

PARSER = DefaultParser()
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


def test_unicode_minus_sign_is_not_flipped_to_positive(continuous_spec):
    try:
        values = PARSER.parse("bias: \u22120.3", continuous_spec)
    except ParseError:
        return  # refusing is fine; flipping the sign is not
    assert values == [pytest.approx(-0.3)]


def test_non_finite_numbers_are_returned_for_the_validator_to_reject(discrete_spec):
    # the parser only extracts numbers: nan/inf are the validator's business
    values = PARSER.parse("[NaN, 1, 1, 1]", discrete_spec)
    assert math.isnan(values[0]) and values[1:] == [1.0, 1.0, 1.0]
    assert PARSER.parse("[1e999, 1, 1, 1]", discrete_spec)[0] == math.inf


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


def test_json_integer_too_large_for_float_is_a_parse_error(discrete_spec):
    try:
        values = PARSER.parse("[" + "9" * 400 + ", 1, 1, 1]", discrete_spec)
    except ParseError:
        return
    assert values[0] == math.inf  # as the plain-text path already does


def test_json_integer_over_the_int_digit_limit_is_read_as_infinity(discrete_spec):
    # json refuses ints over 4300 digits; the plain-number fallback reads it as inf, which the
    # validator then rejects as non-finite
    try:
        values = PARSER.parse("[" + "9" * 5000 + ", 1, 1, 1]", discrete_spec)
    except ParseError:
        return
    assert values == [math.inf, 1.0, 1.0, 1.0]


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
