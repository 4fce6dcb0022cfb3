"""The TURN server core's state, shared by its request handlers, and the one place rejections
are answered.

:class:`TurnState` holds the allocation table, the RFC 6062 peer connections, the counters, the
event queue, the seeded random source and the timer; :mod:`simulator.media.allocations`,
:mod:`simulator.media.channels` and :mod:`simulator.media.tcprelay` work on it, and
:class:`simulator.media.turn.TurnServer` owns it. A handler that refuses a request raises
:class:`~simulator.media.errors.Rejection`; :meth:`TurnState.reject` turns it into the error
response (signed when the request authenticated), counts it and records the event.
"""

from __future__ import annotations

import collections
import random
import struct
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from simulator.media.actions import Action, Address, ClosePeer, ListenerId, SendTo
from simulator.media.auth import Credential
from simulator.media.config import TurnConfig
from simulator.media.dialect import Dialect
from simulator.media.errors import Rejection
from simulator.media.events import MessageDropped, RequestRejected, TurnEvent
from simulator.media.states import AllocationState
from simulator.media.stun import Header, Message, response


@dataclass(frozen=True)
class Request:
    """An authenticated request being handled."""

    message: Message
    source: Address
    """The client's transport address."""
    listener: ListenerId
    now: float
    credential: Credential

    @property
    def key(self) -> bytes:
        return self.credential.key


@dataclass
class Channel:
    peer: Address
    expires: float


@dataclass
class PeerConnection:
    """An RFC 6062 TCP connection between a relay and a peer."""

    id: int
    allocation: Allocation
    peer: Address
    state: Enum
    deadline: float
    request: Message | None = None
    """The Connect request to answer."""
    client: tuple[ListenerId, Address] | None = None
    """The client data connection joined to this one (after ConnectionBind)."""


@dataclass
class Allocation:
    id: int
    listener: ListenerId
    client: Address
    username: str
    user: str
    """Whose quota it counts against (:attr:`Credential.user`)."""
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
    channels: dict[int, Channel] = field(default_factory=dict)
    peer_channels: dict[Address, int] = field(default_factory=dict)
    connections: dict[int, PeerConnection] = field(default_factory=dict)
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
    dialect: str = "rfc"
    """``ms-turn`` for an [MS-TURN] allocation (:mod:`simulator.media.msserver`)."""
    destination: Address | None = None
    """[MS-TURN] Set Active Destination: the peer whose data goes unencapsulated both ways."""
    connection_id: bytes = b""
    """[MS-TURN] MS-SEQUENCE-NUMBER connection id (section 2.2.2.21)."""


class TurnState:
    """Everything the server core knows; see the module docstring."""

    def __init__(self, config: TurnConfig, dialect: Dialect) -> None:
        self.config = config
        self.dialect = dialect
        self.stats: collections.Counter[str] = collections.Counter()
        self.events: collections.deque[TurnEvent] = collections.deque(maxlen=1000)
        self.rng = random.Random(config.seed)
        self.allocations: dict[tuple[ListenerId, Address], Allocation] = {}
        """By 5-tuple (listener and client address)."""
        self.by_id: dict[int, Allocation] = {}
        self.ports: set[int] = set()
        """Relay ports in use or reserved."""
        self.reservations: dict[bytes, tuple[int, float]] = {}
        """RESERVATION-TOKEN -> (port, expiry)."""
        self.per_user: collections.Counter[str] = collections.Counter()
        self.connections: dict[int, PeerConnection] = {}
        self.next_id = 1
        self.next_connection = self.rng.randrange(1, 1 << 30)
        self.timer: float | None = None
        self.capped = config.max_packet_rate is not None or config.max_bandwidth is not None
        self.ms_clients: set[tuple[ListenerId, Address]] = set()
        """[MS-TURN] 5-tuples: UDP clients holding an MS-TURN allocation and TCP connections
        framed as [MS-TURN] section 2.1.4 says (everything they send takes the MS path)."""

    # -------------------------------------------------------------- small helpers
    def arm(self, deadline: float) -> None:
        if self.timer is None or deadline < self.timer:
            self.timer = deadline

    def drop(self, reason: str, source: Address) -> None:
        """Count and record a message dropped without an answer (``dropped.<reason>``)."""
        key = reason.split(":")[0]
        self.stats[f"dropped.{key}"] += 1
        self.stats["dropped"] += 1
        self.events.append(MessageDropped(reason, source))

    def encode(self, message: Message, key: bytes | None = None) -> bytes:
        return self.dialect.encode(message, integrity_key=key)

    def send(self, listener: ListenerId, client: Address, data: bytes) -> SendTo:
        """``data`` (a whole STUN/TURN message) to a client; on an [MS-TURN] stream in the
        section 2.1.4 framing of a control message."""
        if listener.stream and self.ms_clients and (listener, client) in self.ms_clients:
            data = struct.pack("!BBH", 0x02, 0, len(data)) + data
        return SendTo(listener, client, data)

    def reply(self, request: Request, attributes: list[tuple[str, Any]] | None = None) -> SendTo:
        """The signed success response to ``request``."""
        answer = response(request.message, attributes or [])
        return self.send(request.listener, request.source, self.encode(answer, request.key))

    def reject(
        self,
        request: Message | Header,
        listener: ListenerId,
        client: Address,
        rejection: Rejection,
        key: bytes | None = None,
    ) -> SendTo:
        """The error response for ``rejection``: the one place every refusal is answered.

        Signed with ``key`` when the request authenticated. An answer to a request that did
        not carries no more than it must (no SOFTWARE, FINGERPRINT only if the request had one:
        over UDP it may go to a spoofed source)."""
        self.stats[f"rejected.{rejection.code}"] += 1
        self.events.append(RequestRejected(request.method, rejection.code, str(rejection), client))
        answer = response(request, rejection.attributes, error=(rejection.code, rejection.reason))
        if key is not None:
            return self.send(listener, client, self.encode(answer, key))
        fingerprint = isinstance(request, Message) and "FINGERPRINT" in request
        return self.send(listener, client, self.dialect.encode(answer, fingerprint=fingerprint))

    def close_connection(self, conn: PeerConnection) -> list[Action]:
        self.connections.pop(conn.id, None)
        conn.allocation.connections.pop(conn.id, None)
        return [ClosePeer(conn.id)]
