"""A third-party llm-explorer plugin: a summariser and a validator that record every call.

Both take a ``log`` option (a file path) and append one JSON line per call to it, so a test can
see that they ran and what they did. The summariser marks the prompt's ``return_trend`` with
``MARKER``, so the exchange log shows that the model really saw its output.
"""

from __future__ import annotations

import json
from pathlib import Path

from explorer_pipeline import hookimpl
from explorer_pipeline.default_plugins.summariser import DefaultSummariser
from explorer_pipeline.default_plugins.validation import DefaultValidator

MARKER = "[summarised by llm-explorer-testplugin]"


def _append(path: Path, entry: dict) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


class RecordingSummariser:
    """The default summary, marked, with one JSON line per episode in ``log``."""

    def __init__(self, context, log: str) -> None:
        self.inner = DefaultSummariser(m=context.config.sample_m)
        self.log = Path(log)

    def summarise(self, record, history, spec):
        variables = dict(self.inner.summarise(record, history, spec))
        variables["return_trend"] = f"{MARKER} {variables['return_trend']}"
        _append(self.log, {"episode": record.episode_index, "return": record.episode_return})
        return variables


class RecordingValidator:
    """The default validation, with what came in and what went out as one JSON line in ``log``."""

    def __init__(self, context, log: str) -> None:
        self.inner = DefaultValidator(floor=context.config.floor, max_bias=context.config.max_bias)
        self.log = Path(log)

    def validate(self, values, spec):
        out = self.inner.validate(values, spec)
        _append(self.log, {"in": [float(v) for v in values], "out": list(out)})
        return out


@hookimpl
def register_summarisers(register):
    register("recording", RecordingSummariser)


@hookimpl
def register_validators(register):
    register("recording", RecordingValidator)
