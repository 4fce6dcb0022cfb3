"""The load drivers, inside the source host of their matrix row.

:func:`federation_sessions`: ``count`` MTLS connections to the Access Edge's 5061, each a SIP
OPTIONS answered, held open ``hold`` seconds (a TCP connection the firewall tracks, one the Edge
keeps), then a second OPTIONS on the same connection: did the session outlive the hold?

:func:`relay_allocations`: ``count`` TURN allocations over UDP on the A/V Edge's 3478, each with
a time-limited username of its own (as the Front End's MRAS issues them, so the Edge's per-user
quota does not decide), a permission for a peer on this host, and a datagram relayed to the
peer and back. After ``hold`` seconds of silence the peer sends again: a datagram that arrives
crossed the firewall on the state of the allocation's first exchange (its UDP connection
tracking outlived the silence); one that does not shows where the firewall's UDP timeout ends.

Both pace their starts at ``rate`` per second and return a :class:`DriveResult` (JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

from simulator.media.aio import AsyncTurnClient
from simulator.media.auth import LongTermCredentials, time_limited_credentials
from simulator.media.errors import MediaError, RequestRefused
from simulator.records import Record, record
from simulator.sip.emulators.ua import UserAgent

Address = tuple[str, int]


@dataclass
class DriveResult(Record):
    """What one driver saw (JSON: :mod:`simulator.records`)."""

    kind: str
    """``federation`` or ``relay``."""
    source: str
    destination: str
    requested: int
    established: int = 0
    """Sessions answered / allocations that relayed a datagram both ways."""
    failures: Counter[str] = field(default_factory=Counter)
    """Why the others did not (one line each, counted)."""
    setup: list[float] = field(default_factory=list, metadata=record(digits=4))
    """Seconds from start to established, of each established one."""
    after_hold: int = 0
    """Sessions answered again after the hold / allocations whose peer's datagram arrived
    after the silence."""
    after_hold_failures: Counter[str] = field(default_factory=Counter)
    hold: float = 0.0
    peak: int = 0
    """Most sessions or allocations established at once."""
    duration: float = field(default=0.0, metadata=record(digits=3))


def _why(exc: BaseException) -> str:
    if isinstance(exc, RequestRefused):
        return f"refused {exc.code}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return "no answer (timeout)"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


class _Held:
    """The sessions or allocations of one driver: counts the finished setups (established or
    failed; :attr:`done` is set with the last) and those established at once (the peak)."""

    def __init__(self, result: DriveResult) -> None:
        self.result = result
        self.finished = 0
        self.now = 0
        self.done = asyncio.Event()
        if result.requested == 0:
            self.done.set()

    def finish(self) -> None:
        self.finished += 1
        if self.finished >= self.result.requested:
            self.done.set()

    async def established(self, t0: float) -> None:
        """One established (started at ``t0``): hold it until the last setup has been tried,
        then for the result's ``hold`` seconds, so the peak is every one at once."""
        self.result.established += 1
        self.result.setup.append(time.monotonic() - t0)
        self.now += 1
        self.result.peak = max(self.result.peak, self.now)
        await self.done.wait()
        await asyncio.sleep(self.result.hold)

    def ended(self) -> None:
        self.now -= 1


async def _paced(count: int, rate: float, start: Any) -> None:
    """``start(i)`` for each i, ``rate`` per second; waits for all."""
    tasks = []
    t0 = time.monotonic()
    for i in range(count):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(start(i)))
    await asyncio.gather(*tasks)


# ------------------------------------------------------------------ federation sessions


async def federation_sessions(
    *,
    source: str,
    destination: Address,
    server_name: str,
    context: ssl.SSLContext,
    domain: str,
    count: int,
    hold: float,
    rate: float,
    timeout: float,
) -> DriveResult:
    """See the module docstring; ``source`` is this host's lab address, ``domain`` its SIP
    domain (the From of the OPTIONS)."""
    result = DriveResult("federation", source, f"{destination[0]}:{destination[1]}", count)
    result.hold = hold
    held = _Held(result)

    async def one(i: int) -> None:
        ua = UserAgent(
            f"sip:load{i}@{domain}",
            host=destination[0],
            port=destination[1],
            context=context,
            server_name=server_name,
            local_address=source,
        )
        t0 = time.monotonic()
        try:
            try:
                async with asyncio.timeout(timeout):
                    await ua.connect()
                    response = await ua.options(f"sip:{server_name}:{destination[1]}")
                if not 200 <= response.code < 300:
                    result.failures[f"SIP {response.code} {response.phrase}"] += 1
                    return
            except Exception as exc:  # any failure is a figure, not a crash
                result.failures[_why(exc)] += 1
                return
            finally:
                held.finish()
            await held.established(t0)
            try:
                async with asyncio.timeout(timeout):
                    again = await ua.options(f"sip:{server_name}:{destination[1]}")
                if 200 <= again.code < 300:
                    result.after_hold += 1
                else:
                    result.after_hold_failures[f"SIP {again.code} {again.phrase}"] += 1
            except Exception as exc:
                result.after_hold_failures[_why(exc)] += 1
            held.ended()
        finally:
            await ua.close()

    t_start = time.monotonic()
    await _paced(count, rate, one)
    result.duration = time.monotonic() - t_start
    return result


# ------------------------------------------------------------------ relay allocations


class _Peer(asyncio.DatagramProtocol):
    """The allocations' peer on this host: echoes each relayed datagram back to its relay."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data.startswith(b"load:") and self.transport is not None:
            self.transport.sendto(b"echo:" + data[5:64], addr)

    def send(self, data: bytes, addr: Address) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)


async def relay_allocations(
    *,
    source: str,
    server: Address,
    secret: bytes,
    realm: str | None,
    count: int,
    hold: float,
    rate: float,
    timeout: float,
) -> DriveResult:
    """See the module docstring; ``source`` is this host's lab address, ``secret`` the lab's
    MRAS shared secret (the credentials are the Front End's kind)."""
    result = DriveResult("relay", source, f"{server[0]}:{server[1]}", count)
    result.hold = hold
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(_Peer, local_addr=(source, 0))
    peer_address: Address = transport.get_extra_info("sockname")[:2]
    held = _Held(result)

    async def one(i: int) -> None:
        username, password = time_limited_credentials(secret, f"load{i}", time.time(), 3600)
        client: AsyncTurnClient | None = None
        t0 = time.monotonic()
        try:
            try:
                async with asyncio.timeout(timeout):
                    client = await AsyncTurnClient.open(
                        server,
                        "udp",
                        credentials=LongTermCredentials(username, password, realm),
                        local_address=source,
                    )
                    relayed = await client.allocate()
                    await client.create_permission(peer_address)
                    client.send_indication(peer_address, f"load:{i}".encode())
                    while True:
                        data = await client.receive(timeout)
                        if data is None:
                            raise TimeoutError
                        if data.data == f"echo:{i}".encode():
                            break
            except (MediaError, OSError, TimeoutError, EOFError) as exc:
                result.failures[_why(exc)] += 1
                return
            finally:
                held.finish()
            await held.established(t0)
            # The peer speaks first after the silence: only the firewall's state lets it in.
            peer.send(f"late:{i}".encode(), relayed)
            data = await client.receive(timeout)
            if data is not None and data.data == f"late:{i}".encode():
                result.after_hold += 1
            else:
                result.after_hold_failures["peer's datagram after the silence never arrived"] += 1
            held.ended()
        finally:
            if client is not None:
                await client.release()
                await client.close()

    t_start = time.monotonic()
    try:
        await _paced(count, rate, one)
    finally:
        with contextlib.suppress(Exception):
            transport.close()
    result.duration = time.monotonic() - t_start
    return result
