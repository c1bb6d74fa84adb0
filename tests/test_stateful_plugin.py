"""A third-party stage's state survives ``train --resume`` through the state protocol.

The plugin distribution in tests/plugin_dist is installed into a temporary directory (see
tests/test_third_party_plugin.py). Its ``dice`` analyser (module ``stateful_testplugin``, a
name unrelated to the project's) keeps a random generator and a call counter and implements
``get_state``/``set_state``. A run stopped with Ctrl-C and resumed must write the same analyses,
draw for draw and number for number, as the same run left alone.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_third_party_plugin import site  # noqa: F401  (the installed plugin distribution)

ROOT = Path(__file__).resolve().parent.parent
STEPS = 1500
RUN = ["train", "--env", "CartPole-v1", "--algo", "dqn", "--steps", str(STEPS), "--seed", "5", "--provider", "scripted",
       "--mode", "blocking", "--eval-episodes", "2", "--set", "eval.every=500", "--set", "network.hidden_sizes=[32,32]",
       "--set", "checkpoint.every_steps=400", "--set", "explorer.analyser.name=dice",
       "--set", "explorer.analyser.options.salt=7"]
WALL_CLOCK = {"t_s", "latency_s", "time"}  # the only fields two identical runs may differ in
ANALYSIS = re.compile(r"analysis \d+: try action \d+ \(draw [0-9.]+\)")


def child_env(site_dir: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site_dir), os.environ.get("PYTHONPATH", "")]).rstrip(
        os.pathsep), MPLBACKEND="Agg", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TQDM_DISABLE="1",
        PYTHONUNBUFFERED="1")
    for name in ("LLM_EXPLORER_DISABLE_PLUGIN_AUTOLOAD", "LLM_EXPLORER_BLOCK_PLUGINS"):
        env.pop(name, None)
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "explorer_pipeline", *args]


def jsonl(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in WALL_CLOCK}
            for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def analyses(run_dir: Path) -> list[str]:
    """The analyser's text in each stage-2 prompt, in order (the analyser calls no model)."""
    found = []
    for entry in jsonl(run_dir / "exchanges.jsonl"):
        if entry["stage"] == "proposal" and entry["attempt"] == 1:
            match = ANALYSIS.search(entry["request"][-1]["content"])
            assert match is not None, entry["request"][-1]["content"]
            found.append(match.group(0))
    return found


def env_steps(run_dir: Path) -> int:
    metrics = run_dir / "metrics.csv"
    if not metrics.exists():
        return 0
    rows = [line.split(",") for line in metrics.read_text().splitlines()[1:]]
    return max([0, *(int(row[0]) for row in rows if len(row) == 3 and row[0].isdigit())])


@pytest.fixture(scope="module")
def reference(site, tmp_path_factory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("stateful-reference") / "run"
    result = subprocess.run(command(*RUN, "--out", str(out)), cwd=ROOT, env=child_env(site), capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_the_reference_run_used_the_plugins_stateful_analyser(reference):
    manifest = json.loads((reference / "manifest.json").read_text())["explorer"]
    assert manifest["stages"]["analyser"] == {"name": "dice", "options": {"salt": 7}, "plugin": "stateful"}
    texts = analyses(reference)
    assert len(texts) >= 5
    assert [t.split(":")[0] for t in texts] == [f"analysis {i}" for i in range(1, len(texts) + 1)]
    assert len({t.split("(draw ")[1] for t in texts}) == len(texts)  # the generator really draws


def test_a_resumed_run_continues_the_stages_generator_and_counter(site, reference, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    env = child_env(site)
    proc = subprocess.Popen(command(*RUN, "--out", str(out)), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while env_steps(out) <= 600:
            assert proc.poll() is None, f"the run ended before 600 env steps: {proc.communicate()}"
            assert time.monotonic() < deadline, "timed out waiting for 600 env steps"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, stderr
    stopped = json.loads((out / "summary.json").read_text())
    assert stopped["interrupted"] is True and 600 < stopped["env_steps"] < STEPS
    before = analyses(out)
    assert 0 < len(before) < len(analyses(reference))

    result = subprocess.run(command("train", "--resume", str(out)), cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert analyses(out)[:len(before)] == before
    assert analyses(out) == analyses(reference)  # numbering and draws go on where they stopped
    assert jsonl(out / "updates.jsonl") == jsonl(reference / "updates.jsonl")
    assert (out / "metrics.csv").read_bytes() == (reference / "metrics.csv").read_bytes()
