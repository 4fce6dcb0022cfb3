"""The A/V Edge on loopback sockets, with our TURN client and aioice's: UDP, TCP, TLS, RFC 6062
TCP relays, padded ChannelData, bad input, the lab's services."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
from collections.abc import AsyncIterator

import pytest
from aioice.turn import create_turn_endpoint

from simulator.lab.runners.local import LocalLab
from simulator.lab.topology import Topology
from simulator.media import stun
from simulator.media.aio import AsyncTurnClient, AsyncTurnServer, ListenerSpec, TurnListenerLimits
from simulator.media.auth import LongTermCredentials
from simulator.media.config import TurnConfig
from simulator.media.errors import RequestRefused
from simulator.media.policy import PeerPolicy
from simulator.media.service import binding_check
from simulator.media.stun import Message, MessageClass, Method
from simulator.pki import LabPki, LabSecrets
from simulator.tls import client_context, server_context
from tests.media_lab import av_server, media_only
from tests.udp_peer import UdpPeer, udp_peer

SERVER_IP = "127.51.100.11"
PEER_IP = "127.0.113.50"
PORTS = (51000, 51999)
TIMEOUT = 5.0


@pytest.fixture
async def turn(lab_pki: LabPki, topology: Topology) -> AsyncIterator[AsyncTurnServer]:
    internet = PeerPolicy(allowed=(ipaddress.IPv4Network("127.0.113.0/24"),))
    users = {"alice": "alice-pw"}
    async with av_server(topology, lab_pki, users=users, ports=PORTS, policy=internet) as server:
        yield server


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))


@pytest.fixture
async def udp_echo() -> AsyncIterator[UdpPeer]:
    async with udp_peer(PEER_IP) as peer:
        yield peer


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_aioice_client_relays_through_our_server(
    turn: AsyncTurnServer, udp_echo: UdpPeer, transport: str
) -> None:
    lid = turn.listener(transport)
    relay, receiver = await asyncio.wait_for(
        create_turn_endpoint(
            _Receiver, (lid.address, lid.port), "alice", "alice-pw", transport=transport
        ),
        TIMEOUT,
    )
    try:
        relayed = relay.get_extra_info("sockname")
        assert relayed[0] == SERVER_IP and PORTS[0] <= relayed[1] <= PORTS[1]
        peer = udp_echo.address
        for n in range(5):
            relay.sendto(f"packet {n}".encode(), peer)
            data, source = await asyncio.wait_for(receiver.queue.get(), TIMEOUT)
            assert data == f"packet {n}".encode() and source == peer
        # the peer saw the relayed address, never the client
        assert set(udp_echo.sources) == {relayed}
        assert turn.core.stats["relayed.to_peer"] == 5
        assert turn.core.stats["relayed.from_peer"] == 5
    finally:
        relay.close()


async def test_wrong_password_is_refused(turn: AsyncTurnServer) -> None:
    lid = turn.listener("udp")
    with pytest.raises(Exception, match="401"):
        await asyncio.wait_for(
            create_turn_endpoint(_Receiver, (lid.address, lid.port), "alice", "nope"), TIMEOUT
        )
    assert turn.core.allocation_count == 0


def alice(password: str = "alice-pw") -> LongTermCredentials:
    return LongTermCredentials("alice", password)


async def test_rfc6062_connect_leaves_from_the_relay_range(turn: AsyncTurnServer) -> None:
    seen: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not seen.done():
            seen.set_result(writer.get_extra_info("peername"))
        while data := await reader.read(4096):
            writer.write(data)
        writer.close()

    peer_server = await asyncio.start_server(echo, PEER_IP, 0)
    peer = peer_server.sockets[0].getsockname()[:2]
    lid = turn.listener("tcp")
    control = await AsyncTurnClient.open((lid.address, lid.port), "tcp", credentials=alice())
    try:
        relayed = await control.allocate("tcp")
        await control.create_permission(peer)
        connection_id = await control.connect(peer)
        # the seed row: the Edge's outbound TCP leaves from its relay port range
        source = await asyncio.wait_for(seen, TIMEOUT)
        assert source == relayed and PORTS[0] <= source[1] <= PORTS[1]
        async with await control.connection_bind(connection_id) as data:
            data.send_raw(b"raw media over TCP")
            assert await data.receive_raw(18, TIMEOUT) == b"raw media over TCP"
    finally:
        await control.close()
        peer_server.close()


async def test_binding_over_tls_on_the_av_certificate(
    turn: AsyncTurnServer, lab_pki: LabPki
) -> None:
    lid = turn.listener("tls")
    tls = client_context([lab_pki.trust_bundle])
    server = (lid.address, lid.port)
    async with await AsyncTurnClient.open(
        server, "tls", tls=tls, server_hostname="av.contoso.lab"
    ) as client:
        assert await client.binding() == client.local
        assert client.get_extra_info("ssl_object") is not None


async def test_bad_input_is_dropped_or_answered_and_the_server_stays_up(
    turn: AsyncTurnServer,
) -> None:
    lid = turn.listener("udp")
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_Receiver, local_addr=(SERVER_IP, 0))
    try:
        request = stun.encode(Message(Method.BINDING, MessageClass.REQUEST, b"A" * 12))
        for garbage in (b"\xff" * 30, b"\x00", struct.pack("!HH", 0x4000, 4) + b"data"):
            transport.sendto(garbage, (lid.address, lid.port))
        transport.sendto(request[:-4], (lid.address, lid.port))  # truncated: 400
        data, _ = await asyncio.wait_for(proto.queue.get(), TIMEOUT)
        assert stun.parse(data).get("ERROR-CODE") == (400, "Bad Request")
        transport.sendto(request, (lid.address, lid.port))
        data, _ = await asyncio.wait_for(proto.queue.get(), TIMEOUT)
        assert stun.parse(data).message_class == MessageClass.SUCCESS
        assert turn.core.stats["dropped"] == 3
    finally:
        transport.close()
    # a stream carrying garbage is closed; the listener still answers
    tcp = turn.listener("tcp")
    reader, writer = await asyncio.open_connection(tcp.address, tcp.port)
    writer.write(b"\x80" * 24)
    assert await asyncio.wait_for(reader.read(100), TIMEOUT) == b""
    writer.close()
    async with await AsyncTurnClient.open((tcp.address, tcp.port), "tcp") as client:
        await client.binding()


async def test_lab_av_edge_and_media_peer_answer_at_protocol_level(
    topology: Topology, lab_pki: LabPki
) -> None:
    lab = LocalLab(media_only(topology), lab_pki.directory, hosts=["edge", "messenger"])
    async with lab:
        running = {(s.host, s.service) for s in lab.statuses if s.state == "running"}
        assert {("edge", "av-edge"), ("messenger", "media-peer")} <= running
        checks = [c for c in await lab.check() if c.service in ("av-edge", "media-peer")]
        assert len(checks) == 11  # the A/V Authentication service (5062) answers OPTIONS too
        failed = [f"{c.listener}: {c.detail}" for c in checks if not c.ok]
        assert failed == []
        # a relayed round trip to the messenger's media endpoint, UDP and RFC 6062 TCP
        edge = str(topology.interface("edge:av").loopback())
        messenger = (str(topology.interface("messenger:wan").loopback()), 5004)
        password = LabSecrets(lab_pki.directory).get("av-edge/users/edgesim")
        creds = LongTermCredentials("edgesim", password)
        async with await AsyncTurnClient.open((edge, 3478), "udp", credentials=creds) as udp:
            await relayed_round_trip(udp, messenger)
            # the corporate Front End is a forbidden peer
            fe = (str(topology.interface("fe:lan").loopback()), 5061)
            with pytest.raises(RequestRefused) as refused:
                await udp.create_permission(fe)
            assert refused.value.code == 403
        async with await AsyncTurnClient.open((edge, 3478), "tcp", credentials=creds) as tcp:
            relayed = await tcp.allocate("tcp")
            assert 50000 <= relayed[1] <= 59999
            await tcp.create_permission(messenger)
            async with await tcp.connection_bind(await tcp.connect(messenger)) as data:
                data.send_raw(b"over the TCP relay")
                assert await data.receive_raw(18, TIMEOUT) == b"over the TCP relay"


async def test_silent_tcp_connection_without_allocation_is_closed(topology: Topology) -> None:
    config = TurnConfig(relay_address=SERVER_IP, port_low=PORTS[0], port_high=PORTS[1])
    specs = [ListenerSpec("tcp", SERVER_IP, 0)]
    limits = TurnListenerLimits(idle_timeout=0.2)
    async with AsyncTurnServer(config, specs, limits=limits) as server:
        lid = server.listener("tcp")
        reader, writer = await asyncio.open_connection(lid.address, lid.port)
        # no bytes ever sent: the server closes it after two idle periods
        assert await asyncio.wait_for(reader.read(100), TIMEOUT) == b""
        writer.close()


async def _closed_while_talking(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Keep sending whole Binding requests (each answered) and the first bytes of another;
    True once the server closes the connection (within 3 s)."""
    request = stun.encode(Message(Method.BINDING, MessageClass.REQUEST, b"B" * 12))
    deadline = asyncio.get_running_loop().time() + 3.0
    while asyncio.get_running_loop().time() < deadline:
        writer.write(request)
        answer = await asyncio.wait_for(reader.read(4096), TIMEOUT)
        if not answer:
            return True
        writer.write(request[:3])  # a partial message: bytes, but nothing whole
        try:  # paced by the read: no answer comes to three bytes
            if await asyncio.wait_for(reader.read(4096), 0.1) == b"":
                return True
        except TimeoutError:
            pass
        writer.write(request[3:])
        if not await asyncio.wait_for(reader.read(4096), TIMEOUT):
            return True
    return False


async def test_traffic_that_keeps_no_allocation_does_not_reset_the_idle_timer() -> None:
    """#12: a connection holding no allocation is closed after the idle timeout, however much it
    sends (Bindings, partial messages); one holding an allocation stays, without sending."""
    config = TurnConfig(
        relay_address=SERVER_IP, users={"alice": "alice-pw"}, port_low=PORTS[0], port_high=PORTS[1]
    )
    async with AsyncTurnServer(
        config, [ListenerSpec("tcp", SERVER_IP, 0)], limits=TurnListenerLimits(idle_timeout=0.3)
    ) as server:
        lid = server.listener("tcp")
        reader, writer = await asyncio.open_connection(lid.address, lid.port)
        try:
            assert await _closed_while_talking(reader, writer)
        finally:
            writer.close()
        async with await AsyncTurnClient.open(
            (lid.address, lid.port), "tcp", credentials=alice()
        ) as client:
            await client.allocate()
            assert await client.receive(1.0) is None  # quiet for three idle periods
            assert await client.refresh() == 600  # still open: the allocation keeps it


async def test_connections_are_capped_in_total_and_per_source() -> None:
    config = TurnConfig(relay_address=SERVER_IP, port_low=PORTS[0], port_high=PORTS[1])
    specs = [ListenerSpec("tcp", SERVER_IP, 0)]
    limits = TurnListenerLimits(max_connections=3, max_per_source=2)
    async with AsyncTurnServer(config, specs, limits=limits) as server:
        lid = server.listener("tcp")

        async def connect(source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return await asyncio.open_connection(lid.address, lid.port, local_addr=(source, 0))

        kept = [await connect(PEER_IP) for _ in range(2)]
        reader, writer = await connect(PEER_IP)
        assert await asyncio.wait_for(reader.read(100), TIMEOUT) == b""  # a third from one source
        writer.close()
        kept.append(await connect("127.0.113.51"))  # another source: the third in total
        reader, writer = await connect("127.0.113.52")
        assert await asyncio.wait_for(reader.read(100), TIMEOUT) == b""  # a fourth in total
        writer.close()
        for kept_reader, kept_writer in kept:  # the admitted ones are served
            request = stun.encode(Message(Method.BINDING, MessageClass.REQUEST, b"K" * 12))
            kept_writer.write(request)
            assert await asyncio.wait_for(kept_reader.read(4096), TIMEOUT)
            kept_writer.close()
        assert server.core.stats["dropped.connection limit"] == 2


async def test_a_silent_or_stalled_connection_to_443_is_closed(
    lab_pki: LabPki, topology: Topology
) -> None:
    """The TLS-or-TCP port: no first byte within its timeout, or a TLS handshake that stalls."""
    config = TurnConfig(relay_address=SERVER_IP, port_low=PORTS[0], port_high=PORTS[1])
    tls = server_context(lab_pki.interface_cert(topology.interface("edge:av")))
    limits = TurnListenerLimits(first_byte_timeout=0.2, handshake_timeout=0.3)
    async with AsyncTurnServer(
        config, [ListenerSpec("tls", SERVER_IP, 0, tls)], limits=limits
    ) as server:
        lid = server.listener("tls")
        for first in (b"", b"\x16\x03\x01\x00\x05"):  # nothing; a ClientHello that never ends
            reader, writer = await asyncio.open_connection(lid.address, lid.port)
            writer.write(first)
            with contextlib.suppress(ConnectionResetError):  # closed, or reset
                answer = await asyncio.wait_for(reader.read(100), TIMEOUT)
                assert answer in (b"", b"\x15\x03\x01\x00\x02\x02\x16")
            writer.close()
        assert server.gate.open == 0  # both counted out again


def relay_config() -> TurnConfig:
    """alice, relaying to the embedded lab's internet zone."""
    return TurnConfig(
        relay_address=SERVER_IP,
        users={"alice": "alice-pw"},
        port_low=PORTS[0],
        port_high=PORTS[1],
        policy=PeerPolicy(allowed=(ipaddress.IPv4Network("127.0.113.0/24"),)),
    )


async def test_media_to_a_client_that_does_not_read_is_dropped(udp_echo: UdpPeer) -> None:
    """A TCP client that stops reading: relayed media queues up to the write limit, then the
    rest is dropped and counted, as a UDP relay would lose it."""
    config = relay_config()
    limits = TurnListenerLimits(max_write_buffer_bytes=64 * 1024)
    async with AsyncTurnServer(
        config, [ListenerSpec("tcp", SERVER_IP, 0)], limits=limits
    ) as server:
        lid = server.listener("tcp")
        peer = udp_echo.address
        async with await AsyncTurnClient.open(
            (lid.address, lid.port), "tcp", credentials=alice()
        ) as client:
            relayed = await client.allocate()
            await client.channel_bind(0x4000, peer)
            client._transport.pause_reading()  # type: ignore[union-attr]
            (stream,) = server._streams.values()
            sock = stream.transport.get_extra_info("socket")  # type: ignore[union-attr]
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # the kernel holds little
            for _ in range(400):  # 400 KB from the peer, paced by the server's own drops
                udp_echo.transport.sendto(bytes(1000), relayed)
                if server.core.stats["dropped.send buffer full"]:
                    break
                await asyncio.sleep(0)  # pacing a sender, not a wait for something
            assert server.core.stats["dropped.send buffer full"] >= 1
            assert stream.transport.get_write_buffer_size() <= 64 * 1024 + 1100  # type: ignore[union-attr]


async def test_a_peer_is_not_read_past_its_buffer_before_connection_bind() -> None:
    """RFC 6062: a peer dials the relay and sends before the client binds its connection; the
    relay holds up to the limit, then stops reading (TCP pushes back on the peer)."""
    config = relay_config()
    limits = TurnListenerLimits(max_peer_buffer_bytes=64 * 1024)
    async with AsyncTurnServer(
        config, [ListenerSpec("tcp", SERVER_IP, 0)], limits=limits
    ) as server:
        lid = server.listener("tcp")
        async with await AsyncTurnClient.open(
            (lid.address, lid.port), "tcp", credentials=alice()
        ) as client:
            relayed = await client.allocate("tcp")
            await client.create_permission((PEER_IP, 0))
            _, writer = await asyncio.open_connection(*relayed, local_addr=(PEER_IP, 0))
            attempt = await client.connection_attempt(TIMEOUT)
            assert attempt is not None
            writer.write(bytes(8 * 1024 * 1024))
            with pytest.raises(TimeoutError):  # the relay stopped reading: the peer is held back
                await asyncio.wait_for(writer.drain(), 1.0)
            (connection,) = server._peers.values()
            assert connection.transport is not None and not connection.transport.is_reading()
            assert len(connection.pending) <= 64 * 1024 + 256 * 1024  # the limit and one read
            writer.close()


# ------------------------------------------------------------------ our TURN client


async def relayed_round_trip(client: AsyncTurnClient, peer: tuple[str, int]) -> None:
    """Allocate, permit and bind a channel to ``peer`` (an echo), then payloads that are not
    multiples of four (padded on streams) by ChannelData and by Send indication, echoed back."""
    relayed = await client.allocate()
    assert PORTS[0] <= relayed[1] <= PORTS[1] or 50000 <= relayed[1] <= 59999
    await client.create_permission(peer)
    await client.channel_bind(0x4001, peer)
    for n in range(5):
        payload = bytes([n]) * (17 + n)
        client.send_channel_data(0x4001, payload)
        got = await client.receive(TIMEOUT)
        assert got is not None and (got.channel, got.peer, got.data) == (0x4001, peer, payload)
    client.send_indication(peer, b"by indication")
    got = await client.receive(TIMEOUT)
    assert got is not None and got.data == b"by indication"


@pytest.fixture
async def tcp_echo() -> AsyncIterator[tuple[tuple[str, int], list[tuple[str, int]]]]:
    sources: list[tuple[str, int]] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sources.append(writer.get_extra_info("peername")[:2])
        while data := await reader.read(4096):
            writer.write(data)
        writer.close()

    server = await asyncio.start_server(echo, PEER_IP, 0)
    yield server.sockets[0].getsockname()[:2], sources
    server.close()


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_our_client_relays_over_each_transport(
    turn: AsyncTurnServer, udp_echo: UdpPeer, lab_pki: LabPki, transport: str
) -> None:
    lid = turn.listener(transport)
    tls = client_context([lab_pki.trust_bundle]) if transport == "tls" else None
    peer = udp_echo.address
    client = await AsyncTurnClient.open(
        (lid.address, lid.port), transport, credentials=alice(), tls=tls,
        server_hostname="av.contoso.lab",
    )  # fmt: skip
    async with client:
        await relayed_round_trip(client, peer)
        assert udp_echo.sources == [client.relayed] * len(udp_echo.sources)
        assert await client.refresh(0) == 0
    assert turn.core.allocation_count == 0


async def test_our_client_on_a_tcp_relay_dials_from_the_range(
    turn: AsyncTurnServer, tcp_echo: tuple[tuple[str, int], list[tuple[str, int]]]
) -> None:
    peer, sources = tcp_echo
    lid = turn.listener("tcp")
    async with await AsyncTurnClient.open(
        (lid.address, lid.port), "tcp", credentials=alice()
    ) as client:
        relayed = await client.allocate("tcp")
        await client.create_permission(peer)
        async with await client.connection_bind(await client.connect(peer)) as data:
            data.send_raw(b"ping")
            assert await data.receive_raw(4, TIMEOUT) == b"ping"
    assert sources == [relayed]


@pytest.mark.parametrize(
    ("password", "peer", "code", "signed"),
    [("wrong", (PEER_IP, 9), 401, True), ("alice-pw", ("127.0.0.1", 9), 403, True)],
)
async def test_our_client_reports_the_error(
    turn: AsyncTurnServer, password: str, peer: tuple[str, int], code: int, signed: bool
) -> None:
    lid = turn.listener("udp")
    async with await AsyncTurnClient.open(
        (lid.address, lid.port), "udp", credentials=alice(password)
    ) as client:
        with pytest.raises(RequestRefused) as refused:
            await client.allocate()
            await client.create_permission(peer)
    assert refused.value.code == code and refused.value.authenticated is signed


async def test_without_credentials_the_401_names_the_realm(turn: AsyncTurnServer) -> None:
    lid = turn.listener("udp")
    async with await AsyncTurnClient.open((lid.address, lid.port), "udp") as client:
        with pytest.raises(RequestRefused) as refused:
            await client.allocate()
    assert (refused.value.code, refused.value.realm) == (401, "contoso.lab")
    assert not refused.value.authenticated


async def test_the_tls_port_also_serves_plain_turn_over_tcp(
    turn: AsyncTurnServer, udp_echo: UdpPeer
) -> None:
    """TCP 443 fallback: a client that speaks TURN without TLS on the TLS port is served too."""
    lid = turn.listener("tls")
    assert await binding_check(lid.address, lid.port, "tcp") is None
    peer = udp_echo.address
    async with await AsyncTurnClient.open(
        (lid.address, lid.port), "tcp", credentials=alice()
    ) as client:
        await relayed_round_trip(client, peer)
    # and a TLS client that fails the handshake does not stop the listener
    reader, writer = await asyncio.open_connection(lid.address, lid.port)
    writer.write(b"\x16\x03\x01\x00\x05hello")
    assert await asyncio.wait_for(reader.read(100), TIMEOUT) in (
        b"",
        b"\x15\x03\x01\x00\x02\x02\x16",
    )
    writer.close()
    assert await binding_check(lid.address, lid.port, "tcp") is None
