"""Real components: a llama.cpp OpenAI-compatible server with SmolLM2 on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from explorer_pipeline import child_process

from ..fault_server import ServerThread


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """``python -m llama_cpp.server`` with the embedded SmolLM2 model, one thread.

    The server runs in a session of its own (a Ctrl-C in the terminal reaches pytest, which stops
    it, rather than the server directly) and, on Linux, gets SIGKILL when the process that started
    it dies, so a SIGKILLed pytest leaves no server behind (``explorer_pipeline.child_process``).
    :meth:`start` stops the server on every path out of it that does not return a ready server (a
    failure, a timeout, a Ctrl-C).
    """

    def __init__(self, log_path) -> None:
        from llm_explorer_llamacpp import default_model_path

        self.port = free_port()
        self.log_path = log_path
        self.cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(default_model_path()),
                    "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "2048",
                    "--n_threads", "1", "--n_threads_batch", "1", "--model_alias", "smollm2"]
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def spawn(self) -> LlamaServer:
        """Start the process (not yet serving)."""
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        try:
            self.proc = child_process.spawn(self.cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                            stderr=subprocess.STDOUT)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout_s: float = 120.0) -> LlamaServer:
        """Wait until the server answers ``/models``; stop it if it does not (for any reason)."""
        ready = False
        try:
            assert self.proc is not None
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"llama.cpp server exited ({self.proc.returncode}); see {self.log_path}")
                with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as r:
                    if r.status == 200:
                        ready = True
                        return self
                time.sleep(0.3)
            raise RuntimeError(f"llama.cpp server did not answer within {timeout_s} s; see {self.log_path}")
        finally:
            if not ready:
                self.stop()

    def start(self) -> LlamaServer:
        return self.spawn().wait_ready()

    def stop(self) -> None:
        """Stop the server's whole process group: SIGTERM, then SIGKILL after 15 s. Idempotent."""
        try:
            if self.proc is not None:
                child_process.stop(self.proc, 15)
        finally:
            if self._log is not None:
                self._log.close()


@contextlib.contextmanager
def running_llama_server(log_path):
    """A started server, stopped when the block ends however it ends."""
    server = LlamaServer(log_path)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    with running_llama_server(tmp_path_factory.mktemp("llama") / "server.log") as server:
        yield server


@pytest.fixture
def fresh_llama_server(tmp_path):
    """A server of the test's own, which the test may kill."""
    with running_llama_server(tmp_path / "server.log") as server:
        yield server


@pytest.fixture(scope="session")
def fault_server():
    with ServerThread() as server:
        yield server


@pytest.fixture(autouse=True)
def _no_real_openai_key(monkeypatch):
    # Integration tests talk to local servers only; a key in the environment must not leak out.
    monkeypatch.setenv("OPENAI_API_KEY", os.environ.get("LLM_EXPLORER_TEST_KEY", "sk-local-test-key-123456"))
