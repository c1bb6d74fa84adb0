"""The default reply parser: JSON first, then a tolerant reading of numbers.

LLM output is untrusted input. The parser only extracts numbers and checks their count; the
validator decides whether they make a usable update.
"""

from __future__ import annotations

import json
import math
import re

from .errors import ParseError
from .types import ActionSpec

_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*(.*?)```", re.DOTALL)
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?%?|[-+]?(?:nan|inf(?:inity)?)\b"
_NUMBER_RE = re.compile(_NUMBER, re.IGNORECASE)
_KEYED = re.compile(
    r"(?:\b(?:action|dim(?:ension)?)\s*#?\s*)?\b(\d{1,4})\s*(?:\([^)\n]{0,80}\))?\s*[:=]\s*(" + _NUMBER + ")",
    re.IGNORECASE,
)
KEYS = ("probabilities", "distribution", "probs", "bias", "biases", "values", "weights")
MAX_REPLY_CHARS = 20_000


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


def _from_json_value(value: object, spec: ActionSpec) -> list[float] | None:
    if isinstance(value, dict):
        for key in KEYS:
            if key in value:
                return _from_json_value(value[key], spec)
        lowered = {str(k).strip().lower(): v for k, v in value.items()}
        by_index = [lowered.get(str(i)) for i in range(spec.n)]
        if all(v is not None for v in by_index):
            return _from_json_value(by_index, spec)
        by_label = [lowered.get(label.lower()) for label in spec.labels]
        if all(v is not None for v in by_label):
            return _from_json_value(by_label, spec)
        if len(value) == 1:
            return _from_json_value(next(iter(value.values())), spec)
        return None
    if isinstance(value, list):
        numbers = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, (int, float, str)):
                return None
            try:
                numbers.append(_to_float(item) if isinstance(item, str) else float(item))
            except ValueError:
                return None
            except OverflowError:  # an integer beyond float range: let the validator reject it
                numbers.append(math.inf if item > 0 else -math.inf)
        return numbers
    return None


def _json_candidates(text: str):
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except (ValueError, RecursionError):  # malformed, absurdly nested, or over the int-digit limit
            continue
        yield value


def _check_count(numbers: list[float], spec: ActionSpec, how: str) -> list[float]:
    if len(numbers) != spec.n:
        raise ParseError(f"expected {spec.n} numbers ({how}), found {len(numbers)}")
    return numbers


class DefaultParser:
    """JSON (object with a known key, a list, or an index/label-keyed object), then ``i: p`` pairs,
    then bare signed numbers when exactly ``spec.n`` of them appear."""

    def parse(self, text: str, spec: ActionSpec) -> list[float]:
        if not isinstance(text, str) or not text.strip():
            raise ParseError("the reply is empty")
        body = clean_reply(text)
        if len(body) > MAX_REPLY_CHARS:
            body = body[:MAX_REPLY_CHARS]
        wrong_length: list[float] | None = None
        for value in _json_candidates(body):
            numbers = _from_json_value(value, spec)
            if numbers is None:
                continue
            if len(numbers) == spec.n:
                return numbers
            wrong_length = wrong_length or numbers
        if wrong_length is not None:
            _check_count(wrong_length, spec, "in the JSON answer")
        keyed = {}
        for index, number in _KEYED.findall(body):
            keyed.setdefault(int(index), _to_float(number))
        for base in (0, 1):
            if len(keyed) >= spec.n and all(base + i in keyed for i in range(spec.n)):
                return [keyed[base + i] for i in range(spec.n)]
        numbers = [_to_float(tok) for tok in _NUMBER_RE.findall(body)]
        if not numbers:
            raise ParseError(f"no numbers found; expected {spec.n}")
        return _check_count(numbers, spec, "as plain numbers")

