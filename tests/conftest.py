"""Shared fixtures for the core package's tests.

Keep this file small: fixtures used by one test module belong in that module. Sections:
parallel runs (pytest-xdist groups), plugin managers, action specs.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from explorer_pipeline.plugins import make_plugin_manager
from explorer_pipeline.types import ActionSpec

# --------------------------------------------------------------------------- parallel runs
# `make test` runs the suite on two pytest-xdist workers with ``--dist loadgroup``. Tests that must
# share a worker get the same ``xdist_group`` here, at collection, so that tests added later are
# grouped without marks of their own:
# - tests that use one module- or session-scoped fixture of this project (a reference run, a
#   recorded scenario set, the llama.cpp server, a Ray cluster): the fixture is built once, not
#   once per worker;
# - every test that starts or joins Ray (a test or file named ``ray``, or a module importing it):
#   one Ray cluster at a time on the machine;
# - tests that build and install the wheels under tests/plugin_dist: one build of a source tree at
#   a time.
ROOT = Path(__file__).resolve().parent.parent
_RAY = re.compile(r"(?<![a-z])ray(?![a-z])", re.IGNORECASE)


def pytest_configure(config: pytest.Config) -> None:
    # registered by pytest-xdist too; declared here so that --strict-markers holds without it
    config.addinivalue_line("markers", "xdist_group(name): tests run on the same xdist worker")


def _shared_keys(item: pytest.Item, sources: dict[Path, str]) -> set[str]:
    keys = set()
    info = getattr(item, "_fixtureinfo", None)
    for name, defs in (info.name2fixturedefs.items() if info is not None else ()):
        fixturedef = defs[-1]
        if fixturedef.scope in ("module", "package", "session"):
            try:
                where = Path(inspect.getfile(inspect.unwrap(fixturedef.func))).resolve()
            except TypeError:  # a built-in
                continue
            if ROOT in where.parents and ".venv" not in where.parts:
                keys.add(f"{name}@{where.relative_to(ROOT)}" if fixturedef.scope == "module" else name)
    module = getattr(item, "module", None)
    if _RAY.search(item.nodeid) or (module is not None and getattr(module, "ray", None) is not None):
        keys.add("ray")
    path = Path(str(item.path))
    if path not in sources:
        sources[path] = path.read_text(encoding="utf-8") if path.suffix == ".py" else ""
    if "plugin_dist" in sources[path]:
        keys.add("plugin_dist")
    return keys


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    sources: dict[Path, str] = {}
    item_keys = [sorted(_shared_keys(item, sources)) for item in items]
    for keys in item_keys:
        for key in keys[1:]:
            parent[find(key)] = find(keys[0])
    for item, keys in zip(items, item_keys, strict=True):
        if keys:
            item.add_marker(pytest.mark.xdist_group(find(keys[0])))


# --------------------------------------------------------------------------- plugin managers


@pytest.fixture
def pm():
    """A fresh plugin manager with the built-in default plugins only (no entry points)."""
    return make_plugin_manager(autoload=False)


# --------------------------------------------------------------------------- action specs


@pytest.fixture
def discrete_spec() -> ActionSpec:
    """Four discrete actions labelled ``action 0`` .. ``action 3``."""
    return ActionSpec.discrete(4)


@pytest.fixture
def continuous_spec() -> ActionSpec:
    """One continuous dimension with range [-2, 2]."""
    return ActionSpec.continuous([-2.0], [2.0])
