"""Child processes that die with the process that started them.

Used for every long-lived child the project starts: the ``local`` provider's llama.cpp server,
the ablation runner's ``train`` runs, and the test suite's own llama.cpp server. :func:`spawn`
starts a command so that

- it runs in a session of its own: a Ctrl-C in the terminal reaches the parent (which then stops
  its children in order) rather than the children directly;
- on Linux it gets SIGKILL when the process that started it dies (``PR_SET_PDEATHSIG``), so a
  parent killed by SIGKILL or the OOM killer leaves nothing running. The signal follows the
  *thread* that forked the child, so every child is forked by one daemon thread that lives as long
  as the process, whichever thread asks; a child whose parent died before it asked exits at once;
- nothing runs between fork and exec in the parent's image (a small Python launcher does the
  ``prctl`` and then execs the command), so forking from a process with many threads (torch, an
  event loop) is safe.

:func:`stop` ends a child: a signal (SIGTERM unless told otherwise), then SIGKILL after a grace
period.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

__all__ = ["launcher_command", "spawn", "stop"]

#: Runs in the child (argv: parent pid, niceness, the command): lower its CPU priority if asked; on
#: Linux ask for SIGKILL when the parent dies and check that the parent is still the one that
#: started us (it may have died before the request); then exec the command.
_LAUNCHER = (
    "import os, sys\n"
    "if int(sys.argv[2]):\n"
    "    os.nice(int(sys.argv[2]))\n"
    "if sys.platform.startswith('linux'):\n"
    "    import ctypes\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, 9)\n"  # PR_SET_PDEATHSIG, SIGKILL
    "    if os.getppid() != int(sys.argv[1]):\n"
    "        os._exit(70)\n"
    "os.execvp(sys.argv[3], sys.argv[3:])\n"
)


def launcher_command(command: Sequence[str], nice: int = 0) -> list[str]:
    """``command`` behind the launcher (POSIX): niceness, parent-death signal, then exec. Elsewhere
    the command itself (without either)."""
    if os.name != "posix":
        return list(command)
    return [sys.executable, "-c", _LAUNCHER, str(os.getpid()), str(int(nice)), *command]


class _Forker:
    """Forks child processes from one daemon thread that lives as long as this process, so a
    parent-death signal fires when the process dies, not when the thread that asked ends."""

    _lock = threading.Lock()
    _queue: queue.SimpleQueue[tuple[Future[subprocess.Popen[Any]], list[str], dict[str, Any]]] | None = None
    _pid = 0

    @classmethod
    def popen(cls, args: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        with cls._lock:
            if cls._queue is None or cls._pid != os.getpid():  # none yet, or we are a fork's child
                cls._queue, cls._pid = queue.SimpleQueue(), os.getpid()
                threading.Thread(target=cls._serve, args=(cls._queue,), name="child-process-forker",
                                 daemon=True).start()
            requests = cls._queue
        done: Future[subprocess.Popen[Any]] = Future()
        requests.put((done, args, kwargs))
        return done.result()

    @staticmethod
    def _serve(requests: queue.SimpleQueue[tuple[Future[subprocess.Popen[Any]], list[str], dict[str, Any]]]) -> None:
        while True:
            done, args, kwargs = requests.get()
            try:
                done.set_result(subprocess.Popen(args, **kwargs))
            except BaseException as exc:  # handed to the caller
                done.set_exception(exc)


def _check_executable(program: str, env: Mapping[str, str] | None) -> None:
    """Raise ``FileNotFoundError`` (as ``subprocess.Popen`` would) when ``program`` cannot be run:
    the launcher would only find out after the fork, in the child."""
    path = (env if env is not None else os.environ).get("PATH", os.defpath)
    found = (os.access(program, os.X_OK) and not os.path.isdir(program)) if os.sep in program \
        else shutil.which(program, path=path) is not None
    if not found:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


def spawn(command: Sequence[str], *, nice: int = 0, **popen_kwargs: Any) -> subprocess.Popen[Any]:
    """Start ``command`` in a session of its own that dies with this process (see the module
    docstring); ``nice`` is added to its niceness (POSIX). ``popen_kwargs`` go to
    :class:`subprocess.Popen` (``stdout``, ``env``, ``cwd`` ...; not ``preexec_fn`` or
    ``start_new_session``). Safe to call from any thread."""
    for own in ("preexec_fn", "start_new_session"):
        if own in popen_kwargs:
            raise TypeError(f"spawn() sets {own} itself")
    _check_executable(command[0], popen_kwargs.get("env"))
    return _Forker.popen(launcher_command(command, nice), start_new_session=True, **popen_kwargs)


def stop(proc: subprocess.Popen[Any], grace_s: float, *, sig: int = signal.SIGTERM, group: bool = True) -> None:
    """Send ``sig`` to ``proc`` (to its whole process group when ``group``), wait up to ``grace_s``
    seconds, then SIGKILL it (its group); returns once it has exited. A no-op for a child that has
    already exited. If the wait is interrupted (a Ctrl-C), the child is killed before the
    interruption propagates."""
    def send(signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(proc.pid, signum)
            else:
                proc.send_signal(signum)

    try:
        if proc.poll() is None:
            send(sig)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                send(signal.SIGKILL)
                proc.wait()
    finally:
        if proc.poll() is None:  # interrupted while waiting above
            proc.kill()
            proc.wait()
