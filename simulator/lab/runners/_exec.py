"""What the runners whose nodes are entered by a command (netns, compose) share: asking each
host, from inside, whether its listeners answer."""

from __future__ import annotations

import asyncio
import json

from simulator.lab.runners.base import ListenerCheck, ListenerInfo, Runner

CHECK_TIMEOUT = 30.0
_WHOLE_HOST = ListenerInfo("-", "", "", 0, "", "", 0)


async def _check_host(
    runner: Runner, host: str, ready_file: str, timeout: float
) -> list[ListenerCheck]:
    argv = [
        *runner.edgesim_argv(host),
        "lab", "check-host", "--host", host, "--runner", runner.name,
        "--certs", runner.node_certs, "--ready-file", ready_file,
    ]  # fmt: skip
    failed = f"{host}: `lab check-host` "
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=runner.exec_env(),
        )
    except OSError as exc:
        return [ListenerCheck(host, "-", _WHOLE_HOST, False, f"{failed}: {exc.strerror}")]
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        detail = f"{failed}did not finish within {timeout:.0f} s"
        return [ListenerCheck(host, "-", _WHOLE_HOST, False, detail)]
    if proc.returncode != 0:
        last = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        return [ListenerCheck(host, "-", _WHOLE_HOST, False, f"{failed}failed: {last}")]
    try:
        return [ListenerCheck.from_dict(item) for item in json.loads(out or b"[]")]
    except (ValueError, KeyError, TypeError) as exc:
        return [ListenerCheck(host, "-", _WHOLE_HOST, False, f"{failed}: bad output ({exc})")]


async def check_hosts(
    runner: Runner, ready_files: dict[str, str], timeout: float = CHECK_TIMEOUT
) -> list[ListenerCheck]:
    """Run ``edgesim lab check-host`` inside every host of ``ready_files`` (host -> its ready
    file as the host sees it), all at once."""
    jobs = [_check_host(runner, host, ready, timeout) for host, ready in ready_files.items()]
    return [check for checks in await asyncio.gather(*jobs) for check in checks]
