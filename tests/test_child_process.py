"""explorer_pipeline.child_process: own session, death with the parent, TERM then KILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from explorer_pipeline import child_process

IGNORES_TERM = "import signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n" \
               "time.sleep(120)\n"


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_the_child_runs_the_command_in_a_session_of_its_own_with_the_niceness_asked_for():
    proc = child_process.spawn([sys.executable, "-c", "import os; print(os.getsid(0), os.getpid(), os.nice(0))"],
                               nice=3, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=60)
    sid, pid, niceness = (int(x) for x in out.split())
    assert proc.returncode == 0 and pid == proc.pid == sid  # exec'd in place: the pid Popen knows
    assert sid != os.getsid(0)
    assert niceness == os.nice(0) + 3


def test_a_missing_program_fails_in_the_parent_as_popen_would():
    with pytest.raises(FileNotFoundError):
        child_process.spawn(["no-such-program-anywhere"])
    with pytest.raises(TypeError, match="start_new_session"):
        child_process.spawn([sys.executable, "-c", "pass"], start_new_session=False)


def test_stop_sends_term_then_kill_after_the_grace():
    polite = child_process.spawn([sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(120)"],
                                 stdout=subprocess.PIPE, text=True)
    assert polite.stdout.readline().strip() == "ready"
    child_process.stop(polite, 30)
    assert polite.returncode == -signal.SIGTERM

    stubborn = child_process.spawn([sys.executable, "-c", IGNORES_TERM], stdout=subprocess.PIPE, text=True)
    assert stubborn.stdout.readline().strip() == "ready"
    child_process.stop(stubborn, 0.5)
    assert stubborn.returncode == -signal.SIGKILL
    child_process.stop(stubborn, 0.5)  # already gone: nothing to do


def test_a_child_started_from_a_short_lived_thread_outlives_the_thread():
    started: list[subprocess.Popen] = []
    thread = threading.Thread(target=lambda: started.append(
        child_process.spawn([sys.executable, "-c", "import time; time.sleep(120)"])))
    thread.start()
    thread.join()
    proc = started[0]
    try:
        time.sleep(0.5)  # a parent-death signal tied to the thread would have fired by now
        assert proc.poll() is None
    finally:
        child_process.stop(proc, 5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's prctl")
def test_the_child_dies_when_its_parent_is_killed():
    parent_code = textwrap.dedent("""
        import sys, time
        from explorer_pipeline import child_process
        child = child_process.spawn([sys.executable, "-c", "import time; time.sleep(120)"])
        print(child.pid, flush=True)
        time.sleep(120)
    """)
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(parent.stdout.readline())
        assert wait_until(lambda: alive(child_pid), 30)
        parent.kill()
        parent.wait()
        assert wait_until(lambda: not alive(child_pid), 30), "the child outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
