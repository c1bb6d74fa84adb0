"""Shared fixtures for the core package's tests.

Keep this file small: fixtures used by one test module belong in that module. Sections:
plugin managers, action specs.
"""

from __future__ import annotations

import pytest

from explorer_pipeline.plugins import make_plugin_manager
from explorer_pipeline.types import ActionSpec

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
