"""``aioloop.run`` hands standard output back blocking, however the loop or a child left it:
a command's JSON larger than a pipe holds (64 KiB) arrives whole."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_output_after_the_loop_arrives_whole(loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    script = textwrap.dedent(
        """
        import os, sys
        from simulator import aioloop

        async def leave_it_nonblocking() -> None:
            os.set_blocking(1, False)  # what a child sharing stdout may do

        aioloop.run(leave_it_nonblocking())
        sys.stdout.write("x" * 300_000)
        """
    )
    # 300 kB is more than a pipe holds: a non-blocking write stops where the pipe is full.
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, timeout=60,
        env={"EDGESIM_LOOP": loop, "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert len(done.stdout) == 300_000
