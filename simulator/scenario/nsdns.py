"""A lab DNS resolver whose queries leave from a lab host's namespace (netns runner).

:class:`~simulator.dns.resolver.LabResolver` sends from the current namespace, where the netns
lab's addresses do not exist; this one takes its UDP socket from :meth:`Lab.udp_socket`, so a
query crosses the lab's firewalls as the host's own would. Same answers, errors and trace events.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import dns.message
import dns.rdatatype

from simulator.dns.resolver import LabResolver


class _Answer(asyncio.DatagramProtocol):
    def __init__(self, query_id: int, future: asyncio.Future[bytes]) -> None:
        self.query_id = query_id
        self.future = future

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        matches = len(data) >= 2 and int.from_bytes(data[:2], "big") == self.query_id
        if matches and not self.future.done():
            self.future.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


class NamespaceResolver(LabResolver):
    """Asks ``server`` from sockets ``make_socket()`` returns (bound to the host's address)."""

    def __init__(
        self,
        server: tuple[str, int] | None,
        make_socket: Callable[[], socket.socket],
        *,
        timeout: float = 2.0,
        source: str | None = None,
    ) -> None:
        super().__init__(server, timeout=timeout, source=source)
        self.make_socket = make_socket

    async def _exchange(
        self, query: dns.message.Message, address: str, port: int
    ) -> dns.message.Message:
        """One UDP exchange from a socket of the host's namespace (errors as the base class)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Answer(query.id, future), sock=self.make_socket()
        )
        try:
            transport.sendto(query.to_wire(), (address, port))
            data = await asyncio.wait_for(future, self.timeout)
        finally:
            transport.close()
        return dns.message.from_wire(data)
