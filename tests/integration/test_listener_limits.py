"""Issue 12: every TCP listener caps its connections (total and per source), times out what
never completes, and does not queue replies for a peer that never reads. Real loopback sockets,
waits on futures and events (no sleeps)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from sipmessage import Request, Response

from simulator.lab.topology import Topology
from simulator.pki import LabPki
from simulator.sip.aio import ListenerSpec, SipListener, SipProtocol
from simulator.sip.build import response_for
from simulator.sip.connection import SipLimits
from simulator.tls import client_context, server_context
from tests.sip.sip_helpers import message

SERVER = "127.66.0.1"
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
