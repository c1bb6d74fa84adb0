"""Helpers shared by the ablation tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
FAKE_TRAIN = HERE / "fake_train.py"
FAKE_TRAIN_COMMAND = [sys.executable, str(FAKE_TRAIN)]


def cli_env(train_command: list[str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("LLM_EXPLORER_TRAIN_CMD", None)
    if train_command is not None:
        env["LLM_EXPLORER_TRAIN_CMD"] = shlex.join(train_command)
    env["RAY_DISABLE_USAGE_STATS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def status_events(out: Path) -> list[dict]:
    """The readable lines of ``OUT/status.jsonl``."""
    path = out / "status.jsonl"
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
