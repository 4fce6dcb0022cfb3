"""The event loop every edgesim process runs on.

uvloop where it is installed (its transports, TLS included, are compiled: the Edge spends
less CPU per message on it), else asyncio's own loop. ``EDGESIM_LOOP=asyncio`` forces the
standard loop and ``EDGESIM_LOOP=uvloop`` insists on uvloop (an error when it is missing). The
code runs on both: the test suite runs on the standard loop, and again on uvloop with
``EDGESIM_TEST_LOOP=uvloop`` (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import ssl
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from simulator.errors import UsageError

T = TypeVar("T")

ENV = "EDGESIM_LOOP"
CHOICES = ("auto", "uvloop", "asyncio")


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: the loop :func:`run` uses with this environment."""
    choice = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise UsageError(f"{ENV}={choice}: must be one of {', '.join(CHOICES)}")
    if choice == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if choice == "uvloop":
            raise UsageError(
                f"{ENV}=uvloop but uvloop is not installed (pip install uvloop)"
            ) from None
        return "asyncio"
    return "uvloop"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What :class:`asyncio.Runner` should build its loop with (None: asyncio's default)."""
    if loop_name() == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop :func:`loop_name` picks; standard input, output and
    error are left blocking, as they came.

    A child process that shares them, or uvloop's own handling of a descriptor, can leave one
    in non-blocking mode (reported of uvloop with stdio); a write larger than a pipe holds
    (64 KiB) then fails half done, and a command's JSON arrives cut short.
    """
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(main)
    finally:
        _blocking_stdio()


def _blocking_stdio() -> None:
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            if not os.get_blocking(fd):
                os.set_blocking(fd, True)


def settle_heap() -> None:
    """Call once a long-running process has built what it keeps (topology, PKI, services).

    Moves every object alive now out of the cycle collector's sight (``gc.freeze``): its full
    collections then walk only what traffic created, instead of pausing a busy proxy for tens of
    milliseconds (bench/sip_bench.py saw p99 fall from over 100 ms to 20 ms with the collector
    off). Objects frozen are still freed by reference counting.
    """
    gc.collect()
    gc.freeze()


P = TypeVar("P", bound=asyncio.BaseProtocol)


async def udp_endpoint(
    factory: Callable[[], P], address: str, port: int
) -> tuple[asyncio.DatagramTransport, P]:
    """A UDP endpoint bound to ``(address, port)``, the same on both loops.

    The socket is bound here, not by the loop: uvloop words its own OSError for a failed bind
    and drops the errno, so ``EADDRINUSE`` (a service listens there already) could not be told
    from any other failure.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(factory, sock=sock)
    return transport, protocol


async def open_stream(
    host: str,
    port: int,
    *,
    timeout: float,
    tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    local_address: str | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection (TLS with ``tls``, checked against ``server_hostname``) from
    ``local_address`` (any port), up within ``timeout`` seconds or ``TimeoutError``."""
    return await asyncio.wait_for(
        asyncio.open_connection(
            host,
            port,
            ssl=tls,
            server_hostname=server_hostname if tls else None,
            local_addr=(local_address, 0) if local_address else None,
        ),
        timeout,
    )


@dataclass(frozen=True)
class Finished:
    """How a command run by :func:`run_command` ended."""

    returncode: int | None
    """None: it could not start, or did not finish in time (then it was killed)."""
    out: bytes = b""
    err: bytes = b""
    why: str = ""
    """When there is no return code: ``cannot run X: ...`` or ``did not finish within N s``."""

    @property
    def last_error(self) -> str:
        """The last line the command wrote to stderr (empty when none)."""
        return (self.err.decode(errors="replace").strip().splitlines() or [""])[-1]


async def run_command(
    argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None
) -> Finished:
    """Run ``argv`` (no standard input), its output collected, killed after ``timeout`` s."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except OSError as exc:
        return Finished(None, why=f"cannot run {argv[0]}: {exc.strerror}")
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return Finished(None, why=f"did not finish within {timeout:g} s")
    return Finished(proc.returncode, out, err)


class Answering(asyncio.DatagramProtocol):
    """A UDP responder: each datagram is answered to its source with ``answer(data, source)``,
    or not at all when that is None (the lab DNS, the media peers' STUN Binding and echo)."""

    def __init__(self, answer: Callable[[bytes, tuple[str, int]], bytes | None]) -> None:
        self.answer = answer
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.answer(data, (addr[0], addr[1]))
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


class Tasks:
    """The tasks a service starts on its own (a handshake, a forward, a relayed connection):
    referenced until they end (the loop keeps only weak references) and cancelled on stop."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def cancel(self) -> list[asyncio.Task[Any]]:
        """Cancel them all; returns them, for a caller that waits for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        return tasks

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._tasks))
