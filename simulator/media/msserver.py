"""The A/V Edge's [MS-TURN] side: what the server does with a Lync client's messages.

:class:`simulator.media.turn.TurnServer` hands this module everything an [MS-TURN] client sends
(:func:`receive`): over UDP a message that carries the Magic Cookie attribute first, or any
datagram from a 5-tuple that holds an [MS-TURN] allocation; over TCP every frame of a connection
that opened with the pseudo-TLS ClientHello or an [MS-TURN] framing header (section 2.1.4).
Allocations, ports, quotas, lifetimes, permissions and the peer policy are the RFC core's
(:mod:`~simulator.media.allocations`, :mod:`~simulator.media.channels`); what differs:

- Pseudo-TLS (section 2.1.1): the ClientHello record is answered with the ServerHello and
  ServerHelloDone record, unframed; the connection then speaks framed [MS-TURN].
- Allocate (sections 3.2.4.1 and 3.3): a request without MESSAGE-INTEGRITY gets 401 with NONCE
  and REALM (:class:`~simulator.media.auth.MsTurnAuthenticator`); an authenticated one gets a UDP
  relay. A later Allocate on the same 5-tuple is the refresh (LIFETIME 0 deletes it), as
  [MS-TURN] has no Refresh method; a retransmission gets the same response again.
- Send request (0x0004): DATA goes from the relay to DESTINATION-ADDRESS, which installs the
  permission for that address (the overview in section 1.3: data from a peer is relayed only
  after the client sent to it). No response ever: the server MUST NOT send Send responses
  (section 2.2.1). Send and Set Active Destination authenticate with the allocation's key
  (libnice, like Lync clients, sends them with USERNAME and REALM but no NONCE).
- Set Active Destination (0x0006): from then on data between the client and that peer goes
  unencapsulated: raw datagrams on the 5-tuple over UDP, end-to-end data frames (type 0x03) over
  TCP; other peers' data still arrives in Data Indications (0x0115, REMOTE-ADDRESS and DATA).
- Anything else (RFC methods, indications, responses in the MS format) is answered 400 or
  dropped; an [MS-TURN] request never gets an RFC-format answer.

Not implemented: MS-SEQUENCE-NUMBER checking (the number is sent, not enforced), bandwidth
(BANDWIDTH is ignored), TCP relays for Allocate over TCP (the relay is UDP, as libnice expects).
"""

from __future__ import annotations

import struct
from typing import Any

from simulator.media import allocations, msturn
from simulator.media.actions import Action, Address, ListenerId, SendTo
from simulator.media.auth import Authenticator, Credential
from simulator.media.channels import has_permission, make_room, permit, relay_to_peer
from simulator.media.context import Allocation, Request, TurnState
from simulator.media.errors import Rejection, RemoteProtocolError
from simulator.media.states import AllocationState
from simulator.media.stun import Header, Message, MessageClass, Method

UDP = 17


def receive(
    state: TurnState,
    authenticator: Authenticator,
    data: bytes,
    source: Address,
    listener: ListenerId,
    now: float,
) -> list[Action]:
    """Everything an [MS-TURN] client sends; see the module docstring."""
    tuple5 = (listener, source)
    if listener.stream:
        kind = data[0] if data else -1
        if kind == 0x16:
            return pseudo_tls(state, data, source, listener)
        state.ms_clients.add(tuple5)
        if kind == msturn.END_TO_END:
            return raw_data(state, data[4:], source, listener, now)
        data = data[4:]
    elif not msturn.looks_like(data):
        return raw_data(state, data, source, listener, now)
    try:
        message = msturn.parse(data)
    except RemoteProtocolError as exc:
        return unparseable(state, exc, source, listener)
    return dispatch(state, authenticator, message, source, listener, now)


def pseudo_tls(
    state: TurnState, record: bytes, source: Address, listener: ListenerId
) -> list[Action]:
    """[MS-TURN] section 2.1.1: answer the ClientHello with ServerHello and ServerHelloDone."""
    if (listener, source) in state.ms_clients or not msturn.is_pseudo_tls(record):
        state.drop("not a pseudo-TLS ClientHello", source)
        return []
    state.ms_clients.add((listener, source))
    state.stats["pseudo-tls"] += 1
    return [SendTo(listener, source, msturn.pseudo_tls_server_hello(state.rng.randbytes(64)))]


def unparseable(
    state: TurnState, exc: RemoteProtocolError, source: Address, listener: ListenerId
) -> list[Action]:
    """400 in [MS-TURN] form when the header said request; otherwise ignore (section 3.1.10)."""
    if exc.transaction_id is None or exc.message_class != MessageClass.REQUEST or not exc.code:
        state.drop(f"unparseable MS-TURN: {exc}", source)
        return []
    header = Header(exc.method or 0, MessageClass.REQUEST, 0, 0, exc.transaction_id, msturn.DIALECT)
    return [state.reject(header, listener, source, Rejection(exc.code, str(exc)))]


def dispatch(
    state: TurnState,
    authenticator: Authenticator,
    msg: Message,
    source: Address,
    listener: ListenerId,
    now: float,
) -> list[Action]:
    if msg.message_class != MessageClass.REQUEST:
        state.drop("MS-TURN message that is not a request", source)
        return []
    state.stats[f"requests.ms-turn.{msg.method}"] += 1
    key: bytes | None = None
    try:
        if msg.method == msturn.ALLOCATE:
            credential = authenticator.authenticate(msg, now)
            key = credential.key
            if msg.unknown_required:
                raise Rejection.unknown_attributes(msg.unknown_required)
            return allocate(state, Request(msg, source, listener, now, credential))
        if msg.method not in (msturn.SEND, msturn.SET_ACTIVE_DESTINATION):
            raise Rejection(400, "not an MS-TURN request")
        alloc = allocations.active(state, listener, source, now)
        if alloc is None or alloc.dialect == "rfc":
            if msg.method == msturn.SEND:
                state.drop("MS-TURN Send without allocation", source)
                return []
            raise Rejection(437, "no allocation")
        if not _signed_by(msg, alloc):
            if msg.method == msturn.SEND:
                state.drop("MS-TURN Send with wrong credentials", source)
                return []
            raise Rejection(401, "wrong credentials", attributes=authenticator.challenge(now))
        key = alloc.key
        if msg.unknown_required:
            raise Rejection.unknown_attributes(msg.unknown_required)
        credential = Credential(alloc.username, alloc.key, alloc.user)
        req = Request(msg, source, listener, now, credential)
        if msg.method == msturn.SEND:
            return send(state, alloc, req)
        return set_active_destination(state, alloc, req)
    except Rejection as rejection:
        if msg.method == msturn.SEND:
            state.drop(f"MS-TURN Send refused: {rejection}", source)
            return []
        return [state.reject(msg, listener, source, rejection, key)]


def _signed_by(msg: Message, alloc: Allocation) -> bool:
    return msg.get("USERNAME") == alloc.username and msg.check_integrity(alloc.key)


def allocate(state: TurnState, req: Request) -> list[Action]:
    """A new allocation, a retransmission, or (on a 5-tuple that holds one) the refresh."""
    msg, listener, source, now = req.message, req.listener, req.source, req.now
    existing = state.allocations.get((listener, source))
    if existing is not None and existing.request.transaction_id != msg.transaction_id:
        return refresh(state, existing, req)
    family = msg.get("REQUESTED-ADDRESS-FAMILY")
    if family is not None and family != 1:
        raise Rejection(440, "only IPv4 relays")
    # [MS-TURN] names no transport: the relay is UDP (REQUESTED-TRANSPORT for the RFC handler)
    attrs: list[tuple[str, Any]] = [("REQUESTED-TRANSPORT", UDP)]
    attrs += [(n, v) for n, v in msg.attributes if n == "LIFETIME"]
    as_rfc = Message(msg.method, msg.message_class, msg.transaction_id, attrs, dialect=msg.dialect)
    actions = allocations.allocate(state, Request(as_rfc, source, listener, now, req.credential))
    alloc = state.allocations.get((listener, source))
    if alloc is not None and alloc.dialect == "rfc":
        alloc.dialect = msturn.DIALECT
        alloc.request = msg
        alloc.connection_id = state.rng.randbytes(20)
        state.ms_clients.add((listener, source))
    return actions


def refresh(state: TurnState, alloc: Allocation, req: Request) -> list[Action]:
    """An Allocate on a 5-tuple with an allocation: extend it, or with LIFETIME 0 delete it."""
    if alloc.username != req.credential.username or alloc.dialect == "rfc":
        raise Rejection(437, "allocation exists on this 5-tuple")
    if alloc.state is not AllocationState.ACTIVE:
        return []
    if req.message.get("LIFETIME") == 0:
        actions = allocations.delete(state, alloc, "refreshed to 0", close_client=False)
        return [state.reply(req, [("LIFETIME", 0)]), *actions]
    alloc.lifetime = allocations.lifetime(state, req.message)
    alloc.expires = req.now + alloc.lifetime
    state.arm(alloc.expires)
    alloc.request = req.message
    return [state.reply(req, allocations.ms_allocate_attributes(alloc))]


def _destination(state: TurnState, alloc: Allocation, req: Request) -> Address:
    peer: Address | None = req.message.get("DESTINATION-ADDRESS")
    if peer is None:
        raise Rejection(400, "DESTINATION-ADDRESS missing")
    config = state.config
    why = config.policy.refuse(
        peer[0], peer[1], relay=config.relay_address, relay_ports=state.ports
    )
    if why is not None:
        raise Rejection(403, why)
    make_room(state, alloc, {peer[0]}, req.now)
    permit(state, alloc, peer[0], req.now)
    return peer


def send(state: TurnState, alloc: Allocation, req: Request) -> list[Action]:
    """Send request: DATA to DESTINATION-ADDRESS, which gets a permission; never answered."""
    data = req.message.get("DATA")
    if data is None:
        state.drop("MS-TURN Send without DATA", req.source)
        return []
    peer = _destination(state, alloc, req)
    return relay_to_peer(state, alloc, peer, data, req.source, req.now)


def set_active_destination(state: TurnState, alloc: Allocation, req: Request) -> list[Action]:
    """Set Active Destination: data to and from that peer goes unencapsulated from now on."""
    alloc.destination = _destination(state, alloc, req)
    state.stats["ms-turn.active-destination"] += 1
    return [state.reply(req)]


def raw_data(
    state: TurnState, data: bytes, source: Address, listener: ListenerId, now: float
) -> list[Action]:
    """Unencapsulated data from a client: to its active destination, else dropped."""
    alloc = allocations.active(state, listener, source, now)
    if alloc is None or alloc.dialect == "rfc" or alloc.destination is None:
        state.drop("MS-TURN data without active destination", source)
        return []
    peer = alloc.destination
    if not has_permission(alloc, peer[0], now):
        state.drop("data to peer without permission", source)
        return []
    return relay_to_peer(state, alloc, peer, data, source, now)


def to_client(state: TurnState, alloc: Allocation, peer: Address, data: bytes) -> list[Action]:
    """A peer's datagram (permission checked) to the client: raw from the active destination,
    else in a Data Indication; on TCP in the section 2.1.4 framing."""
    stream = alloc.listener.stream
    if peer == alloc.destination:
        if stream:
            data = struct.pack("!BBH", msturn.END_TO_END, 0, len(data)) + data
        return [SendTo(alloc.listener, alloc.client, data)]
    indication = Message(
        Method.DATA,
        MessageClass.INDICATION,
        state.rng.randbytes(msturn.TRANSACTION_ID_LENGTH),
        [("REMOTE-ADDRESS", peer), ("DATA", data)],
        dialect=msturn.DIALECT,
    )
    return [state.send(alloc.listener, alloc.client, msturn.encode(indication))]
