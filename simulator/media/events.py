"""Events of the TURN server core (frozen dataclasses, past tense, as wsproto/aioquic).

The core queues them as it works; :meth:`simulator.media.turn.TurnServer.next_event` hands them
out. The adapter logs them and a trace can record them. The queue is bounded (a flood of bad
datagrams must not grow memory): the counters in ``TurnServer.stats`` are the exact figures.
"""

from __future__ import annotations

from dataclasses import dataclass

Address = tuple[str, int]


@dataclass(frozen=True)
class TurnEvent:
    """Base class of the TURN core's events."""


@dataclass(frozen=True)
class AllocationCreated(TurnEvent):
    allocation: int
    """The allocation's id (also the relay id of its OpenRelay/CloseRelay actions)."""
    username: str
    """The authenticated user."""
    client: Address
    """The client's transport address as the server sees it."""
    relayed: Address
    """The relayed transport address (on the A/V interface, port in the relay range)."""
    transport: str
    """``udp`` or ``tcp`` (RFC 6062) relay."""
    lifetime: int
    """Seconds granted."""


@dataclass(frozen=True)
class AllocationDeleted(TurnEvent):
    allocation: int
    """The allocation's id."""
    reason: str
    """``expired``, ``refreshed to 0``, or ``connection closed``."""


@dataclass(frozen=True)
class PermissionCreated(TurnEvent):
    allocation: int
    """The allocation's id."""
    peer: str
    """The peer IP address the permission is for (ports do not matter, RFC 8656 section 9)."""


@dataclass(frozen=True)
class ChannelBound(TurnEvent):
    allocation: int
    """The allocation's id."""
    channel: int
    """Channel number, 0x4000-0x7FFF."""
    peer: Address
    """The peer transport address the channel stands for."""


@dataclass(frozen=True)
class PeerConnected(TurnEvent):
    allocation: int
    """The TCP allocation's id."""
    connection: int
    """CONNECTION-ID (RFC 6062 section 6.2.1)."""
    peer: Address
    """The peer's transport address."""
    outbound: bool
    """True for a Connect (the relay dialled out from its port), False for a peer dialling in."""


@dataclass(frozen=True)
class RequestRejected(TurnEvent):
    method: int
    """STUN method number of the request."""
    code: int
    """The error code answered (400, 401, 403, 420, 437, 438, 441, 442, 443, 446, 447, 486, 508)."""
    reason: str
    """Why, in words (not echoed from the peer)."""
    client: Address
    """Who sent it."""


@dataclass(frozen=True)
class MessageDropped(TurnEvent):
    reason: str
    """Why the message was dropped without an answer (the RFCs say so for this case)."""
    source: Address
    """Who sent it (client or peer)."""
