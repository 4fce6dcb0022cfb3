"""Sans-IO STUN/TURN client: transactions, long-term credentials, channels, RFC 6062 data.

The one client core of the package; the asyncio adapter (:class:`simulator.media.aio.
AsyncTurnClient`) drives it for the probes, the scenarios, the lab's own checks, the benchmarks
and the tests. Bytes in, events and bytes out, time passed in::

    client = TurnClient(ClientConfig(stream=False), LongTermCredentials("alice", "pw"))
    handle = client.allocate(now)                 # queues the request
    for datagram in client.data_to_send(): ...    # the adapter sends these
    client.receive_datagram(answer, now)          # or receive_data(chunk, now) on a stream
    event = client.next_event()                   # TransactionAnswered, PeerDataReceived ...
    client.handle_timer(now)                      # at get_timer(): retransmit, time out

What it does:

- Transactions (RFC 8489 section 6.2): over UDP a request is retransmitted with doubling
  intervals from ``rto``, at most ``transmissions`` times; over TCP/TLS it is sent once. A
  request with no answer within ``timeout`` ends with :class:`TransactionTimedOut`.
- Long-term credentials (RFC 8489 section 9.2): a 401 to a request without credentials, and a
  438 at any time, teach the credentials the REALM and NONCE and the request goes out again with
  MESSAGE-INTEGRITY (a new transaction, the same handle); the answer to that is final.
- What the server said is remembered: XOR-RELAYED-ADDRESS, XOR-MAPPED-ADDRESS, LIFETIME, the
  channels bound (ChannelBind success), and after a ConnectionBind success the stream carries
  raw bytes (RFC 6062 section 4.4: :class:`RawDataReceived`).
- From the server: ChannelData and Data indications become :class:`PeerDataReceived`,
  ConnectionAttempt indications :class:`ConnectionAttemptReceived`; anything else that is not a
  STUN answer is :class:`UnexpectedDataReceived` (on a stream that ends the reading: the framing
  is lost). ChannelData over a stream is padded to four bytes both ways (RFC 8656 section 12.5).

Wire format and authentication are the seams of a second dialect: ``dialect`` and
``credentials`` (:mod:`simulator.media.dialect`, :mod:`simulator.media.auth`).
"""

from __future__ import annotations

import collections
import random
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from simulator.media import msturn
from simulator.media.actions import Address
from simulator.media.auth import ClientCredentials
from simulator.media.dialect import RFC, Dialect, Framer
from simulator.media.errors import LocalProtocolError, RemoteProtocolError
from simulator.media.events import (
    ClientEvent,
    ConnectionAttemptReceived,
    ConnectionEnded,
    PeerDataReceived,
    RawDataReceived,
    TransactionAnswered,
    TransactionTimedOut,
    UnexpectedDataReceived,
)
from simulator.media.stun import Message, MessageClass, Method

UDP = 17
TCP = 6
MAX_AUTH_TRIES = 3
"""Tries of one request when the server keeps challenging (401/438)."""


def _ms_request(method: int, attrs: list[tuple[str, Any]]) -> tuple[int, list[tuple[str, Any]]]:
    """An RFC request as [MS-TURN] has it: Refresh is an Allocate on the same 5-tuple (the
    extension has no Refresh method), an Allocate carries MS-VERSION (section 2.2.2.17), and
    attributes the extension does not define (REQUESTED-TRANSPORT) are left out."""
    if method == Method.REFRESH:
        method = Method.ALLOCATE
    kept = [(n, v) for n, v in attrs if n in msturn.ATTRIBUTE_TYPES]
    if method == Method.ALLOCATE and not any(n == "MS-VERSION" for n, _ in kept):
        kept.insert(0, ("MS-VERSION", msturn.MS_VERSION))
    return method, kept


def _seeded_ids() -> Callable[[], bytes]:
    """Transaction ids from a seeded source (tests); the adapter passes a secure one."""
    rng = random.Random(0)

    def next_id() -> bytes:
        return rng.randbytes(12)

    return next_id


@dataclass(frozen=True)
class ClientConfig:
    """Settings of a client core (one per connection or UDP socket)."""

    stream: bool
    """TCP or TLS (framed, sent once) rather than UDP (datagrams, retransmitted)."""
    rto: float = 0.5
    """Initial retransmission timeout over UDP (RFC 8489 section 6.2.1: 500 ms)."""
    transmissions: int = 7
    """Sends of one request over UDP at most (Rc, RFC 8489 section 6.2.1)."""
    timeout: float = 39.5
    """Seconds a request waits for its answer (39.5 s: RFC 8489's Rc and Rm over UDP, Ti over
    TCP)."""
    software: str | None = None
    """SOFTWARE attribute of our requests (none by default)."""
    fingerprint: bool = False
    """Add FINGERPRINT to our requests."""


@dataclass
class _Transaction:
    handle: int
    method: int
    attributes: list[tuple[str, Any]]
    """The request's own attributes (credentials are added on each send)."""
    started: float
    deadline: float
    message: Message = field(init=False)
    data: bytes = b""
    signed: bool = False
    next_send: float | None = None
    interval: float = 0.0
    sends: int = 0
    tries: int = 0
    """Credentials tries (401/438 answered by sending again)."""


class TurnClient:
    """A STUN/TURN client core; see the module docstring."""

    def __init__(
        self,
        config: ClientConfig,
        credentials: ClientCredentials | None = None,
        *,
        dialect: Dialect = RFC,
        transaction_ids: Callable[[], bytes] | None = None,
    ) -> None:
        self.config = config
        self.credentials = credentials
        self.dialect = dialect
        self._tids: Callable[[], bytes] = transaction_ids or _seeded_ids()
        self._framer: Framer | None = dialect.framer() if config.stream else None
        self._outgoing: list[bytes] = []
        self._events: collections.deque[ClientEvent] = collections.deque()
        self._pending: dict[bytes, _Transaction] = {}
        self._next_handle = 1
        self._broken = False
        self.raw = False
        """True after a ConnectionBind success: the stream carries the peer's bytes."""
        self.relayed: Address | None = None
        """XOR-RELAYED-ADDRESS of our allocation."""
        self.mapped: Address | None = None
        """XOR-MAPPED-ADDRESS: our address as the server saw it."""
        self.lifetime: int | None = None
        """LIFETIME of the last Allocate/Refresh success."""
        self.channels: dict[int, Address] = {}
        """Channels bound (ChannelBind success): number -> peer."""
        self.ms = dialect.name == msturn.DIALECT
        """[MS-TURN]: 16-byte transaction ids, Allocate refreshes, Send requests, Set Active
        Destination; on a stream the section 2.1.4 framing (and with :meth:`start_pseudo_tls`
        the pseudo-TLS exchange first)."""
        self.destination: Address | None = None
        """[MS-TURN] active destination (Set Active Destination success)."""
        self._hello: bytes | None = None
        """The pseudo-TLS ServerHello bytes received so far, while one is awaited."""

    # -------------------------------------------------------------- requests
    def request(self, method: int, attributes: Iterable[tuple[str, Any]], now: float) -> int:
        """Queue a request; returns its handle (the events of its outcome carry it)."""
        if self.raw:
            raise LocalProtocolError("the connection carries raw data since ConnectionBind")
        handle = self._next_handle
        self._next_handle += 1
        attrs = list(attributes)
        if self.ms:
            method, attrs = _ms_request(method, attrs)
        transaction = _Transaction(handle, method, attrs, now, now + self.config.timeout)
        self._send(transaction, now)
        return handle

    def binding(self, now: float) -> int:
        return self.request(Method.BINDING, [], now)

    def allocate(
        self,
        now: float,
        *,
        transport: int = UDP,
        lifetime: int | None = None,
        even_port: bool | None = None,
    ) -> int:
        """Allocate (RFC 8656 section 7.1); ``transport`` TCP (6) is RFC 6062's TCP relay."""
        attrs: list[tuple[str, Any]] = [("REQUESTED-TRANSPORT", transport)]
        if lifetime is not None:
            attrs.append(("LIFETIME", lifetime))
        if even_port is not None:
            attrs.append(("EVEN-PORT", even_port))
        return self.request(Method.ALLOCATE, attrs, now)

    def refresh(self, now: float, lifetime: int | None = None) -> int:
        """Refresh (RFC 8656 section 8.1); ``lifetime`` 0 deletes the allocation."""
        attrs = [] if lifetime is None else [("LIFETIME", lifetime)]
        return self.request(Method.REFRESH, attrs, now)

    def create_permission(self, now: float, *peers: Address) -> int:
        return self.request(Method.CREATE_PERMISSION, [("XOR-PEER-ADDRESS", p) for p in peers], now)

    def channel_bind(self, now: float, channel: int, peer: Address) -> int:
        return self.request(
            Method.CHANNEL_BIND, [("CHANNEL-NUMBER", channel), ("XOR-PEER-ADDRESS", peer)], now
        )

    def connect(self, now: float, peer: Address) -> int:
        """RFC 6062 section 4.3: the relay dials ``peer``; the answer carries CONNECTION-ID."""
        return self.request(Method.CONNECT, [("XOR-PEER-ADDRESS", peer)], now)

    def connection_bind(self, now: float, connection: int) -> int:
        """RFC 6062 section 4.4, on a new connection: join it to the peer connection."""
        return self.request(Method.CONNECTION_BIND, [("CONNECTION-ID", connection)], now)

    # -------------------------------------------------------------- data
    def send_channel_data(self, channel: int, data: bytes) -> None:
        """ChannelData to the peer bound to ``channel`` (padded to four bytes on a stream)."""
        frame = struct.pack("!HH", channel, len(data)) + data
        if self.config.stream and len(data) % 4:
            frame += bytes(4 - len(data) % 4)
        self._outgoing.append(frame)

    def send_indication(self, peer: Address, data: bytes) -> None:
        """A Send indication (RFC 8656 section 11.1): ``data`` to ``peer``; in [MS-TURN] a Send
        request, signed, never answered (section 2.2.1), which installs the permission."""
        if self.ms:
            credentials = self.credentials
            attrs: list[tuple[str, Any]] = [("DESTINATION-ADDRESS", peer), ("DATA", data)]
            key = None
            if credentials is not None and credentials.key is not None:
                attrs = [("USERNAME", credentials.username), ("REALM", credentials.realm), *attrs]
                key = credentials.key
            send = Message(msturn.SEND, MessageClass.REQUEST, self._tid(), attrs, dialect="ms-turn")
            self._out(self.dialect.encode(send, integrity_key=key))
            return
        message = Message(
            Method.SEND,
            MessageClass.INDICATION,
            self._tids(),
            [("XOR-PEER-ADDRESS", peer), ("DATA", data)],
        )
        self._outgoing.append(self.dialect.encode(message, fingerprint=self.config.fingerprint))

    def send_raw(self, data: bytes) -> None:
        """Bytes to the peer on an RFC 6062 data connection (after ConnectionBind), or to the
        [MS-TURN] active destination (unencapsulated; end-to-end data frames on a stream)."""
        if self.ms and self.destination is not None:
            self._out(data, msturn.END_TO_END)
            return
        if not self.raw:
            raise LocalProtocolError("raw data before a ConnectionBind success")
        self._outgoing.append(data)

    def set_active_destination(self, now: float, peer: Address) -> int:
        """[MS-TURN] Set Active Destination: data to and from ``peer`` goes unencapsulated."""
        if not self.ms:
            raise LocalProtocolError("Set Active Destination is an MS-TURN request")
        return self.request(msturn.SET_ACTIVE_DESTINATION, [("DESTINATION-ADDRESS", peer)], now)

    def start_pseudo_tls(self, random: bytes) -> None:
        """[MS-TURN] section 2.1.1: open the stream with the pseudo-TLS ClientHello; requests
        wait until the ServerHello and ServerHelloDone arrived."""
        if not (self.ms and self.config.stream):
            raise LocalProtocolError("pseudo-TLS is for MS-TURN over TCP")
        self._hello = b""
        self._outgoing.append(msturn.pseudo_tls_client_hello(random))

    def _tid(self) -> bytes:
        tid = self._tids()
        if self.ms and len(tid) != msturn.TRANSACTION_ID_LENGTH:
            if not tid:
                raise LocalProtocolError("the transaction id source gave no bytes")
            tid = (tid * msturn.TRANSACTION_ID_LENGTH)[: msturn.TRANSACTION_ID_LENGTH]
        return tid

    def _out(self, data: bytes, kind: int = msturn.CONTROL) -> None:
        if self.ms and self.config.stream:
            data = msturn.frame(kind, data)
        self._outgoing.append(data)

    def data_to_send(self) -> list[bytes]:
        """What to send now: datagrams over UDP, chunks of the stream over TCP/TLS."""
        if self._hello is not None and self._outgoing:
            # before the pseudo-TLS ServerHello only the ClientHello goes out
            hello = [d for d in self._outgoing if d[:1] == b"\x16"]
            self._outgoing = [d for d in self._outgoing if d[:1] != b"\x16"]
            return hello
        out, self._outgoing = self._outgoing, []
        return out

    def next_event(self) -> ClientEvent | None:
        return self._events.popleft() if self._events else None

    # -------------------------------------------------------------- input
    def receive_datagram(self, data: bytes, now: float) -> None:
        """A datagram from the server (UDP)."""
        if self.config.stream:
            raise LocalProtocolError("receive_datagram on a stream client")
        self._frame(data, now)

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes of the stream (TCP/TLS); ``b""`` is the end of the stream."""
        if self._framer is None:
            raise LocalProtocolError("receive_data on a UDP client")
        if not data:
            self._events.append(ConnectionEnded())
            return
        if self.raw:
            self._events.append(RawDataReceived(data))
            return
        if self._broken:
            return
        if self._hello is not None:
            hello = self._hello + data
            alert = msturn.tls_alert(hello)
            if alert is not None:
                # a TLS stack answered (an inspecting middlebox, or a TLS-only server): the
                # pseudo-TLS exchange is over before it began
                self._broken = True
                self._events.append(
                    UnexpectedDataReceived(
                        hello[:200], f"TLS alert '{alert}' instead of the pseudo-TLS ServerHello"
                    )
                )
                return
            if len(hello) < 83:
                self._hello = hello
                return
            if not msturn.is_server_hello(hello[:83]):
                self._broken = True
                self._events.append(
                    UnexpectedDataReceived(hello[:200], "not the pseudo-TLS ServerHello")
                )
                return
            self._hello = None
            data = hello[83:]
            if not data:
                return
        self._framer.feed(data)
        while not self.raw:
            head = self._framer.peek(2)
            if len(head) == 2 and 0x40 <= head[0] <= 0x7F and not self._expects_channel(head):
                self._broken = True
                self._events.append(
                    UnexpectedDataReceived(data[:200], "ChannelData on a channel we did not bind")
                )
                return
            try:
                frame = self._framer.next_frame()
            except RemoteProtocolError as exc:
                self._broken = True
                self._events.append(UnexpectedDataReceived(data[:200], str(exc)))
                return
            if frame is None:
                return
            self._frame(frame, now)
        if self._framer.buffered:
            self._events.append(RawDataReceived(self._framer.take_buffer()))

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must run next (None: nothing pending)."""
        times = [t.deadline for t in self._pending.values()]
        times += [t.next_send for t in self._pending.values() if t.next_send is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        """Retransmit over UDP and end the requests whose time is up."""
        for tid, transaction in list(self._pending.items()):
            if transaction.deadline <= now:
                del self._pending[tid]
                self._events.append(
                    TransactionTimedOut(
                        transaction.handle, transaction.message, transaction.started
                    )
                )
            elif transaction.next_send is not None and transaction.next_send <= now:
                self._outgoing.append(transaction.data)
                self._schedule(transaction, now)

    # -------------------------------------------------------------- internals
    def _send(self, transaction: _Transaction, now: float) -> None:
        credentials = self.credentials
        attrs = list(transaction.attributes)
        key: bytes | None = None
        if credentials is not None and credentials.key is not None:
            attrs += credentials.attributes()
            key = credentials.key
        if self.config.software and not self.ms:
            attrs.append(("SOFTWARE", self.config.software))
        dialect = msturn.DIALECT if self.ms else "rfc"
        message = Message(
            transaction.method, MessageClass.REQUEST, self._tid(), attrs, dialect=dialect
        )
        transaction.message = message
        transaction.signed = key is not None
        transaction.data = self.dialect.encode(
            message, integrity_key=key, fingerprint=self.config.fingerprint
        )
        if self.ms and self.config.stream:
            transaction.data = msturn.frame(msturn.CONTROL, transaction.data)
        transaction.sends = 0
        transaction.interval = self.config.rto
        self._pending[message.transaction_id] = transaction
        self._outgoing.append(transaction.data)
        self._schedule(transaction, now)

    def _schedule(self, transaction: _Transaction, now: float) -> None:
        transaction.sends += 1
        if self.config.stream or transaction.sends >= self.config.transmissions:
            transaction.next_send = None
            return
        transaction.next_send = now + transaction.interval
        transaction.interval *= 2

    def _frame(self, frame: bytes, now: float) -> None:
        if not frame:
            return
        if self.ms:
            if self.config.stream:
                kind, frame = frame[0], frame[4:]
                if kind == msturn.END_TO_END:
                    self._events.append(PeerDataReceived(self.destination, None, frame))
                    return
            elif not msturn.looks_like(frame):
                if self.destination is not None:
                    self._events.append(PeerDataReceived(self.destination, None, frame))
                else:
                    self._events.append(UnexpectedDataReceived(frame[:200], "not MS-TURN"))
                return
        first = frame[0]
        if 0x40 <= first <= 0x7F:
            self._channel_data(frame)
            return
        try:
            message = self.dialect.parse(frame)
        except RemoteProtocolError as exc:
            self._events.append(UnexpectedDataReceived(frame[:200], str(exc)))
            return
        if message.message_class == MessageClass.INDICATION:
            self._indication(message)
        elif message.message_class in (MessageClass.SUCCESS, MessageClass.ERROR):
            self._answer(message, now)
        # a request from the server: nothing a TURN client answers

    def _expects_channel(self, head: bytes) -> bool:
        """A channel we bound, or are binding (its data may overtake the success answer)."""
        number = (head[0] << 8) | head[1]
        if number in self.channels:
            return True
        return any(
            t.method == Method.CHANNEL_BIND and ("CHANNEL-NUMBER", number) in t.attributes
            for t in self._pending.values()
        )

    def _channel_data(self, frame: bytes) -> None:
        if len(frame) < 4:
            self._events.append(UnexpectedDataReceived(frame, "truncated ChannelData"))
            return
        if not self._expects_channel(frame[:2]):
            self._events.append(
                UnexpectedDataReceived(frame[:200], "ChannelData on a channel we did not bind")
            )
            return
        number, length = struct.unpack_from("!HH", frame)
        if len(frame) < 4 + length:
            self._events.append(UnexpectedDataReceived(frame[:200], "ChannelData length mismatch"))
            return
        self._events.append(
            PeerDataReceived(self.channels.get(number), number, frame[4 : 4 + length])
        )

    def _indication(self, message: Message) -> None:
        if message.method == Method.DATA:
            peer = message.get("XOR-PEER-ADDRESS") or message.get("REMOTE-ADDRESS")
            data = message.get("DATA")
            if peer is not None and data is not None:
                self._events.append(PeerDataReceived((peer[0], peer[1]), None, data))
        elif message.method == Method.CONNECTION_ATTEMPT:
            connection, peer = message.get("CONNECTION-ID"), message.get("XOR-PEER-ADDRESS")
            if connection is not None and peer is not None:
                self._events.append(ConnectionAttemptReceived(connection, (peer[0], peer[1])))

    def _answer(self, answer: Message, now: float) -> None:
        transaction = self._pending.get(answer.transaction_id)
        if transaction is None or answer.method != transaction.method:
            return  # a late answer to a retransmission, or not ours
        del self._pending[answer.transaction_id]
        sent = transaction.message
        if answer.message_class == MessageClass.ERROR and self._retry(transaction, answer):
            self._events.append(
                TransactionAnswered(
                    transaction.handle, sent, answer, transaction.started, False, transaction.signed
                )
            )
            self._send(transaction, now)
            return
        if answer.message_class == MessageClass.SUCCESS:
            self._learn(transaction, answer)
        self._events.append(
            TransactionAnswered(
                transaction.handle, sent, answer, transaction.started, True, transaction.signed
            )
        )

    def _retry(self, transaction: _Transaction, answer: Message) -> bool:
        """Answer a 401 to an unsigned request, or a 438, by learning and sending again."""
        credentials = self.credentials
        code = answer.get("ERROR-CODE", (0, ""))[0]
        if credentials is None or transaction.tries + 1 >= MAX_AUTH_TRIES:
            return False
        challenged = code == 438 or (code == 401 and not transaction.signed)
        if challenged and credentials.learn(answer):
            transaction.tries += 1
            return True
        return False

    def _learn(self, transaction: _Transaction, answer: Message) -> None:
        method = transaction.method
        if method == Method.ALLOCATE:
            relayed = answer.get("XOR-RELAYED-ADDRESS") or answer.get("MAPPED-ADDRESS")
            mapped = answer.get("XOR-MAPPED-ADDRESS")
            self.lifetime = answer.get("LIFETIME")
            if self.ms and self.lifetime == 0:
                relayed, self.destination = None, None
            self.relayed = (relayed[0], relayed[1]) if relayed else None
            self.mapped = (mapped[0], mapped[1]) if mapped else None
        elif self.ms and method == msturn.SET_ACTIVE_DESTINATION:
            peer = dict(transaction.attributes).get("DESTINATION-ADDRESS")
            self.destination = (peer[0], peer[1]) if peer else None
        elif method == Method.BINDING:
            mapped = answer.get("XOR-MAPPED-ADDRESS") or answer.get("MAPPED-ADDRESS")
            self.mapped = (mapped[0], mapped[1]) if mapped else None
        elif method == Method.REFRESH:
            self.lifetime = answer.get("LIFETIME")
            if self.lifetime == 0:
                self.relayed = None
                self.channels.clear()
        elif method == Method.CHANNEL_BIND:
            attrs = dict(transaction.attributes)
            peer, number = attrs.get("XOR-PEER-ADDRESS"), attrs.get("CHANNEL-NUMBER")
            if peer is not None and number is not None:
                self.channels[number] = (peer[0], peer[1])
        elif method == Method.CONNECTION_BIND:
            self.raw = True
            # any request still pending on this connection will never be answered
            self._pending.clear()
