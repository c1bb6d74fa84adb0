"""explorer_pipeline never imports torch, tianshou or gymnasium, nor the packages built on it
(DESIGN.md: the core package's boundary); neither does explorer_rundir (the run directory's file
formats); the ablation package loads torch and tianshou only when a command needs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("torch", "tianshou", "gymnasium", "tianshou_integration", "explorer_ablation")

PROBE = """
import importlib, json, pkgutil, sys
import {package}
modules = [m.name for m in pkgutil.walk_packages({package}.__path__, "{package}.")
           if not m.name.endswith(".__main__")]  # __main__ runs the CLI
for name in modules:
    importlib.import_module(name)
if "{package}" == "explorer_pipeline":
    # reading the catalogues of the default plugins (prompt sets, tasks, stages) stays inside the boundary too
    explorer_pipeline.session.Catalogues(explorer_pipeline.make_plugin_manager(autoload=False))
forbidden = {forbidden!r}
print(json.dumps({{"imported": modules,
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in forbidden)}}))
"""


def run_probe(package: str, forbidden: tuple[str, ...]) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(package=package, forbidden=forbidden)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_core_package_loads_neither_torch_nor_tianshou_nor_gymnasium():
    report = run_probe("explorer_pipeline", (*FORBIDDEN, "explorer_rundir"))  # the core never reads run dirs
    assert "explorer_pipeline.session" in report["imported"] and "explorer_pipeline.cli" in report["imported"]
    assert "explorer_pipeline.default_plugins.stages" in report["imported"]
    assert {"explorer_pipeline.llm", "explorer_pipeline.default_plugins.scripted_model"} <= set(report["imported"])
    assert report["loaded"] == []


def test_rundir_format_package_loads_neither_torch_nor_tianshou_nor_gymnasium():
    report = run_probe("explorer_rundir", FORBIDDEN)
    assert {"explorer_rundir.format", "explorer_rundir.scenarios", "explorer_rundir.informativeness"} <= set(
        report["imported"])
    assert report["loaded"] == []


def test_ablation_package_imports_no_training_code_until_a_command_needs_it():
    report = run_probe("explorer_ablation", ("torch", "tianshou", "gymnasium", "tianshou_integration", "ray"))
    assert {"explorer_ablation.plugin", "explorer_ablation.spec", "explorer_ablation.report"} <= set(report["imported"])
    # the spec's shortcut fields come from the run configuration's declarations: that model
    # (pydantic and PyYAML) and the algorithm names, nothing that trains
    assert report["loaded"] == ["tianshou_integration", "tianshou_integration.config", "tianshou_integration.names"]
