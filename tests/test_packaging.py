"""The wheel ships the prompt data, and the console script and entry points are declared."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_contains_the_prompts(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("llm_explorer-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for data in sorted((ROOT / "prompts").rglob("*.yaml")):
        assert f"explorer_pipeline/prompts/{data.relative_to(ROOT / 'prompts')}" in names
    assert "explorer_pipeline/py.typed" in names
    presets = sorted((ROOT / "tianshou_integration" / "presets").glob("*.yaml"))
    assert {p.stem for p in presets} >= {"default", "paper"}
    for preset in presets:  # the run configuration's presets are data shipped in the wheel
        assert f"tianshou_integration/presets/{preset.name}" in names
    assert any(n.startswith("tianshou_integration/") for n in names)
    assert {"explorer_ablation/plugin.py", "explorer_ablation/spec.py", "explorer_rundir/format.py",
            "explorer_rundir/py.typed"} <= names
    assert not any(n.startswith("explorer_pipeline/ablation/") for n in names)  # the ablation is its own package
    assert not any(n.startswith(("tests/", "plugins/")) for n in names)


def test_console_script_and_plugin_entry_points():
    scripts = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")}
    assert scripts["llm-explorer"] == "explorer_pipeline.cli:main"
    plugins = {ep.name: ep.value for ep in metadata.entry_points(group="llm_explorer")}
    assert plugins["openai"] == "llm_explorer_openai"
    assert plugins["local"] == "llm_explorer_llamacpp"
    assert plugins["tianshou"] == "tianshou_integration.plugin"
    assert plugins["ablation"] == "explorer_ablation.plugin"
