"""Sans-IO STUN/TURN server core: RFC 8489 Binding, RFC 8656 TURN, RFC 6062 TCP allocations.

The core never touches a socket or a clock. The adapter feeds it what arrives, with the current
time (seconds since the epoch, so time-limited credentials can be checked), and carries out the
actions it returns (:mod:`simulator.media.actions`)::

    actions = server.receive(data, source, listener, now)
    # Action = SendTo | RelayTo | OpenRelay | CloseRelay | ConnectPeer | ClosePeer
    #        | JoinConnection | CloseClient

This module parses, authenticates and dispatches; the methods live beside it:
:mod:`~simulator.media.allocations` (Allocate, Refresh, relay ports, quotas),
:mod:`~simulator.media.channels` (CreatePermission, ChannelBind, Send and Data indications,
ChannelData), :mod:`~simulator.media.tcprelay` (RFC 6062 Connect, ConnectionBind,
ConnectionAttempt). A handler that refuses a request raises
:class:`~simulator.media.errors.Rejection` with the STUN error code; :meth:`TurnServer._dispatch`
answers it, in one place. The wire format is a :class:`~simulator.media.dialect.Dialect` and
authentication an :class:`~simulator.media.auth.Authenticator`, both replaceable.

Implemented:

- Binding with XOR-MAPPED-ADDRESS and FINGERPRINT, without authentication, on every listener.
- Allocate (UDP relays, and TCP relays over TCP/TLS control connections: RFC 6062), Refresh,
  CreatePermission, ChannelBind, Send and Data indications, ChannelData in both directions,
  Connect, ConnectionBind and ConnectionAttempt (RFC 6062 sections 5.2-5.4), EVEN-PORT with the
  R bit (the next port held 30 s under a RESERVATION-TOKEN).
- Long-term credentials (RFC 8489 section 9.2, :mod:`simulator.media.auth`): 401 with a fresh
  NONCE and the REALM, 438 for a stale nonce, 441 when an allocation is used with other
  credentials; static and time-limited users.
- Lifetimes driven by ``now``: allocations (default 600 s, max 3600 s), permissions (300 s),
  channels (600 s), nonces, RFC 6062 connections not bound within 30 s.
- Policy: per-user and total allocation quotas (486), forbidden peers (403, see
  :class:`~simulator.media.policy.PeerPolicy`), relay ports only from the configured range (508
  when it is full), optional packet-rate and bandwidth caps per allocation (excess dropped).
- Bad input: messages that do not parse are answered 400 when their header decoded and they are
  requests, otherwise dropped; unknown comprehension-required attributes get 420 with
  UNKNOWN-ATTRIBUTES; ChannelData for unbound channels and data to peers without permission are
  dropped (RFC 8656 sections 10.2, 11.5, 12.4). Everything dropped is counted in :attr:`stats`.

With the :data:`~simulator.media.msturn.EDGE` dialect the same core serves [MS-TURN] clients
beside RFC ones (:mod:`simulator.media.msserver`), recognising the dialect from each client's
messages; allocations, quotas and the peer policy are shared.

Not implemented: IPv6 relays (443/440), MESSAGE-INTEGRITY-SHA256, the
5-minute channel re-use hold-down, ALTERNATE-SERVER. Channel numbers 0x4000-0x7FFF are accepted
(RFC 5766's range; RFC 8656 narrowed it to 0x4FFF, but coturn's clients still pick from the wide
range).
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from simulator.media import allocations, channels, msserver, msturn, stun, tcprelay
from simulator.media.actions import Action, Address, ListenerId, SendTo
from simulator.media.auth import Authenticator, LongTermAuthenticator, MsTurnAuthenticator
from simulator.media.budget import SourceBudget
from simulator.media.config import TurnConfig
from simulator.media.context import Allocation, Request, TurnState
from simulator.media.dialect import RFC, Dialect
from simulator.media.errors import Rejection, RemoteProtocolError
from simulator.media.events import TurnEvent
from simulator.media.stun import Message, MessageClass, Method

Handler = Callable[[TurnState, Request], list[Action]]

_MS_STREAM_START = (msturn.CONTROL, msturn.END_TO_END, 0x16)
"""First bytes of frames only an [MS-TURN] stream carries (framing header, pseudo-TLS)."""

#: The authenticated request methods and who handles them.
HANDLERS: dict[int, Handler] = {
    Method.ALLOCATE: allocations.allocate,
    Method.REFRESH: allocations.refresh,
    Method.CREATE_PERMISSION: channels.create_permission,
    Method.CHANNEL_BIND: channels.channel_bind,
    Method.CONNECT: tcprelay.connect,
    Method.CONNECTION_BIND: tcprelay.connection_bind,
}


class TurnServer:
    """The TURN server state machine; see the module docstring."""

    def __init__(
        self,
        config: TurnConfig,
        *,
        dialect: Dialect = RFC,
        authenticator: Authenticator | None = None,
    ) -> None:
        if not 0 < config.port_low <= config.port_high < 65536:
            raise ValueError(f"bad relay port range {config.port_low}-{config.port_high}")
        self.config = config
        self.dialect = dialect
        self.authenticator: Authenticator = authenticator or LongTermAuthenticator(
            realm=config.realm,
            users=config.users,
            shared_secret=config.shared_secret,
            nonce_key=config.nonce_key,
            nonce_lifetime=config.nonce_lifetime,
        )
        self._state = TurnState(config, dialect)
        self._ms_auth: Authenticator | None = None
        """Set when the dialect takes [MS-TURN] too (:data:`~simulator.media.msturn.EDGE`)."""
        if dialect.name != RFC.name:
            inner = self.authenticator
            if not isinstance(inner, LongTermAuthenticator):
                raise ValueError("the MS-TURN dialect needs the long-term authenticator")
            self._ms_auth = MsTurnAuthenticator(inner)
        rate = config.unauthenticated_rate
        self._budget = SourceBudget(rate, config.unauthenticated_burst) if rate else None
        self.stats: collections.Counter[str] = self._state.stats
        """Counters: ``dropped.<reason>``, ``rejected.<code>``, ``relayed.to_peer`` ..."""

    # -------------------------------------------------------------- public API
    def next_event(self) -> TurnEvent | None:
        events = self._state.events
        return events.popleft() if events else None

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` should next be called (None: nothing pending)."""
        return self._state.timer

    @property
    def allocation_count(self) -> int:
        return len(self._state.by_id)

    def allocation(self, relay: int) -> Allocation | None:
        return self._state.by_id.get(relay)

    def holds(self, listener: ListenerId, client: Address) -> bool:
        """True if the 5-tuple has an allocation (its control connection must stay open)."""
        return (listener, client) in self._state.allocations

    def receive(
        self, data: bytes, source: Address, listener: ListenerId, now: float
    ) -> list[Action]:
        """A whole STUN message or ChannelData message from a client (or, with the
        :data:`~simulator.media.msturn.EDGE` dialect, anything an [MS-TURN] client sends: a
        message, a framed TCP frame, the pseudo-TLS ClientHello, unencapsulated data)."""
        ms = self._state.ms_clients
        if ms and (listener, source) in ms and self._ms_auth is not None:
            return msserver.receive(self._state, self._ms_auth, data, source, listener, now)
        if data and 0x40 <= data[0] <= 0x7F:
            return channels.channel_data(self._state, data, source, listener, now)
        if self._ms_auth is not None and (
            (listener.stream and data and data[0] in _MS_STREAM_START) or msturn.looks_like(data)
        ):
            return msserver.receive(self._state, self._ms_auth, data, source, listener, now)
        try:
            message = self.dialect.parse(data)
        except RemoteProtocolError as exc:
            return self._unparseable(exc, source, listener, now)
        return self._dispatch(message, source, listener, now)

    def relay_received(self, relay: int, data: bytes, peer: Address, now: float) -> list[Action]:
        """A UDP datagram arrived at the relayed address of ``relay`` from ``peer``."""
        return channels.from_peer(self._state, relay, data, peer, now, msserver.to_client)

    def relay_opened(self, relay: int, now: float) -> list[Action]:
        """The adapter bound the relayed address of ``relay``: answer the Allocate."""
        return allocations.relay_opened(self._state, relay, now)

    def relay_failed(self, relay: int, now: float) -> list[Action]:
        """Binding the relayed address failed (port in use elsewhere): try another port."""
        return allocations.relay_failed(self._state, relay, now)

    def connection_lost(self, listener: ListenerId, client: Address, now: float) -> list[Action]:
        """A client TCP/TLS connection closed: its allocation goes (RFC 8656 section 3.1)."""
        actions: list[Action] = []
        self._state.ms_clients.discard((listener, client))
        alloc = self._state.allocations.get((listener, client))
        if alloc is not None:
            actions += allocations.delete(
                self._state, alloc, "connection closed", close_client=False
            )
        return actions + tcprelay.client_connection_lost(self._state, listener, client)

    def peer_connected(self, connection: int, now: float) -> list[Action]:
        """The Connect's outbound TCP connection is up: answer with CONNECTION-ID."""
        return tcprelay.peer_connected(self._state, connection, now)

    def peer_connect_failed(self, connection: int, now: float) -> list[Action]:
        """The Connect's TCP connection failed: 447 (RFC 6062 section 5.2)."""
        return tcprelay.peer_connect_failed(self._state, connection, now)

    def peer_connection_arrived(
        self, relay: int, peer: Address, now: float
    ) -> tuple[int | None, list[Action]]:
        """A peer dialled the TCP relay: a CONNECTION-ID and a ConnectionAttempt, or (None, [])."""
        return tcprelay.peer_connection_arrived(self._state, relay, peer, now)

    def peer_connection_lost(self, connection: int, now: float) -> list[Action]:
        conn = self._state.connections.get(connection)
        return self._state.close_connection(conn) if conn is not None else []

    def handle_timer(self, now: float) -> list[Action]:
        """Expire allocations, permissions, channels and unbound peer connections."""
        state = self._state
        deadlines: list[float] = []
        actions = allocations.expire(state, now, deadlines)
        for alloc in state.by_id.values():
            channels.expire(alloc, now, deadlines)
        actions += tcprelay.expire(state, now, deadlines)
        state.timer = min(deadlines) if deadlines else None
        return actions

    # -------------------------------------------------------------- dispatch
    def _dispatch(
        self, msg: Message, source: Address, listener: ListenerId, now: float
    ) -> list[Action]:
        state = self._state
        cls = msg.message_class
        if cls == MessageClass.INDICATION:
            if msg.unknown_required:
                state.drop("indication with unknown comprehension-required attribute", source)
                return []
            if msg.method == Method.SEND:
                return channels.send_indication(state, msg, source, listener, now)
            state.drop("unexpected indication", source)
            return []
        if cls != MessageClass.REQUEST:
            state.drop("response sent to the server", source)
            return []
        state.stats[f"requests.{msg.method}"] += 1
        key: bytes | None = None
        try:
            if msg.method == Method.BINDING:
                if msg.unknown_required:
                    raise Rejection.unknown_attributes(msg.unknown_required)
                if not self._may_answer(listener, source, now):
                    return []
                return [SendTo(listener, source, binding_response(msg, source, self.dialect))]
            handler = HANDLERS.get(msg.method)
            if handler is None:
                raise Rejection(400, "unknown method")
            credential = self.authenticator.authenticate(msg, now)
            key = credential.key
            if msg.unknown_required:
                raise Rejection.unknown_attributes(msg.unknown_required)
            return handler(state, Request(msg, source, listener, now, credential))
        except Rejection as rejection:
            if key is None and not self._may_answer(listener, source, now):
                return []
            return [state.reject(msg, listener, source, rejection, key)]

    def _may_answer(self, listener: ListenerId, source: Address, now: float) -> bool:
        """Whether a request that did not authenticate may be answered: over UDP only within
        the source's budget (:mod:`simulator.media.budget`); a TCP peer proved its address."""
        if self._budget is None or listener.stream or self._budget.take(source[0], now):
            return True
        self._state.drop("unauthenticated answer budget", source)
        return False

    def _unparseable(
        self, exc: RemoteProtocolError, source: Address, listener: ListenerId, now: float
    ) -> list[Action]:
        if (
            exc.transaction_id is not None
            and exc.message_class == MessageClass.REQUEST
            and exc.method is not None
            and exc.code
        ):
            if not self._may_answer(listener, source, now):
                return []
            header = stun.Header(
                exc.method, MessageClass.REQUEST, 0, 0, exc.transaction_id, exc.dialect
            )
            rejection = Rejection(exc.code, str(exc))
            return [self._state.reject(header, listener, source, rejection)]
        self._state.drop(f"unparseable: {exc}", source)
        return []


def binding_response(request: Message, source: Address, dialect: Dialect = RFC) -> bytes:
    """The Binding success response: XOR-MAPPED-ADDRESS, and FINGERPRINT if the request had one.

    Nothing else (no SOFTWARE): the request is not authenticated, and over UDP the answer may
    go to a spoofed source, so it stays as small as a Binding answer can be (32 bytes to a
    20-byte request)."""
    answer = stun.response(request, [("XOR-MAPPED-ADDRESS", source)])
    return dialect.encode(answer, fingerprint="FINGERPRINT" in request)


def answer_binding(data: bytes, source: Address, dialect: Dialect = RFC) -> bytes | None:
    """A STUN Binding responder for plain peers: the response, a 400/420, or None to drop."""
    try:
        msg = dialect.parse(data)
    except RemoteProtocolError as exc:
        if exc.transaction_id is None or exc.message_class != MessageClass.REQUEST or not exc.code:
            return None
        header = stun.Header(exc.method or 0, MessageClass.REQUEST, 0, 0, exc.transaction_id)
        return dialect.encode(stun.response(header, error=(exc.code, exc.reason)))
    if msg.message_class != MessageClass.REQUEST:
        return None
    if msg.method != Method.BINDING:
        return dialect.encode(stun.response(msg, error=(400, "Bad Request")))
    if msg.unknown_required:
        rejection = Rejection.unknown_attributes(msg.unknown_required)
        return dialect.encode(
            stun.response(msg, rejection.attributes, error=(420, rejection.reason))
        )
    return binding_response(msg, source, dialect)
