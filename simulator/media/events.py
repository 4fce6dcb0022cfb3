"""Events of the TURN cores (frozen dataclasses, past tense, as wsproto/aioquic).

The server core queues :class:`TurnEvent` as it works; :meth:`simulator.media.turn.TurnServer.
next_event` hands them out. The adapter logs them and a trace can record them. The queue is
bounded (a flood of bad datagrams must not grow memory): the counters in ``TurnServer.stats``
are the exact figures. The client core (:mod:`simulator.media.client`) queues
:class:`ClientEvent`: answers, timeouts and data from peers.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.media.actions import Address
from simulator.media.stun import Message


@dataclass(frozen=True)
class TurnEvent:
    """Base class of the TURN core's events."""


@dataclass(frozen=True)
class AllocationEvent(TurnEvent):
    """An event of one allocation."""

    allocation: int
    """The allocation's id (also the relay id of its OpenRelay/CloseRelay actions)."""


@dataclass(frozen=True)
class AllocationCreated(AllocationEvent):
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
class AllocationDeleted(AllocationEvent):
    reason: str
    """``expired``, ``refreshed to 0``, or ``connection closed``."""


@dataclass(frozen=True)
class PermissionCreated(AllocationEvent):
    peer: str
    """The peer IP address the permission is for (ports do not matter, RFC 8656 section 9)."""


@dataclass(frozen=True)
class ChannelBound(AllocationEvent):
    channel: int
    """Channel number, 0x4000-0x7FFF."""
    peer: Address
    """The peer transport address the channel stands for."""


@dataclass(frozen=True)
class PeerConnected(AllocationEvent):
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


# ------------------------------------------------------------------ client events


@dataclass(frozen=True)
class ClientEvent:
    """Base class of the TURN client core's events (:mod:`simulator.media.client`)."""


@dataclass(frozen=True)
class TransactionAnswered(ClientEvent):
    request: int
    """The handle :meth:`TurnClient.request` returned (kept across a credentials retry)."""
    sent: Message
    """The request as it went out (this try)."""
    answer: Message
    """The response: success or error."""
    sent_at: float
    """``now`` when the request first went out."""
    final: bool
    """False when the core answers a 401/438 challenge by sending the request again; the
    request's outcome is the next :class:`TransactionAnswered` with ``final`` True."""
    signed: bool
    """The request carried our credentials (a final 401 then means they were refused)."""


@dataclass(frozen=True)
class TransactionTimedOut(ClientEvent):
    request: int
    """The handle of the request that got no answer."""
    sent: Message
    """The request as it last went out."""
    sent_at: float
    """``now`` when it first went out."""


@dataclass(frozen=True)
class PeerDataReceived(ClientEvent):
    peer: Address | None
    """Who sent it: the Data indication's XOR-PEER-ADDRESS, or the peer of the channel (None for
    ChannelData on a channel we never bound)."""
    channel: int | None
    """The channel number of ChannelData, None for a Data indication."""
    data: bytes
    """The payload, without ChannelData padding."""


@dataclass(frozen=True)
class ConnectionAttemptReceived(ClientEvent):
    connection: int
    """CONNECTION-ID of the peer connection to bind (RFC 6062 section 4.4)."""
    peer: Address
    """The peer that dialled the relay."""


@dataclass(frozen=True)
class RawDataReceived(ClientEvent):
    data: bytes
    """Bytes from the peer on an RFC 6062 data connection after ConnectionBind."""


@dataclass(frozen=True)
class UnexpectedDataReceived(ClientEvent):
    data: bytes
    """What came (at most 200 bytes): not STUN, or STUN that does not parse."""
    reason: str
    """Why it is not usable. On a stream the framing is lost: nothing more is read."""


@dataclass(frozen=True)
class ConnectionEnded(ClientEvent):
    """The server closed the stream (EOF)."""
