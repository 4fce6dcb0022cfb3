"""What the lab commands do with a runner: bring a lab up (check it, keep it in the foreground),
and, inside a node of a netns or compose lab, serve one host and check its listeners.

The command line parses arguments, calls one of these, and renders what it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from simulator import aioloop
from simulator.errors import LabError
from simulator.lab.runners.base import (
    LabStatus,
    ListenerCheck,
    Runner,
    ready_payload,
    services_of_ready,
)
from simulator.lab.runners.local import LocalLab, check_services
from simulator.lab.topology import Topology
from simulator.pki import ensure_pki


async def until_signalled(on_ready: Callable[[], None] | None = None) -> None:
    """Wait for SIGINT or SIGTERM (Ctrl-C, ``lab down``, ``docker compose stop``); ``on_ready``
    runs once both are handled."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if on_ready is not None:
            on_ready()
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


# ------------------------------------------------------------------ lab up


@dataclass
class UpResult:
    status: LabStatus
    checks: list[ListenerCheck] = field(default_factory=list)
    checked: bool = False
    stopped: bool = False
    """The lab was brought down again (``--check``, or a lab that lives in this process)."""

    @property
    def failed(self) -> list[ListenerCheck]:
        return [c for c in self.checks if not c.ok]


async def lab_up(
    runner: Runner,
    *,
    check: bool = False,
    on_up: Callable[[UpResult], None] | None = None,
    on_waiting: Callable[[], None] | None = None,
) -> UpResult:
    """Bring the lab up; with ``check`` ask every listener, then bring it down again.

    A lab that lives in this process (not :attr:`Runner.persistent`) runs until SIGINT or
    SIGTERM (``on_waiting`` says so once the signals are handled), then stops. ``on_up``
    receives the status (and checks) while the lab is up.
    """
    await runner.up()
    result = UpResult(await runner.status())
    if not check and not runner.persistent:
        aioloop.settle_heap()  # the lab lives in this process from now on
    try:
        if check:
            result.checks, result.checked = await runner.check(), True
        if on_up is not None:
            on_up(result)
        if not check and not runner.persistent:
            await until_signalled(on_waiting)
    except BaseException:
        await runner.down()
        raise
    if check or not runner.persistent:
        await runner.down()
        result.stopped = True
    return result


async def status_and_checks(runner: Runner, *, check: bool) -> UpResult:
    """A running lab's status and, with ``check``, whether each listener answers."""
    result = UpResult(await runner.status())
    if check:
        result.checks, result.checked = await runner.check(), True
    return result


# ------------------------------------------------------------------ inside a node


async def serve_host(
    runner: Runner, host: str, ready_file: Path | None, emit: Callable[[str], None]
) -> None:
    """Run ``host``'s services with the addresses of ``runner``'s lab until SIGTERM.

    Inside a netns namespace or a compose container: the runner prepares the node first
    (compose: addresses and routes), then the services start, and the bound listeners are
    written to ``ready_file`` (JSON, atomically) or given to ``emit``.
    """
    config = runner.config
    runner.prepare_host(config.topology.host(host))
    services = LocalLab(config.topology, config.certs_dir, hosts=[host], runner=runner.name)
    # Every host's `lab serve` checks the shared PKI on start: one at a time (a read-only PKI
    # directory, e.g. mounted into a container, needs no lock). Only the check: the services
    # of all hosts then start at once (started under the lock, eight hosts took turns).
    with contextlib.ExitStack() as stack:
        try:
            config.certs_dir.mkdir(parents=True, exist_ok=True)
            lock = stack.enter_context(open(config.certs_dir / ".lock", "a"))
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError:
            pass
        ensure_pki(config.topology, config.certs_dir)
    statuses = await services.start(pki_checked=True)
    aioloop.settle_heap()
    try:
        payload = ready_payload(host, os.getpid(), [st.as_state() for st in statuses])
        text = json.dumps(payload, indent=2)
        if ready_file is not None:
            ready_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = ready_file.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(ready_file)
        else:
            emit(text)
        await until_signalled()
    finally:
        await services.stop()


async def check_host(
    topology: Topology, host_id: str, runner: str, certs_dir: Path, ready_file: Path
) -> list[ListenerCheck]:
    """From inside the host's node: does each listener its ready file lists answer?"""
    try:
        services = services_of_ready(host_id, json.loads(ready_file.read_text()))
    except (OSError, ValueError) as exc:  # a RecordError is a ValueError
        raise LabError(f"{host_id}: cannot read the ready file {ready_file}: {exc}") from None
    return await check_services(topology, host_id, runner, certs_dir, services)
