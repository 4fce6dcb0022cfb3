"""A media peer as a lab service (``media-peer``): the Live Messenger-style client's endpoint.

- ``stun-udp`` listener (UDP 3478): a STUN Binding responder (the TURN core's
  :func:`~simulator.media.turn.answer_binding`: XOR-MAPPED-ADDRESS, FINGERPRINT, 400/420 for bad
  requests, everything else dropped).
- ``media`` listener (port 5004, UDP and TCP): an echo. UDP datagrams come back as they are; TCP
  bytes come back as they are, so RFC 4571-framed RTP over TCP is echoed frame for frame. This
  is the peer a relayed A/V probe reaches through the Edge's relay (UDP allocations, and RFC 6062
  Connect for TCP ones).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from simulator import aioloop
from simulator.lab.services import BoundListener, ServiceContext
from simulator.media.service import binding_check
from simulator.media.turn import answer_binding

log = logging.getLogger(__name__)

MAX_ECHO_CONNECTIONS = 256


def _binding() -> aioloop.Answering:
    """The STUN Binding responder."""
    return aioloop.Answering(answer_binding)


def _udp_echo_protocol() -> aioloop.Answering:
    """The UDP echo: each datagram back as it came."""
    return aioloop.Answering(lambda data, source: data)


class _TcpEcho(asyncio.Protocol):
    def __init__(self, service: MediaPeerService) -> None:
        self.service = service
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if len(self.service.connections) >= MAX_ECHO_CONNECTIONS:
            transport.close()
            return
        self.service.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.service.connections.discard(self)


@dataclass(frozen=True)
class MediaPeerSettings:
    """``[services.media-peer]`` takes no settings: the ports are the host's listeners."""


class MediaPeerService:
    """STUN Binding responder plus a UDP/TCP echo on the media port."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        ctx.typed_settings(MediaPeerSettings)  # none: a key under [services.media-peer] is a typo
        self.udp: list[asyncio.DatagramTransport] = []
        self.servers: list[asyncio.Server] = []
        self.connections: set[_TcpEcho] = set()

    async def start(self) -> list[BoundListener]:
        loop = asyncio.get_running_loop()
        bound: list[BoundListener] = []
        try:
            for lst in self.ctx.listeners:
                address = self.ctx.address(lst.interface)
                if lst.proto == "stun-udp":
                    transport, _ = await aioloop.udp_endpoint(_binding, address, lst.port)
                    self.udp.append(transport)
                    port = transport.get_extra_info("sockname")[1]
                    bound.append(BoundListener(lst, "udp", address, port))
                elif lst.proto == "media":
                    transport, _ = await aioloop.udp_endpoint(_udp_echo_protocol, address, lst.port)
                    self.udp.append(transport)
                    port = transport.get_extra_info("sockname")[1]
                    server = await loop.create_server(
                        lambda: _TcpEcho(self), address, port, reuse_address=True
                    )
                    self.servers.append(server)
                    bound.append(BoundListener(lst, "udp", address, port))
                    bound.append(BoundListener(lst, "tcp", address, port))
        except BaseException:
            await self.stop()
            raise
        return bound

    async def check(self, bound: BoundListener) -> str | None:
        if bound.listener.proto == "stun-udp":
            return await binding_check(bound.address, bound.port)
        if bound.transport == "udp":
            return await _udp_echo(bound.address, bound.port)
        return await _tcp_echo(bound.address, bound.port)

    async def stop(self) -> None:
        for transport in self.udp:
            transport.close()
        self.udp.clear()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        for server in self.servers:
            server.close()
        self.servers.clear()


async def _udp_echo(address: str, port: int) -> str | None:
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    class _Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            if not got.done():
                got.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(_Client, local_addr=(address, 0))
    try:
        transport.sendto(b"edgesim echo", (address, port))
        data = await asyncio.wait_for(got, 2.0)
    except TimeoutError:
        return "no echo"
    finally:
        transport.close()
    return None if data == b"edgesim echo" else "echo differs"


async def _tcp_echo(address: str, port: int) -> str | None:
    try:
        reader, writer = await asyncio.open_connection(address, port)
    except OSError as exc:
        return f"connect failed: {exc}"
    try:
        writer.write(b"edgesim echo")
        data = await asyncio.wait_for(reader.readexactly(12), 2.0)
    except (TimeoutError, asyncio.IncompleteReadError):
        return "no echo"
    finally:
        writer.close()
    return None if data == b"edgesim echo" else "echo differs"


__all__ = ["MediaPeerService"]
