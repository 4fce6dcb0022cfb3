"""The one TURN client in the [MS-TURN] dialect against the A/V Edge over real sockets: UDP
3478-style and TCP with the pseudo-TLS exchange on the Edge's TLS port (which tells the pseudo
ClientHello from real TLS), a relayed round trip through Send requests and Data Indications,
then Set Active Destination and unencapsulated data both ways."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from simulator.lab.topology import Topology
from simulator.media.aio import AsyncTurnClient, AsyncTurnServer
from simulator.media.auth import MsTurnCredentials, time_limited_credentials
from simulator.media.errors import RequestRefused
from simulator.media.msturn import EDGE, MS_TURN
from simulator.media.service import peer_policy
from simulator.pki import LabPki
from tests.media_lab import av_server
from tests.udp_peer import udp_peer

SECRET = b"test-secret"
PORTS = (54000, 54999)
PEER_IP = "127.0.113.50"  # the messenger host: a lab host the relay may reach


@pytest.fixture
async def edge(topology: Topology, lab_pki: LabPki) -> AsyncIterator[AsyncTurnServer]:
    policy = peer_policy(topology, topology.host("edge"), {})
    async with av_server(
        topology, lab_pki, users={}, ports=PORTS, policy=policy, dialect=EDGE, shared_secret=SECRET
    ) as server:
        yield server


@pytest.fixture
async def echo() -> AsyncIterator[tuple[str, int]]:
    async with udp_peer(PEER_IP, lambda data: b"echo " + data) as peer:
        yield peer.address


def credentials() -> MsTurnCredentials:
    return MsTurnCredentials.from_mras(*time_limited_credentials(SECRET, "alice", time.time(), 600))


async def round_trips(client: AsyncTurnClient, peer: tuple[str, int]) -> None:
    relayed = await client.allocate()
    assert relayed[0] == "127.51.100.11" and PORTS[0] <= relayed[1] <= PORTS[1]
    client.send_indication(peer, b"via send")
    got = await client.receive(5.0)
    assert got is not None and got.data == b"echo via send" and got.peer == peer
    await client.set_active_destination(peer)
    client.send_raw(b"raw")
    got = await client.receive(5.0)
    assert got is not None and got.data == b"echo raw"
    assert await client.refresh(0) == 0


async def test_ms_turn_over_udp(edge: AsyncTurnServer, echo: tuple[str, int]) -> None:
    udp = edge.listeners[0]
    async with await AsyncTurnClient.open(
        (udp.address, udp.port), "udp", credentials=credentials(), dialect=MS_TURN
    ) as client:
        await round_trips(client, echo)
    assert edge.core.stats["ms-turn.active-destination"] == 1


async def test_ms_turn_pseudo_tls_on_the_tls_port(
    edge: AsyncTurnServer, echo: tuple[str, int]
) -> None:
    tls = edge.listeners[2]
    assert tls.transport == "tls"
    async with await AsyncTurnClient.open(
        (tls.address, tls.port),
        "tcp",
        credentials=credentials(),
        dialect=MS_TURN,
        pseudo_tls=True,
    ) as client:
        await round_trips(client, echo)
    assert edge.core.stats["pseudo-tls"] == 1


async def test_ms_turn_wrong_password_is_refused(edge: AsyncTurnServer) -> None:
    udp = edge.listeners[0]
    bad = MsTurnCredentials("1999999999:alice", b"not the password")
    async with await AsyncTurnClient.open(
        (udp.address, udp.port), "udp", credentials=bad, dialect=MS_TURN
    ) as client:
        with pytest.raises(RequestRefused) as refused:
            await client.allocate()
    assert refused.value.code == 401
