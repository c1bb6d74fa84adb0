"""Fixtures for the ablation tests: spec files, the fake train command, running the CLI.

The fake (``fake_train.py``) stands in for ``llm-explorer train`` only in fault tests, where a
real run would just be slower; the end-to-end tests use the real train command.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from .helpers import FAKE_TRAIN_COMMAND, ROOT, cli_env


@pytest.fixture
def fake_train() -> list[str]:
    """The fake train command, as argv."""
    return list(FAKE_TRAIN_COMMAND)


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """``write_spec(yaml_text, name="spec.yaml")`` -> path (the text is dedented)."""

    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path

    return write


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_cli(*args, train_command=None, timeout=...)``: ``python -m explorer_pipeline ARGS``."""

    def run(*args: str, train_command: list[str] | None = None, timeout: float = 300,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "explorer_pipeline", *args], capture_output=True, text=True,
                              timeout=timeout, env=cli_env(train_command), cwd=cwd or ROOT, check=False)

    return run
