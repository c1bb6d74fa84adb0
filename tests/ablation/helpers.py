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


def fake_study(root: Path, spec_text: str, workers: int = 2):
    """Run the spec ``spec_text`` (written to ``root/spec.yaml``) with the fake train command into
    ``root/out``; returns ``(out, result)``."""
    from explorer_ablation.backends import LocalBackend
    from explorer_ablation.runner import run_study
    from explorer_ablation.spec import load_spec

    spec_path = root / "spec.yaml"
    spec_path.write_text(spec_text)
    out = root / "out"
    result = run_study(load_spec(spec_path), out, LocalBackend(workers=workers), spec_path=spec_path,
                       train_command=FAKE_TRAIN_COMMAND, echo=lambda line: None)
    return out, result


def patch_summary(run_dir: Path, **fields) -> None:
    """Update fields of a run's summary.json."""
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.update(fields)
    (run_dir / "summary.json").write_text(json.dumps(summary))
