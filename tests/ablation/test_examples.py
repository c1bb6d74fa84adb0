"""Every example spec in examples/ is valid against the installed plugins, gymnasium and the real
train command's options."""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer_pipeline.ablation.launch import default_train_command
from explorer_pipeline.ablation.plan import expand
from explorer_pipeline.ablation.preflight import TrainInterface, probe
from explorer_pipeline.ablation.spec import load_spec

from .helpers import ROOT

EXAMPLES = sorted((ROOT / "examples").glob("ablation-*.yaml"))


@pytest.fixture(scope="module")
def train_interface() -> TrainInterface:
    interface = probe(default_train_command())
    assert {"--env", "--algo", "--seed", "--out", "--prompt-set"} <= interface.flags
    assert interface.algorithms is not None and "dqn" in interface.algorithms
    return interface


def test_the_issue_asks_for_the_prompt_ablation_and_the_control_arms():
    names = {path.name for path in EXAMPLES}
    assert {"ablation-prompts.yaml", "ablation-controls.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_spec_is_valid(path: Path, train_interface: TrainInterface):
    spec = load_spec(path, interface=train_interface)
    runs = expand(spec, path.parent)
    assert len(runs) == len(spec.arms) * len(spec.environments) * len(spec.seeds)
    assert spec.baseline_arm is not None
    assert spec.settings(spec.baseline_arm)["provider"] == "none"
