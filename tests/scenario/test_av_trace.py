"""Trace hooks of the A/V Edge and of the scenario TURN client: one event per STUN/TURN
transaction, media summarised per flow, a request without answer recorded as dropped."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from simulator import trace
from simulator.lab.topology import Topology
from simulator.media.aio import AsyncTurnServer, ListenerSpec
from simulator.media.config import TurnConfig
from simulator.media.policy import PeerPolicy
from simulator.pki import LabPki
from simulator.scenario.api import Lab
from simulator.scenario.av import relay_client, rtp_packet
from simulator.tls import client_context, server_context
from tests.siplab import sip_topology
from tests.udp_peer import udp_peer

USER, PASSWORD = "alice", "alice-turn-pw"
PACKETS = 200


@pytest.fixture(scope="module")
def av_topology(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    return sip_topology(tmp_path_factory.mktemp("avtrace"), octet=218)


@pytest.fixture
def lab(av_topology: Topology, lab_pki: LabPki) -> Lab:
    return Lab(av_topology, "local", lab_pki)


@pytest.fixture
async def server(lab: Lab, lab_pki: LabPki) -> AsyncIterator[AsyncTurnServer]:
    config = TurnConfig(
        relay_address=lab.address("edge:av"),
        users={USER: PASSWORD},
        port_low=50000,
        port_high=59999,
        policy=PeerPolicy(deny_loopback=False, denied_zones=frozenset()),
    )
    tls = server_context(lab_pki.interface_cert(lab.interface("edge:av")))
    specs = [
        ListenerSpec("udp", lab.address("edge:av"), 0),
        ListenerSpec("tls", lab.address("edge:av"), 0, tls),
    ]
    async with AsyncTurnServer(config, specs) as srv:
        yield srv


async def test_transactions_one_event_each_and_media_summarised(
    lab: Lab, server: AsyncTurnServer
) -> None:
    lid = server.listener("udp")
    async with udp_peer(sock=lab.udp_socket("fabrikam")) as echo:
        peer = echo.address
        with trace.TraceRecorder() as rec:
            client = await relay_client(
                lab, "messenger", (lid.address, lid.port), "udp", USER, PASSWORD
            )
            relayed = await client.allocate()
            await client.permit(peer)
            await client.bind(0x4000, peer)
            got = 0
            for seq in range(PACKETS):
                client.send_media(0x4000, rtp_packet(seq, 7))
                if await client.receive_media(0x4000, 2.0) is not None:
                    got += 1
            client.record_media(0x4000, got)
            await client.close()
    assert got == PACKETS

    edge = f"{lid.address}:{lid.port}"
    # what the Edge recorded: requests it received, answers it sent
    by_edge = [e.summary for e in rec.events
               if (e.dst == edge and e.event == "received") or (e.src == edge and e.event == "sent")]  # fmt: skip
    assert by_edge == [
        "Allocate request", "401 Unauthorized", "Allocate request",
        f"Allocate success {relayed[0]}:{relayed[1]}",
        "CreatePermission request", "CreatePermission success",
        "ChannelBind request", "ChannelBind success",
        "Refresh request", "Refresh success",
    ]  # fmt: skip
    assert 50000 <= relayed[1] <= 59999
    # the client's records of the same messages carry the same summaries (the ladder folds them)
    by_client = [e.summary for e in rec.events if e.protocol == "turn"
                 and ((e.src != edge and e.event == "sent") or (e.dst != edge and e.event == "received"))]  # fmt: skip
    assert by_client == by_edge
    # 200 packets each way, yet a handful of media events: first datagram and totals per flow
    media = [e for e in rec.events if e.protocol == "media"]
    assert len(media) <= 5
    relay = f"{relayed[0]}:{relayed[1]}"
    totals = {(e.src, e.dst): e.summary for e in media if e.summary.startswith("media:")}
    size = len(rtp_packet(0, 7))
    assert totals == {
        (relay, f"{peer[0]}:{peer[1]}"): f"media: {PACKETS} packets, {PACKETS * size} bytes",
        (f"{peer[0]}:{peer[1]}", relay): f"media: {PACKETS} packets, {PACKETS * size} bytes",
    }
    assert any(e.summary == f"RTP over UDP {lid.port}: {PACKETS} sent, {PACKETS} received"
               for e in media)  # fmt: skip


async def test_nothing_is_kept_without_a_recorder(lab: Lab, server: AsyncTurnServer) -> None:
    """Relaying while nobody records builds no trace state (the per-packet cost is one check)."""
    assert not trace.active()
    lid = server.listener("udp")
    async with udp_peer(sock=lab.udp_socket("fabrikam")) as echo:
        peer = echo.address
        client = await relay_client(
            lab, "messenger", (lid.address, lid.port), "udp", USER, PASSWORD
        )
        await client.allocate()
        await client.permit(peer)
        await client.bind(0x4000, peer)
        client.send_media(0x4000, rtp_packet(0, 1))
        assert await client.receive_media(0x4000, 2.0) is not None
        assert server._media_out.flows == {} and server._media_in.flows == {}
        await client.close()


async def test_an_unanswered_request_is_recorded_as_dropped(lab: Lab) -> None:
    silent = lab.udp_socket("edge:av")  # bound, never read: a firewall that drops
    try:
        port = silent.getsockname()[1]
        with trace.TraceRecorder() as rec:
            client = await relay_client(
                lab, "messenger", (lab.address("edge:av"), port), "udp", USER, PASSWORD,
                timeout=0.6,
            )  # fmt: skip
            with pytest.raises(TimeoutError, match=r"Allocate request to .* got no answer"):
                await client.allocate()
            await client.close()
    finally:
        silent.close()
    assert [(e.event, e.summary, e.dst) for e in rec.events] == [
        ("dropped", "Allocate request", f"{lab.address('edge:av')}:{port}")
    ]
    ladder_src = rec.events[0].src.split(":")[0]
    assert ladder_src == lab.address("messenger")


async def test_the_tls_path_relays_padded_channel_data(lab: Lab, server: AsyncTurnServer) -> None:
    """The fallback path: TURN over TLS on the TCP listener, ChannelData padded to 4 bytes."""
    lid = server.listener("tls")
    async with udp_peer(sock=lab.udp_socket("fabrikam")) as echo:
        peer = echo.address
        client = await relay_client(
            lab, "messenger", (lid.address, lid.port), "tls", USER, PASSWORD,
            tls=client_context([lab.pki.trust_bundle]), server_hostname="av.contoso.lab",
        )  # fmt: skip
        assert client.path == f"TCP {lid.port}"
        relayed = await client.allocate()
        await client.permit(peer)
        await client.bind(0x4001, peer)
        payloads = [bytes([n]) * (170 + n % 3) for n in range(20)]  # not multiples of 4
        echoed = []
        for payload in payloads:
            client.send_media(0x4001, payload)
            echoed.append(await client.receive_media(0x4001, 2.0))
        await client.close()
    assert 50000 <= relayed[1] <= 59999
    assert echoed == payloads
