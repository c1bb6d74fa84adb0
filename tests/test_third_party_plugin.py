"""A real third-party plugin distribution (tests/plugin_dist) found through its entry point.

It is installed with pip into a temporary directory (no network, no build isolation) that only
the child processes see, through PYTHONPATH; this test's own environment never has it. A real
``train`` run then chooses its summariser and validator by name, and the files they write, the
exchange log, ``updates.jsonl`` and the manifest show that both ran and what they did.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DIST = Path(__file__).resolve().parent / "plugin_dist"
PACKAGE = "llm_explorer_testplugin"
MARKER = "[summarised by llm-explorer-testplugin]"


def installed_here() -> bool:
    entry_points = importlib.metadata.entry_points(group="llm_explorer")
    return importlib.util.find_spec(PACKAGE) is not None or "testplugin" in entry_points.names


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A directory holding the installed plugin distribution (and nothing else)."""
    assert not installed_here(), "the test plugin must not be installed in the test environment"
    target = tmp_path_factory.mktemp("plugin-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--disable-pip-version-check", "--target", str(target), str(DIST)],
                   check=True, capture_output=True, text=True, timeout=300)
    assert (target / PACKAGE / "__init__.py").is_file()
    assert list(target.glob("llm_explorer_testplugin-0.0.1.dist-info/entry_points.txt"))
    yield target
    assert not installed_here(), "installing into the temporary directory leaked into the test environment"


def run(site: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               MPLBACKEND="Agg", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for name in ("LLM_EXPLORER_DISABLE_PLUGIN_AUTOLOAD", "LLM_EXPLORER_BLOCK_PLUGINS"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "explorer_pipeline", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_a_train_run_uses_the_plugins_summariser_and_validator(site, tmp_path):
    summaries, validations, out = tmp_path / "summaries.jsonl", tmp_path / "validations.jsonl", tmp_path / "run"
    result = run(site, "train", "--env", "CartPole-v1", "--algo", "dqn", "--steps", "600", "--provider", "scripted",
                 "--mode", "blocking", "--eval-episodes", "2", "--out", str(out),
                 "--set", "explorer.summariser.name=recording", "--set", f"explorer.summariser.options.log={summaries}",
                 "--set", "explorer.validator.name=recording", "--set", f"explorer.validator.options.log={validations}")
    assert result.returncode == 0, result.stdout + result.stderr

    summary = json.loads((out / "summary.json").read_text())
    published = summary["updates_published"]
    assert published > 0 and summary["llm_requests"] == published  # blocking, every episode: all succeeded

    # the summariser ran once per request, and the model saw what it wrote
    summarised = read_jsonl(summaries)
    assert len(summarised) == summary["llm_requests"]
    assert [s["episode"] for s in summarised] == sorted(s["episode"] for s in summarised)
    analysis_requests = [e for e in read_jsonl(out / "exchanges.jsonl") if e["stage"] == "analysis"]
    assert len(analysis_requests) == len(summarised)
    assert all(MARKER in e["request"][-1]["content"] for e in analysis_requests)

    # the validator ran once per request, and what it returned is what the run applied
    validated = read_jsonl(validations)
    assert len(validated) == published
    llm_updates = sorted((u for u in read_jsonl(out / "updates.jsonl") if u["source"] == "llm"),
                         key=lambda u: u["version"])
    assert [u["values"] for u in llm_updates] == [v["out"] for v in validated]
    assert all(v["in"] != v["out"] for v in validated)  # the default rules it wraps (floor 0.05) did change them

    manifest = json.loads((out / "manifest.json").read_text())["explorer"]
    assert manifest["stages"]["summariser"] == {"name": "recording", "options": {"log": str(summaries)},
                                                "plugin": "testplugin"}
    assert manifest["stages"]["validator"]["plugin"] == "testplugin"
    assert manifest["stages"]["proposer"]["name"] == "default"
    plugins = {p["name"]: p for p in manifest["plugins"]}
    assert (plugins["testplugin"]["distribution"], plugins["testplugin"]["version"]) == ("llm-explorer-testplugin",
                                                                                        "0.0.1")
    assert plugins["testplugin"]["hooks"] == ["register_summarisers", "register_validators"]


def test_llm_explorer_plugins_lists_the_plugins_stages(site):
    result = run(site, "plugins")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "testplugin (llm-explorer-testplugin 0.0.1): register_summarisers, register_validators" in out
    stages = out.split("\nstages (", 1)[1]
    summarisers = stages.split("\n  summariser:\n", 1)[1].split("\n  analyser:\n", 1)[0].splitlines()
    assert summarisers[0].startswith("    * default ")
    assert summarisers[1].startswith("      recording ")
    assert summarisers[1].endswith("(options: log) [from testplugin]")
    validators = stages.split("\n  validator:\n", 1)[1].split("\n  parsers", 1)[0].splitlines()
    assert [line.split()[0] for line in validators] == ["*", "recording"]


def test_a_misspelt_stage_name_is_one_line_and_writes_nothing(site, tmp_path):
    out = tmp_path / "never"
    result = run(site, "train", "--env", "CartPole-v1", "--algo", "dqn", "--steps", "100", "--provider", "scripted",
                 "--out", str(out), "--set", "explorer.summariser.name=recordin")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["Error: unknown summariser 'recordin'; available: default, recording"]
    assert not out.exists()
