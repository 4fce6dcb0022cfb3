"""``aioloop.run`` hands standard output back blocking, however the loop or a child left it:
a command's JSON larger than a pipe holds (64 KiB) arrives whole."""

from __future__ import annotations

import asyncio
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


def test_a_command_that_cannot_start_or_finish_says_so() -> None:
    from simulator.aioloop import run_command

    async def main() -> list[tuple[int | None, str, str]]:
        ran = [
            await run_command(["sh", "-c", "echo one >&2; echo last >&2; exit 3"], timeout=10),
            await run_command(["/nonexistent/edgesim-tool"], timeout=10),
            await run_command(["sleep", "30"], timeout=0.2),  # killed, not waited for
        ]
        return [(r.returncode, r.why, r.last_error) for r in ran]

    assert asyncio.run(main()) == [
        (3, "", "last"),
        (None, "cannot run /nonexistent/edgesim-tool: No such file or directory", ""),
        (None, "did not finish within 0.2 s", ""),
    ]
