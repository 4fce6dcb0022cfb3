"""What the TURN core asks its adapter to do (frozen dataclasses), and the values they carry.

The server core (:class:`simulator.media.turn.TurnServer`) never touches a socket: it returns a
list of these actions, which :mod:`simulator.media.aio` carries out. ``SendTo`` and ``RelayTo``
are the hot path (one per relayed packet); the others open and close relays and connections.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

Address = tuple[str, int]
"""An IPv4 transport address: (dotted quad, port)."""


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
    """The listener the client came in on (its socket or, with ``client``, its connection)."""
    client: Address
    """The client's transport address."""
    data: bytes
    """A whole STUN message or ChannelData (padded on a stream)."""


@dataclass(frozen=True)
class RelayTo:
    """Send a UDP datagram from the relayed address of ``relay`` to ``peer``."""

    relay: int
    """The allocation (its id)."""
    peer: Address
    """Where to: a peer with a permission."""
    data: bytes
    """The payload (of a Send indication or a ChannelData)."""


@dataclass(frozen=True)
class OpenRelay:
    """Bind the relayed transport address; answer with ``relay_opened`` or ``relay_failed``.

    A ``tcp`` relay listens (peers may dial in, RFC 6062 section 5.3) with SO_REUSEPORT, so that
    its Connects can bind the same address and port before they connect.
    """

    relay: int
    """The allocation (its id)."""
    transport: str
    """``udp`` or ``tcp`` (RFC 6062)."""
    address: str
    """The relay address (the A/V interface)."""
    port: int
    """A port of the relay range."""


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
    """CONNECTION-ID of the new peer connection."""
    relay: int
    """The TCP allocation (its id)."""
    source: Address
    """The relayed transport address to dial from."""
    peer: Address
    """XOR-PEER-ADDRESS of the Connect."""


@dataclass(frozen=True)
class ClosePeer:
    """Close the peer TCP connection ``connection`` (and the client connection joined to it)."""

    connection: int


@dataclass(frozen=True)
class JoinConnection:
    """After ConnectionBind: the client connection now carries raw bytes to and from the peer."""

    connection: int
    """The peer connection (CONNECTION-ID)."""
    listener: ListenerId
    """With ``client``: the client's new TCP/TLS connection that sent the ConnectionBind."""
    client: Address


@dataclass(frozen=True)
class CloseClient:
    """Close the client's TCP/TLS connection (control connection of an expired allocation)."""

    listener: ListenerId
    """With ``client``: which connection."""
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
