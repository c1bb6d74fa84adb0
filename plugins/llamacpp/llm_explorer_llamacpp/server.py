"""A private llama.cpp server: ``python -m llama_cpp.server`` started by the ``local`` provider.

The model then runs in a process of its own, so its per-token Python loop no longer competes with
training for the training process's GIL. The provider owns the process:

- it listens on 127.0.0.1 only, on a port that was free when it started;
- it runs in a session of its own, so a Ctrl-C in the terminal reaches the training process
  (which then stops the server) rather than the server;
- on Linux it gets SIGKILL when the process that started it dies (``PR_SET_PDEATHSIG``), so it
  never outlives a killed training process (:mod:`explorer_pipeline.child_process` starts it);
- :meth:`LlamaServer.stop` ends it (SIGTERM to its process group, SIGKILL after a short grace);
  the chat model that owns it calls ``stop`` from ``close()``, when it is garbage-collected and
  at interpreter exit.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from langchain_openai import ChatOpenAI
from pydantic import PrivateAttr

from explorer_pipeline import UsageError, child_process


def server_environment() -> dict[str, str]:
    """This process's environment without what llama_cpp.server would read as its settings:
    ``CONFIG_FILE`` (which replaces every argument) and any variable named like one of its
    settings, in any case (pydantic-settings matches them case-insensitively): an ``API_KEY``
    meant for something else would otherwise lock us out of our own server."""
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    names = {"config_file", *ModelSettings.model_fields, *ServerSettings.model_fields}
    return {key: value for key, value in os.environ.items() if key.lower() not in names}


class ServerStartError(UsageError):
    """The private llama.cpp server did not become ready (one line, with the log's path)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class ServerOptions:
    """How to run the server.

    :param alias: the model name the server answers to (and reports in replies).
    :param cache_bytes: llama.cpp's prompt cache (0 = off): states of earlier prompts, so a prompt
        that shares a prefix with an earlier one (not only with the last one) skips that prefix.
    :param nice: added to the server's niceness (POSIX): > 0 lets training have the CPU first
        when the cores are oversubscribed.
    :param log_path: a file the server's output is appended to; ``None``: an unnamed temporary
        file, which disappears with the last process that holds it (when the server fails to
        start, its content is copied to a named file for the error message).
    """

    model_path: Path
    alias: str
    threads: int = 1
    n_ctx: int = 2048
    n_batch: int = 512
    cache_bytes: int = 0
    nice: int = 0
    seed: int = 0
    start_timeout_s: float = 60.0
    log_path: Path | None = None


class LlamaServer:
    """One ``python -m llama_cpp.server`` process (same interpreter) on 127.0.0.1."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = options.log_path
        self._log: Any = None  # the server's stdout, also open here for reading the tail
        self._owner = os.getpid()
        self._lock = threading.Lock()
        self._timed_out = False

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible API root, ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        """The server's process id (``None`` before :meth:`start`)."""
        return self.proc.pid if self.proc is not None else None

    def command(self) -> list[str]:
        """The command line that starts the server (through the launcher on POSIX)."""
        return child_process.launcher_command(self.server_command(), self.options.nice)

    def server_command(self) -> list[str]:
        """The server's own command line: ``python -m llama_cpp.server`` and its arguments."""
        o = self.options
        server = ["-m", "llama_cpp.server", "--model", str(o.model_path), "--model_alias", o.alias,
                  "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(o.n_ctx),
                  "--n_batch", str(o.n_batch), "--n_threads", str(o.threads), "--n_threads_batch", str(o.threads),
                  "--seed", str(o.seed)]
        if o.cache_bytes:
            server += ["--cache", "true", "--cache_type", "ram", "--cache_size", str(o.cache_bytes)]
        return [sys.executable, *server]

    def start(self) -> LlamaServer:
        """Start the server and wait until it answers; on any way out that is not a ready server
        (an error, a timeout, a Ctrl-C) the process is stopped. Raises :class:`ServerStartError`."""
        ready = False
        try:
            for attempt in range(3):
                self._spawn()
                if self._wait_ready():
                    ready = True
                    return self
                if attempt < 2 and self._port_was_taken():  # lost a race for the port: try another
                    self.stop()
                    continue
                break
            raise ServerStartError(self._failure())
        finally:
            if not ready:
                self.stop()

    def _spawn(self) -> None:
        self.port = free_port()
        self._close_log()
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab+")  # noqa: SIM115 - closed in stop()
        else:
            self._log = tempfile.TemporaryFile()  # noqa: SIM115 - unnamed: nothing is ever left behind
        self.proc = child_process.spawn(self.server_command(), nice=self.options.nice, stdin=subprocess.DEVNULL,
                                        stdout=self._log, stderr=subprocess.STDOUT, env=server_environment(),
                                        close_fds=True)

    def _wait_ready(self) -> bool:
        """Poll ``/v1/models`` until it answers 200 (True), the process exits or the time is up."""
        assert self.proc is not None
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
        deadline = time.monotonic() + self.options.start_timeout_s
        self._timed_out = False
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(OSError, urllib.error.URLError), \
                    opener.open(f"{self.base_url}/models", timeout=2) as reply:
                if reply.status == 200 and self.proc.poll() is None:
                    return True
            time.sleep(0.1)
        self._timed_out = True
        return False

    def _log_text(self) -> str:
        """What the server wrote so far (read without moving the file offset it writes at)."""
        if self._log is None:
            return ""
        try:
            fd = self._log.fileno()
            return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")
        except (OSError, ValueError):
            return ""

    def _log_tail(self) -> str:
        lines = [line.strip() for line in self._log_text().splitlines() if line.strip()]
        return lines[-1][:300] if lines else ""

    def _port_was_taken(self) -> bool:
        tail = self._log_tail().lower()
        return "address already in use" in tail or "errno 98" in tail

    def _failure(self) -> str:
        what = f"the local provider's llama.cpp server ({self.options.model_path.name}, port {self.port})"
        if self._timed_out:
            why = f"did not answer within {self.options.start_timeout_s:g} s (--option start_timeout=SECONDS)"
        else:
            code = self.proc.returncode if self.proc is not None else None
            tail = self._log_tail()
            why = f"exited with status {code} before it was ready" + (f": {tail}" if tail else "")
        log = self.log_path
        if log is None:  # the log explains the failure: keep a copy with a name
            fd, name = tempfile.mkstemp(prefix="llm-explorer-llama-server-", suffix=".log")
            with os.fdopen(fd, "w") as copy:
                copy.write(self._log_text())
            log = Path(name)
        return f"{what} {why}; log: {log}"

    def stop(self, grace_s: float = 2.0) -> None:
        """Stop the server's process group: SIGTERM, then SIGKILL after ``grace_s``. Idempotent;
        a no-op in a forked child of the owner (the server is not its child)."""
        if os.getpid() != self._owner:
            return
        with self._lock:
            try:
                if self.proc is not None:
                    child_process.stop(self.proc, grace_s)
            finally:
                self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None


class LlamaServerChatModel(ChatOpenAI):
    """LangChain's ``ChatOpenAI`` talking to a private llama.cpp server that this model owns.

    Build it with :meth:`serving`. ``close()`` stops the server; so does garbage collection of
    the model and interpreter exit, whichever comes first.
    """

    _server: LlamaServer | None = PrivateAttr(default=None)
    _stop: Any = PrivateAttr(default=None)

    @classmethod
    def serving(cls, server: LlamaServer, *, temperature: float, timeout_s: float, seed: int) -> LlamaServerChatModel:
        """A model for the started ``server``. Its HTTP clients ignore proxy settings: the server
        is on 127.0.0.1. The key is a placeholder (the server checks none)."""
        model = cls(
            model=server.options.alias, base_url=server.base_url, api_key="sk-no-key-required",
            temperature=temperature, timeout=timeout_s, max_retries=0, use_responses_api=False, seed=seed,
            http_client=httpx.Client(timeout=timeout_s, trust_env=False),
            http_async_client=httpx.AsyncClient(timeout=timeout_s, trust_env=False),
        )
        model._server = server
        model._stop = weakref.finalize(model, server.stop)
        return model

    @property
    def server(self) -> LlamaServer | None:
        """The server this model owns."""
        return self._server

    @property
    def _llm_type(self) -> str:
        return "llama-cpp-server"

    def _get_llm_string(self, stop: list[str] | None = None, **kwargs: Any) -> str:
        # the response cache keys on this string: the server's port changes with every run
        text = super()._get_llm_string(stop, **kwargs)
        return text.replace(self.openai_api_base or "", "llama-cpp-server") if self.openai_api_base else text

    def close(self) -> None:
        """Stop the server. Idempotent."""
        if self._stop is not None:
            self._stop()
