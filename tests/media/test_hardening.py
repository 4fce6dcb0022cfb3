"""Issue #12's TURN findings, one regression test each (each failed before its fix).

The peer-policy tests check the server core's answer (403 or success) and never send a packet:
nothing here leaves the process, whatever address a test names.
"""

from __future__ import annotations

import pytest
from media_helpers import CLIENT, T0, TCP, UDP, Client, config, error_code, only_reply, request, tid

from simulator.lab.runners.compose import docker_gateway
from simulator.lab.services import ServiceContext
from simulator.lab.topology import Topology
from simulator.media import stun
from simulator.media.actions import ConnectPeer, SendTo
from simulator.media.auth import time_limited_credentials, time_limited_password
from simulator.media.config import TurnConfig
from simulator.media.service import turn_config
from simulator.media.stun import Message, MessageClass, Method
from simulator.media.turn import TurnServer
from simulator.pki import LabPki, service_settings

RELAY = "198.51.100.11"
"""The A/V interface's address in the netns and compose labs (the relay address)."""


def lab_config(topology: Topology, lab_pki: LabPki, **settings: object) -> TurnConfig:
    """The default lab's ``[services.av-edge]`` settings (plus ``settings``) as the service
    builds them, with the relay on the A/V interface's real address."""
    values = service_settings(topology, "av-edge", lab_pki.directory)
    values.update(settings)
    ctx = ServiceContext(topology, topology.host("edge"), "av-edge", lab_pki, "netns", values)
    return turn_config(ctx, RELAY, (50000, 59999))


@pytest.fixture
def lab_server(topology: Topology, lab_pki: LabPki) -> TurnServer:
    return TurnServer(lab_config(topology, lab_pki, users={"alice": "alice-pw"}))


def allocated(server: TurnServer, *, listener: object = UDP, port: int = 40000) -> Client:
    client = Client(server, listener=listener, address=("127.0.113.40", port))  # type: ignore[arg-type]
    transport = 6 if listener is TCP else 17
    reply = client.allocate(T0, ("REQUESTED-TRANSPORT", transport))
    assert reply.message_class == MessageClass.SUCCESS, reply
    return client


# ------------------------------------------------------------------ the peer policy


@pytest.mark.parametrize(
    "peer",
    [
        "169.254.169.254",  # link-local: the cloud metadata service
        "169.254.1.1",
        "10.1.2.3",  # RFC 1918
        "172.16.5.4",
        "192.168.1.1",
        "100.64.0.1",  # CGNAT (RFC 6598)
        "0.1.2.3",  # "this" network
        "240.0.0.1",  # reserved
        "255.255.255.255",
        "224.0.0.251",  # multicast
        "127.0.0.1",  # loopback, not a lab interface
        "198.18.0.1",  # benchmarking (RFC 2544)
        "192.0.0.8",  # IETF protocol assignments
        "192.88.99.1",  # 6to4 relay anycast
    ],
)
def test_the_relay_refuses_what_coturn_refuses(lab_server: TurnServer, peer: str) -> None:
    client = allocated(lab_server)
    reply = client.permit((peer, 80))
    assert error_code(reply) == 403
    assert reply.check_integrity(client.key)


@pytest.mark.parametrize(
    "peer",
    [
        "198.51.100.10",  # the Edge's access interface (SIP 443/5061, XMPP 5269)
        "198.51.100.130",  # its internal interface
        "127.51.100.10",  # the access interface in the embedded lab
        "127.51.100.130",
    ],
)
def test_the_relay_refuses_the_edge_itself(lab_server: TurnServer, peer: str) -> None:
    assert error_code(allocated(lab_server).permit((peer, 5061))) == 403


def test_the_relay_reaches_its_own_relayed_addresses_but_not_its_listeners(
    lab_server: TurnServer,
) -> None:
    """Two clients of the same Edge relay to each other (Lync does, and av-call): the relay
    address is a permitted peer, its relayed ports too, its listeners never."""
    alice, bob = allocated(lab_server), allocated(lab_server, port=40001)
    bob_relayed = bob.core.relayed
    assert bob_relayed is not None and bob_relayed[0] == RELAY
    assert alice.permit((RELAY, 0)).message_class == MessageClass.SUCCESS
    assert alice.bind(0x4000, bob_relayed).message_class == MessageClass.SUCCESS
    for listener in (3478, 443):
        assert error_code(alice.bind(0x4001, (RELAY, listener))) == 403
    # a Send indication to a listener of the relay address is dropped, not relayed
    send = Message(
        Method.SEND,
        MessageClass.INDICATION,
        tid(),
        [("XOR-PEER-ADDRESS", (RELAY, 3478)), ("DATA", b"x")],
    )
    assert alice.send(stun.encode(send)) == []


def test_rfc6062_connect_uses_the_same_filter(lab_server: TurnServer) -> None:
    client = allocated(lab_server, listener=TCP)
    assert client.permit((RELAY, 0)).message_class == MessageClass.SUCCESS
    for port in (443, 3478):
        connect = request(Method.CONNECT, ("XOR-PEER-ADDRESS", (RELAY, port)))
        assert error_code(only_reply(client.ask(connect))) == 403


def test_the_lab_infrastructure_is_refused(topology: Topology, lab_server: TurnServer) -> None:
    """Docker's bridge gateway in each zone (compose), the firewalls' interfaces, and any other
    address of a zone subnet that no lab host has."""
    client = allocated(lab_server)
    gateways = [str(docker_gateway(topology, zone)) for zone in topology.zones]
    firewalls = [str(i.address) for fw in topology.firewalls for i in fw.interfaces]
    for peer in [*gateways, *firewalls, "203.0.113.99"]:
        assert error_code(client.permit((peer, 5004))) == 403, peer


@pytest.mark.parametrize(
    ("peer", "allowed"),
    [
        ("203.0.113.50", True),  # the messenger, a lab host of the internet zone
        ("127.0.113.50", True),  # the same in the embedded lab
        ("203.0.113.10", True),  # fabrikam's Edge
        ("192.0.2.10", False),  # the Front End (corporate zone)
        ("127.0.2.10", False),
        ("192.0.2.20", False),  # the internal user's workstation
    ],
)
def test_the_lab_peers_the_topology_names(lab_server: TurnServer, peer: str, allowed: bool) -> None:
    reply = allocated(lab_server).permit((peer, 5004))
    assert (reply.message_class == MessageClass.SUCCESS) is allowed, reply


def test_allowed_and_denied_peers_are_configured(topology: Topology, lab_pki: LabPki) -> None:
    server = TurnServer(
        lab_config(
            topology,
            lab_pki,
            users={"alice": "alice-pw"},
            allowed_peers=["10.20.0.0/16"],
            denied_peers=["203.0.113.50/32"],
        )
    )
    client = allocated(server)
    assert client.permit(("10.20.1.2", 9)).message_class == MessageClass.SUCCESS
    assert error_code(client.permit(("10.21.1.2", 9))) == 403
    assert error_code(client.permit(("203.0.113.50", 5004))) == 403
    assert client.permit(("203.0.113.10", 5061)).message_class == MessageClass.SUCCESS


# ------------------------------------------------------------------ bounds per allocation


def test_one_create_permission_cannot_make_thousands(topology: Topology, lab_pki: LabPki) -> None:
    server = TurnServer(
        lab_config(topology, lab_pki, users={"alice": "alice-pw"}, allowed_peers=["10.0.0.0/8"])
    )
    client = allocated(server)
    peers = [(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", 9) for n in range(5003)]
    reply = only_reply(
        client.ask(request(Method.CREATE_PERMISSION, *[("XOR-PEER-ADDRESS", p) for p in peers]))
    )
    assert error_code(reply) == 508
    alloc = server.allocation(client.relay)  # type: ignore[arg-type]
    assert alloc is not None and alloc.permissions == {}
    limit = server.config.max_permissions
    for n in range(limit):
        assert client.permit(peers[n]).message_class == MessageClass.SUCCESS
    assert error_code(client.permit(peers[limit])) == 508
    assert len(alloc.permissions) == limit
    assert client.permit(peers[0]).message_class == MessageClass.SUCCESS  # a refresh is fine


def test_channels_per_allocation_are_bounded() -> None:
    server = TurnServer(config())
    client = allocated(server)
    limit = server.config.max_channels
    for n in range(limit):
        assert (
            client.bind(0x4000 + n, ("127.0.113.50", 1000 + n)).message_class
            == MessageClass.SUCCESS
        )
    assert error_code(client.bind(0x4000 + limit, ("127.0.113.50", 1000 + limit))) == 508


def test_rfc6062_connections_per_allocation_are_bounded() -> None:
    server = TurnServer(config())
    client = allocated(server, listener=TCP)
    client.permit()
    limit = server.config.max_connections
    for port in range(limit):
        (action,) = client.ask(
            request(Method.CONNECT, ("XOR-PEER-ADDRESS", ("127.0.113.50", 2000 + port)))
        )
        assert isinstance(action, ConnectPeer)
    reply = only_reply(
        client.ask(request(Method.CONNECT, ("XOR-PEER-ADDRESS", ("127.0.113.50", 9))))
    )
    assert error_code(reply) == 508
    # a peer dialling in is refused too while the allocation holds its maximum
    assert server.peer_connection_arrived(client.relay, ("127.0.113.50", 7), T0) == (None, [])  # type: ignore[arg-type]


# ------------------------------------------------------------------ the user quota


def test_the_user_quota_counts_the_user_not_the_time_limited_username() -> None:
    server = TurnServer(config(users={}, user_quota=2))
    answers = []
    for n in range(3):
        username, password = time_limited_credentials(b"s3cret", "alice@contoso.lab", T0, 3600 + n)
        client = Client(server, username, password, address=("127.0.113.40", 41000 + n))
        answers.append(error_code(client.allocate()))
    assert answers == [None, None, 486]


# ------------------------------------------------------------------ USERNAME with exotic digits


@pytest.mark.parametrize(
    "expiry",
    [
        "\u00b2" * 10,  # superscript two: isdigit() but not a number int() takes
        "\u0661\u0669\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660",  # Arabic-Indic 1900000000
        "\uff11\uff19\uff10\uff10\uff10\uff10\uff10\uff10\uff10\uff10",  # fullwidth 1900000000
    ],
    ids=["superscript", "arabic-indic", "fullwidth"],
)
def test_a_username_with_non_ascii_digits_is_refused_not_an_exception(expiry: str) -> None:
    server = TurnServer(config(users={}))
    username = f"{expiry}:alice"
    # even with the password the shared secret gives that username
    client = Client(server, username, time_limited_password(b"s3cret", username))
    assert error_code(client.allocate()) == 401
    assert server.allocation_count == 0


# ------------------------------------------------------------------ UDP amplification


def bare_allocate() -> bytes:
    """The smallest request that gets a challenge: an Allocate with no attribute (20 bytes)."""
    return stun.encode(request(Method.ALLOCATE), fingerprint=False)


def test_the_unauthenticated_answer_is_small() -> None:
    server = TurnServer(config())
    data = bare_allocate()
    assert len(data) == 20
    (answer,) = server.receive(data, CLIENT, UDP, T0)
    assert isinstance(answer, SendTo)
    challenge = stun.parse(answer.data)
    assert [name for name, _ in challenge.attributes] == ["ERROR-CODE", "REALM", "NONCE"]
    # ERROR-CODE 401 Unauthorized, REALM contoso.lab, a 16-byte NONCE: 76 bytes, 3.8 times the
    # request (it was 96 bytes, 4.8 times, with a 25-byte nonce and FINGERPRINT)
    assert len(answer.data) == 76
    # FINGERPRINT only when the request carried one; Binding answers without SOFTWARE
    (with_fp,) = server.receive(stun.encode(request(Method.ALLOCATE)), CLIENT, UDP, T0)
    assert "FINGERPRINT" in stun.parse(with_fp.data)  # type: ignore[union-attr]
    binding = stun.encode(request(Method.BINDING), fingerprint=False)
    (mapped,) = server.receive(binding, CLIENT, UDP, T0)
    assert len(mapped.data) == 32  # type: ignore[union-attr]


def test_a_spoofed_flood_is_not_amplified() -> None:
    """1,000 bare Allocates in one second from one (spoofed) source: the server answers a few,
    so it sends a victim far fewer bytes than it receives; other sources are still served."""
    server = TurnServer(config())
    data = bare_allocate()
    victim = ("127.0.113.66", 5060)
    received = sent = 0
    for n in range(1000):
        received += len(data)
        for action in server.receive(data, (victim[0], victim[1] + n % 7), UDP, T0 + n / 1000):
            assert isinstance(action, SendTo)
            sent += len(action.data)
    ratio = sent / received
    budget = server.config.unauthenticated_burst + server.config.unauthenticated_rate
    assert sent <= budget * 76
    assert ratio < 0.15, f"amplification {ratio:.2f}"
    assert server.stats["dropped.unauthenticated answer budget"] >= 1000 - budget
    # a client elsewhere is answered during the flood, and over TCP the budget does not apply
    assert only_reply(server.receive(data, CLIENT, UDP, T0 + 0.5))
    assert only_reply(server.receive(data, victim, TCP, T0 + 0.5))
    # and the victim's budget comes back with time
    assert only_reply(server.receive(data, victim, UDP, T0 + 10))


def test_authenticated_requests_do_not_spend_the_budget() -> None:
    server = TurnServer(config(unauthenticated_burst=2, unauthenticated_rate=1))
    client = allocated(server)
    for n in range(20):  # signed Refreshes from the same source keep being answered
        reply = only_reply(client.ask(request(Method.REFRESH), T0 + n / 100))
        assert reply.message_class == MessageClass.SUCCESS
