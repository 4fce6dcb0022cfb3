"""asyncio adapter of the lab DNS: UDP datagrams and TCP (two-byte length prefix, RFC 1035 4.2.2)."""

from __future__ import annotations

import asyncio
import logging
import struct
from dataclasses import dataclass

from simulator import aioloop, trace
from simulator.dns.zone import UDP_MIN, DnsZone, describe_answer
from simulator.limits import ConnectionGate, ConnectionLimits, limit

log = logging.getLogger(__name__)

MAX_TCP_MESSAGE = 65535
_T = "tests/integration/test_listener_limits.py::"


@dataclass(frozen=True)
class DnsLimits(ConnectionLimits):
    """What the lab DNS accepts over TCP (UDP answers are truncated: :mod:`.zone`)."""

    max_connections: int = limit(
        512, "TCP connections, total", _T + "test_dns_tcp_caps_connections"
    )
    max_per_source: int = limit(
        16, "TCP connections per source address", _T + "test_dns_tcp_caps_connections"
    )
    idle_timeout: float = limit(
        30.0, "TCP: idle before a query, s", _T + "test_dns_tcp_caps_connections"
    )
    """Seconds a TCP connection may wait before its next query."""
    message_timeout: float = limit(
        10.0, "TCP: one query, from its length prefix, s", _T + "test_dns_tcp_caps_connections"
    )
    """Seconds for a query to arrive whole once its length prefix came."""


async def _serve_tcp(
    zone: DnsZone,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    limits: DnsLimits,
    gate: ConnectionGate,
) -> None:
    peer = writer.get_extra_info("peername")
    source = str(peer[0]) if isinstance(peer, tuple) else "?"
    refused = gate.admit(source)
    if refused is not None:
        if gate.refused % 1000 == 1:
            log.warning("dns: TCP connection from %s refused: %s", source, refused)
        writer.transport.abort()
        return
    try:
        while True:
            try:
                header = await asyncio.wait_for(reader.readexactly(2), limits.idle_timeout)
                (length,) = struct.unpack("!H", header)
                wire = await asyncio.wait_for(reader.readexactly(length), limits.message_timeout)
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                return
            reply = zone.answer(wire)
            if reply is None:
                return
            writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()  # a client that does not read stops being read
    except ConnectionError:
        pass
    finally:
        gate.release(source)
        writer.close()


class DnsServer:
    """Serves one :class:`DnsZone` on UDP and TCP at ``address:port``."""

    def __init__(
        self, zone: DnsZone, address: str, port: int, limits: DnsLimits | None = None
    ) -> None:
        self.zone = zone
        self.limits = limits or DnsLimits()
        self.gate = ConnectionGate(self.limits)
        self.address = address
        self.port = port
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    def _answer_udp(self, data: bytes, source: tuple[str, int]) -> bytes | None:
        reply = self.zone.answer(data, max_size=UDP_MIN)
        if reply is not None and trace.active() and self._udp is not None:
            here = "{}:{}".format(*self._udp.get_extra_info("sockname")[:2])
            trace.record("dns", here, source[0], describe_answer(reply))
        return reply

    async def start(self) -> None:
        transport, _ = await aioloop.udp_endpoint(
            lambda: aioloop.Answering(self._answer_udp), self.address, self.port
        )
        self._udp = transport
        if self.port == 0:
            self.port = transport.get_extra_info("sockname")[1]
        try:
            self._tcp = await asyncio.start_server(
                lambda r, w: _serve_tcp(self.zone, r, w, self.limits, self.gate),
                self.address,
                self.port,
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
