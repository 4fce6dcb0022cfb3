"""The A/V Edge on loopback sockets: aioice TURN client, RFC 6062, TLS, bad input, the lab."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import struct
from collections.abc import AsyncIterator

import pytest
from aioice.turn import create_turn_endpoint

from simulator.lab.runners.local import LocalLab
from simulator.lab.topology import Topology
from simulator.media import stun
from simulator.media.aio import AsyncTurnServer, ListenerSpec, probe_relay
from simulator.media.framing import StreamFramer
from simulator.media.service import stream_binding
from simulator.media.stun import Message, MessageClass, Method
from simulator.media.turn import PeerPolicy, TurnConfig
from simulator.pki import LabPki, LabSecrets
from simulator.tls import client_context, server_context
from tests.media_lab import media_only

SERVER_IP = "127.51.100.11"
PEER_IP = "127.0.113.50"
PORTS = (51000, 51999)
TIMEOUT = 5.0


@pytest.fixture
async def turn(lab_pki: LabPki, topology: Topology) -> AsyncIterator[AsyncTurnServer]:
    iface = topology.interface("edge:av")
    tls = server_context(lab_pki.interface_cert(iface))
    config = TurnConfig(
        relay_address=SERVER_IP,
        users={"alice": "alice-pw"},
        port_low=PORTS[0],
        port_high=PORTS[1],
        policy=PeerPolicy(lab_zones=((ipaddress.IPv4Network("127.0.113.0/24"), "internet"),)),
    )
    specs = [
        ListenerSpec("udp", SERVER_IP, 0),
        ListenerSpec("tcp", SERVER_IP, 0),
        ListenerSpec("tls", SERVER_IP, 0, tls),
    ]
    async with AsyncTurnServer(config, specs) as server:
        yield server


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]
        self.sources: list[tuple[str, int]] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sources.append(addr)
        self.transport.sendto(data, addr)


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))


@pytest.fixture
async def udp_echo() -> AsyncIterator[_Echo]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_Echo, local_addr=(PEER_IP, 0))
    yield proto
    transport.close()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_aioice_client_relays_through_our_server(
    turn: AsyncTurnServer, udp_echo: _Echo, transport: str
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
        peer = udp_echo.transport.get_extra_info("sockname")
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


async def _stream_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, framer: StreamFramer, data: bytes
) -> Message:
    writer.write(data)
    while True:
        frames = framer.frames()
        if frames:
            return stun.parse(frames[0])
        chunk = await asyncio.wait_for(reader.read(4096), TIMEOUT)
        assert chunk, "server closed the connection"
        framer.feed(chunk)


class _TcpTurnClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.framer = reader, writer, StreamFramer()
        self.creds: list[tuple[str, object]] = []
        self.key = b""

    async def ask(self, method: int, *attrs: tuple[str, object]) -> Message:
        msg = Message(method, MessageClass.REQUEST, os.urandom(12), [*attrs, *self.creds])
        data = stun.encode(msg, integrity_key=self.key or None)
        reply = await _stream_request(self.reader, self.writer, self.framer, data)
        if reply.get("ERROR-CODE", (0,))[0] == 401 and not self.creds:
            self.key = stun.long_term_key("alice", reply.get("REALM"), "alice-pw")
            self.creds = [
                ("USERNAME", "alice"),
                ("REALM", reply.get("REALM")),
                ("NONCE", reply.get("NONCE")),
            ]
            return await self.ask(method, *attrs)
        return reply


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
    control = _TcpTurnClient(*await asyncio.open_connection(lid.address, lid.port))
    data_reader, data_writer = None, None
    try:
        reply = await control.ask(Method.ALLOCATE, ("REQUESTED-TRANSPORT", 6))
        assert reply.message_class == MessageClass.SUCCESS
        relayed = reply.get("XOR-RELAYED-ADDRESS")
        assert (await control.ask(Method.CREATE_PERMISSION, ("XOR-PEER-ADDRESS", peer))).get(
            "ERROR-CODE"
        ) is None
        connected = await control.ask(Method.CONNECT, ("XOR-PEER-ADDRESS", peer))
        connection_id = connected.get("CONNECTION-ID")
        assert connection_id is not None
        # the seed row: the Edge's outbound TCP leaves from its relay port range
        source = await asyncio.wait_for(seen, TIMEOUT)
        assert source == relayed and PORTS[0] <= source[1] <= PORTS[1]
        data_reader, data_writer = await asyncio.open_connection(lid.address, lid.port)
        data = _TcpTurnClient(data_reader, data_writer)
        data.creds, data.key = control.creds, control.key
        bound = await data.ask(Method.CONNECTION_BIND, ("CONNECTION-ID", connection_id))
        assert bound.message_class == MessageClass.SUCCESS
        data_writer.write(b"raw media over TCP")
        echoed = await asyncio.wait_for(data_reader.readexactly(18), TIMEOUT)
        assert echoed == b"raw media over TCP"
    finally:
        control.writer.close()
        if data_writer is not None:
            data_writer.close()
        peer_server.close()


async def test_binding_over_tls_on_the_av_certificate(
    turn: AsyncTurnServer, lab_pki: LabPki
) -> None:
    lid = turn.listener("tls")
    tls = client_context([lab_pki.trust_bundle])
    reader, writer = await asyncio.open_connection(
        lid.address, lid.port, ssl=tls, server_hostname="av.contoso.lab"
    )
    try:
        request = Message(Method.BINDING, MessageClass.REQUEST, os.urandom(12))
        reply = await _stream_request(reader, writer, StreamFramer(), stun.encode(request))
        assert reply.get("XOR-MAPPED-ADDRESS") == writer.get_extra_info("sockname")[:2]
    finally:
        writer.close()


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
    reader, writer = await asyncio.open_connection(tcp.address, tcp.port)
    reply = await _stream_request(reader, writer, StreamFramer(), request)
    assert reply.message_class == MessageClass.SUCCESS
    writer.close()


async def test_lab_av_edge_and_media_peer_answer_at_protocol_level(
    topology: Topology, lab_pki: LabPki
) -> None:
    lab = LocalLab(media_only(topology), lab_pki.directory, hosts=["edge", "messenger"])
    async with lab:
        running = {(s.host, s.service) for s in lab.statuses if s.state == "running"}
        assert {("edge", "av-edge"), ("messenger", "media-peer")} <= running
        checks = [c for c in await lab.check() if c.service in ("av-edge", "media-peer")]
        assert len(checks) == 10
        failed = [f"{c.listener}: {c.detail}" for c in checks if not c.ok]
        assert failed == []
        # a relayed round trip to the messenger's media endpoint, UDP and RFC 6062 TCP
        edge = str(topology.interface("edge:av").loopback())
        messenger = (str(topology.interface("messenger:wan").loopback()), 5004)
        password = LabSecrets(lab_pki.directory).get("av-edge/users/edgesim")
        udp = await probe_relay((edge, 3478), "edgesim", password, messenger)
        assert udp.ok, udp.reason
        tcp = await probe_relay(
            (edge, 3478), "edgesim", password, messenger, transport="tcp", relay_transport="tcp"
        )
        assert tcp.ok, tcp.reason
        assert tcp.relayed is not None and 50000 <= tcp.relayed[1] <= 59999
        # the corporate Front End is a forbidden peer
        fe = (str(topology.interface("fe:lan").loopback()), 5061)
        refused = await probe_relay((edge, 3478), "edgesim", password, fe)
        assert refused.error_code == 403


async def test_silent_tcp_connection_without_allocation_is_closed(topology: Topology) -> None:
    config = TurnConfig(relay_address=SERVER_IP, port_low=PORTS[0], port_high=PORTS[1])
    specs = [ListenerSpec("tcp", SERVER_IP, 0)]
    async with AsyncTurnServer(config, specs, idle_timeout=0.2) as server:
        lid = server.listener("tcp")
        reader, writer = await asyncio.open_connection(lid.address, lid.port)
        # no bytes ever sent: the server closes it after two idle periods
        assert await asyncio.wait_for(reader.read(100), TIMEOUT) == b""
        writer.close()


# ------------------------------------------------------------------ probe_relay (for probes)


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
async def test_probe_relay_udp_allocation(
    turn: AsyncTurnServer, udp_echo: _Echo, lab_pki: LabPki, transport: str
) -> None:
    lid = turn.listener(transport)
    tls = client_context([lab_pki.trust_bundle]) if transport == "tls" else None
    result = await probe_relay(
        (lid.address, lid.port),
        "alice",
        "alice-pw",
        udp_echo.transport.get_extra_info("sockname"),
        transport=transport,
        tls=tls,
        server_hostname="av.contoso.lab",
    )
    assert result.ok, result.reason
    assert result.relayed is not None and PORTS[0] <= result.relayed[1] <= PORTS[1]
    assert udp_echo.sources == [result.relayed] * len(udp_echo.sources)


async def test_probe_relay_tcp_allocation_dials_from_the_range(
    turn: AsyncTurnServer, tcp_echo: tuple[tuple[str, int], list[tuple[str, int]]]
) -> None:
    peer, sources = tcp_echo
    lid = turn.listener("tcp")
    result = await probe_relay(
        (lid.address, lid.port), "alice", "alice-pw", peer, transport="tcp", relay_transport="tcp"
    )
    assert result.ok, result.reason
    assert sources == [result.relayed]


@pytest.mark.parametrize(
    ("password", "peer", "code"),
    [("wrong", (PEER_IP, 9), 401), ("alice-pw", ("127.0.0.1", 9), 403)],
)
async def test_probe_relay_reports_the_error(
    turn: AsyncTurnServer, password: str, peer: tuple[str, int], code: int
) -> None:
    lid = turn.listener("udp")
    result = await probe_relay((lid.address, lid.port), "alice", password, peer)
    assert not result.ok and result.error_code == code
    assert turn.core.allocation_count == 0 or code == 403


async def test_the_tls_port_also_serves_plain_turn_over_tcp(
    turn: AsyncTurnServer, udp_echo: _Echo
) -> None:
    """TCP 443 fallback: a client that speaks TURN without TLS on the TLS port is served too."""
    lid = turn.listener("tls")
    assert await stream_binding(lid.address, lid.port, None, None) is None
    result = await probe_relay(
        (lid.address, lid.port),
        "alice",
        "alice-pw",
        udp_echo.transport.get_extra_info("sockname"),
        transport="tcp",
    )
    assert result.ok, result.reason
    # and a TLS client that fails the handshake does not stop the listener
    reader, writer = await asyncio.open_connection(lid.address, lid.port)
    writer.write(b"\x16\x03\x01\x00\x05hello")
    assert await asyncio.wait_for(reader.read(100), TIMEOUT) in (
        b"",
        b"\x15\x03\x01\x00\x02\x02\x16",
    )
    writer.close()
    assert await stream_binding(lid.address, lid.port, None, None) is None
