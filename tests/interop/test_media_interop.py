"""Real peers through our TURN server: coturn's turnutils_* tools and two aiortc peers.

The server runs in the test's event loop on the Edge's A/V loopback address; the peers relay to a
lab address of the internet zone (the messenger host), which the default peer policy allows.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
from collections.abc import AsyncIterator

import pytest

from simulator.lab.topology import Topology
from simulator.media.aio import AsyncTurnServer
from simulator.media.service import peer_policy
from simulator.pki import LabPki, LabSecrets
from tests.media_lab import av_server, media_only

pytestmark = pytest.mark.interop

SERVER_IP = "127.51.100.11"
PEER_IP = "127.0.113.50"
PORTS = (52000, 52999)
USER, PASSWORD = "edgesim", "edgesim-pw"
TIMEOUT = 30.0


def requires(binary: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        shutil.which(binary) is None, reason=f"{binary} not installed (Debian package coturn)"
    )


def free_port(kind: int, address: str) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def turn(topology: Topology, lab_pki: LabPki) -> AsyncIterator[AsyncTurnServer]:
    policy = peer_policy(topology, topology.host("edge"), {})
    users = {USER: PASSWORD}
    async with av_server(topology, lab_pki, users=users, ports=PORTS, policy=policy) as server:
        yield server


async def run(*argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


@pytest.fixture
async def udp_peer() -> AsyncIterator[int]:
    """turnutils_peer: a UDP echo on the messenger's address."""
    if shutil.which("turnutils_peer") is None:
        pytest.skip("turnutils_peer not installed (Debian package coturn)")
    port = free_port(socket.SOCK_DGRAM, PEER_IP)
    proc = await asyncio.create_subprocess_exec(
        "turnutils_peer",
        "-L",
        PEER_IP,
        "-p",
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    # wait until the peer echoes (bounded)
    loop = asyncio.get_running_loop()
    for _ in range(50):
        got: asyncio.Future[bytes] = loop.create_future()

        class _Probe(asyncio.DatagramProtocol):
            def __init__(self, future: asyncio.Future[bytes] = got) -> None:
                self.future = future

            def datagram_received(self, data: bytes, addr: object) -> None:
                if not self.future.done():
                    self.future.set_result(data)

        transport, _ = await loop.create_datagram_endpoint(_Probe, local_addr=(PEER_IP, 0))
        transport.sendto(b"ping", (PEER_IP, port))
        try:
            await asyncio.wait_for(got, 0.1)
            break
        except TimeoutError:
            continue
        finally:
            transport.close()
    yield port
    proc.terminate()
    await proc.wait()


@requires("turnutils_stunclient")
async def test_stunclient_gets_a_binding(turn: AsyncTurnServer) -> None:
    lid = turn.listener("udp")
    rc, out = await run("turnutils_stunclient", "-p", str(lid.port), SERVER_IP)
    assert rc == 0, out
    assert re.search(r"UDP reflexive addr: 127\.\d+\.\d+\.\d+:\d+", out), out


@requires("turnutils_uclient")
@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_uclient_relays_through_our_server(
    turn: AsyncTurnServer, udp_peer: int, transport: str, lab_pki: LabPki
) -> None:
    lid = turn.listener(transport)
    argv = [
        "turnutils_uclient",
        "-p",
        str(lid.port),
        "-e",
        PEER_IP,
        "-r",
        str(udp_peer),
        "-X",
        "-g",
        "-u",
        USER,
        "-w",
        PASSWORD,
    ]
    if transport != "udp":
        argv.append("-t")
    if transport == "tls":  # TURN over TLS, the server's chain checked against the lab CAs
        argv += ["-S", "-E", str(lab_pki.trust_bundle)]
    rc, out = await run(*argv, SERVER_IP)
    assert rc == 0, out
    assert "Total lost packets 0 (0.000000%)" in out, out
    assert re.search(r"tot_recv_bytes ~ [1-9]\d*", out), out
    assert turn.core.stats["allocations.created"] >= 1
    assert turn.core.stats["relayed.from_peer"] >= 10


@requires("turnutils_uclient")
async def test_uclient_rfc6062_tcp_relays(turn: AsyncTurnServer) -> None:
    """-T: uclient's two TCP allocations Connect to each other's relayed address (RFC 6062)."""
    lid = turn.listener("tcp")
    rc, out = await run(
        "turnutils_uclient",
        "-T",
        "-p",
        str(lid.port),
        "-e",
        PEER_IP,
        "-r",
        "5004",
        "-u",
        USER,
        "-w",
        PASSWORD,
        SERVER_IP,
    )
    assert rc == 0, out
    assert "Total lost packets 0 (0.000000%)" in out, out
    assert re.search(r"tot_recv_bytes ~ [1-9]\d*", out), out
    stats = turn.core.stats
    # a Connect dialled out from one relay, the other relay announced a ConnectionAttempt,
    # and both data connections were bound
    assert stats["connections.outbound"] >= 1 and stats["connections.inbound"] >= 1
    assert stats["connections.bound"] >= 2


@requires("turnutils_uclient")
async def test_uclient_with_a_wrong_password_fails(turn: AsyncTurnServer, udp_peer: int) -> None:
    lid = turn.listener("udp")
    rc, out = await run(
        "turnutils_uclient",
        "-p",
        str(lid.port),
        "-e",
        PEER_IP,
        "-r",
        str(udp_peer),
        "-X",
        "-g",
        "-u",
        USER,
        "-w",
        "wrong",
        SERVER_IP,
    )
    assert rc != 0
    assert "Cannot complete Allocation" in out
    assert turn.core.allocation_count == 0
    assert turn.core.stats["rejected.401"] >= 2


@pytest.mark.parametrize(
    ("listener", "transport"), [("udp", "udp"), ("tls", "tcp")], ids=["udp-3478", "tcp-443"]
)
async def test_aiortc_peers_exchange_data_through_our_relay(
    turn: AsyncTurnServer, listener: str, transport: str
) -> None:
    """Two relay-only WebRTC peers; over TCP they use the TLS-or-TCP port (the 443 fallback)."""
    aiortc = pytest.importorskip("aiortc")
    lid = turn.listener(listener)
    ice = aiortc.RTCIceServer(
        urls=f"turn:{SERVER_IP}:{lid.port}?transport={transport}",
        username=USER,
        credential=PASSWORD,
    )
    configuration = aiortc.RTCConfiguration(
        iceServers=[ice], iceTransportPolicy=aiortc.RTCIceTransportPolicy.RELAY
    )
    caller = aiortc.RTCPeerConnection(configuration)
    callee = aiortc.RTCPeerConnection(configuration)
    loop = asyncio.get_running_loop()
    received: asyncio.Future[str] = loop.create_future()
    opened: asyncio.Future[None] = loop.create_future()
    channel = caller.createDataChannel("chat")

    @channel.on("open")
    def on_open() -> None:
        if not opened.done():
            opened.set_result(None)

    @callee.on("datachannel")
    def on_datachannel(remote: object) -> None:
        @remote.on("message")  # type: ignore[attr-defined]
        def on_message(message: str) -> None:
            if not received.done():
                received.set_result(message)

    try:
        await asyncio.wait_for(caller.setLocalDescription(await caller.createOffer()), TIMEOUT)
        await callee.setRemoteDescription(caller.localDescription)
        await asyncio.wait_for(callee.setLocalDescription(await callee.createAnswer()), TIMEOUT)
        await caller.setRemoteDescription(callee.localDescription)
        assert " typ relay " in caller.localDescription.sdp
        assert " typ host " not in caller.localDescription.sdp
        await asyncio.wait_for(opened, TIMEOUT)
        channel.send("hello through the A/V Edge")
        assert await asyncio.wait_for(received, TIMEOUT) == "hello through the A/V Edge"
        for pc in (caller, callee):
            connection = pc.sctp.transport.transport._connection  # aioice Connection
            pair = connection._nominated[1]
            for candidate in (pair.local_candidate, pair.remote_candidate):
                assert candidate.type == "relay"
                assert candidate.host == SERVER_IP
                assert PORTS[0] <= candidate.port <= PORTS[1]
        assert turn.core.stats["relayed.to_peer"] > 0
        assert turn.core.stats["relayed.from_peer"] > 0
    finally:
        await caller.close()
        await callee.close()


@requires("turnutils_uclient")
@pytest.mark.parametrize(
    ("over_tcp", "port"),
    [(False, 3478), (True, 3478), (True, 443)],
    ids=["udp-3478", "tcp-3478", "tcp-443"],
)
async def test_lab_relays_to_the_messenger_media_endpoint(
    topology: Topology, lab_pki: LabPki, over_tcp: bool, port: int
) -> None:
    """The default lab: uclient -> Edge A/V 3478 (or TCP 443) -> relay -> messenger's echo 5004."""
    from simulator.lab.runners.local import LocalLab

    edge = str(topology.interface("edge:av").loopback())
    messenger = str(topology.interface("messenger:wan").loopback())
    async with LocalLab(
        media_only(topology), lab_pki.directory, hosts=["edge", "messenger"]
    ) as lab:
        argv = [
            "turnutils_uclient",
            "-p",
            str(port),
            "-e",
            messenger,
            "-r",
            "5004",
            "-c",  # no RTCP allocation: the messenger's echo has no port 5005
            "-n",
            "10",
            "-X",
            "-g",
            "-u",
            "edgesim",
            "-w",
            LabSecrets(lab_pki.directory).get("av-edge/users/edgesim"),  # this lab's own
        ]
        if over_tcp:
            argv.append("-t")
        rc, out = await run(*argv, edge)
        service = next(s.instance for s in lab.statuses if s.service == "av-edge")
        stats = service.server.core.stats  # type: ignore[union-attr]
    assert rc == 0, out
    assert "Total lost packets 0 (0.000000%)" in out, out
    assert stats["relayed.from_peer"] >= 10
