"""Run Debian's ejabberd as jabber.lab for the interop tests (see simulator.xmpp.ejabberd)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from simulator.lab.topology import Topology
from simulator.pki import LabPki
from simulator.xmpp.ejabberd import EjabberdSetup, command, ctl, render


def lab_hosts(topology: Topology) -> dict[str, str]:
    """Every lab FQDN -> the loopback address the embedded runner gives its interface."""
    return {
        fqdn: str(iface.loopback())
        for host in topology.hosts
        for iface in host.interfaces
        for fqdn in iface.fqdns
    }


async def _run(*argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return subprocess.CompletedProcess(list(argv), proc.returncode or 0, out)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for the node's Erlang distribution."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _log(setup: EjabberdSetup) -> str:
    path = setup.directory / "logs" / "ejabberd.log"
    return path.read_text(errors="replace")[-4000:] if path.exists() else "(no log)"


@contextlib.asynccontextmanager
async def ejabberd(setup: EjabberdSetup, pki: LabPki, users: dict[str, str]) -> AsyncIterator[Path]:
    """ejabberd up with ``users`` (name -> password) registered; yields its log file."""
    render(setup, pki.host_cert("jabber", "public"), pki.trust_bundle)
    proc = await asyncio.create_subprocess_exec(
        *command(setup),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,  # its own process group: ended as a whole below
    )
    try:
        started = await _run(*ctl(setup, "started"), timeout=90)
        if started.returncode != 0:
            pytest.fail(f"ejabberd did not start:\n{started.stdout.decode()}\n{_log(setup)}")
        for user, password in users.items():
            done = await _run(*ctl(setup, "register", user, "jabber.lab", password))
            assert done.returncode == 0, done.stdout.decode()
        yield setup.directory / "logs" / "ejabberd.log"
    finally:
        await stop(setup, proc)


async def stop(setup: EjabberdSetup, proc: asyncio.subprocess.Process) -> None:
    """Stop the node we started: ``ejabberdctl stop``, then by process id what is left (the
    Erlang VM runs in a session of its own under su, outside our process group)."""
    pid_file = setup.directory / "ejabberd.pid"
    beam = int(pid_file.read_text().strip()) if pid_file.exists() else None
    with contextlib.suppress(TimeoutError, OSError):
        await _run(*ctl(setup, "stop"), timeout=30)
    try:
        await asyncio.wait_for(proc.wait(), 20)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
    if beam is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(beam, signal.SIGKILL)
