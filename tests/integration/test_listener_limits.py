"""Issue 12: every TCP listener caps its connections (total and per source), times out what
never completes, and does not queue replies for a peer that never reads. Real loopback sockets,
waits on futures and events (no sleeps)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from pathlib import Path
from typing import cast

from sipmessage import Request, Response

from simulator.lab.topology import Topology, load_topology
from simulator.pki import LabPki
from simulator.sip.aio import ListenerSpec, SipListener, SipProtocol
from simulator.sip.build import response_for
from simulator.sip.connection import SipLimits
from simulator.tls import client_context, server_context
from simulator.xmpp.harness import (
    PORT_MAP,
    STREAM_HEADER,
    XmppLab,
    start_xmpp_lab,
)
from tests.sip.sip_helpers import message

SERVER = "127.66.0.1"
XMPP_EDGE = "127.51.100.10"
HEADER = STREAM_HEADER.format(to="contoso.lab", frm="jabber.lab").encode()
WAIT = 10.0


class Echo:
    """A SIP owner that answers every request 200 with a body of ``reply_size`` bytes."""

    def __init__(self, reply_size: int = 0) -> None:
        self.reply_size = reply_size
        self.protos: list[SipProtocol] = []

    def on_request(self, proto: SipProtocol, request: Request) -> None:
        proto.send(response_for(request, 200, body=b"x" * self.reply_size))

    def on_response(self, proto: SipProtocol, response: Response) -> None:
        pass

    def on_close(self, proto: SipProtocol) -> None:
        pass


async def sip_listener(
    topology: Topology, pki: LabPki, limits: SipLimits, owner: Echo
) -> tuple[SipListener, int]:
    cert = pki.interface_cert(topology.interface("edge:access"))
    spec = ListenerSpec(
        SERVER, 0, server_context(cert), "test/443", owner.protos.append, owner, limits=limits
    )
    listener = SipListener(spec)
    _, port = await listener.start()
    return listener, port


async def tls_connect(
    pki: LabPki, port: int, source: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    context = client_context([pki.trust_bundle])
    return await asyncio.wait_for(
        asyncio.open_connection(
            SERVER, port, ssl=context, server_hostname="sip.contoso.lab", local_addr=(source, 0)
        ),
        WAIT,
    )


async def refused(pki: LabPki, port: int, source: str) -> bool:
    """True when the listener drops the connection before TLS completes."""
    try:
        _, writer = await tls_connect(pki, port, source)
    except (OSError, ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
        return True
    writer.close()
    return False


async def test_sip_listener_caps_connections(topology: Topology, lab_pki: LabPki) -> None:
    owner = Echo()
    limits = SipLimits(max_connections=3, max_per_source=2)
    listener, port = await sip_listener(topology, lab_pki, limits, owner)
    try:
        a1 = await tls_connect(lab_pki, port, "127.66.1.1")
        a2 = await tls_connect(lab_pki, port, "127.66.1.1")
        assert await refused(lab_pki, port, "127.66.1.1")  # third from one source
        b1 = await tls_connect(lab_pki, port, "127.66.1.2")  # another source: fine
        assert await refused(lab_pki, port, "127.66.1.3")  # over the total
        assert listener.gate.open == 3 and listener.gate.refused == 2
        a1[1].close()
        first = next(p for p in owner.protos if p.peer[0] == "127.66.1.1")
        await asyncio.wait_for(asyncio.shield(first.closed), WAIT)
        c1 = await tls_connect(lab_pki, port, "127.66.1.3")  # room again
        for _, writer in (a2, b1, c1):
            writer.close()
    finally:
        await listener.stop()


async def test_sip_tls_handshake_times_out(topology: Topology, lab_pki: LabPki) -> None:
    listener, port = await sip_listener(topology, lab_pki, SipLimits(handshake_timeout=0.2), Echo())
    try:
        reader, writer = await asyncio.open_connection(SERVER, port)  # and never say hello
        assert await asyncio.wait_for(reader.read(100), WAIT) == b""
        writer.close()
        assert listener.gate.open == 0
    finally:
        await listener.stop()


async def test_a_half_sent_message_closes_the_connection(
    topology: Topology, lab_pki: LabPki
) -> None:
    listener, port = await sip_listener(topology, lab_pki, SipLimits(message_timeout=0.3), Echo())
    try:
        reader, writer = await tls_connect(lab_pki, port, "127.66.1.1")
        writer.write(message()[:40])  # a slowloris: the rest never comes
        assert await asyncio.wait_for(reader.read(100), WAIT) == b""
        writer.close()
    finally:
        await listener.stop()


async def test_a_peer_that_never_reads_is_paused_then_dropped(
    topology: Topology, lab_pki: LabPki
) -> None:
    owner = Echo(reply_size=32 * 1024)
    limits = SipLimits(max_write_buffer_bytes=256 * 1024)
    listener, port = await sip_listener(topology, lab_pki, limits, owner)
    paused = asyncio.Event()
    try:
        reader, writer = await tls_connect(lab_pki, port, "127.66.1.1")
        writer.write(b"\r\n\r\n")
        await asyncio.wait_for(reader.readexactly(2), WAIT)  # the pong: the server has us
        proto = owner.protos[0]
        original = proto.pause_writing

        def pause() -> None:
            original()
            paused.set()

        proto.pause_writing = pause  # type: ignore[method-assign]
        request = message("OPTIONS", "sip:sip.contoso.lab", body="")

        async def flood() -> None:
            for _ in range(2000):  # bounded: 2,000 requests would ask for 64 MB of replies
                writer.write(request)
                await writer.drain()  # blocks once the Edge stops reading us
                await asyncio.sleep(0)  # let the Edge's side run (drain does not yield)

        task = asyncio.ensure_future(flood())
        await asyncio.wait_for(paused.wait(), WAIT)
        assert proto.reading_paused
        assert proto.transport is not None
        assert proto.transport.get_write_buffer_size() <= limits.max_write_buffer_bytes
        # more for that peer (e.g. forwarded from another connection) beyond the cap: dropped
        proto.send_bytes(b"x" * limits.max_write_buffer_bytes)
        await asyncio.wait_for(asyncio.shield(proto.closed), WAIT)
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        writer.close()
    finally:
        await listener.stop()


# ---------------------------------------------------------------------- XMPP


async def xmpp_edge(tmp_path: Path, pki: LabPki, limits: dict[str, object]) -> XmppLab:
    topology = load_topology().with_ports(PORT_MAP)
    settings: dict[str, dict[str, object]] = {"xmpp-proxy": {"listener_limits": limits}}
    return await start_xmpp_lab(topology, pki, settings, hosts=["edge", "dns-ext", "dns-int"])


async def xmpp_refused(port: int, source: str) -> bool:
    """True when the listener drops the stream before answering its header."""
    reader, writer = await asyncio.open_connection(XMPP_EDGE, port, local_addr=(source, 0))
    try:
        writer.write(HEADER)
        return await asyncio.wait_for(reader.read(100), WAIT) == b""
    except ConnectionError:
        return True
    finally:
        writer.close()


async def test_xmpp_listener_caps_connections(tmp_path: Path, lab_pki: LabPki) -> None:
    lab = await xmpp_edge(tmp_path, lab_pki, {"max_connections": 3, "max_per_source": 2})
    port = PORT_MAP[5269]
    held = []
    try:
        for source in ("127.66.2.1", "127.66.2.1"):
            held.append(await asyncio.open_connection(XMPP_EDGE, port, local_addr=(source, 0)))
            held[-1][1].write(HEADER)
            assert await asyncio.wait_for(held[-1][0].read(10), WAIT)  # answered
        assert await xmpp_refused(port, "127.66.2.1")  # third from one source
        held.append(await asyncio.open_connection(XMPP_EDGE, port, local_addr=("127.66.2.2", 0)))
        held[-1][1].write(HEADER)
        assert await asyncio.wait_for(held[-1][0].read(10), WAIT)
        assert await xmpp_refused(port, "127.66.2.3")  # over the total
        gate = lab.proxy.gates[port]
        assert gate.open == 3 and gate.refused == 2
    finally:
        for _, writer in held:
            writer.close()
        await lab.stop()


async def test_xmpp_starttls_handshake_times_out(tmp_path: Path, lab_pki: LabPki) -> None:
    lab = await xmpp_edge(tmp_path, lab_pki, {"handshake_timeout": 0.2})
    try:
        reader, writer = await asyncio.open_connection(XMPP_EDGE, PORT_MAP[5269])
        writer.write(HEADER)
        writer.write(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        data = b""
        async with asyncio.timeout(WAIT):
            while chunk := await reader.read(4096):  # <proceed/>, then no ClientHello from us
                data += chunk
        assert b"<proceed" in data  # and then the Edge gave up on the handshake
        writer.close()
    finally:
        await lab.stop()


async def test_an_xmpp_peer_that_never_reads_is_dropped(tmp_path: Path, lab_pki: LabPki) -> None:
    lab = await xmpp_edge(tmp_path, lab_pki, {"max_write_buffer_bytes": 64 * 1024})
    try:
        reader, writer = await asyncio.open_connection(XMPP_EDGE, PORT_MAP[5269])
        writer.write(HEADER)
        assert await asyncio.wait_for(reader.read(10), WAIT)
        (conn,) = [c for c in lab.proxy.connections if c.name != "gateway"]
        # uvloop's transports are no asyncio.ReadTransport subclass: cast, not isinstance
        transport = cast(asyncio.ReadTransport, writer.transport)
        transport.pause_reading()  # we stop reading; small buffers fill at once
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        # whitespace for that peer (as stanzas routed from elsewhere) piles up: past the cap,
        # the stream closes
        for _ in range(128):  # bounded: 1 MiB at most, the cap is 64 KiB
            if conn.failure is not None:
                break
            conn.session.stream._write(" " * 8192)
            conn._flush()
        transport.resume_reading()
        assert conn.failure is not None and "does not read" in conn.failure
        await asyncio.wait_for(conn.closed.wait(), WAIT)
        writer.close()
    finally:
        await lab.stop()


# ---------------------------------------------------------------------- DNS over TCP


async def test_dns_tcp_caps_connections() -> None:
    from simulator.dns.aio import DnsLimits, DnsServer
    from simulator.dns.zone import DnsZone, Records

    zone = DnsZone(Records({"a.lab": ("203.0.113.1",)}, {}, ("lab",)))
    server = DnsServer(
        zone, SERVER, 0, DnsLimits(max_connections=2, max_per_source=1, idle_timeout=0.3)
    )
    await server.start()
    try:
        r1, w1 = await asyncio.open_connection(SERVER, server.port, local_addr=("127.66.3.1", 0))
        r2, w2 = await asyncio.open_connection(SERVER, server.port, local_addr=("127.66.3.1", 0))
        assert await asyncio.wait_for(r2.read(10), WAIT) == b""  # second from one source
        _r3, w3 = await asyncio.open_connection(SERVER, server.port, local_addr=("127.66.3.2", 0))
        r4, w4 = await asyncio.open_connection(SERVER, server.port, local_addr=("127.66.3.3", 0))
        assert await asyncio.wait_for(r4.read(10), WAIT) == b""  # over the total
        assert server.gate.refused == 2
        assert await asyncio.wait_for(r1.read(10), WAIT) == b""  # idle: closed by the server
        for w in (w1, w2, w3, w4):
            w.close()
    finally:
        await server.stop()
