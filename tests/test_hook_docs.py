"""Every hook is documented in docs/plugin_hooks.md (as datasette's test_plugin_hooks_are_documented)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from explorer_pipeline import hookspecs
from explorer_pipeline.plugins import make_plugin_manager

DOCS = Path(__file__).resolve().parent.parent / "docs" / "plugin_hooks.md"
PM = make_plugin_manager(autoload=False)
HOOKS = sorted(name for name in vars(PM.hook) if not name.startswith("_"))


def test_the_hook_list_is_the_spec_list():
    assert sorted(hookspecs.hook_names()) == HOOKS
    assert HOOKS  # the plugin manager really carries the hookspecs


def signature(name: str) -> str:
    spec = getattr(PM.hook, name).spec
    assert spec is not None, f"{name} has no hookspec"
    return f"{name}({', '.join(spec.argnames)})"


@pytest.mark.parametrize("hook", HOOKS)
def test_plugin_hooks_are_documented(hook):
    assert DOCS.is_file(), f"{DOCS} does not exist"
    text = DOCS.read_text(encoding="utf-8")
    headings = [line for line in text.splitlines() if re.match(r"#+\s", line)]
    assert any(re.search(rf"\b{re.escape(hook)}\b", line) for line in headings), f"no heading for {hook}"
    assert signature(hook) in text, f"{signature(hook)} is not in {DOCS.name}"
