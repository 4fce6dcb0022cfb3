"""The TURN core (no event loop, explicit ``now``): every request, bad input, quota and timer."""

from __future__ import annotations

import dataclasses
import ipaddress
import struct
from enum import Enum

import pytest
from aioice import stun as aioice_stun
from hypothesis import given, settings
from hypothesis import strategies as st
from media_helpers import (
    CLIENT,
    PEER,
    REALM,
    T0,
    TCP,
    UDP,
    Client,
    config,
    error_code,
    only_reply,
    relayed,
    replies,
    request,
    tid,
)

from simulator.lab.topology import Topology
from simulator.media import stun
from simulator.media.actions import (
    CloseClient,
    ClosePeer,
    CloseRelay,
    ConnectPeer,
    JoinConnection,
    OpenRelay,
    RelayTo,
    SendTo,
)
from simulator.media.auth import time_limited_credentials
from simulator.media.errors import LocalProtocolError
from simulator.media.events import AllocationCreated, AllocationDeleted, MessageDropped
from simulator.media.service import peer_policy
from simulator.media.states import TRANSITIONS, AllocationState, ConnectionState, advance
from simulator.media.stun import Message, MessageClass, Method
from simulator.media.turn import TurnServer


@pytest.fixture
def server() -> TurnServer:
    return TurnServer(config())


def events(server: TurnServer) -> list[object]:
    out = []
    while (event := server.next_event()) is not None:
        out.append(event)
    return out


# ------------------------------------------------------------------ Binding


def test_binding_answers_xor_mapped_address_with_fingerprint(server: TurnServer) -> None:
    req = request(Method.BINDING)
    (action,) = server.receive(stun.encode(req), CLIENT, UDP, T0)
    assert isinstance(action, SendTo) and action.client == CLIENT and action.listener == UDP
    reply = stun.parse(action.data)  # parse checks the FINGERPRINT
    assert reply.message_class == MessageClass.SUCCESS
    assert reply.transaction_id == req.transaction_id
    assert reply.get("XOR-MAPPED-ADDRESS") == CLIENT
    assert "FINGERPRINT" in reply


def test_unknown_comprehension_required_attribute_gets_420(server: TurnServer) -> None:
    data = stun.encode(request(Method.BINDING), fingerprint=False)
    body = data[20:] + struct.pack("!HH", 0x0031, 4) + b"ABCD"
    data = data[:2] + struct.pack("!H", len(body)) + data[4:20] + body
    reply = only_reply(server.receive(data, CLIENT, UDP, T0))
    assert error_code(reply) == 420
    assert reply.get("UNKNOWN-ATTRIBUTES") == (0x0031,)
    assert reply.transaction_id == data[8:20]
    assert server.stats["rejected.420"] == 1


def test_truncated_request_is_answered_400_with_its_transaction_id(server: TurnServer) -> None:
    data = stun.encode(request(Method.BINDING, ("SOFTWARE", "truncated")))
    reply = only_reply(server.receive(data[:-6], CLIENT, UDP, T0))
    assert error_code(reply) == 400
    assert reply.transaction_id == data[8:20]
    assert server.stats["rejected.400"] == 1


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00\x01", b"\xff" * 40, b"GET / HTTP/1.1\r\n\r\n", bytes(19)],
    ids=["empty", "two bytes", "top bits set", "http", "19 zeros"],
)
def test_garbage_is_dropped_counted_and_the_server_goes_on(server: TurnServer, data: bytes) -> None:
    assert server.receive(data, CLIENT, UDP, T0) == []
    assert server.stats["dropped"] == 1
    assert any(isinstance(e, MessageDropped) for e in events(server))
    assert only_reply(server.receive(stun.encode(request(Method.BINDING)), CLIENT, UDP, T0))


def test_oversized_datagram_is_dropped(server: TurnServer) -> None:
    data = stun.encode(request(Method.BINDING)) + bytes(70000)
    assert replies(server.receive(data, CLIENT, UDP, T0))[0].get("ERROR-CODE")[0] == 400


def test_responses_and_unknown_indications_are_dropped(server: TurnServer) -> None:
    response = Message(Method.BINDING, MessageClass.SUCCESS, tid())
    assert server.receive(stun.encode(response), CLIENT, UDP, T0) == []
    indication = Message(Method.DATA, MessageClass.INDICATION, tid())
    assert server.receive(stun.encode(indication), CLIENT, UDP, T0) == []
    assert server.stats["dropped"] == 2


def test_unknown_method_request_gets_400(server: TurnServer) -> None:
    req = Message(0x0123, MessageClass.REQUEST, tid())
    assert error_code(only_reply(server.receive(stun.encode(req), CLIENT, UDP, T0))) == 400


# ------------------------------------------------------------------ authentication


def test_allocate_without_credentials_gets_401_with_realm_and_fresh_nonce(
    server: TurnServer,
) -> None:
    req = stun.encode(request(Method.ALLOCATE, ("REQUESTED-TRANSPORT", 17)))
    reply = only_reply(server.receive(req, CLIENT, UDP, T0))
    assert error_code(reply) == 401
    assert reply.get("REALM") == REALM
    assert reply.get("NONCE")
    assert "MESSAGE-INTEGRITY" not in reply
    later = only_reply(server.receive(req, CLIENT, UDP, T0 + 5))
    assert later.get("NONCE") != reply.get("NONCE")


def test_wrong_message_integrity_gets_401_and_nothing_is_allocated(server: TurnServer) -> None:
    client = Client(server, "alice", "not-the-password")
    reply = client.allocate()
    assert error_code(reply) == 401
    assert reply.get("NONCE") and reply.get("REALM") == REALM
    assert server.allocation_count == 0
    assert server.stats["rejected.401"] == 2  # the challenge, then the bad integrity


def test_tampered_message_fails_integrity(server: TurnServer) -> None:
    client = Client(server)
    client.allocate()
    data = bytearray(client.signed(request(Method.REFRESH, ("LIFETIME", 900))))
    data = data[:-8]  # drop FINGERPRINT, then flip a byte covered by MESSAGE-INTEGRITY
    data[2:4] = struct.pack("!H", len(data) - 20)
    data[27] ^= 0x01
    assert error_code(only_reply(client.send(bytes(data)))) == 401


def test_unknown_user_gets_401(server: TurnServer) -> None:
    assert error_code(Client(server, "mallory", "x").allocate()) == 401


def test_stale_nonce_gets_438_with_a_new_nonce_then_succeeds(server: TurnServer) -> None:
    client = Client(server)
    reply = client.allocate(T0, ("REQUESTED-TRANSPORT", 17), ("LIFETIME", 3600))
    assert reply.message_class == MessageClass.SUCCESS
    old_nonce = client.nonce
    stale_at = T0 + server.config.nonce_lifetime + 1
    client.answers.clear()
    ok = only_reply(client.ask(request(Method.REFRESH), stale_at))
    assert ok.message_class == MessageClass.SUCCESS
    # the client core took the new NONCE from the 438 and sent the Refresh again
    stale, final = client.answers
    assert error_code(stale.answer) == 438 and not stale.final and stale.signed
    assert stale.answer.get("REALM") == REALM and stale.answer.get("NONCE") != old_nonce
    assert final.final and final.sent.get("NONCE") == stale.answer.get("NONCE")
    assert server.stats["rejected.438"] == 1


def test_forged_nonce_gets_401(server: TurnServer) -> None:
    client = Client(server)
    client.use_nonce(b"5f5e1000-0000000000000000")
    assert error_code(client.allocate()) == 401
    assert [a.signed for a in client.answers] == [True]  # refused, not challenged again


def test_time_limited_credentials_from_the_shared_secret() -> None:
    server = TurnServer(config(users={}))
    username, password = time_limited_credentials(b"s3cret", "alice@contoso.lab", T0, 3600)
    assert username == f"{int(T0) + 3600}:alice@contoso.lab"
    good = Client(server, username, password).allocate(T0)
    assert good.message_class == MessageClass.SUCCESS
    assert good.check_integrity(stun.long_term_key(username, REALM, password))
    expired = Client(server, username, password, address=("127.0.113.40", 40001))
    assert error_code(expired.allocate(T0 + 3601)) == 401
    forged = Client(server, username, "bm90IHRoZSBobWFj", address=("127.0.113.40", 40002))
    assert error_code(forged.allocate(T0)) == 401


def test_request_with_other_credentials_on_an_allocation_gets_441(server: TurnServer) -> None:
    Client(server).allocate()
    bob = Client(server, "bob", "bob-pw")  # same 5-tuple, other user
    assert error_code(bob.permit()) == 441


def test_unknown_attribute_on_authenticated_request_gets_signed_420(server: TurnServer) -> None:
    client = Client(server)
    client.allocate()
    refresh = request(Method.REFRESH)
    refresh.attributes += client.creds.attributes()
    # stun.encode only writes attributes it knows: splice the unknown one in, then sign
    data = stun.encode(refresh, fingerprint=False) + struct.pack("!HH", 0x0044, 0)
    data = data[:2] + struct.pack("!H", len(data) - 20) + data[4:]
    mac = aioice_stun.message_integrity(data, client.key)
    data = data[:2] + struct.pack("!H", len(data) - 20 + 24) + data[4:]
    data += struct.pack("!HH", 0x0008, 20) + mac
    reply = only_reply(client.send(data))
    assert error_code(reply) == 420
    assert reply.get("UNKNOWN-ATTRIBUTES") == (0x0044,)
    assert reply.check_integrity(client.key)


# ------------------------------------------------------------------ Allocate


def test_allocate_gives_a_relay_in_the_range_signed(server: TurnServer) -> None:
    client = Client(server)
    actions = client.ask(request(Method.ALLOCATE, ("REQUESTED-TRANSPORT", 17)))
    (open_relay,) = actions
    assert isinstance(open_relay, OpenRelay)
    assert open_relay.transport == "udp" and open_relay.address == "127.51.100.11"
    assert 50000 <= open_relay.port <= 59999
    reply = only_reply(server.relay_opened(open_relay.relay, T0))
    assert reply.get("XOR-RELAYED-ADDRESS") == ("127.51.100.11", open_relay.port)
    assert reply.get("XOR-MAPPED-ADDRESS") == CLIENT
    assert reply.get("LIFETIME") == 600
    assert reply.check_integrity(client.key)
    created = [e for e in events(server) if isinstance(e, AllocationCreated)]
    assert created[0].username == "alice"


def test_allocate_retransmission_gets_the_same_answer_and_new_one_437(server: TurnServer) -> None:
    client = Client(server)
    client.allocate()
    first = client.server._state.allocations[(UDP, CLIENT)].request
    again = client.send(
        client.signed(
            Message(first.method, first.message_class, first.transaction_id, first.attributes[:1])
        )
    )
    assert only_reply(again).message_class == MessageClass.SUCCESS
    assert error_code(client.allocate()) == 437


@pytest.mark.parametrize(
    ("attrs", "code"),
    [
        ((), 400),
        ((("REQUESTED-TRANSPORT", 99),), 442),
        ((("REQUESTED-TRANSPORT", 6),), 400),  # TCP relay over a UDP control channel
        ((("REQUESTED-TRANSPORT", 17), ("REQUESTED-ADDRESS-FAMILY", 2)), 440),
        ((("REQUESTED-TRANSPORT", 17), ("RESERVATION-TOKEN", b"nosuchtk")), 508),
    ],
)
def test_allocate_rejections(server: TurnServer, attrs: tuple, code: int) -> None:
    client = Client(server)
    actions = client.ask(request(Method.ALLOCATE, *attrs))  # after the 401 challenge
    assert error_code(only_reply(actions)) == code


def test_even_port_with_reservation(server: TurnServer) -> None:
    first = Client(server).allocate(T0, ("REQUESTED-TRANSPORT", 17), ("EVEN-PORT", True))
    port = first.get("XOR-RELAYED-ADDRESS")[1]
    assert port % 2 == 0
    token = first.get("RESERVATION-TOKEN")
    second = Client(server, address=("127.0.113.40", 40001))
    reply = second.allocate(T0 + 1, ("REQUESTED-TRANSPORT", 17), ("RESERVATION-TOKEN", token))
    assert reply.get("XOR-RELAYED-ADDRESS")[1] == port + 1


def test_user_quota_and_total_quota_give_486() -> None:
    server = TurnServer(config(user_quota=2, total_quota=3))
    for port in (1, 2):
        assert Client(server, address=("127.0.113.40", port)).allocate().message_class == (
            MessageClass.SUCCESS
        )
    assert error_code(Client(server, address=("127.0.113.40", 3)).allocate()) == 486
    assert Client(
        server, "bob", "bob-pw", address=("127.0.113.41", 1)
    ).allocate().message_class == (MessageClass.SUCCESS)
    assert (
        error_code(Client(server, "bob", "bob-pw", address=("127.0.113.41", 2)).allocate()) == 486
    )
    assert server.stats["rejected.486"] == 2


def test_relay_ports_stay_inside_the_range_and_508_when_full() -> None:
    server = TurnServer(config(port_low=50010, port_high=50013))
    ports = []
    for n in range(4):
        reply = Client(server, address=("127.0.113.40", 100 + n)).allocate()
        ports.append(reply.get("XOR-RELAYED-ADDRESS")[1])
    assert sorted(ports) == [50010, 50011, 50012, 50013]
    assert error_code(Client(server, address=("127.0.113.40", 200)).allocate()) == 508


def test_relay_bind_failure_retries_another_port_in_the_range() -> None:
    server = TurnServer(config(port_low=50020, port_high=50025))
    client = Client(server)
    (first,) = client.ask(request(Method.ALLOCATE, ("REQUESTED-TRANSPORT", 17)))
    assert isinstance(first, OpenRelay)
    (second,) = server.relay_failed(first.relay, T0)
    assert isinstance(second, OpenRelay)
    assert second.port != first.port and 50020 <= second.port <= 50025
    reply = only_reply(server.relay_opened(second.relay, T0))
    assert reply.get("XOR-RELAYED-ADDRESS")[1] == second.port


# ------------------------------------------------------------------ permissions, data, channels


def test_send_indication_without_permission_is_dropped_and_counted(server: TurnServer) -> None:
    client = Client(server)
    client.allocate()
    send = Message(
        Method.SEND,
        MessageClass.INDICATION,
        tid(),
        [("XOR-PEER-ADDRESS", PEER), ("DATA", b"hello")],
    )
    assert client.send(stun.encode(send)) == []
    assert server.stats["dropped.data to peer without permission"] == 1
    assert client.permit().message_class == MessageClass.SUCCESS
    (out,) = relayed(client.send(stun.encode(send)))
    assert out == RelayTo(client.relay, PEER, b"hello")


def test_peer_data_needs_a_permission_and_comes_back_as_data_indication(server: TurnServer) -> None:
    client = Client(server)
    client.allocate()
    assert server.relay_received(client.relay, b"early", PEER, T0) == []
    assert server.stats["dropped.peer without permission"] == 1
    client.permit(("127.0.113.50", 1))  # permissions are per IP: any port of the peer
    (action,) = server.relay_received(client.relay, b"media", PEER, T0)
    assert isinstance(action, SendTo) and action.client == CLIENT
    data = stun.parse(action.data)
    assert data.method == Method.DATA and data.message_class == MessageClass.INDICATION
    assert data.get("XOR-PEER-ADDRESS") == PEER and data.get("DATA") == b"media"


def test_channel_data_both_ways(server: TurnServer) -> None:
    client = Client(server)
    client.allocate()
    assert client.bind(0x4001).message_class == MessageClass.SUCCESS
    (out,) = relayed(client.send(struct.pack("!HH", 0x4001, 3) + b"abc" + b"\x00"))
    assert out.peer == PEER and out.data == b"abc"
    (back,) = server.relay_received(client.relay, b"xyz", PEER, T0)
    assert isinstance(back, SendTo) and back.data == struct.pack("!HH", 0x4001, 3) + b"xyz"


def test_channel_data_for_an_unbound_channel_is_dropped(server: TurnServer) -> None:
    client = Client(server)
    client.allocate()
    assert client.send(struct.pack("!HH", 0x4002, 4) + b"data") == []
    assert client.send(struct.pack("!HH", 0x4002, 40) + b"short") == []
    assert client.send(b"\x40\x00") == []
    assert server.stats["dropped.ChannelData for an unbound channel"] == 1
    assert server.stats["dropped.ChannelData length mismatch"] == 1
    assert server.stats["dropped.truncated ChannelData"] == 1


@pytest.mark.parametrize(
    ("channel", "peer", "code"),
    [(0x3FFF, PEER, 400), (0x8000, PEER, 400), (0x4000, ("127.0.0.1", 9), 403)],
)
def test_channel_bind_rejections(server: TurnServer, channel: int, peer: tuple, code: int) -> None:
    client = Client(server)
    client.allocate()
    assert error_code(client.bind(channel, peer)) == code


def test_channel_rebinding_rules(server: TurnServer) -> None:
    client = Client(server)
    client.allocate()
    client.bind(0x4000)
    assert error_code(client.bind(0x4000, ("127.0.113.50", 6000))) == 400
    assert error_code(client.bind(0x4001)) == 400
    assert client.bind(0x4000).message_class == MessageClass.SUCCESS  # refresh


def test_tcp_control_connection_gets_padded_channel_data() -> None:
    server = TurnServer(config())
    client = Client(server, listener=TCP)
    client.allocate()
    client.bind(0x4000)
    (back,) = server.relay_received(client.relay, b"12345", PEER, T0)
    assert isinstance(back, SendTo) and len(back.data) == 12 and back.data.endswith(b"\x00\x00\x00")


# ------------------------------------------------------------------ forbidden peers


@pytest.fixture
def lab_server(topology: Topology) -> TurnServer:
    return TurnServer(config(policy=peer_policy(topology, topology.host("edge"), {})))


@pytest.mark.parametrize(
    ("peer", "allowed"),
    [
        ("127.0.113.50", True),  # messenger (internet) in the local runner
        ("203.0.113.50", True),  # messenger's real address
        ("198.18.0.1", False),  # outside the lab, but a reserved (benchmarking) range
        ("127.0.0.1", False),  # loopback, not a lab interface
        ("127.0.2.10", False),  # the Front End (corporate) in the local runner
        ("192.0.2.10", False),  # the Front End's real address
        ("192.0.2.99", False),  # anything in the corporate subnet
        ("127.51.100.130", False),  # the Edge's internal interface (perimeter-internal)
        ("224.0.0.1", False),
        ("0.0.0.0", False),
    ],
)
def test_forbidden_peers_get_403(lab_server: TurnServer, peer: str, allowed: bool) -> None:
    client = Client(lab_server)
    client.allocate()
    reply = client.permit((peer, 5004))
    assert (reply.message_class == MessageClass.SUCCESS) is allowed
    if not allowed:
        assert error_code(reply) == 403
        assert reply.check_integrity(client.key)


def test_ipv6_peer_gets_443(server: TurnServer) -> None:
    client = Client(server)
    client.allocate()
    assert error_code(client.permit(("2001:db8::1", 5004))) == 443


def test_allowed_networks_override_the_policy(topology: Topology) -> None:
    policy = dataclasses.replace(
        peer_policy(topology, topology.host("edge"), {}),
        allowed=(ipaddress.IPv4Network("127.0.0.1/32"),),
    )
    assert policy.refuse("127.0.0.1") is None
    assert policy.refuse("127.0.0.2") == "peer is a loopback address"


# ------------------------------------------------------------------ lifetimes


def test_permission_and_channel_expire_on_their_lifetimes(server: TurnServer) -> None:
    client = Client(server)
    client.allocate(T0, ("REQUESTED-TRANSPORT", 17), ("LIFETIME", 3600))
    client.bind(0x4000)
    frame = struct.pack("!HH", 0x4000, 4) + b"ping"
    assert relayed(client.send(frame, T0 + 299))
    # the permission (300 s) lapses before the channel (600 s): data is dropped
    assert client.send(frame, T0 + 301) == []
    assert server.relay_received(client.relay, b"x", PEER, T0 + 301) == []
    client.permit(PEER, T0 + 302)
    assert relayed(client.send(frame, T0 + 303))
    assert client.send(frame, T0 + 601) == []  # the channel is gone
    assert server.stats["dropped.ChannelData for an unbound channel"] == 1


def test_allocation_expires_by_timer(server: TurnServer) -> None:
    client = Client(server)
    client.allocate(T0)
    assert server.get_timer() is not None and server.get_timer() <= T0 + 600
    assert server.handle_timer(T0 + 599) == []
    actions = server.handle_timer(T0 + 600)
    assert actions == [CloseRelay(client.relay)]
    assert server.allocation_count == 0
    assert AllocationDeleted(client.relay, "expired") in events(server)
    assert server.get_timer() is None


def test_refresh_extends_and_zero_deletes(server: TurnServer) -> None:
    client = Client(server)
    client.allocate(T0)
    reply = only_reply(client.ask(request(Method.REFRESH, ("LIFETIME", 99999)), T0 + 500))
    assert reply.get("LIFETIME") == 3600
    assert server.handle_timer(T0 + 700) == []
    actions = client.ask(request(Method.REFRESH, ("LIFETIME", 0)), T0 + 590)
    assert only_reply(actions).get("LIFETIME") == 0
    assert CloseRelay(client.relay) in actions
    assert error_code(only_reply(client.ask(request(Method.REFRESH), T0 + 591))) == 437


def test_expired_tcp_allocation_closes_its_control_connection() -> None:
    server = TurnServer(config())
    client = Client(server, listener=TCP)
    client.allocate(T0)
    actions = server.handle_timer(T0 + 601)
    assert CloseClient(TCP, CLIENT) in actions


def test_closing_the_control_connection_deletes_the_allocation() -> None:
    server = TurnServer(config())
    client = Client(server, listener=TCP)
    client.allocate(T0)
    assert server.connection_lost(TCP, CLIENT, T0 + 1) == [CloseRelay(client.relay)]
    assert server.allocation_count == 0


def test_packet_rate_cap_drops_the_excess() -> None:
    server = TurnServer(config(max_packet_rate=5))
    client = Client(server)
    client.allocate()
    client.bind(0x4000)
    frame = struct.pack("!HH", 0x4000, 1) + b"x\x00\x00\x00"
    sent = sum(len(relayed(client.send(frame, T0 + 0.001 * n))) for n in range(20))
    assert sent == 5
    assert server.stats["dropped.rate cap"] == 15
    assert relayed(client.send(frame, T0 + 1.5))


def test_bandwidth_cap_drops_what_exceeds_it() -> None:
    server = TurnServer(config(max_bandwidth=1000))
    client = Client(server)
    client.allocate()
    client.bind(0x4000)
    frame = struct.pack("!HH", 0x4000, 400) + bytes(400)
    sent = sum(len(relayed(client.send(frame, T0 + 0.001 * n))) for n in range(5))
    assert sent == 2  # 800 of the 1000 bytes the bucket holds; the third 400 would exceed it
    assert server.stats["dropped.rate cap"] == 3
    assert server.relay_received(client.relay, bytes(400), PEER, T0 + 0.01) == []
    assert relayed(client.send(frame, T0 + 1.0))


# ------------------------------------------------------------------ RFC 6062 TCP allocations


def tcp_allocation(server: TurnServer) -> Client:
    client = Client(server, listener=TCP)
    reply = client.allocate(T0, ("REQUESTED-TRANSPORT", 6))
    assert reply.message_class == MessageClass.SUCCESS
    return client


def test_connect_dials_out_from_the_relayed_address_then_connection_bind() -> None:
    server = TurnServer(config())
    client = tcp_allocation(server)
    relay_address = server.allocation(client.relay).relayed  # type: ignore[union-attr]
    assert (
        error_code(only_reply(client.ask(request(Method.CONNECT, ("XOR-PEER-ADDRESS", PEER)))))
        == 403
    )
    client.permit()
    (connect,) = client.ask(request(Method.CONNECT, ("XOR-PEER-ADDRESS", PEER)))
    assert isinstance(connect, ConnectPeer)
    assert connect.source == relay_address and 50000 <= connect.source[1] <= 59999
    assert connect.peer == PEER
    assert (
        error_code(only_reply(client.ask(request(Method.CONNECT, ("XOR-PEER-ADDRESS", PEER)))))
        == 446
    )
    reply = only_reply(server.peer_connected(connect.connection, T0))
    assert reply.get("CONNECTION-ID") == connect.connection
    data_conn = Client(
        server, listener=TCP, address=("127.0.113.40", 40100), credentials=client.creds
    )
    bad = data_conn.send(data_conn.signed(request(Method.CONNECTION_BIND, ("CONNECTION-ID", 1))))
    assert error_code(only_reply(bad)) == 400
    actions = data_conn.send(
        data_conn.signed(request(Method.CONNECTION_BIND, ("CONNECTION-ID", connect.connection)))
    )
    assert only_reply(actions).message_class == MessageClass.SUCCESS
    assert JoinConnection(connect.connection, TCP, ("127.0.113.40", 40100)) in actions


def test_failed_connect_gets_447() -> None:
    server = TurnServer(config())
    client = tcp_allocation(server)
    client.permit()
    (connect,) = client.ask(request(Method.CONNECT, ("XOR-PEER-ADDRESS", PEER)))
    assert error_code(only_reply(server.peer_connect_failed(connect.connection, T0))) == 447


def test_inbound_peer_connection_needs_permission_and_is_announced() -> None:
    server = TurnServer(config())
    client = tcp_allocation(server)
    assert server.peer_connection_arrived(client.relay, PEER, T0) == (None, [])
    client.permit()
    cid, actions = server.peer_connection_arrived(client.relay, PEER, T0)
    assert cid is not None
    attempt = stun.parse(actions[0].data)  # type: ignore[union-attr]
    assert attempt.method == Method.CONNECTION_ATTEMPT
    assert attempt.get("CONNECTION-ID") == cid and attempt.get("XOR-PEER-ADDRESS") == PEER
    # not bound within 30 s: the peer connection is closed
    assert server.handle_timer(T0 + 31) == [ClosePeer(cid)]


def test_channel_bind_on_a_tcp_allocation_is_400() -> None:
    server = TurnServer(config())
    client = tcp_allocation(server)
    assert error_code(client.bind(0x4000)) == 400


# ------------------------------------------------------------------ invariant


@settings(max_examples=300)
@given(st.binary(max_size=120), st.sampled_from([UDP, TCP]))
def test_any_bytes_yield_actions_never_an_exception(data: bytes, listener: object) -> None:
    server = TurnServer(config())
    actions = server.receive(data, CLIENT, listener, T0)  # type: ignore[arg-type]
    for action in actions:
        assert isinstance(action, SendTo)
        stun.parse(action.data)


# ------------------------------------------------------------------ random sequences


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["allocate", "permit", "bind", "data", "peer", "refresh0", "tick"]),
            st.integers(min_value=0, max_value=3),
            st.integers(min_value=0x4000, max_value=0x4003),
        ),
        max_size=40,
    )
)
def test_random_sequences_keep_the_invariants(steps: list[tuple[str, int, int]]) -> None:
    """Whatever clients do: relays stay in the range, every OpenRelay is answered, no exception."""
    server = TurnServer(config(port_low=50100, port_high=50109, user_quota=3))
    clients = [Client(server, address=("127.0.113.40", 1000 + n)) for n in range(4)]
    now = T0
    open_relays: set[int] = set()
    for op, who, channel in steps:
        client = clients[who]
        now += 7
        if op == "allocate":
            actions = client.ask(request(Method.ALLOCATE, ("REQUESTED-TRANSPORT", 17)), now)
            for action in actions:
                if isinstance(action, OpenRelay):
                    assert 50100 <= action.port <= 50109
                    open_relays.add(action.relay)
                    reply = only_reply(server.relay_opened(action.relay, now))
                    assert reply.message_class == MessageClass.SUCCESS
                    client.relay = action.relay
        elif op == "permit":
            client.permit(PEER, now)
        elif op == "bind":
            client.bind(channel, ("127.0.113.50", channel), now)
        elif op == "data":
            client.send(struct.pack("!HH", channel, 4) + b"data", now)
        elif op == "peer" and getattr(client, "relay", None) is not None:
            server.relay_received(client.relay, b"media", ("127.0.113.50", channel), now)
        elif op == "refresh0":
            for action in client.ask(request(Method.REFRESH, ("LIFETIME", 0)), now):
                if isinstance(action, CloseRelay):
                    open_relays.discard(action.relay)
        else:
            now += 400
            for action in server.handle_timer(now):
                if isinstance(action, CloseRelay):
                    open_relays.discard(action.relay)
        assert server.allocation_count == len(open_relays)
        assert len(server._state.ports) <= 10


@pytest.mark.parametrize(
    "state", [*AllocationState, *ConnectionState], ids=lambda s: f"{type(s).__name__}.{s.name}"
)
@pytest.mark.parametrize("event", sorted({event for _, event in TRANSITIONS}))
def test_transition_table_over_every_state_and_input(state: Enum, event: str) -> None:
    if (state, event) in TRANSITIONS:
        assert type(advance(state, event)) is type(state)
    else:
        with pytest.raises(LocalProtocolError, match="no transition"):
            advance(state, event)
