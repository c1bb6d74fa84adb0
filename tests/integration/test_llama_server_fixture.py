"""The llama.cpp server helper of conftest.py never leaves a server behind: not when start-up is
interrupted, and not when the process that started it (pytest) is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from .conftest import LlamaServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

# a stand-in for pytest: starts a server with the same helper, reports its pid, then waits to be killed
PARENT = """
import sys, time
from tests.integration.conftest import LlamaServer

server = LlamaServer(sys.argv[1]).spawn()
print(server.proc.pid, flush=True)
if sys.argv[2] == "ready":
    server.wait_ready()
    print("ready", flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.parametrize("stage", ["starting", "ready"])
def test_server_dies_with_a_sigkilled_parent(tmp_path, stage):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path / "server.log"), stage], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    server_pid = None
    try:
        server_pid = int(parent.stdout.readline())
        if stage == "ready":
            assert parent.stdout.readline().strip() == "ready"
        assert alive(server_pid)
        assert psutil.Process(server_pid).ppid() == parent.pid
        assert os.getsid(server_pid) == server_pid  # a session of its own: a terminal's Ctrl-C goes to pytest
        parent.send_signal(signal.SIGKILL)
        parent.wait(30)
        assert wait_until(lambda: not alive(server_pid), 30), "the server outlived the process that started it"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()
        if server_pid is not None and alive(server_pid):  # only after a failure above: do not leak it
            os.kill(server_pid, signal.SIGKILL)


def test_interrupted_start_up_stops_the_server(tmp_path, monkeypatch):
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    # the first readiness probe is "interrupted" while the server process is already running
    monkeypatch.setattr(urllib.request, "urlopen", ctrl_c)
    server = LlamaServer(tmp_path / "server.log")
    try:
        with pytest.raises(KeyboardInterrupt):
            server.start()
        assert server.proc is not None and server.proc.poll() is not None
        assert not alive(server.proc.pid)
    finally:
        if server.proc is not None and server.proc.poll() is None:  # only after a failure above
            server.proc.kill()
            server.proc.wait()


def test_a_server_that_exits_during_start_up_is_reported(tmp_path):
    server = LlamaServer(tmp_path / "server.log")
    server.cmd[server.cmd.index("--model") + 1] = str(tmp_path / "missing.gguf")
    with pytest.raises(RuntimeError, match="exited"):
        server.start()
    assert server.proc is not None and server.proc.poll() is not None
