"""The default reply parser: JSON first, then a tolerant reading of numbers.

LLM output is untrusted input. The parser only extracts numbers and checks their count; the
validator decides whether they make a usable update (non-finite values, for instance, are read as
``inf``/``nan`` here and rejected there with the reason ``non_finite``).

Which numbers are read never depends on the order of keys in an object, and never comes from a
field that names the other update kind:

- a key that names this task's update kind (``probabilities`` for a discrete task, ``bias`` for a
  continuous one) wins over a neutral key (``values``, ``weights``); a key that names the *other*
  kind is never read as this one, and an answer that only gives the other kind is an error;
- the same answer given twice with different numbers (a repeated key, two synonyms, two unnamed
  lists of the right length, an ``i: p`` pair repeated) is an error, not "first/last one wins";
- numbers inside a JSON value that was decoded but not understood are not mined by the plain-text
  fallbacks.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

from ..errors import ParseError
from ..types import ActionSpec

_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*(.*?)```", re.DOTALL)
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?%?|[-+]?(?:nan|inf(?:inity)?)\b"
_NUMBER_RE = re.compile(_NUMBER, re.IGNORECASE)
_KEYED = re.compile(
    r"(?:\b(?:action|dim(?:ension)?)\s*#?\s*)?\b(\d{1,4})\s*(?:\([^)\n]{0,80}\))?\s*[:=]\s*(" + _NUMBER + ")",
    re.IGNORECASE,
)
#: keys (compared case-insensitively) that name a discrete distribution, a continuous bias, or neither
PROBABILITY_KEYS = ("probabilities", "probability", "distribution", "probs")
BIAS_KEYS = ("bias", "biases")
NEUTRAL_KEYS = ("values", "weights")
KEYS = PROBABILITY_KEYS + BIAS_KEYS + NEUTRAL_KEYS
MAX_REPLY_CHARS = 20_000

_INDEX_KEY = re.compile(r"(?:(?:action|dim|dimension)\s*#?\s*)?(\d{1,4})")
# a kind word labelling what follows: `bias: [..]`, `"probabilities" = [..]`, `Probabilities: 0.2 0.8`
_LABEL_BEFORE_LIST = re.compile(r"\b([A-Za-z_]{3,20})[\"']?\s*[:=]\s*$")
_TEXT_LABEL = re.compile(r"\b(probabilit(?:y|ies)|distribution|probs|bias(?:es)?)\b[\"']?\s*[:=]\s*"
                         r"(?=\[?\s*[-+]?(?:\d|\.\d|nan|inf))", re.IGNORECASE)


class _WrongKind(ParseError):
    """The answer names only the other update kind (probabilities for a continuous task, ...)."""


class _Object:
    """A decoded JSON object that keeps every ``(key, value)`` pair, so a repeated key is seen
    instead of being resolved by position (``json`` keeps the last one)."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, object]]) -> None:
        self.pairs = pairs


_DECODER = json.JSONDecoder(object_pairs_hook=_Object)


def _to_float(token: str) -> float:
    token = token.strip()
    percent = token.endswith("%")
    value = float(token.rstrip("%"))
    return value / 100.0 if percent else value


_DASHES = re.compile(r"[\u2212\u2012\u2013\u2014](?=\s?[\d.])")


def clean_reply(text: str) -> str:
    """Drop ``<think>`` blocks, read typographic minus signs as ``-``, and prefer the content of
    a code fence when there is one."""
    text = _DASHES.sub("-", _THINK.sub("", text))
    fence = _FENCE.search(text)
    return fence.group(1) if fence else text


def _normal_key(key: object) -> str:
    return " ".join(str(key).strip().lower().replace("_", " ").replace("-", " ").split())


def _key_kind(key: str) -> str | None:
    """``distribution``, ``bias``, ``neutral`` or ``None`` for a normalised key. A key whose last
    word names a kind counts as that kind (``action_probabilities``, ``exploration bias``)."""
    last = key.rsplit(" ", 1)[-1]
    if key in PROBABILITY_KEYS or last in PROBABILITY_KEYS:
        return "distribution"
    if key in BIAS_KEYS or last in BIAS_KEYS:
        return "bias"
    if key in NEUTRAL_KEYS:
        return "neutral"
    return None


def _other_kind(spec: ActionSpec) -> str:
    return "bias" if spec.is_discrete else "distribution"


def _kind_name(spec: ActionSpec, own: bool = True) -> str:
    discrete = spec.is_discrete if own else not spec.is_discrete
    return "probabilities" if discrete else "a bias"


def _wrong_kind(spec: ActionSpec, where: str) -> _WrongKind:
    key = "probabilities" if spec.is_discrete else "bias"
    return _WrongKind(f"the answer gives {_kind_name(spec, own=False)} ({where}), but this task needs "
                      f"{_kind_name(spec)}: expected {spec.n} numbers under {key!r}")


def _same(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True))


def _scalar(item: object) -> float | None:
    """A JSON number, or a string holding one number (``"0.3"``, ``"30%"``); else ``None``."""
    if isinstance(item, bool) or not isinstance(item, (int, float, str)):
        return None
    try:
        return _to_float(item) if isinstance(item, str) else float(item)
    except ValueError:
        return None
    except OverflowError:  # an integer beyond float range: let the validator reject it
        return math.inf if item > 0 else -math.inf  # type: ignore[operator]  # an int here, never a str


def _numbers(items: list[Any]) -> list[float] | None:
    numbers = [_scalar(item) for item in items]
    found = [n for n in numbers if n is not None]
    return None if len(found) != len(numbers) else found


def _one_per_action(groups: list[tuple[str, list[object]]]) -> list[float] | None:
    """One number per key (a key may repeat, with the same number); ``None`` when one is not a number."""
    numbers = []
    for key, values in groups:
        scalars = [_scalar(value) for value in values]
        readings = [r for r in scalars if r is not None]
        if len(readings) != len(scalars):
            return None
        for r in readings[1:]:
            if not _same([readings[0]], [r]):
                raise ParseError(f"{key!r} is given two different numbers ({readings[0]} and {r}); give one answer")
        numbers.append(readings[0])
    return numbers


def _from_json_value(value: object, spec: ActionSpec) -> list[float] | None:
    """The numbers a decoded JSON value gives for ``spec`` (any count), or ``None``."""
    if isinstance(value, _Object):
        return _from_object(value, spec)
    if isinstance(value, list):
        if len(value) == 1 and isinstance(value[0], (list, _Object)):
            return _from_json_value(value[0], spec)
        return _numbers(value)
    return None


def _read_field(key: str, value: object, spec: ActionSpec) -> list[float]:
    """The numbers under a key that names the answer; anything unreadable there is an error."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        numbers = _numbers([value])
    elif isinstance(value, str):  # a list written as a string: "[0.1, 0.9]"
        numbers = [_to_float(token) for token in _NUMBER_RE.findall(value)] or None
    else:
        numbers = _from_json_value(value, spec)
    if numbers is None:
        shown = json.dumps(value, default=lambda o: dict(o.pairs))[:80]
        raise ParseError(f"expected {spec.n} numbers under {key!r}, got {shown}")
    return numbers


def _agreed(readings: list[tuple[str, list[float]]]) -> list[float]:
    key, first = readings[0]
    for other_key, numbers in readings[1:]:
        if not _same(first, numbers):
            raise ParseError(f"the answer gives {key!r} and {other_key!r} with different numbers; "
                             "give one answer")
    return first


def _from_object(obj: _Object, spec: ActionSpec) -> list[float] | None:
    groups: dict[str, list[object]] = {}
    for key, value in obj.pairs:
        groups.setdefault(_normal_key(key), []).append(value)
    kinds = {key: _key_kind(key) for key in groups}
    # 1. keys naming this kind, then neutral ones; every occurrence must agree
    for wanted in (spec.update_kind, "neutral"):
        readings = [(key, _read_field(key, value, spec))
                    for key, values in groups.items() if kinds[key] == wanted for value in values]
        if readings:
            return _agreed(readings)
    # 2. one key per action, by index (0- or 1-based, "action 2", "dim 0") or by label
    indexed: dict[int, list[object]] = {}
    for key, values in groups.items():
        match = _INDEX_KEY.fullmatch(key)
        if match:
            indexed.setdefault(int(match.group(1)), []).extend(values)
    if indexed:
        for base in (0, 1):
            if set(indexed) == set(range(base, base + len(indexed))):  # any count: a wrong one is reported
                numbers = _one_per_action([(str(i), indexed[i]) for i in range(base, base + len(indexed))])
                if numbers is not None:
                    return numbers
    by_label = [(label, groups.get(_normal_key(label))) for label in spec.labels]
    if all(values is not None for _, values in by_label):
        numbers = _one_per_action(by_label)  # type: ignore[arg-type]
        if numbers is not None:
            return numbers
    # 3. look inside nested values (never under a key naming the other kind); several different
    #    answers of the right length are ambiguous, not "the first one wins"
    answers: list[tuple[str, list[float]]] = []
    wrong_kind: _WrongKind | None = None
    single = len(obj.pairs) == 1
    for key, values in groups.items():
        if kinds[key] == _other_kind(spec):
            continue
        for value in values:
            if single and isinstance(value, (int, float)) and not isinstance(value, bool):
                found = _numbers([value])  # {"answer": -0.3}
            elif isinstance(value, (list, _Object)):
                try:
                    found = _from_json_value(value, spec)
                except _WrongKind as exc:
                    wrong_kind = wrong_kind or exc
                    continue
            else:
                continue
            if found is not None:
                answers.append((key, found))
    right = [(key, numbers) for key, numbers in answers if len(numbers) == spec.n]
    if right:
        keys = [key for key, _ in right]
        for _, numbers in right[1:]:
            if not _same(right[0][1], numbers):
                raise ParseError(f"the JSON answer holds different lists of {spec.n} numbers (under {keys}); "
                                 "give one answer")
        return right[0][1]
    named_other = [key for key in groups if kinds[key] == _other_kind(spec)]
    if named_other:
        raise _wrong_kind(spec, f"key {named_other[0]!r}")
    if wrong_kind is not None:
        raise wrong_kind
    return answers[0][1] if answers else None


def _json_candidates(text: str) -> Iterator[tuple[int, int, Any]]:
    """Top-level JSON values in ``text``: ``(start, end, value)``. Positions inside a decoded value
    are not tried again, so a list nested under some key is only ever read through its key."""
    position = 0
    for match in re.finditer(r"[\[{]", text):
        if match.start() < position:
            continue
        try:
            value, end = _DECODER.raw_decode(text, match.start())
        except (ValueError, RecursionError):  # malformed, absurdly nested, or over the int-digit limit
            continue
        position = end
        yield match.start(), end, value


def _label_before(text: str, start: int) -> str | None:
    match = _LABEL_BEFORE_LIST.search(text, max(0, start - 40), start)
    return _normal_key(match.group(1)) if match else None


def _check_count(numbers: list[float], spec: ActionSpec, how: str) -> list[float]:
    if len(numbers) != spec.n:
        raise ParseError(f"expected {spec.n} numbers ({how}), found {len(numbers)}")
    return numbers


def _check_text_labels(text: str, spec: ActionSpec) -> None:
    """Plain text that labels its numbers only with the other kind's name is not read as this kind."""
    names = {_normal_key(m.group(1)) for m in _TEXT_LABEL.finditer(text)}
    if names and all(_key_kind(name) == _other_kind(spec) for name in names):
        raise _wrong_kind(spec, f"labelled {sorted(names)[0]!r}")


class DefaultParser:
    """JSON (object with a key naming the update kind, a list, or an index/label-keyed object),
    then ``i: p`` pairs, then bare signed numbers when exactly ``spec.n`` of them appear."""

    def parse(self, text: str, spec: ActionSpec) -> list[float]:
        """``spec.n`` numbers from ``text``, or ``ParseError`` saying what was wrong."""
        if not isinstance(text, str) or not text.strip():
            raise ParseError("the reply is empty")
        body = clean_reply(text)
        if len(body) > MAX_REPLY_CHARS:
            body = body[:MAX_REPLY_CHARS]
        wrong_length: list[float] | None = None
        wrong_kind: _WrongKind | None = None
        unread_keys: list[str] | None = None  # of the first JSON object that gave no numbers
        outside_json: list[str] = []
        last_end = 0
        for start, end, value in _json_candidates(body):
            outside_json.append(body[last_end:start])
            last_end = end
            try:
                label = _label_before(body, start) if isinstance(value, list) else None
                if label is not None and _key_kind(label) == _other_kind(spec):
                    raise _wrong_kind(spec, f"a list labelled {label!r}")
                numbers = _from_json_value(value, spec)
            except _WrongKind as exc:
                wrong_kind = wrong_kind or exc
                continue
            except RecursionError:  # nested deeper than this reader goes: not an answer
                continue
            if numbers is None:
                if isinstance(value, _Object) and unread_keys is None:
                    unread_keys = [str(key) for key, _ in value.pairs]
                continue
            if len(numbers) == spec.n:
                return numbers
            wrong_length = wrong_length or numbers
        if wrong_kind is not None:
            raise wrong_kind
        if wrong_length is not None:
            _check_count(wrong_length, spec, "in the JSON answer")
        # plain-text readings, never of numbers inside JSON that was decoded but not understood
        outside_json.append(body[last_end:])
        rest = "\n".join(outside_json)
        _check_text_labels(rest, spec)
        keyed: dict[int, float] = {}
        for index, number in _KEYED.findall(rest):
            i, value = int(index), _to_float(number)
            if i in keyed and not _same([keyed[i]], [value]):
                raise ParseError(f"action {i} is given two different numbers ({keyed[i]} and {value}); "
                                 "give one answer")
            keyed[i] = value
        for base in (0, 1):
            if set(keyed) == set(range(base, base + spec.n)):
                return [keyed[base + i] for i in range(spec.n)]
        numbers = [_to_float(tok) for tok in _NUMBER_RE.findall(rest)]
        if not numbers and unread_keys:
            key = "probabilities" if spec.is_discrete else "bias"
            raise ParseError(f"no answer in the JSON object with keys {unread_keys[:8]}; expected {spec.n} numbers "
                             f"under {key!r}")
        if not numbers:
            raise ParseError(f"no numbers found; expected {spec.n}")
        return _check_count(numbers, spec, "as plain numbers")
