"""The run-directory format, in one place: file names, summary keys, atomic writers, tolerant readers.

``llm-explorer train`` writes a run directory (``tianshou_integration.rundir``,
``tianshou_integration.experiment``); the ablation runner and report read it back
(``explorer_ablation``). Both use the names and helpers below, so the format is defined once.

Writing: whole files (JSON, text, PNG) go to a temporary file in the same directory and are moved
into place with ``os.replace``, so a crash leaves either the old file or the new one, never half of
one. JSONL files are appended one flushed line at a time, so a crash can cut only the last line
short; :func:`read_jsonl` skips such a line.

A run is *complete* when its ``summary.json`` (written last) is a JSON object with
:data:`SUMMARY_REQUIRED_KEYS`, does not say it was interrupted or failed, and counts at least
the env steps that were asked for (:func:`run_is_complete`).

Nothing here imports torch, Tianshou or gymnasium; matplotlib is imported only by :func:`pyplot`
and :func:`save_png`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "CONFIG_FILE",
    "EXCHANGES_FILE",
    "EXPLORATION_PNG",
    "FILE_MODE",
    "LEARNING_CURVE_PNG",
    "MANIFEST_FILE",
    "METRICS_COLUMNS",
    "METRICS_FILE",
    "SUMMARY_FILE",
    "SUMMARY_REQUIRED_KEYS",
    "TENSORBOARD_DIR",
    "UPDATES_FILE",
    "json_default",
    "pyplot",
    "read_json",
    "read_jsonl",
    "read_summary",
    "run_is_complete",
    "save_png",
    "write_json_atomic",
    "write_text_atomic",
]

# --------------------------------------------------------------------------- file names
MANIFEST_FILE = "manifest.json"
"""Full configuration, package versions, git commit, plugins, prompt hashes, seed."""
CONFIG_FILE = "config.yaml"
"""The resolved run configuration; ``llm-explorer train --config`` reads it back."""
METRICS_FILE = "metrics.csv"
"""One row per training episode or greedy evaluation (:data:`METRICS_COLUMNS`)."""
UPDATES_FILE = "updates.jsonl"
"""One line per exploration update or failed request."""
EXCHANGES_FILE = "exchanges.jsonl"
"""Every LLM request and response, secrets redacted."""
SUMMARY_FILE = "summary.json"
"""Counters and results, written last: its presence marks a finished run."""
LEARNING_CURVE_PNG = "learning_curve.png"
"""Training and greedy-evaluation returns over env steps."""
EXPLORATION_PNG = "exploration.png"
"""The exploration updates over env steps, their informativeness and staleness."""
TENSORBOARD_DIR = "tensorboard"
"""TensorBoard event files."""

METRICS_COLUMNS = ("step", "train_return", "eval_return")
"""The header of :data:`METRICS_FILE`; a row fills ``train_return`` or ``eval_return``."""
SUMMARY_REQUIRED_KEYS = ("env_steps", "final_eval_return")
"""Keys every finished run's summary has (``final_eval_return`` may be null)."""

FILE_MODE = 0o644
"""Permissions of every file written here (``mkstemp`` would leave 0600)."""


# --------------------------------------------------------------------------- writers
def json_default(value: Any) -> Any:
    """``json.dump``'s fallback: paths as text, numpy scalars and arrays as numbers and lists,
    sets and tuples as lists, anything else as its ``repr``."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return repr(value)


def _write_atomic(path: Path, write: Callable[[IO[str]], None], *, suffix: str = ".tmp") -> None:
    """Call ``write`` on a temporary file next to ``path``, sync it, and move it into place.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON (:func:`json_default` for other types), atomically."""

    def write(f: IO[str]) -> None:
        json.dump(data, f, indent=2, default=json_default)
        f.write("\n")

    _write_atomic(Path(path), write)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (line endings as given)."""
    def write(f: IO[str]) -> None:
        f.write(text)

    _write_atomic(Path(path), write)


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (figures are only saved)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | Path, *, dpi: int = 110) -> None:
    """Save the matplotlib figure ``fig`` as a PNG at ``path`` atomically, then close it.

    The figure is closed even when saving fails; a failed save leaves ``path`` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        pyplot().close(fig)
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # only still there when saving failed


# --------------------------------------------------------------------------- readers
def read_json(path: str | Path) -> Any:
    """The parsed file, or None when it is missing, unreadable or not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every JSON-object line of a JSONL file, in order; ``[]`` when the file is missing.

    A line that is not a JSON object is skipped: a crash while appending can leave the last line
    cut short, and what was written before it stays readable.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    lines: list[dict[str, Any]] = []
    for raw in text.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict):
            lines.append(line)
    return lines


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``summary.json`` as a dict; None when it is missing or not a JSON object."""
    data = read_json(Path(run_dir) / SUMMARY_FILE)
    return data if isinstance(data, dict) else None


def run_is_complete(run_dir: str | Path, steps: int | None = None) -> bool:
    """True when ``run_dir`` holds a finished run that reached ``steps`` env steps (if given)."""
    summary = read_summary(run_dir)
    if summary is None or any(key not in summary for key in SUMMARY_REQUIRED_KEYS):
        return False
    if summary.get("interrupted") is True or summary.get("status") in ("interrupted", "failed"):
        return False
    env_steps = summary.get("env_steps")
    if isinstance(env_steps, bool) or not isinstance(env_steps, int | float):
        return False
    return steps is None or env_steps >= steps
