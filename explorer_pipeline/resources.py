"""Where the built-in data (``prompts/``) lives: inside the wheel, or in the source checkout."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def prompts_dir() -> Path:
    """The built-in ``prompts`` folder.

    A wheel ships it as ``explorer_pipeline/prompts``; an editable install reads the repository's
    top-level ``prompts/`` folder.
    """
    packaged = Path(str(resources.files("explorer_pipeline"))) / "prompts"
    if packaged.is_dir():
        return packaged
    source = Path(__file__).resolve().parent.parent / "prompts"
    if source.is_dir():
        return source
    raise FileNotFoundError(f"built-in prompts not found at {packaged} or {source}")
