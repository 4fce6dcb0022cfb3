"""simulator/lab/system.py: whether a process still runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from simulator.lab.system import pid_alive


def test_a_running_process_is_alive_and_an_exited_unreaped_child_is_not() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1)
    try:
        assert pid_alive(child.pid)
        assert child.stdin is not None
        child.stdin.close()  # the child exits; nobody reaps it yet: a zombie
        deadline = time.monotonic() + 10
        while pid_alive(child.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not pid_alive(child.pid)
        assert os.path.exists(f"/proc/{child.pid}")  # still there, waiting for its parent
    finally:
        child.kill()
        child.wait()
    assert not pid_alive(child.pid)
