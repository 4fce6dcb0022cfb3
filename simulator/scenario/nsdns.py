"""A lab DNS resolver whose queries leave from a lab host's namespace (netns runner).

:class:`~simulator.dns.resolver.LabResolver` sends from the current namespace, where the netns
lab's addresses do not exist; this one takes its UDP socket from :meth:`Lab.udp_socket`, so a
query crosses the lab's firewalls as the host's own would. Same answers, errors and trace events.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

from simulator import trace
from simulator.dns.resolver import LabResolver, ResolutionError


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

    async def _query(self, name: str, rdtype: dns.rdatatype.RdataType) -> dns.message.Message:
        if self.server is None:
            raise ResolutionError(name, "no lab DNS server for this zone")
        address, port = self.server
        query = dns.message.make_query(name, rdtype)
        where = f"{address}:{port}"
        asked = f"query {dns.rdatatype.to_text(rdtype)} {name}"
        trace.record("dns", self.source or "", where, asked)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Answer(query.id, future), sock=self.make_socket()
            )
        except OSError as exc:
            trace.record("dns", self.source or "", where, asked, event="refused")
            raise ResolutionError(name, f"DNS server {where} unreachable: {exc.strerror}") from None
        try:
            transport.sendto(query.to_wire(), (address, port))
            data = await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            trace.record("dns", self.source or "", where, asked, event="dropped")
            raise ResolutionError(name, f"no answer from DNS server {where} (timed out)") from None
        except OSError as exc:
            trace.record("dns", self.source or "", where, asked, event="refused")
            raise ResolutionError(name, f"DNS server {where} unreachable: {exc.strerror}") from None
        finally:
            transport.close()
        try:
            response = dns.message.from_wire(data)
        except dns.exception.DNSException as exc:
            raise ResolutionError(name, f"bad answer from {where}: {exc}") from None
        rcode = response.rcode()
        if rcode == dns.rcode.NXDOMAIN:
            raise ResolutionError(name, "no such name (NXDOMAIN)")
        if rcode != dns.rcode.NOERROR:
            raise ResolutionError(name, f"DNS error {dns.rcode.to_text(rcode)}")
        return response
