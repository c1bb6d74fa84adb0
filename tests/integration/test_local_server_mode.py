"""``llm-explorer train --provider local`` with the model in its private server process (the
default): updates are applied, and the server is gone after the run, after a Ctrl-C and after the
training process is SIGKILLed. Also: a run recorded through one server replays through another
(the response cache's key does not contain the server's port)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from explorer_pipeline import ActionSpec, EpisodeRecord, ExplorationUpdate, ExplorerConfig, open_explorer
from explorer_pipeline.types import RequestFailure

pytestmark = pytest.mark.integration

LLM_EXPLORER = str(Path(sys.executable).with_name("llm-explorer"))
CARTPOLE = ActionSpec.discrete(2)
CART_RECORD = EpisodeRecord(23.0, 23, "CartPole-v1", 5, tuple([1, 1, 0, 1] * 5 + [1, 0, 1]))


def start_train(out: Path, *args: str) -> subprocess.Popen:
    """A real training process in a session (process group) of its own, as a terminal would run it."""
    cmd = [LLM_EXPLORER, "train", "--env", "CartPole-v1", "--algo", "dqn", "--eval-episodes", "1",
           "--provider", "local", "--out", str(out), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "TQDM_DISABLE": "1"}, start_new_session=True)


def gone(proc: psutil.Process) -> bool:
    """``proc`` has exited (a zombie counts; psutil also tells a reused pid from the original)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def find_server(train: subprocess.Popen, timeout: float = 120) -> psutil.Process:
    """The llama.cpp server child of ``train`` (its pid, before anything is killed)."""
    parent = psutil.Process(train.pid)
    found: list[psutil.Process] = []

    def look() -> bool:
        for child in parent.children(recursive=True):
            try:
                if "llama_cpp.server" in child.cmdline():
                    found.append(child)
                    return True
            except psutil.NoSuchProcess:
                continue
        return train.poll() is not None

    wait_until(look, timeout)
    assert found, f"no llama.cpp server child appeared; train exited {train.poll()}"
    return found[0]


def wait_for_training(out: Path, train: subprocess.Popen, timeout: float = 180) -> None:
    """Until the run's first train episode is in metrics.csv: the explorer (and its server) is up
    and the training loop runs."""
    def started() -> bool:
        metrics = out / "metrics.csv"
        return train.poll() is not None or (metrics.exists() and len(metrics.read_text().splitlines()) > 1)

    assert wait_until(started, timeout) and train.poll() is None, "training did not start"


def kill_leftovers(train: subprocess.Popen, server: psutil.Process | None) -> None:
    """After a failed assertion: do not leak processes into the other tests."""
    if train.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(train.pid, signal.SIGKILL)
        train.wait()
    if server is not None and not gone(server):
        server.kill()
    if train.stdout is not None:
        train.stdout.close()


def server_ports() -> set[int]:
    """Ports of this process's llama.cpp server children."""
    ports = set()
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.NoSuchProcess):
            cmdline = child.cmdline()
            if "llama_cpp.server" in cmdline and child.status() != psutil.STATUS_ZOMBIE:
                ports.add(int(cmdline[cmdline.index("--port") + 1]))
    return ports


def test_train_applies_updates_and_leaves_no_server(tmp_path):
    out = tmp_path / "run"
    # blocking mode: training waits for every 5th episode's update, so updates are applied
    train = start_train(out, "--steps", "400", "--mode", "blocking", "--k", "5")
    server = None
    try:
        server = find_server(train)
        output, _ = train.communicate(timeout=600)
        assert train.returncode == 0, output[-2000:]
        assert wait_until(lambda: gone(server), 10), "the server outlived the run"
        summary = json.loads((out / "summary.json").read_text())
        assert summary["updates_applied"] >= 1, summary
        updates = [json.loads(line) for line in (out / "updates.jsonl").read_text().splitlines() if line.strip()]
        llm = [u for u in updates if u["source"] == "llm"]
        assert llm and llm[0]["provider"] == "local" and llm[0]["model"].endswith(".gguf")
        assert llm[0]["applied_at_step"] is not None and llm[0]["latency_s"] > 0
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["explorer"]["provider"] == "local"
    finally:
        kill_leftovers(train, server)


def test_ctrl_c_stops_the_run_and_its_server(tmp_path):
    out = tmp_path / "run"
    train = start_train(out, "--steps", "1000000")
    server = None
    try:
        server = find_server(train)
        wait_for_training(out, train)
        assert not gone(server)
        os.killpg(train.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        output, _ = train.communicate(timeout=120)
        assert train.returncode == 1, output[-2000:]
        assert "interrupted" in output
        assert wait_until(lambda: gone(server), 10), "the server outlived a Ctrl-C of the run"
        assert json.loads((out / "summary.json").read_text())["interrupted"] is True
    finally:
        kill_leftovers(train, server)


def test_sigkill_of_the_training_process_takes_the_server_with_it(tmp_path):
    out = tmp_path / "run"
    train = start_train(out, "--steps", "1000000")
    server = None
    try:
        server = find_server(train)
        wait_for_training(out, train)
        assert not gone(server)
        train.send_signal(signal.SIGKILL)  # the training process only: nothing can clean up
        train.wait(30)
        assert wait_until(lambda: gone(server), 30), "the server outlived the SIGKILLed training process"
    finally:
        kill_leftovers(train, server)


def test_a_run_recorded_through_one_server_replays_through_another(tmp_path):
    db = tmp_path / "responses.sqlite"
    config = ExplorerConfig(provider="local", max_tokens_analysis=40, response_cache=db)
    before = server_ports()
    with open_explorer(config, "CartPole-v1", CARTPOLE) as recording:
        first = server_ports() - before
        recorded = recording.runtime.submit_and_wait(CART_RECORD, timeout=240)
        assert isinstance(recorded, ExplorationUpdate), recorded
        replay = config.model_copy(update={"replay": True})  # the run configuration is frozen
        # opened while the first is still open: another server, on another port
        with open_explorer(replay, "CartPole-v1", CARTPOLE) as explorer:
            second = server_ports() - before - first
            assert len(first) == len(second) == 1
            replayed = explorer.runtime.submit_and_wait(CART_RECORD, timeout=60)
            other = explorer.runtime.submit_and_wait(EpisodeRecord(99.0, 99, "CartPole-v1", 6, (0,) * 99),
                                                     timeout=60)
    assert isinstance(replayed, ExplorationUpdate), replayed
    assert replayed.values == recorded.values
    assert isinstance(other, RequestFailure) and "ReplayMissError" in other.detail
