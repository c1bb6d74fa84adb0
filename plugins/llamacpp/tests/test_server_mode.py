"""The local provider's private llama.cpp server process: it starts on 127.0.0.1, fails with one
clear line, and never outlives its owner: not after ``close()``, not after garbage collection,
not after the thread that started it ends, not after its owner is SIGKILLed."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from llm_explorer_llamacpp import LocalProvider
from llm_explorer_llamacpp.server import LlamaServerChatModel, ServerStartError

from explorer_pipeline import ProviderSettings

pytestmark = pytest.mark.integration


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


def server_children() -> list[psutil.Process]:
    """This process's llama.cpp server children that are still running."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "llama_cpp.server" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.fixture
def no_leftover_servers():
    """Fails the test if it leaves a server child behind (and kills it, so others are not hurt)."""
    before = {p.pid for p in server_children()}
    yield
    left = [p for p in server_children() if p.pid not in before]
    for p in left:
        p.kill()
    assert not left, f"servers left running: {[p.pid for p in left]}"


def test_server_is_private_to_this_machine_and_its_own_session(no_leftover_servers):
    model = LocalProvider().create(ProviderSettings())
    try:
        assert isinstance(model, LlamaServerChatModel)
        server = model.server
        proc = psutil.Process(server.pid)
        cmdline = proc.cmdline()
        assert cmdline[:3] == [sys.executable, "-m", "llama_cpp.server"]  # the launcher exec'd into the server
        assert cmdline[cmdline.index("--host") + 1] == "127.0.0.1"
        assert cmdline[cmdline.index("--n_threads") + 1] == "1"
        assert proc.ppid() == os.getpid()
        assert os.getsid(server.pid) == server.pid  # a terminal's Ctrl-C reaches the training process only
        listening = {c.laddr for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
        assert listening == {("127.0.0.1", server.port)}
        # its output goes to an unnamed file: nothing to clean up, even after a SIGKILL
        assert server.log_path is None and os.readlink(f"/proc/{server.pid}/fd/1").endswith("(deleted)")
    finally:
        model.close()
    assert not alive(server.pid)
    model.close()  # idempotent


def test_options_reach_the_server_command_line(tmp_path, no_leftover_servers):
    log = tmp_path / "logs" / "server.log"
    model = LocalProvider().create(ProviderSettings(options={"threads": "2", "n_ctx": "1024", "cache": "off",
                                                             "nice": "5", "log": str(log)}))
    try:
        assert psutil.Process(model.server.pid).nice() == os.nice(0) + 5
        cmdline = psutil.Process(model.server.pid).cmdline()
        assert cmdline[cmdline.index("--n_threads_batch") + 1] == "2"
        assert cmdline[cmdline.index("--n_ctx") + 1] == "1024"
        assert "--cache" not in cmdline
    finally:
        model.close()
    assert log.exists() and "Uvicorn running" in log.read_text()  # a log the user named is kept

    model = LocalProvider().create(ProviderSettings(options={"cache": "on"}))
    try:
        cmdline = psutil.Process(model.server.pid).cmdline()
        assert cmdline[cmdline.index("--cache") + 1] == "true"
        assert int(cmdline[cmdline.index("--cache_size") + 1]) > 0
    finally:
        model.close()


def test_settings_in_the_environment_do_not_reach_the_server(tmp_path, monkeypatch, no_leftover_servers):
    """llama_cpp.server reads its settings from environment variables too (any case): a key, a
    config file or a context size meant for something else must not change our server."""
    monkeypatch.setenv("API_KEY", "sk-meant-for-another-service")
    monkeypatch.setenv("config_file", str(tmp_path / "missing.yaml"))
    monkeypatch.setenv("N_CTX", "300")
    monkeypatch.setenv("LLM_EXPLORER_UNRELATED", "kept")
    model = LocalProvider().create(ProviderSettings(options={"start_timeout": "60"}))
    try:
        reply = model.invoke("Say hi.", extra_body={"max_tokens": 3})
        assert reply.usage_metadata["output_tokens"] > 0
        environ = psutil.Process(model.server.pid).environ()
        assert "API_KEY" not in environ and "config_file" not in environ and "N_CTX" not in environ
        assert environ["LLM_EXPLORER_UNRELATED"] == "kept"
    finally:
        model.close()


def test_garbage_collected_model_stops_its_server(no_leftover_servers):
    model = LocalProvider().create(ProviderSettings())
    pid = model.server.pid
    assert alive(pid)
    del model
    gc.collect()
    assert wait_until(lambda: not alive(pid), 10)


def test_server_outlives_the_thread_that_started_it(no_leftover_servers):
    """The parent-death signal follows the thread that forked the child: a server started from a
    short-lived thread must not die with that thread."""
    made = {}
    thread = threading.Thread(target=lambda: made.setdefault("model", LocalProvider().create(ProviderSettings())))
    thread.start()
    thread.join()
    model = made.pop("model")
    try:
        time.sleep(1.0)
        assert alive(model.server.pid)
        assert model.invoke("Say hi.", extra_body={"max_tokens": 3}).usage_metadata["output_tokens"] > 0
    finally:
        model.close()


def test_a_server_that_cannot_load_the_model_is_one_clear_line(tmp_path, no_leftover_servers):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not a GGUF file" * 100)
    started = time.monotonic()
    with pytest.raises(ServerStartError) as caught:
        LocalProvider().create(ProviderSettings(model=str(bad)))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("the local provider's llama.cpp server (broken.gguf, port ")
    assert "exited with status" in message
    log = Path(message.rsplit("log: ", 1)[1])
    assert log.exists() and "broken.gguf" in log.read_text()  # kept: it explains the failure
    assert time.monotonic() - started < 60
    log.unlink()


def test_a_server_that_is_not_ready_in_time_is_stopped(no_leftover_servers):
    expected = r"did not answer within 0\.01 s \(--option start_timeout=SECONDS\)"
    with pytest.raises(ServerStartError, match=expected) as caught:
        LocalProvider().create(ProviderSettings(options={"start_timeout": "0.01"}))
    log = Path(str(caught.value).rsplit("log: ", 1)[1])
    assert log.exists()  # a copy of what the server wrote, for the user to read
    log.unlink()
    # no_leftover_servers checks that the process is gone


def test_ctrl_c_while_waiting_for_the_server_stops_it(monkeypatch, no_leftover_servers):
    started = []
    real_popen = subprocess.Popen

    def popen(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(subprocess, "Popen", popen)
    # the first readiness probe is "interrupted" while the server process is already running
    monkeypatch.setattr(urllib.request.OpenerDirector, "open", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        LocalProvider().create(ProviderSettings())
    assert len(started) == 1 and started[0].poll() is not None


OWNER = """
import sys, threading, time
from explorer_pipeline import ProviderSettings
from llm_explorer_llamacpp import LocalProvider

made = {}
# created from a thread that ends at once: the server must still die with this process
t = threading.Thread(target=lambda: made.setdefault("m", LocalProvider().create(ProviderSettings())))
t.start(); t.join()
print(made["m"].server.pid, flush=True)
time.sleep(600)
"""


def test_server_dies_with_its_sigkilled_owner():
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    server_pid = None
    try:
        server_pid = int(owner.stdout.readline())
        assert alive(server_pid) and psutil.Process(server_pid).ppid() == owner.pid
        owner.send_signal(signal.SIGKILL)
        owner.wait(30)
        assert wait_until(lambda: not alive(server_pid), 30), "the server outlived the process that owned it"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        owner.stdout.close()
        if server_pid is not None and alive(server_pid):  # only after a failure above: do not leak it
            os.kill(server_pid, signal.SIGKILL)
