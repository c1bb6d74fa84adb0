"""explorer_pipeline never imports torch or tianshou (DESIGN.md: the core package's boundary)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("torch", "tianshou", "tianshou_integration")

PROBE = """
import importlib, json, pkgutil, sys
import explorer_pipeline, explorer_pipeline.session, explorer_pipeline.cli
modules = [m.name for m in pkgutil.walk_packages(explorer_pipeline.__path__, "explorer_pipeline.")
           if not m.name.endswith(".__main__")]  # __main__ runs the CLI
for name in modules:
    importlib.import_module(name)
# reading the catalogues of the default plugins (prompt sets, tasks, stages) stays inside the boundary too
explorer_pipeline.session.Catalogues(explorer_pipeline.make_plugin_manager(autoload=False))
forbidden = {forbidden!r}
print(json.dumps({{"imported": modules,
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in forbidden)}}))
"""


def run_probe() -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(forbidden=FORBIDDEN)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_core_package_loads_neither_torch_nor_tianshou():
    report = run_probe()
    assert "explorer_pipeline.session" in report["imported"] and "explorer_pipeline.cli" in report["imported"]
    assert "explorer_pipeline.default_plugins.stages" in report["imported"]
    assert report["loaded"] == []
