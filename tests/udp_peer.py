"""A UDP peer for the tests: answers each datagram (an echo by default) and notes who sent it.

The peer a relay reaches in the A/V tests, or a server that answers something else (a probe's
non-STUN answer); one protocol for all of them."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import cast

Address = tuple[str, int]


def echo(data: bytes) -> bytes:
    return data


class UdpPeer(asyncio.DatagramProtocol):
    """Sends ``answer(data)`` back to the source of each datagram; ``sources`` in order."""

    transport: asyncio.DatagramTransport
    """Set when bound (before the first datagram)."""

    def __init__(self, answer: Callable[[bytes], bytes] = echo) -> None:
        self.answer = answer
        self.sources: list[Address] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Python 3.11's selector transport is no DatagramTransport subclass
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.sources.append(addr)
        self.transport.sendto(self.answer(data), addr)

    @property
    def address(self) -> Address:
        """Where it listens: (address, port)."""
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port


@contextlib.asynccontextmanager
async def udp_peer(
    address: str | None = None,
    answer: Callable[[bytes], bytes] = echo,
    *,
    sock: socket.socket | None = None,
) -> AsyncIterator[UdpPeer]:
    """A :class:`UdpPeer` on ``address`` (a free port) or on the bound ``sock``, closed after."""
    loop = asyncio.get_running_loop()
    if sock is not None:
        transport, peer = await loop.create_datagram_endpoint(lambda: UdpPeer(answer), sock=sock)
    elif address is not None:
        transport, peer = await loop.create_datagram_endpoint(
            lambda: UdpPeer(answer), local_addr=(address, 0)
        )
    else:
        raise ValueError("udp_peer needs an address or a bound socket")
    try:
        yield peer
    finally:
        transport.close()
