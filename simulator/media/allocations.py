"""Allocations: Allocate and Refresh (RFC 8656 sections 7 and 8), relay ports, quotas, expiry.

An Allocate that passes every check reserves a port of the relay range and asks the adapter to
bind it (:class:`~simulator.media.actions.OpenRelay`); the success response goes out when the
adapter reports the relay open (:func:`relay_opened`), or another port is tried when it could
not bind (:func:`relay_failed`, at most 10 tries, then 508). EVEN-PORT with the R bit holds the
next port for 30 s under a RESERVATION-TOKEN (RFC 8656 section 14.6).
"""

from __future__ import annotations

from typing import Any

from simulator.media.actions import (
    Action,
    Address,
    CloseClient,
    CloseRelay,
    ListenerId,
    OpenRelay,
)
from simulator.media.context import Allocation, Request, TurnState
from simulator.media.errors import Rejection
from simulator.media.events import AllocationCreated, AllocationDeleted
from simulator.media.states import AllocationState, advance
from simulator.media.stun import Message, response

UDP = 17
TCP = 6
RESERVATION_HOLD = 30
"""Seconds a RESERVATION-TOKEN holds its port."""
MAX_BIND_TRIES = 10


def active(
    state: TurnState, listener: ListenerId, client: Address, now: float
) -> Allocation | None:
    """The 5-tuple's allocation if it is answered and not expired."""
    alloc = state.allocations.get((listener, client))
    if alloc is None or alloc.state is not AllocationState.ACTIVE or alloc.expires <= now:
        return None
    return alloc


def owner(state: TurnState, req: Request) -> Allocation:
    """The allocation ``req`` is about; 437 without one, 441 when another user holds it."""
    alloc = active(state, req.listener, req.source, req.now)
    if alloc is None:
        raise Rejection(437, "no allocation")
    if alloc.username != req.credential.username:
        raise Rejection(441, "not the allocation's user")
    return alloc


def lifetime(state: TurnState, message: Message) -> int:
    """The lifetime to grant: what was asked, between the default and the maximum."""
    asked = message.get("LIFETIME")
    config = state.config
    if asked is None:
        return config.default_lifetime
    return int(min(max(asked, config.default_lifetime), config.max_lifetime))


def allocate(state: TurnState, req: Request) -> list[Action]:
    """RFC 8656 section 7.2 (and RFC 6062 section 5.1 for REQUESTED-TRANSPORT TCP)."""
    msg, listener, source, now = req.message, req.listener, req.source, req.now
    existing = state.allocations.get((listener, source))
    if existing is not None:
        if existing.request.transaction_id == msg.transaction_id:
            return [state.send(listener, source, existing.response)] if existing.response else []
        raise Rejection(437, "allocation exists on this 5-tuple")
    requested = msg.get("REQUESTED-TRANSPORT")
    if requested is None:
        raise Rejection(400, "REQUESTED-TRANSPORT missing")
    if requested not in (UDP, TCP):
        raise Rejection(442, "transport other than UDP or TCP")
    transport = "udp" if requested == UDP else "tcp"
    if transport == "tcp":
        if not listener.stream:
            raise Rejection(400, "TCP allocation over UDP")
        if "EVEN-PORT" in msg or "RESERVATION-TOKEN" in msg or "DONT-FRAGMENT" in msg:
            raise Rejection(400, "EVEN-PORT/RESERVATION-TOKEN/DONT-FRAGMENT on TCP")
    family = msg.get("REQUESTED-ADDRESS-FAMILY")
    if family is not None and family != 1:
        raise Rejection(440, "only IPv4 relays")
    user = req.credential.user
    if state.per_user[user] >= state.config.user_quota:
        raise Rejection(486, "user quota")
    if len(state.by_id) >= state.config.total_quota:
        raise Rejection(486, "server quota")
    token = msg.get("RESERVATION-TOKEN")
    even = "EVEN-PORT" in msg
    reserve = msg.get("EVEN-PORT") is True
    port: int | None
    if token is not None:
        if even:
            raise Rejection(400, "EVEN-PORT with RESERVATION-TOKEN")
        held = state.reservations.pop(token, None)
        if held is None or held[1] <= now:
            if held is not None:
                state.ports.discard(held[0])
            raise Rejection(508, "unknown or expired RESERVATION-TOKEN")
        port = held[0]
    else:
        port = pick_port(state, even, pair=reserve)
    if port is None:
        raise Rejection(508, "relay port range exhausted")
    granted = lifetime(state, msg)
    config = state.config
    alloc = Allocation(
        id=state.next_id,
        listener=listener,
        client=source,
        username=req.credential.username,
        user=user,
        key=req.key,
        transport=transport,
        relayed=(config.relay_address, port),
        lifetime=granted,
        expires=now + granted,
        request=msg,
        even_port=even,
        reserve=reserve,
        from_token=token is not None,
        tokens=float(config.max_packet_rate or 0),
        byte_tokens=float(config.max_bandwidth or 0),
        token_time=now,
    )
    state.next_id += 1
    state.allocations[(listener, source)] = alloc
    state.by_id[alloc.id] = alloc
    state.per_user[user] += 1
    return [OpenRelay(alloc.id, transport, alloc.relayed[0], port)]


def refresh(state: TurnState, req: Request) -> list[Action]:
    """RFC 8656 section 8.2: extend the lifetime, or delete the allocation with LIFETIME 0."""
    alloc = owner(state, req)
    family = req.message.get("REQUESTED-ADDRESS-FAMILY")
    if family is not None and family != 1:
        raise Rejection(443, "refresh for another family")
    if req.message.get("LIFETIME") == 0:
        actions = delete(state, alloc, "refreshed to 0", close_client=False)
        return [state.reply(req, [("LIFETIME", 0)]), *actions]
    alloc.lifetime = lifetime(state, req.message)
    alloc.expires = req.now + alloc.lifetime
    state.arm(alloc.expires)
    return [state.reply(req, [("LIFETIME", alloc.lifetime)])]


def relay_opened(state: TurnState, relay: int, now: float) -> list[Action]:
    """The adapter bound the relayed address of ``relay``: answer the Allocate."""
    alloc = state.by_id.get(relay)
    if alloc is None or alloc.state is not AllocationState.PENDING:
        return []
    alloc.state = advance(alloc.state, "relay opened")
    state.arm(alloc.expires)
    if alloc.dialect != "rfc":
        attrs = ms_allocate_attributes(alloc)
    else:
        attrs = [
            ("XOR-RELAYED-ADDRESS", alloc.relayed),
            ("LIFETIME", alloc.lifetime),
            ("XOR-MAPPED-ADDRESS", alloc.client),
            ("SOFTWARE", state.config.software),
        ]
    if alloc.reserve:
        token = state.rng.randbytes(8)
        state.reservations[token] = (alloc.relayed[1] + 1, now + RESERVATION_HOLD)
        state.arm(now + RESERVATION_HOLD)
        attrs.append(("RESERVATION-TOKEN", token))
    alloc.response = state.encode(response(alloc.request, attrs), alloc.key)
    state.stats["allocations.created"] += 1
    state.events.append(
        AllocationCreated(
            alloc.id, alloc.username, alloc.client, alloc.relayed, alloc.transport, alloc.lifetime
        )
    )
    return [state.send(alloc.listener, alloc.client, alloc.response)]


def ms_allocate_attributes(alloc: Allocation) -> list[tuple[str, Any]]:
    """The [MS-TURN] Allocate response (section 3.2.5.1 says what a client finds in it): the
    relayed address in MAPPED-ADDRESS (MS-Version 3 or less, section 2.2.2.1), the client's
    reflexive address in XOR-MAPPED-ADDRESS (2.2.2.16), LIFETIME, MS-VERSION (2.2.2.17) and
    MS-SEQUENCE-NUMBER with the allocation's connection id and sequence number 0 (2.2.2.21)."""
    asked = alloc.request.get("MS-VERSION") or 1
    return [
        ("MAPPED-ADDRESS", alloc.relayed),
        ("XOR-MAPPED-ADDRESS", alloc.client),
        ("LIFETIME", alloc.lifetime),
        ("MS-VERSION", min(int(asked), 2)),
        ("MS-SEQUENCE-NUMBER", (alloc.connection_id, 0)),
    ]


def relay_failed(state: TurnState, relay: int, now: float) -> list[Action]:
    """Binding the relayed address failed (port in use elsewhere): try another port."""
    alloc = state.by_id.get(relay)
    if alloc is None or alloc.state is not AllocationState.PENDING:
        return []
    state.ports.discard(alloc.relayed[1])
    alloc.failed_ports.add(alloc.relayed[1])
    if alloc.reserve:
        state.ports.discard(alloc.relayed[1] + 1)
    alloc.tries += 1
    port = None
    if alloc.tries < MAX_BIND_TRIES and not alloc.from_token:
        port = pick_port(state, alloc.even_port, pair=alloc.reserve, avoid=alloc.failed_ports)
    if port is None:
        forget(state, alloc)
        rejection = Rejection(508, "no free relay port")
        return [state.reject(alloc.request, alloc.listener, alloc.client, rejection, alloc.key)]
    alloc.relayed = (alloc.relayed[0], port)
    return [OpenRelay(alloc.id, alloc.transport, alloc.relayed[0], port)]


def pick_port(
    state: TurnState, even: bool, *, pair: bool = False, avoid: set[int] | None = None
) -> int | None:
    """A free port of the range (even if asked; with ``pair`` also port + 1, reserved)."""
    low, high = state.config.port_low, state.config.port_high
    used = state.ports

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
        port = state.rng.randint(low, high)
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


def forget(state: TurnState, alloc: Allocation) -> None:
    state.allocations.pop((alloc.listener, alloc.client), None)
    if alloc.dialect != "rfc" and not alloc.listener.stream:
        state.ms_clients.discard((alloc.listener, alloc.client))
    state.by_id.pop(alloc.id, None)
    state.ports.discard(alloc.relayed[1])
    state.per_user[alloc.user] -= 1
    if state.per_user[alloc.user] <= 0:
        del state.per_user[alloc.user]


def delete(state: TurnState, alloc: Allocation, reason: str, *, close_client: bool) -> list[Action]:
    """Delete ``alloc``: its peer connections, its relay, and with ``close_client`` its control
    connection."""
    actions: list[Action] = []
    for conn in list(alloc.connections.values()):
        actions += state.close_connection(conn)
    forget(state, alloc)
    state.stats["allocations.deleted"] += 1
    state.events.append(AllocationDeleted(alloc.id, reason))
    actions.append(CloseRelay(alloc.id))
    if close_client:
        actions.append(CloseClient(alloc.listener, alloc.client))
    return actions


def expire(state: TurnState, now: float, deadlines: list[float]) -> list[Action]:
    """Delete expired allocations and reservations; add the remaining deadlines."""
    actions: list[Action] = []
    for alloc in list(state.by_id.values()):
        if alloc.state is AllocationState.ACTIVE:
            if alloc.expires <= now:
                actions += delete(state, alloc, "expired", close_client=alloc.listener.stream)
            else:
                deadlines.append(alloc.expires)
    for token, (port, expires) in list(state.reservations.items()):
        if expires <= now:
            del state.reservations[token]
            state.ports.discard(port)
        else:
            deadlines.append(expires)
    return actions
