"""Sans-IO STUN/TURN server core: RFC 8489 Binding, RFC 8656 TURN, RFC 6062 TCP allocations.

The core never touches a socket or a clock. The adapter feeds it what arrives, with the current
time (seconds since the epoch, so time-limited credentials can be checked), and carries out the
actions it returns::

    actions = server.receive(data, source, listener, now)
    # Action = SendTo | RelayTo | OpenRelay | CloseRelay | ConnectPeer | ClosePeer
    #        | JoinConnection | CloseClient

Implemented:

- Binding with XOR-MAPPED-ADDRESS and FINGERPRINT, without authentication, on every listener.
- Allocate (UDP relays, and TCP relays over TCP/TLS control connections: RFC 6062), Refresh,
  CreatePermission, ChannelBind, Send and Data indications, ChannelData in both directions,
  Connect, ConnectionBind and ConnectionAttempt (RFC 6062 sections 5.2-5.4).
- Long-term credentials (RFC 8489 section 9.2): 401 with a fresh NONCE and the REALM, 438 for a
  stale nonce, 441 when an allocation is used with other credentials. Users come from a static
  table and/or a shared secret: username ``"<expiry>:<user>"`` and password
  ``base64(HMAC-SHA1(secret, username))``, as coturn's ``use-auth-secret`` and the Front End's
  MRAS (see :mod:`simulator.media.mras`).
- Lifetimes driven by ``now``: allocations (default 600 s, max 3600 s), permissions (300 s),
  channels (600 s), nonces, RFC 6062 connections not bound within 30 s.
- Policy: per-user and total allocation quotas (486), forbidden peers (403, see
  :class:`PeerPolicy`), relay ports only from the configured range (508 when it is full),
  optional packet-rate and bandwidth caps per allocation (excess dropped and counted).
- Bad input: messages that do not parse are answered 400 when their header decoded and they are
  requests, otherwise dropped; unknown comprehension-required attributes get 420 with
  UNKNOWN-ATTRIBUTES; ChannelData for unbound channels and data to peers without permission are
  dropped (RFC 8656 sections 10.2, 11.5, 12.4). Everything dropped is counted in :attr:`stats`.

- EVEN-PORT (with the R bit: the next port is held 30 s under a RESERVATION-TOKEN).

Not implemented: IPv6 relays (443/440), the MS-TURN dialect,
MESSAGE-INTEGRITY-SHA256, the 5-minute channel re-use hold-down, ALTERNATE-SERVER.
Channel numbers 0x4000-0x7FFF are accepted (RFC 5766's range; RFC 8656 narrowed it to 0x4FFF,
but coturn's clients still pick from the wide range).
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import ipaddress
import random
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple

from simulator.media import stun
from simulator.media.errors import LocalProtocolError, RemoteProtocolError
from simulator.media.events import (
    AllocationCreated,
    AllocationDeleted,
    ChannelBound,
    MessageDropped,
    PeerConnected,
    PermissionCreated,
    RequestRejected,
    TurnEvent,
)
from simulator.media.stun import Message, MessageClass, Method

Address = tuple[str, int]

UDP = 17
TCP = 6
CHANNEL_MIN = 0x4000
CHANNEL_MAX = 0x7FFF


class ListenerId(NamedTuple):
    """A client-facing listener: the adapter names it, the core keys 5-tuples by it.

    A NamedTuple rather than a frozen dataclass: it is hashed for every relayed packet, and a
    tuple's hash is computed in C.
    """

    transport: str
    """``udp``, ``tcp`` or ``tls``."""
    address: str
    port: int

    @property
    def stream(self) -> bool:
        return self.transport != "udp"


# ------------------------------------------------------------------ actions


@dataclass(frozen=True)
class SendTo:
    """Send ``data`` to a client over ``listener`` (the UDP socket, or the TCP/TLS connection)."""

    listener: ListenerId
    client: Address
    data: bytes


@dataclass(frozen=True)
class RelayTo:
    """Send a UDP datagram from the relayed address of ``relay`` to ``peer``."""

    relay: int
    peer: Address
    data: bytes


@dataclass(frozen=True)
class OpenRelay:
    """Bind the relayed transport address; answer with ``relay_opened`` or ``relay_failed``.

    A ``tcp`` relay listens (peers may dial in, RFC 6062 section 5.3) with SO_REUSEPORT, so that
    its Connects can bind the same address and port before they connect.
    """

    relay: int
    transport: str
    address: str
    port: int


@dataclass(frozen=True)
class CloseRelay:
    """Close the relayed transport address of ``relay`` (and its peer connections)."""

    relay: int


@dataclass(frozen=True)
class ConnectPeer:
    """RFC 6062 Connect: open a TCP connection from the relayed address of ``relay`` to ``peer``.

    Bind to ``source`` (the relayed address, inside the relay port range) before connecting;
    answer with ``peer_connected`` or ``peer_connect_failed``.
    """

    connection: int
    relay: int
    source: Address
    peer: Address


@dataclass(frozen=True)
class ClosePeer:
    """Close the peer TCP connection ``connection`` (and the client connection joined to it)."""

    connection: int


@dataclass(frozen=True)
class JoinConnection:
    """After ConnectionBind: the client connection now carries raw bytes to and from the peer."""

    connection: int
    listener: ListenerId
    client: Address


@dataclass(frozen=True)
class CloseClient:
    """Close the client's TCP/TLS connection (control connection of an expired allocation)."""

    listener: ListenerId
    client: Address


Action = (
    SendTo
    | RelayTo
    | OpenRelay
    | CloseRelay
    | ConnectPeer
    | ClosePeer
    | JoinConnection
    | CloseClient
)


# ------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class PeerPolicy:
    """Which peer addresses the relay refuses (403), decided per IP address.

    The order: an address inside :attr:`allowed` is allowed; inside :attr:`denied` refused; an
    unspecified, multicast or broadcast address refused; an address of the lab mapped to a zone
    of :attr:`denied_zones` refused; any other loopback address refused when
    :attr:`deny_loopback` (in the local runner every lab interface is a 127.b.c.d address, so the
    lab's own addresses are looked up before this rule); anything else allowed.
    """

    lab_zones: tuple[tuple[ipaddress.IPv4Network, str], ...] = ()
    """(network, zone) pairs, most specific first: lab interfaces (/32) and zone subnets."""
    denied_zones: frozenset[str] = frozenset({"perimeter-internal", "corporate"})
    """Zones the relay must not reach (the Edge's internal side, the corporate network)."""
    allowed: tuple[ipaddress.IPv4Network, ...] = ()
    """Explicitly allowed networks (win over everything else)."""
    denied: tuple[ipaddress.IPv4Network, ...] = ()
    """Explicitly refused networks."""
    deny_loopback: bool = True
    """Refuse loopback addresses that are not lab interfaces."""

    def zone_of(self, ip: ipaddress.IPv4Address) -> str | None:
        for network, zone in self.lab_zones:
            if ip in network:
                return zone
        return None

    def refuse(self, host: str) -> str | None:
        """None if relaying to ``host`` is allowed, else the reason it is not."""
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return "not an IP address"
        if not isinstance(ip, ipaddress.IPv4Address):
            return "IPv6 peers are not relayed"
        if any(ip in net for net in self.allowed):
            return None
        if any(ip in net for net in self.denied):
            return "peer address is in a denied network"
        if ip.is_unspecified or ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
            return "peer address is not unicast"
        zone = self.zone_of(ip)
        if zone is not None:
            if zone in self.denied_zones:
                return f"peer is in the {zone} zone"
            return None
        if ip.is_loopback and self.deny_loopback:
            return "peer is a loopback address"
        return None


@dataclass(frozen=True)
class TurnConfig:
    """Settings of the TURN core (the ``[services.av-edge]`` table maps onto these)."""

    relay_address: str
    """The relayed transport addresses' IP (the A/V interface)."""
    realm: str = "contoso.lab"
    """REALM of the long-term credentials."""
    users: dict[str, str] = field(default_factory=dict)
    """Static long-term users: username -> password."""
    shared_secret: bytes | None = None
    """Secret for time-limited credentials (``expiry:user``, base64 HMAC-SHA1 password)."""
    port_low: int = 50000
    """First port of the relay range."""
    port_high: int = 59999
    """Last port of the relay range (inclusive)."""
    default_lifetime: int = 600
    """Allocation lifetime when the client asks for less or nothing (RFC 8656 section 3.2)."""
    max_lifetime: int = 3600
    """The most an allocation is granted."""
    permission_lifetime: int = 300
    """RFC 8656 section 9: permissions last 300 s."""
    channel_lifetime: int = 600
    """RFC 8656 section 12: channel bindings last 600 s."""
    nonce_lifetime: int = 600
    """A NONCE older than this is stale (438)."""
    connection_bind_timeout: int = 30
    """RFC 6062 section 5.3: a peer connection must be bound within 30 s."""
    user_quota: int = 10
    """Allocations one user may hold at once (486 beyond)."""
    total_quota: int = 1000
    """Allocations the server holds at once (486 beyond)."""
    max_packet_rate: int | None = None
    """Packets per second each allocation may relay (both directions together); None: no cap."""
    max_bandwidth: int | None = None
    """Bytes of payload per second each allocation may relay (both directions); None: no cap."""
    policy: PeerPolicy = field(default_factory=PeerPolicy)
    """Which peers are forbidden."""
    nonce_key: bytes = b"edgesim-nonce-key"
    """Key that signs nonces (the adapter passes random bytes)."""
    seed: int = 0
    """Seed of the relay port choice."""
    software: str = "edgesim A/V Edge"
    """SOFTWARE attribute of responses."""


# ------------------------------------------------------------------ state


class AllocationState(Enum):
    PENDING = "pending"
    """Allocate accepted, the relayed address not bound yet."""
    ACTIVE = "active"
    """Answered; relaying."""


class ConnectionState(Enum):
    """An RFC 6062 peer connection."""

    CONNECTING = "connecting"
    """Connect received, the relay is dialling the peer."""
    READY = "ready"
    """Connected (or the peer dialled in); waiting for the client's ConnectionBind (30 s)."""
    BOUND = "bound"
    """Joined to a client data connection: raw bytes both ways."""


#: Every transition of the core's state machines; a pair missing here is a LocalProtocolError.
TRANSITIONS: dict[tuple[Enum, str], Enum] = {
    (AllocationState.PENDING, "relay opened"): AllocationState.ACTIVE,
    (ConnectionState.CONNECTING, "peer connected"): ConnectionState.READY,
    (ConnectionState.READY, "connection bound"): ConnectionState.BOUND,
}


def advance(state: Enum, event: str) -> Enum:
    """The state after ``event``; LocalProtocolError if the table has no such transition."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise LocalProtocolError(f"no transition from {state} on {event!r}") from None


@dataclass
class _Channel:
    peer: Address
    expires: float


@dataclass
class _PeerConnection:
    id: int
    allocation: _Allocation
    peer: Address
    state: Enum
    deadline: float
    request: Message | None = None
    """The Connect request to answer."""
    client: tuple[ListenerId, Address] | None = None
    """The client data connection joined to this one (after ConnectionBind)."""


@dataclass
class _Allocation:
    id: int
    listener: ListenerId
    client: Address
    username: str
    key: bytes
    transport: str
    relayed: Address
    lifetime: int
    expires: float
    request: Message
    state: Enum = AllocationState.PENDING
    response: bytes = b""
    """The success response, resent on a retransmitted Allocate (UDP)."""
    permissions: dict[str, float] = field(default_factory=dict)
    channels: dict[int, _Channel] = field(default_factory=dict)
    peer_channels: dict[Address, int] = field(default_factory=dict)
    connections: dict[int, _PeerConnection] = field(default_factory=dict)
    tries: int = 0
    even_port: bool = False
    reserve: bool = False
    """EVEN-PORT with the R bit: hold port + 1 under a RESERVATION-TOKEN (RFC 8656 section 14.6)."""
    from_token: bool = False
    failed_ports: set[int] = field(default_factory=set)
    """Ports the adapter could not bind for this allocation (not tried again)."""
    tokens: float = 0.0
    byte_tokens: float = 0.0
    token_time: float = 0.0


class TurnServer:
    """The TURN server state machine; see the module docstring."""

    def __init__(self, config: TurnConfig) -> None:
        if not 0 < config.port_low <= config.port_high < 65536:
            raise ValueError(f"bad relay port range {config.port_low}-{config.port_high}")
        self.config = config
        self.stats: collections.Counter[str] = collections.Counter()
        """Counters: ``dropped.<reason>``, ``rejected.<code>``, ``relayed.to_peer`` ..."""
        self._events: collections.deque[TurnEvent] = collections.deque(maxlen=1000)
        self._rng = random.Random(config.seed)
        self._allocations: dict[tuple[ListenerId, Address], _Allocation] = {}
        self._by_id: dict[int, _Allocation] = {}
        self._ports: set[int] = set()
        self._reservations: dict[bytes, tuple[int, float]] = {}
        self._per_user: collections.Counter[str] = collections.Counter()
        self._connections: dict[int, _PeerConnection] = {}
        self._next_id = 1
        self._next_connection = self._rng.randrange(1, 1 << 30)
        self._timer: float | None = None
        self._relay_ip = ipaddress.IPv4Address(config.relay_address)
        self._capped = config.max_packet_rate is not None or config.max_bandwidth is not None

    # -------------------------------------------------------------- public API
    def next_event(self) -> TurnEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` should next be called (None: nothing pending)."""
        return self._timer

    @property
    def allocation_count(self) -> int:
        return len(self._by_id)

    def allocation(self, relay: int) -> _Allocation | None:
        return self._by_id.get(relay)

    def holds(self, listener: ListenerId, client: Address) -> bool:
        """True if the 5-tuple has an allocation (its control connection must stay open)."""
        return (listener, client) in self._allocations

    def receive(
        self, data: bytes, source: Address, listener: ListenerId, now: float
    ) -> list[Action]:
        """A whole STUN message or ChannelData message from a client."""
        if data and 0x40 <= data[0] <= 0x7F:
            return self._channel_data(data, source, listener, now)
        try:
            message = stun.parse(data)
        except RemoteProtocolError as exc:
            return self._unparseable(exc, source, listener)
        return self._dispatch(message, source, listener, now)

    def relay_received(self, relay: int, data: bytes, peer: Address, now: float) -> list[Action]:
        """A UDP datagram arrived at the relayed address of ``relay`` from ``peer``."""
        alloc = self._by_id.get(relay)
        if alloc is None or alloc.state is not AllocationState.ACTIVE:
            self._drop("no allocation", peer)
            return []
        expiry = alloc.permissions.get(peer[0])
        if expiry is None or expiry <= now:
            self._drop("peer without permission", peer)
            return []
        if self._capped and self._over_cap(alloc, len(data), now):
            self._drop("rate cap", peer)
            return []
        self.stats["relayed.from_peer"] += 1
        number = alloc.peer_channels.get(peer)
        if number is not None:
            channel = alloc.channels.get(number)
            if channel is not None and channel.expires > now:
                frame = struct.pack("!HH", number, len(data)) + data
                if alloc.listener.stream and len(data) % 4:
                    frame += bytes(4 - len(data) % 4)
                return [SendTo(alloc.listener, alloc.client, frame)]
        indication = Message(
            Method.DATA,
            MessageClass.INDICATION,
            self._rng.randbytes(12),
            [("XOR-PEER-ADDRESS", peer), ("DATA", data)],
        )
        return [SendTo(alloc.listener, alloc.client, stun.encode(indication, fingerprint=False))]

    def relay_opened(self, relay: int, now: float) -> list[Action]:
        """The adapter bound the relayed address of ``relay``: answer the Allocate."""
        alloc = self._by_id.get(relay)
        if alloc is None or alloc.state is not AllocationState.PENDING:
            return []
        alloc.state = advance(alloc.state, "relay opened")
        self._arm(alloc.expires)
        attrs = [
            ("XOR-RELAYED-ADDRESS", alloc.relayed),
            ("LIFETIME", alloc.lifetime),
            ("XOR-MAPPED-ADDRESS", alloc.client),
            ("SOFTWARE", self.config.software),
        ]
        if alloc.reserve:
            token = self._rng.randbytes(8)
            self._reservations[token] = (alloc.relayed[1] + 1, now + 30)
            self._arm(now + 30)
            attrs.append(("RESERVATION-TOKEN", token))
        alloc.response = self._signed(stun.response(alloc.request, attrs), alloc.key)
        self.stats["allocations.created"] += 1
        self._events.append(
            AllocationCreated(
                alloc.id,
                alloc.username,
                alloc.client,
                alloc.relayed,
                alloc.transport,
                alloc.lifetime,
            )
        )
        return [SendTo(alloc.listener, alloc.client, alloc.response)]

    def relay_failed(self, relay: int, now: float) -> list[Action]:
        """Binding the relayed address failed (port in use elsewhere): try another port."""
        alloc = self._by_id.get(relay)
        if alloc is None or alloc.state is not AllocationState.PENDING:
            return []
        self._ports.discard(alloc.relayed[1])
        alloc.failed_ports.add(alloc.relayed[1])
        if alloc.reserve:
            self._ports.discard(alloc.relayed[1] + 1)
        alloc.tries += 1
        port = None
        if alloc.tries < 10 and not alloc.from_token:
            port = self._pick_port(alloc.even_port, pair=alloc.reserve, avoid=alloc.failed_ports)
        if port is None:
            self._forget(alloc)
            return [
                self._error(
                    alloc.request,
                    alloc.listener,
                    alloc.client,
                    508,
                    "Insufficient Capacity",
                    "no free relay port",
                    key=alloc.key,
                )
            ]
        alloc.relayed = (alloc.relayed[0], port)
        return [OpenRelay(alloc.id, alloc.transport, alloc.relayed[0], port)]

    def connection_lost(self, listener: ListenerId, client: Address, now: float) -> list[Action]:
        """A client TCP/TLS connection closed: its allocation goes (RFC 8656 section 3.1)."""
        actions: list[Action] = []
        alloc = self._allocations.get((listener, client))
        if alloc is not None:
            actions += self._delete(alloc, "connection closed", close_client=False)
        for conn in list(self._connections.values()):
            if conn.state is ConnectionState.BOUND and conn.client == (listener, client):
                actions += self._close_connection(conn)
        return actions

    def peer_connected(self, connection: int, now: float) -> list[Action]:
        """The Connect's outbound TCP connection is up: answer with CONNECTION-ID."""
        conn = self._connections.get(connection)
        if conn is None or conn.state is not ConnectionState.CONNECTING or conn.request is None:
            return [ClosePeer(connection)] if conn is None else []
        conn.state = advance(conn.state, "peer connected")
        self.stats["connections.outbound"] += 1
        conn.deadline = now + self.config.connection_bind_timeout
        self._arm(conn.deadline)
        alloc = conn.allocation
        self._events.append(PeerConnected(alloc.id, conn.id, conn.peer, True))
        reply = stun.response(conn.request, [("CONNECTION-ID", conn.id)])
        conn.request = None
        return [SendTo(alloc.listener, alloc.client, self._signed(reply, alloc.key))]

    def peer_connect_failed(self, connection: int, now: float) -> list[Action]:
        """The Connect's TCP connection failed: 447 (RFC 6062 section 5.2)."""
        conn = self._connections.pop(connection, None)
        if conn is None or conn.request is None:
            return []
        alloc = conn.allocation
        alloc.connections.pop(conn.id, None)
        return [
            self._error(
                conn.request,
                alloc.listener,
                alloc.client,
                447,
                "Connection Timeout or Failure",
                "peer did not accept",
                key=alloc.key,
            )
        ]

    def peer_connection_arrived(
        self, relay: int, peer: Address, now: float
    ) -> tuple[int | None, list[Action]]:
        """A peer dialled the TCP relay: a CONNECTION-ID and a ConnectionAttempt, or (None, [])."""
        alloc = self._by_id.get(relay)
        expiry = alloc.permissions.get(peer[0]) if alloc is not None else None
        if alloc is None or expiry is None or expiry <= now:
            self._drop("peer connection without permission", peer)
            return None, []
        conn = self._new_connection(
            alloc, peer, ConnectionState.READY, now + self.config.connection_bind_timeout
        )
        self._arm(conn.deadline)
        self._events.append(PeerConnected(alloc.id, conn.id, peer, False))
        self.stats["connections.inbound"] += 1
        indication = Message(
            Method.CONNECTION_ATTEMPT,
            MessageClass.INDICATION,
            self._rng.randbytes(12),
            [("CONNECTION-ID", conn.id), ("XOR-PEER-ADDRESS", peer)],
        )
        return conn.id, [SendTo(alloc.listener, alloc.client, stun.encode(indication))]

    def peer_connection_lost(self, connection: int, now: float) -> list[Action]:
        conn = self._connections.get(connection)
        return self._close_connection(conn) if conn is not None else []

    def handle_timer(self, now: float) -> list[Action]:
        """Expire allocations, permissions, channels and unbound peer connections."""
        actions: list[Action] = []
        deadlines: list[float] = []
        for alloc in list(self._by_id.values()):
            if alloc.state is AllocationState.ACTIVE and alloc.expires <= now:
                actions += self._delete(alloc, "expired", close_client=alloc.listener.stream)
                continue
            for ip, expires in list(alloc.permissions.items()):
                if expires <= now:
                    del alloc.permissions[ip]
                else:
                    deadlines.append(expires)
            for number, channel in list(alloc.channels.items()):
                if channel.expires <= now:
                    del alloc.channels[number]
                    alloc.peer_channels.pop(channel.peer, None)
                else:
                    deadlines.append(channel.expires)
            if alloc.state is AllocationState.ACTIVE:
                deadlines.append(alloc.expires)
        for conn in list(self._connections.values()):
            if conn.state is ConnectionState.READY and conn.deadline <= now:
                self._drop("peer connection not bound in time", conn.peer)
                actions += self._close_connection(conn)
            elif conn.state is ConnectionState.READY:
                deadlines.append(conn.deadline)
        for token, (port, expires) in list(self._reservations.items()):
            if expires <= now:
                del self._reservations[token]
                self._ports.discard(port)
            else:
                deadlines.append(expires)
        self._timer = min(deadlines) if deadlines else None
        return actions

    # -------------------------------------------------------------- dispatch
    def _dispatch(
        self, msg: Message, source: Address, listener: ListenerId, now: float
    ) -> list[Action]:
        cls = msg.message_class
        if cls == MessageClass.INDICATION:
            if msg.unknown_required:
                self._drop("indication with unknown comprehension-required attribute", source)
                return []
            if msg.method == Method.SEND:
                return self._send_indication(msg, source, listener, now)
            self._drop("unexpected indication", source)
            return []
        if cls != MessageClass.REQUEST:
            self._drop("response sent to the server", source)
            return []
        self.stats[f"requests.{msg.method}"] += 1
        if msg.method == Method.BINDING:
            if msg.unknown_required:
                return [self._unknown_attributes(msg, listener, source, None)]
            return [SendTo(listener, source, binding_response(msg, source, self.config.software))]
        handler = _HANDLERS.get(msg.method)
        if handler is None:
            return [self._error(msg, listener, source, 400, "Bad Request", "unknown method")]
        auth = self._authenticate(msg, source, listener, now)
        if isinstance(auth, SendTo):
            return [auth]
        username, key = auth
        if msg.unknown_required:
            return [self._unknown_attributes(msg, listener, source, key)]
        result: list[Action] = handler(self, msg, source, listener, now, username, key)
        return result

    def _unparseable(
        self, exc: RemoteProtocolError, source: Address, listener: ListenerId
    ) -> list[Action]:
        if (
            exc.transaction_id is not None
            and exc.message_class == MessageClass.REQUEST
            and exc.method is not None
            and exc.code
        ):
            self.stats[f"rejected.{exc.code}"] += 1
            self._events.append(RequestRejected(exc.method, exc.code, str(exc), source))
            header = stun.Header(exc.method, MessageClass.REQUEST, 0, 0, exc.transaction_id)
            reply = stun.response(header, error=(exc.code, exc.reason))
            return [SendTo(listener, source, stun.encode(reply))]
        self._drop(f"unparseable: {exc}", source)
        return []

    def _drop(self, reason: str, source: Address) -> None:
        key = reason.split(":")[0]
        self.stats[f"dropped.{key}"] += 1
        self.stats["dropped"] += 1
        self._events.append(MessageDropped(reason, source))

    # -------------------------------------------------------------- helpers
    def _arm(self, deadline: float) -> None:
        if self._timer is None or deadline < self._timer:
            self._timer = deadline

    def _signed(self, msg: Message, key: bytes | None) -> bytes:
        return stun.encode(msg, integrity_key=key)

    def _error(
        self,
        request: Message | stun.Header,
        listener: ListenerId,
        client: Address,
        code: int,
        reason: str,
        why: str,
        *,
        key: bytes | None = None,
        attributes: Iterable[tuple[str, Any]] = (),
    ) -> SendTo:
        self.stats[f"rejected.{code}"] += 1
        self._events.append(RequestRejected(request.method, code, why, client))
        reply = stun.response(request, attributes, error=(code, reason))
        return SendTo(listener, client, self._signed(reply, key))

    def _unknown_attributes(
        self, msg: Message, listener: ListenerId, client: Address, key: bytes | None
    ) -> SendTo:
        return self._error(
            msg,
            listener,
            client,
            420,
            "Unknown Attribute",
            "unknown comprehension-required attribute",
            key=key,
            attributes=[("UNKNOWN-ATTRIBUTES", msg.unknown_required)],
        )

    def _nonce(self, now: float) -> bytes:
        stamp = f"{int(now):x}"
        mac = hmac.new(self.config.nonce_key, stamp.encode(), "sha1").hexdigest()[:16]
        return f"{stamp}-{mac}".encode()

    def _nonce_state(self, nonce: bytes, now: float) -> str:
        """``fresh``, ``stale`` or ``invalid``."""
        try:
            stamp, _, mac = nonce.decode("ascii").partition("-")
            issued = int(stamp, 16)
        except (UnicodeDecodeError, ValueError):
            return "invalid"
        good = hmac.new(self.config.nonce_key, stamp.encode(), "sha1").hexdigest()[:16]
        if not hmac.compare_digest(good, mac):
            return "invalid"
        if now - issued > self.config.nonce_lifetime or issued > now + 60:
            return "stale"
        return "fresh"

    def password_for(self, username: str, now: float) -> str | None:
        """The password of ``username``: a static user, or a time-limited one not yet expired."""
        password = self.config.users.get(username)
        if password is not None:
            return password
        secret = self.config.shared_secret
        if secret is None:
            return None
        stamp, sep, _user = username.partition(":")
        if not sep or not stamp.isdigit() or int(stamp) < now:
            return None
        return time_limited_password(secret, username)

    def _authenticate(
        self, msg: Message, source: Address, listener: ListenerId, now: float
    ) -> tuple[str, bytes] | SendTo:
        realm = self.config.realm
        challenge = [("REALM", realm), ("NONCE", self._nonce(now))]
        if "MESSAGE-INTEGRITY" not in msg:
            return self._error(
                msg, listener, source, 401, "Unauthorized", "no credentials", attributes=challenge
            )
        username = msg.get("USERNAME")
        nonce = msg.get("NONCE")
        if username is None or nonce is None or msg.get("REALM") is None:
            return self._error(
                msg, listener, source, 400, "Bad Request", "USERNAME, REALM or NONCE missing"
            )
        state = self._nonce_state(nonce, now)
        if state == "stale":
            return self._error(
                msg, listener, source, 438, "Stale Nonce", "stale nonce", attributes=challenge
            )
        if state == "invalid" or msg.get("REALM") != realm:
            return self._error(
                msg,
                listener,
                source,
                401,
                "Unauthorized",
                "invalid nonce or realm",
                attributes=challenge,
            )
        password = self.password_for(username, now)
        key = stun.long_term_key(username, realm, password) if password is not None else b""
        if password is None or not msg.check_integrity(key):
            return self._error(
                msg,
                listener,
                source,
                401,
                "Unauthorized",
                "wrong credentials",
                attributes=challenge,
            )
        return username, key

    def _pick_port(
        self, even: bool, *, pair: bool = False, avoid: set[int] | None = None
    ) -> int | None:
        """A free port of the range (even if asked; with ``pair`` also port + 1, reserved)."""
        low, high = self.config.port_low, self.config.port_high
        used = self._ports

        def free(port: int) -> bool:
            if even and port % 2:
                return False
            if pair and (port + 1 > high or port + 1 in used):
                return False
            if avoid and port in avoid:
                return False
            return low <= port <= high and port not in used

        chosen = None
        for _ in range(64):
            port = self._rng.randint(low, high)
            if free(port & ~1 if even else port):
                chosen = port & ~1 if even else port
                break
        if chosen is None:
            chosen = next((p for p in range(low, high + 1) if free(p)), None)
        if chosen is not None:
            used.add(chosen)
            if pair:
                used.add(chosen + 1)
        return chosen

    def _forget(self, alloc: _Allocation) -> None:
        self._allocations.pop((alloc.listener, alloc.client), None)
        self._by_id.pop(alloc.id, None)
        self._ports.discard(alloc.relayed[1])
        self._per_user[alloc.username] -= 1
        if self._per_user[alloc.username] <= 0:
            del self._per_user[alloc.username]

    def _delete(self, alloc: _Allocation, reason: str, *, close_client: bool) -> list[Action]:
        actions: list[Action] = []
        for conn in list(alloc.connections.values()):
            actions += self._close_connection(conn)
        self._forget(alloc)
        self.stats["allocations.deleted"] += 1
        self._events.append(AllocationDeleted(alloc.id, reason))
        actions.append(CloseRelay(alloc.id))
        if close_client:
            actions.append(CloseClient(alloc.listener, alloc.client))
        return actions

    def _close_connection(self, conn: _PeerConnection) -> list[Action]:
        self._connections.pop(conn.id, None)
        conn.allocation.connections.pop(conn.id, None)
        return [ClosePeer(conn.id)]

    def _new_connection(
        self, alloc: _Allocation, peer: Address, state: ConnectionState, deadline: float
    ) -> _PeerConnection:
        self._next_connection = (self._next_connection + 1) & 0xFFFFFFFF or 1
        conn = _PeerConnection(self._next_connection, alloc, peer, state, deadline)
        self._connections[conn.id] = conn
        alloc.connections[conn.id] = conn
        return conn

    def _over_cap(self, alloc: _Allocation, size: int, now: float) -> bool:
        """Token buckets of the packet-rate and bandwidth caps: True if this packet exceeds one."""
        elapsed = max(0.0, now - alloc.token_time)
        alloc.token_time = now
        rate, bandwidth = self.config.max_packet_rate, self.config.max_bandwidth
        if rate is not None:
            alloc.tokens = min(float(rate), alloc.tokens + elapsed * rate)
        if bandwidth is not None:
            alloc.byte_tokens = min(float(bandwidth), alloc.byte_tokens + elapsed * bandwidth)
        if (rate is not None and alloc.tokens < 1.0) or (
            bandwidth is not None and alloc.byte_tokens < size
        ):
            return True
        alloc.tokens -= 1.0
        alloc.byte_tokens -= size
        return False

    def _active(self, source: Address, listener: ListenerId, now: float) -> _Allocation | None:
        alloc = self._allocations.get((listener, source))
        if alloc is None or alloc.state is not AllocationState.ACTIVE or alloc.expires <= now:
            return None
        return alloc

    def _peer_addresses(
        self, msg: Message, listener: ListenerId, source: Address, key: bytes
    ) -> list[Address] | SendTo:
        peers: list[Address] = msg.get_all("XOR-PEER-ADDRESS")
        if not peers:
            return self._error(
                msg, listener, source, 400, "Bad Request", "XOR-PEER-ADDRESS missing", key=key
            )
        for peer in peers:
            if ":" in peer[0]:
                return self._error(
                    msg,
                    listener,
                    source,
                    443,
                    "Peer Address Family Mismatch",
                    "IPv6 peer for an IPv4 relay",
                    key=key,
                )
            why = self.config.policy.refuse(peer[0])
            if why is not None:
                return self._error(msg, listener, source, 403, "Forbidden", why, key=key)
        return peers

    def _owner(
        self,
        msg: Message,
        source: Address,
        listener: ListenerId,
        now: float,
        username: str,
        key: bytes,
    ) -> _Allocation | SendTo:
        alloc = self._active(source, listener, now)
        if alloc is None:
            return self._error(
                msg, listener, source, 437, "Allocation Mismatch", "no allocation", key=key
            )
        if alloc.username != username:
            return self._error(
                msg,
                listener,
                source,
                441,
                "Wrong Credentials",
                "not the allocation's user",
                key=key,
            )
        return alloc

    # -------------------------------------------------------------- methods
    def _allocate(
        self,
        msg: Message,
        source: Address,
        listener: ListenerId,
        now: float,
        username: str,
        key: bytes,
    ) -> list[Action]:
        existing = self._allocations.get((listener, source))
        if existing is not None:
            if existing.request.transaction_id == msg.transaction_id:
                return [SendTo(listener, source, existing.response)] if existing.response else []
            return [
                self._error(
                    msg,
                    listener,
                    source,
                    437,
                    "Allocation Mismatch",
                    "allocation exists on this 5-tuple",
                    key=key,
                )
            ]
        requested = msg.get("REQUESTED-TRANSPORT")
        if requested is None:
            return [
                self._error(
                    msg,
                    listener,
                    source,
                    400,
                    "Bad Request",
                    "REQUESTED-TRANSPORT missing",
                    key=key,
                )
            ]
        if requested not in (UDP, TCP):
            return [
                self._error(
                    msg,
                    listener,
                    source,
                    442,
                    "Unsupported Transport Protocol",
                    "transport other than UDP or TCP",
                    key=key,
                )
            ]
        transport = "udp" if requested == UDP else "tcp"
        if transport == "tcp":
            if not listener.stream:
                return [
                    self._error(
                        msg,
                        listener,
                        source,
                        400,
                        "Bad Request",
                        "TCP allocation over UDP",
                        key=key,
                    )
                ]
            if "EVEN-PORT" in msg or "RESERVATION-TOKEN" in msg or "DONT-FRAGMENT" in msg:
                return [
                    self._error(
                        msg,
                        listener,
                        source,
                        400,
                        "Bad Request",
                        "EVEN-PORT/RESERVATION-TOKEN/DONT-FRAGMENT on TCP",
                        key=key,
                    )
                ]
        family = msg.get("REQUESTED-ADDRESS-FAMILY")
        if family is not None and family != 1:
            return [
                self._error(
                    msg,
                    listener,
                    source,
                    440,
                    "Address Family not Supported",
                    "only IPv4 relays",
                    key=key,
                )
            ]
        if self._per_user[username] >= self.config.user_quota:
            return [
                self._error(
                    msg, listener, source, 486, "Allocation Quota Reached", "user quota", key=key
                )
            ]
        if len(self._by_id) >= self.config.total_quota:
            return [
                self._error(
                    msg, listener, source, 486, "Allocation Quota Reached", "server quota", key=key
                )
            ]
        token = msg.get("RESERVATION-TOKEN")
        even = "EVEN-PORT" in msg
        reserve = msg.get("EVEN-PORT") is True
        if token is not None:
            if even:
                return [
                    self._error(
                        msg,
                        listener,
                        source,
                        400,
                        "Bad Request",
                        "EVEN-PORT with RESERVATION-TOKEN",
                        key=key,
                    )
                ]
            held = self._reservations.pop(token, None)
            if held is None or held[1] <= now:
                if held is not None:
                    self._ports.discard(held[0])
                return [
                    self._error(
                        msg,
                        listener,
                        source,
                        508,
                        "Insufficient Capacity",
                        "unknown or expired RESERVATION-TOKEN",
                        key=key,
                    )
                ]
            port: int | None = held[0]
        else:
            port = self._pick_port(even, pair=reserve)
        if port is None:
            return [
                self._error(
                    msg,
                    listener,
                    source,
                    508,
                    "Insufficient Capacity",
                    "relay port range exhausted",
                    key=key,
                )
            ]
        lifetime = self._lifetime(msg)
        alloc = _Allocation(
            id=self._next_id,
            listener=listener,
            client=source,
            username=username,
            key=key,
            transport=transport,
            relayed=(str(self._relay_ip), port),
            lifetime=lifetime,
            expires=now + lifetime,
            request=msg,
            even_port=even,
            reserve=reserve,
            from_token=token is not None,
            tokens=float(self.config.max_packet_rate or 0),
            byte_tokens=float(self.config.max_bandwidth or 0),
            token_time=now,
        )
        self._next_id += 1
        self._allocations[(listener, source)] = alloc
        self._by_id[alloc.id] = alloc
        self._per_user[username] += 1
        return [OpenRelay(alloc.id, transport, alloc.relayed[0], port)]

    def _lifetime(self, msg: Message) -> int:
        asked = msg.get("LIFETIME")
        if asked is None:
            return self.config.default_lifetime
        return int(min(max(asked, self.config.default_lifetime), self.config.max_lifetime))

    def _refresh(
        self,
        msg: Message,
        source: Address,
        listener: ListenerId,
        now: float,
        username: str,
        key: bytes,
    ) -> list[Action]:
        alloc = self._owner(msg, source, listener, now, username, key)
        if isinstance(alloc, SendTo):
            return [alloc]
        family = msg.get("REQUESTED-ADDRESS-FAMILY")
        if family is not None and family != 1:
            return [
                self._error(
                    msg,
                    listener,
                    source,
                    443,
                    "Peer Address Family Mismatch",
                    "refresh for another family",
                    key=key,
                )
            ]
        asked = msg.get("LIFETIME")
        if asked == 0:
            actions = self._delete(alloc, "refreshed to 0", close_client=False)
            reply = stun.response(msg, [("LIFETIME", 0)])
            return [SendTo(listener, source, self._signed(reply, key)), *actions]
        alloc.lifetime = self._lifetime(msg)
        alloc.expires = now + alloc.lifetime
        self._arm(alloc.expires)
        reply = stun.response(msg, [("LIFETIME", alloc.lifetime)])
        return [SendTo(listener, source, self._signed(reply, key))]

    def _permit(self, alloc: _Allocation, ip: str, now: float) -> None:
        if ip not in alloc.permissions:
            self._events.append(PermissionCreated(alloc.id, ip))
        alloc.permissions[ip] = now + self.config.permission_lifetime
        self._arm(alloc.permissions[ip])

    def _create_permission(
        self,
        msg: Message,
        source: Address,
        listener: ListenerId,
        now: float,
        username: str,
        key: bytes,
    ) -> list[Action]:
        alloc = self._owner(msg, source, listener, now, username, key)
        if isinstance(alloc, SendTo):
            return [alloc]
        peers = self._peer_addresses(msg, listener, source, key)
        if isinstance(peers, SendTo):
            return [peers]
        for peer in peers:
            self._permit(alloc, peer[0], now)
        return [SendTo(listener, source, self._signed(stun.response(msg), key))]

    def _channel_bind(
        self,
        msg: Message,
        source: Address,
        listener: ListenerId,
        now: float,
        username: str,
        key: bytes,
    ) -> list[Action]:
        alloc = self._owner(msg, source, listener, now, username, key)
        if isinstance(alloc, SendTo):
            return [alloc]
        if alloc.transport != "udp":
            return [
                self._error(
                    msg,
                    listener,
                    source,
                    400,
                    "Bad Request",
                    "ChannelBind on a TCP allocation",
                    key=key,
                )
            ]
        number = msg.get("CHANNEL-NUMBER")
        if number is None or not CHANNEL_MIN <= number <= CHANNEL_MAX:
            return [
                self._error(
                    msg,
                    listener,
                    source,
                    400,
                    "Bad Request",
                    "CHANNEL-NUMBER missing or out of range",
                    key=key,
                )
            ]
        peers = self._peer_addresses(msg, listener, source, key)
        if isinstance(peers, SendTo):
            return [peers]
        if len(peers) != 1:
            return [
                self._error(
                    msg,
                    listener,
                    source,
                    400,
                    "Bad Request",
                    "one XOR-PEER-ADDRESS expected",
                    key=key,
                )
            ]
        peer = peers[0]
        bound = alloc.channels.get(number)
        if bound is not None and bound.expires > now and bound.peer != peer:
            return [
                self._error(
                    msg,
                    listener,
                    source,
                    400,
                    "Bad Request",
                    "channel bound to another peer",
                    key=key,
                )
            ]
        other = alloc.peer_channels.get(peer)
        if other is not None and other != number and alloc.channels[other].expires > now:
            return [
                self._error(
                    msg,
                    listener,
                    source,
                    400,
                    "Bad Request",
                    "peer bound to another channel",
                    key=key,
                )
            ]
        if other is not None and other != number:
            alloc.channels.pop(other, None)
        if bound is not None and bound.peer != peer:
            alloc.peer_channels.pop(bound.peer, None)
        if bound is None or bound.peer != peer:
            self._events.append(ChannelBound(alloc.id, number, peer))
        alloc.channels[number] = _Channel(peer, now + self.config.channel_lifetime)
        alloc.peer_channels[peer] = number
        self._arm(now + self.config.channel_lifetime)
        self._permit(alloc, peer[0], now)
        return [SendTo(listener, source, self._signed(stun.response(msg), key))]

    def _connect(
        self,
        msg: Message,
        source: Address,
        listener: ListenerId,
        now: float,
        username: str,
        key: bytes,
    ) -> list[Action]:
        alloc = self._owner(msg, source, listener, now, username, key)
        if isinstance(alloc, SendTo):
            return [alloc]
        if alloc.transport != "tcp":
            return [
                self._error(
                    msg,
                    listener,
                    source,
                    400,
                    "Bad Request",
                    "Connect on a UDP allocation",
                    key=key,
                )
            ]
        peers = self._peer_addresses(msg, listener, source, key)
        if isinstance(peers, SendTo):
            return [peers]
        peer = peers[0]
        if any(c.peer == peer for c in alloc.connections.values()):
            return [
                self._error(
                    msg,
                    listener,
                    source,
                    446,
                    "Connection Already Exists",
                    "connection to that peer exists",
                    key=key,
                )
            ]
        expiry = alloc.permissions.get(peer[0])
        if expiry is None or expiry <= now:
            return [
                self._error(
                    msg, listener, source, 403, "Forbidden", "no permission for the peer", key=key
                )
            ]
        conn = self._new_connection(alloc, peer, ConnectionState.CONNECTING, now + 30)
        conn.request = msg
        return [ConnectPeer(conn.id, alloc.id, alloc.relayed, peer)]

    def _connection_bind(
        self,
        msg: Message,
        source: Address,
        listener: ListenerId,
        now: float,
        username: str,
        key: bytes,
    ) -> list[Action]:
        if not listener.stream or (listener, source) in self._allocations:
            return [
                self._error(
                    msg,
                    listener,
                    source,
                    400,
                    "Bad Request",
                    "ConnectionBind must come on a new TCP connection",
                    key=key,
                )
            ]
        number = msg.get("CONNECTION-ID")
        conn = self._connections.get(number) if number is not None else None
        if conn is None or conn.state is not ConnectionState.READY:
            return [
                self._error(
                    msg, listener, source, 400, "Bad Request", "unknown CONNECTION-ID", key=key
                )
            ]
        if conn.allocation.username != username:
            return [
                self._error(
                    msg,
                    listener,
                    source,
                    441,
                    "Wrong Credentials",
                    "not the allocation's user",
                    key=key,
                )
            ]
        conn.state = advance(conn.state, "connection bound")
        self.stats["connections.bound"] += 1
        conn.client = (listener, source)
        reply = self._signed(stun.response(msg), key)
        return [SendTo(listener, source, reply), JoinConnection(conn.id, listener, source)]

    def _send_indication(
        self, msg: Message, source: Address, listener: ListenerId, now: float
    ) -> list[Action]:
        alloc = self._active(source, listener, now)
        if alloc is None or alloc.transport != "udp":
            self._drop("Send indication without allocation", source)
            return []
        peer = msg.get("XOR-PEER-ADDRESS")
        data = msg.get("DATA")
        if peer is None or data is None:
            self._drop("Send indication without XOR-PEER-ADDRESS or DATA", source)
            return []
        expiry = alloc.permissions.get(peer[0])
        if expiry is None or expiry <= now:
            self._drop("data to peer without permission", source)
            return []
        if self._capped and self._over_cap(alloc, len(data), now):
            self._drop("rate cap", source)
            return []
        self.stats["relayed.to_peer"] += 1
        return [RelayTo(alloc.id, peer, data)]

    def _channel_data(
        self, data: bytes, source: Address, listener: ListenerId, now: float
    ) -> list[Action]:
        if len(data) < 4:
            self._drop("truncated ChannelData", source)
            return []
        number, length = struct.unpack_from("!HH", data)
        if len(data) < 4 + length or (not listener.stream and len(data) > 4 + length + 3):
            self._drop("ChannelData length mismatch", source)
            return []
        alloc = self._allocations.get((listener, source))
        channel = alloc.channels.get(number) if alloc is not None else None
        if alloc is None or channel is None or channel.expires <= now:
            self._drop("ChannelData for an unbound channel", source)
            return []
        expiry = alloc.permissions.get(channel.peer[0])
        if expiry is None or expiry <= now:
            self._drop("data to peer without permission", source)
            return []
        if self._capped and self._over_cap(alloc, length, now):
            self._drop("rate cap", source)
            return []
        self.stats["relayed.to_peer"] += 1
        return [RelayTo(alloc.id, channel.peer, data[4 : 4 + length])]


_HANDLERS: dict[int, Any] = {
    Method.ALLOCATE: TurnServer._allocate,
    Method.REFRESH: TurnServer._refresh,
    Method.CREATE_PERMISSION: TurnServer._create_permission,
    Method.CHANNEL_BIND: TurnServer._channel_bind,
    Method.CONNECT: TurnServer._connect,
    Method.CONNECTION_BIND: TurnServer._connection_bind,
}


def binding_response(request: Message, source: Address, software: str | None = None) -> bytes:
    """The Binding success response: XOR-MAPPED-ADDRESS (+ SOFTWARE) and FINGERPRINT."""
    attrs: list[tuple[str, Any]] = [("XOR-MAPPED-ADDRESS", source)]
    if software:
        attrs.append(("SOFTWARE", software))
    return stun.encode(stun.response(request, attrs))


def answer_binding(data: bytes, source: Address) -> bytes | None:
    """A STUN Binding responder for plain peers: the response, a 400/420, or None to drop."""
    try:
        msg = stun.parse(data)
    except RemoteProtocolError as exc:
        if exc.transaction_id is None or exc.message_class != MessageClass.REQUEST or not exc.code:
            return None
        header = stun.Header(exc.method or 0, MessageClass.REQUEST, 0, 0, exc.transaction_id)
        return stun.encode(stun.response(header, error=(exc.code, exc.reason)))
    if msg.message_class != MessageClass.REQUEST:
        return None
    if msg.method != Method.BINDING:
        return stun.encode(stun.response(msg, error=(400, "Bad Request")))
    if msg.unknown_required:
        return stun.encode(
            stun.response(
                msg,
                [("UNKNOWN-ATTRIBUTES", msg.unknown_required)],
                error=(420, "Unknown Attribute"),
            )
        )
    return binding_response(msg, source)


def time_limited_password(secret: bytes, username: str) -> str:
    """base64(HMAC-SHA1(secret, username)): coturn's ``use-auth-secret`` REST credentials."""
    return base64.b64encode(hmac.new(secret, username.encode(), hashlib.sha1).digest()).decode()


def time_limited_credentials(
    secret: bytes, user: str, now: float, duration: int
) -> tuple[str, str]:
    """(username, password) valid for ``duration`` seconds from ``now``."""
    username = f"{int(now) + duration}:{user}"
    return username, time_limited_password(secret, username)
