"""asyncio adapter of the lab DNS: UDP datagrams and TCP (two-byte length prefix, RFC 1035 4.2.2)."""

from __future__ import annotations

import asyncio
import logging
import struct

from simulator import trace
from simulator.dns.zone import DnsZone, describe_answer

log = logging.getLogger(__name__)

MAX_TCP_MESSAGE = 65535


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, zone: DnsZone) -> None:
        self.zone = zone
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.zone.answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)
            if trace.active():
                here = "{}:{}".format(*self.transport.get_extra_info("sockname")[:2])
                trace.record("dns", here, addr[0], describe_answer(reply))


async def _serve_tcp(
    zone: DnsZone, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            try:
                header = await asyncio.wait_for(reader.readexactly(2), timeout=30)
                (length,) = struct.unpack("!H", header)
                wire = await asyncio.wait_for(reader.readexactly(length), timeout=10)
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                return
            reply = zone.answer(wire)
            if reply is None:
                return
            writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()
    finally:
        writer.close()


class DnsServer:
    """Serves one :class:`DnsZone` on UDP and TCP at ``address:port``."""

    def __init__(self, zone: DnsZone, address: str, port: int) -> None:
        self.zone = zone
        self.address = address
        self.port = port
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self.zone), local_addr=(self.address, self.port)
        )
        self._udp = transport
        if self.port == 0:
            self.port = transport.get_extra_info("sockname")[1]
        try:
            self._tcp = await asyncio.start_server(
                lambda r, w: _serve_tcp(self.zone, r, w), self.address, self.port
            )
        except OSError:
            transport.close()
            raise

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
