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

from ..fault_server import ServerThread


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """``python -m llama_cpp.server`` with the embedded SmolLM2 model, one thread."""

    def __init__(self, log_path) -> None:
        from llm_explorer_llamacpp import default_model_path

        self.port = free_port()
        self.log_path = log_path
        self.cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(default_model_path()),
                    "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "2048",
                    "--n_threads", "1", "--n_threads_batch", "1", "--model_alias", "smollm2"]
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LlamaServer:
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited ({self.proc.returncode}); see {self.log_path}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as r:
                if r.status == 200:
                    return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"llama.cpp server did not answer within 120 s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if hasattr(self, "_log"):
            self._log.close()


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    server = LlamaServer(tmp_path_factory.mktemp("llama") / "server.log").start()
    yield server
    server.stop()


@pytest.fixture
def fresh_llama_server(tmp_path):
    """A server of the test's own, which the test may kill."""
    server = LlamaServer(tmp_path / "server.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fault_server():
    with ServerThread() as server:
        yield server


@pytest.fixture(autouse=True)
def _no_real_openai_key(monkeypatch):
    # Integration tests talk to local servers only; a key in the environment must not leak out.
    monkeypatch.setenv("OPENAI_API_KEY", os.environ.get("LLM_EXPLORER_TEST_KEY", "sk-local-test-key-123456"))
