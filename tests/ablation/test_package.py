"""The ablation package: its own package outside the core, adding its commands through the hook,
with modules that import one another without cycles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

import explorer_ablation
from explorer_ablation import plugin
from explorer_ablation.cli import ablate, report, status
from explorer_ablation.offline.cli import eval_advice, scenarios

from .helpers import ROOT, cli_env

PACKAGE = Path(explorer_ablation.__file__).resolve().parent


def test_the_plugin_adds_its_commands():
    group = click.Group("llm-explorer")
    plugin.register_commands(group)
    assert group.commands == {"ablate": ablate, "report": report, "status": status, "scenarios": scenarios,
                              "eval-advice": eval_advice}


def test_the_commands_arrive_only_through_the_plugin():
    env = cli_env()
    env["LLM_EXPLORER_BLOCK_PLUGINS"] = "ablation"
    done = subprocess.run([sys.executable, "-m", "explorer_pipeline", "report", "."], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120, check=False)
    assert done.returncode == 2 and "No such command 'report'" in done.stderr
    env.pop("LLM_EXPLORER_BLOCK_PLUGINS")
    done = subprocess.run([sys.executable, "-m", "explorer_pipeline", "--help"], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120, check=False)
    assert done.returncode == 0 and "ablate" in done.stdout and "report" in done.stdout


def test_bad_options_are_bad_input(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\n")
    result = CliRunner().invoke(ablate, [str(spec), "--ray-address", "auto"])
    assert result.exit_code == 2 and result.output == "Error: --ray-address needs --backend ray\n"
    result = CliRunner().invoke(report, [str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.startswith("Error: ") and "is not an ablation study directory" in result.output


def _imports(module: Path) -> set[str]:
    """Sibling modules ``module`` imports anywhere (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("explorer_ablation."):
                found.add(node.module.split(".")[1])
    return found


def test_modules_import_one_another_without_cycles():
    graph = {path.stem: _imports(path) & {p.stem for p in PACKAGE.glob("*.py")} for path in PACKAGE.glob("*.py")}
    assert "spec" in graph["plan"] and "plan" not in graph["spec"]  # the old plan <-> spec cycle is gone
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name in done:
            return
        for child in graph[name]:
            visit(child, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())


def test_the_core_package_has_no_ablation_left():
    assert not (ROOT / "explorer_pipeline" / "ablation").exists()
