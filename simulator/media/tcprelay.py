"""RFC 6062 TCP relays: Connect, ConnectionBind, ConnectionAttempt and the peer connections.

A TCP allocation's relay listens for peers (a peer that dials in, with a permission, is announced
to the client by a ConnectionAttempt indication) and dials out on Connect, from the relayed
address itself (:class:`~simulator.media.actions.ConnectPeer`: the seed row "A/V/RTP/TCP/
50,000-59,999 from the Edge"). Either way the client joins the peer connection to a new TCP
connection of its own with ConnectionBind within 30 s, after which raw bytes flow both ways
(:class:`~simulator.media.actions.JoinConnection`).
"""

from __future__ import annotations

from simulator.media.actions import (
    Action,
    Address,
    ClosePeer,
    ConnectPeer,
    JoinConnection,
    ListenerId,
    SendTo,
)
from simulator.media.allocations import owner
from simulator.media.channels import has_permission, peer_addresses
from simulator.media.context import Allocation, PeerConnection, Request, TurnState
from simulator.media.errors import Rejection
from simulator.media.events import PeerConnected
from simulator.media.states import ConnectionState, advance
from simulator.media.stun import Message, MessageClass, Method, response

CONNECT_TIMEOUT = 30
"""Seconds the relay gives a Connect before it answers 447 (the adapter's dial has its own)."""


def new_connection(
    state: TurnState, alloc: Allocation, peer: Address, conn_state: ConnectionState, deadline: float
) -> PeerConnection:
    state.next_connection = (state.next_connection + 1) & 0xFFFFFFFF or 1
    conn = PeerConnection(state.next_connection, alloc, peer, conn_state, deadline)
    state.connections[conn.id] = conn
    alloc.connections[conn.id] = conn
    return conn


def connect(state: TurnState, req: Request) -> list[Action]:
    """RFC 6062 section 5.2: dial ``XOR-PEER-ADDRESS`` from the relayed address."""
    alloc = owner(state, req)
    if alloc.transport != "tcp":
        raise Rejection(400, "Connect on a UDP allocation")
    peer = peer_addresses(state, req, ports=True)[0]
    if any(c.peer == peer for c in alloc.connections.values()):
        raise Rejection(446, "connection to that peer exists")
    if not has_permission(alloc, peer[0], req.now):
        raise Rejection(403, "no permission for the peer")
    if len(alloc.connections) >= state.config.max_connections:
        raise Rejection(508, f"more than {state.config.max_connections} peer connections")
    conn = new_connection(state, alloc, peer, ConnectionState.CONNECTING, req.now + CONNECT_TIMEOUT)
    conn.request = req.message
    return [ConnectPeer(conn.id, alloc.id, alloc.relayed, peer)]


def connection_bind(state: TurnState, req: Request) -> list[Action]:
    """RFC 6062 section 5.4: join a ready peer connection to this (new) client connection."""
    listener, source = req.listener, req.source
    if not listener.stream or (listener, source) in state.allocations:
        raise Rejection(400, "ConnectionBind must come on a new TCP connection")
    number = req.message.get("CONNECTION-ID")
    conn = state.connections.get(number) if number is not None else None
    if conn is None or conn.state is not ConnectionState.READY:
        raise Rejection(400, "unknown CONNECTION-ID")
    if conn.allocation.username != req.credential.username:
        raise Rejection(441, "not the allocation's user")
    conn.state = advance(conn.state, "connection bound")
    state.stats["connections.bound"] += 1
    conn.client = (listener, source)
    return [state.reply(req), JoinConnection(conn.id, listener, source)]


def peer_connected(state: TurnState, connection: int, now: float) -> list[Action]:
    """The Connect's outbound TCP connection is up: answer with CONNECTION-ID."""
    conn = state.connections.get(connection)
    if conn is None or conn.state is not ConnectionState.CONNECTING or conn.request is None:
        return [ClosePeer(connection)] if conn is None else []
    conn.state = advance(conn.state, "peer connected")
    state.stats["connections.outbound"] += 1
    conn.deadline = now + state.config.connection_bind_timeout
    state.arm(conn.deadline)
    alloc = conn.allocation
    state.events.append(PeerConnected(alloc.id, conn.id, conn.peer, True))
    reply = response(conn.request, [("CONNECTION-ID", conn.id)])
    conn.request = None
    return [SendTo(alloc.listener, alloc.client, state.encode(reply, alloc.key))]


def peer_connect_failed(state: TurnState, connection: int, now: float) -> list[Action]:
    """The Connect's TCP connection failed: 447 (RFC 6062 section 5.2)."""
    conn = state.connections.pop(connection, None)
    if conn is None or conn.request is None:
        return []
    alloc = conn.allocation
    alloc.connections.pop(conn.id, None)
    rejection = Rejection(447, "peer did not accept")
    return [state.reject(conn.request, alloc.listener, alloc.client, rejection, alloc.key)]


def peer_connection_arrived(
    state: TurnState, relay: int, peer: Address, now: float
) -> tuple[int | None, list[Action]]:
    """A peer dialled the TCP relay: a CONNECTION-ID and a ConnectionAttempt, or (None, [])."""
    alloc = state.by_id.get(relay)
    if alloc is None or not has_permission(alloc, peer[0], now):
        state.drop("peer connection without permission", peer)
        return None, []
    if len(alloc.connections) >= state.config.max_connections:
        state.drop("peer connection beyond the limit", peer)
        return None, []
    conn = new_connection(
        state, alloc, peer, ConnectionState.READY, now + state.config.connection_bind_timeout
    )
    state.arm(conn.deadline)
    state.events.append(PeerConnected(alloc.id, conn.id, peer, False))
    state.stats["connections.inbound"] += 1
    indication = Message(
        Method.CONNECTION_ATTEMPT,
        MessageClass.INDICATION,
        state.rng.randbytes(12),
        [("CONNECTION-ID", conn.id), ("XOR-PEER-ADDRESS", peer)],
    )
    return conn.id, [SendTo(alloc.listener, alloc.client, state.encode(indication))]


def client_connection_lost(state: TurnState, listener: ListenerId, client: Address) -> list[Action]:
    """A client data connection closed: the peer connection joined to it goes too."""
    actions: list[Action] = []
    for conn in list(state.connections.values()):
        if conn.state is ConnectionState.BOUND and conn.client == (listener, client):
            actions += state.close_connection(conn)
    return actions


def expire(state: TurnState, now: float, deadlines: list[float]) -> list[Action]:
    """Close peer connections not bound within the timeout; add the remaining deadlines."""
    actions: list[Action] = []
    for conn in list(state.connections.values()):
        if conn.state is ConnectionState.READY and conn.deadline <= now:
            state.drop("peer connection not bound in time", conn.peer)
            actions += state.close_connection(conn)
        elif conn.state is ConnectionState.READY:
            deadlines.append(conn.deadline)
    return actions
