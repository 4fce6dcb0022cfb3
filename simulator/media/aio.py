"""The asyncio adapter of the media package's two cores: the TURN server and the TURN client.

:class:`AsyncTurnServer`: listeners, relay sockets, peer connections, one timer. Every entry
point feeds :class:`~simulator.media.turn.TurnServer` and carries out the actions it returns
(``_execute``), then re-arms the core's single timer. Time given to the cores is ``time.time()``
(epoch seconds: time-limited usernames carry an epoch expiry). Client TCP/TLS connections are
limited in total and per source address, and one that holds no allocation is closed after the
idle timeout, whatever it sends.

:class:`AsyncTurnClient`: one UDP socket or TCP/TLS connection driving a
:class:`~simulator.media.client.TurnClient`; futures resolve only in ``_process``.

Relay sockets: a UDP relay is a datagram socket bound to the A/V address and a port of the
range the core chose; a TCP relay (RFC 6062) is a listening socket with SO_REUSEPORT, and each
Connect binds a new socket to the same address and port (SO_REUSEPORT) *before* connecting, so
the outbound connection leaves from the relay range, as the seed row "A/V/RTP/TCP/50,000-59,999
from the Edge to clients" expects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from simulator import aioloop, trace
from simulator.limits import ConnectionGate, ConnectionLimits, limit
from simulator.media import events as ev
from simulator.media import stun, tracing
from simulator.media.actions import (
    Action,
    Address,
    CloseClient,
    ClosePeer,
    CloseRelay,
    ConnectPeer,
    JoinConnection,
    ListenerId,
    OpenRelay,
    RelayTo,
    SendTo,
)
from simulator.media.auth import Authenticator, ClientCredentials
from simulator.media.client import TCP, UDP, ClientConfig, TurnClient
from simulator.media.config import TurnConfig
from simulator.media.dialect import RFC, Dialect
from simulator.media.errors import (
    FramingError,
    LocalProtocolError,
    MediaError,
    NotStunError,
    RemoteProtocolError,
    RequestRefused,
)
from simulator.media.msturn import (
    PSEUDO_TLS_CLIENT_LENGTH,
    PSEUDO_TLS_PREFIX,
    SET_ACTIVE_DESTINATION,
    is_pseudo_tls,
)
from simulator.media.stun import Message, MessageClass, Method
from simulator.media.tracing import MediaCounter, method_name
from simulator.media.turn import TurnServer

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
"""Seconds an RFC 6062 Connect may take to reach the peer (then 447)."""
BATCH = 16
"""Datagrams read from one UDP socket per readiness event. Small: each one read is relayed at
once, so a large batch sends a burst at one client, whose receive buffer (a few hundred small
datagrams by default) then overflows while it is descheduled; bench/turn_bench.py saw
thousands of drops at the clients' sockets with 256 and none to a few hundred with 16."""
"""Datagrams read per readiness event of a UDP socket."""
UDP_BUFFER = 4 * 1024 * 1024
"""Socket buffers of UDP listeners and relays: a burst of media must not overflow the kernel's
default (about 200 KiB, some 270 small datagrams), which is what lost packets under load."""
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)


def _pseudo_tls_pending(first: bytes) -> bool:
    """A TLS-looking start that may still turn out to be the pseudo-TLS ClientHello."""
    if not first or first[0] != 0x16 or len(first) >= PSEUDO_TLS_CLIENT_LENGTH:
        return False
    return PSEUDO_TLS_PREFIX.startswith(first[:5])


def _grow_buffers(sock: socket.socket) -> None:
    """Ask for :data:`UDP_BUFFER`; as root, past ``net.core.rmem_max`` (FORCE variants)."""
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, UDP_BUFFER)
        except OSError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, plain, UDP_BUFFER)
            except OSError as exc:
                log.debug("cannot grow a UDP socket buffer: %s", exc)


AV_EDGE_TESTS = "tests/integration/test_av_edge.py"


@dataclass(frozen=True)
class TurnListenerLimits(ConnectionLimits):
    """Limits of the A/V Edge's client TCP/TLS listeners (``[services.av-edge.listener_limits]``;
    docs/limits.md)."""

    max_connections: int = limit(
        4096,
        "client connections, total (those still to send a first byte included)",
        f"{AV_EDGE_TESTS}::test_connections_are_capped_in_total_and_per_source",
    )
    max_per_source: int = limit(
        256,
        "client connections per source address",
        f"{AV_EDGE_TESTS}::test_connections_are_capped_in_total_and_per_source",
    )
    first_byte_timeout: float = limit(
        10.0,
        "TLS/TCP 443: first byte (TLS or TURN), s",
        f"{AV_EDGE_TESTS}::test_a_silent_or_stalled_connection_to_443_is_closed",
    )
    handshake_timeout: float = limit(
        10.0,
        "TLS handshake, s",
        f"{AV_EDGE_TESTS}::test_a_silent_or_stalled_connection_to_443_is_closed",
    )
    idle_timeout: float = limit(
        60.0,
        "a connection holding no allocation (whatever it sends), s",
        f"{AV_EDGE_TESTS}::test_traffic_that_keeps_no_allocation_does_not_reset_the_idle_timer",
    )
    max_write_buffer_bytes: int = limit(
        1024 * 1024,
        "relayed media queued for a client that does not read (then dropped, counted)",
        f"{AV_EDGE_TESTS}::test_media_to_a_client_that_does_not_read_is_dropped",
    )
    max_peer_buffer_bytes: int = limit(
        256 * 1024,
        "RFC 6062: bytes a peer sends before the ConnectionBind (then it is not read)",
        f"{AV_EDGE_TESTS}::test_a_peer_is_not_read_past_its_buffer_before_connection_bind",
    )


class _CoreTimer:
    """The one timer of a sans-IO core, re-armed at its ``get_timer()`` after every input. The
    cores' clock is ``time.time()`` (time-limited usernames carry an epoch expiry)."""

    def __init__(self, fire: Callable[[float], None]) -> None:
        self._fire = fire
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None

    def rearm(self, loop: asyncio.AbstractEventLoop, at: float | None) -> None:
        if at == self._at:
            return
        self.cancel()
        self._at = at
        if at is not None:
            self._handle = loop.call_later(max(0.0, at - time.time()), self._run)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._at = None

    def _run(self) -> None:
        self._handle = None
        self._at = None
        self._fire(time.time())


@dataclass(frozen=True)
class ListenerSpec:
    """A client-facing listener to open."""

    transport: str
    """``udp``, ``tcp`` or ``tls``."""
    address: str
    port: int
    """0 picks a free port."""
    ssl: ssl.SSLContext | None = None
    """Server context for ``tls``."""


class _UdpSocket:
    """A non-blocking UDP socket read in batches straight from the selector.

    asyncio's datagram transport hands over one datagram per event-loop iteration; relaying
    media that way lost packets to full kernel buffers under bursts. Here one readiness event
    drains up to :data:`BATCH` datagrams, and sends go straight to ``sendto`` (a full send
    buffer drops the datagram, which is what UDP does anyway; it is counted).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        on_datagram: Callable[[bytes, Address, float], None],
        on_drop: Callable[[], None],
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.on_datagram = on_datagram
        self.on_drop = on_drop
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._readable)
        self.closed = False

    def _readable(self) -> None:
        recvfrom = self.sock.recvfrom
        now = time.time()
        for _ in range(BATCH):
            try:
                data, addr = recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP errors surface here on Linux; keep reading
                continue
            self.on_datagram(data, (addr[0], addr[1]), now)

    def sendto(self, data: bytes, addr: Address) -> None:
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.on_drop()
        except OSError as exc:
            log.debug("sendto %s: %s", addr, exc)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()


class _Spliceable(asyncio.Protocol):
    """A TCP connection that RFC 6062 may join to another: the other one's reading follows this
    one's writing (TCP flow control end to end)."""

    transport: asyncio.Transport | None

    def joined(self) -> asyncio.Transport | None:
        """The transport of the connection joined to this one."""
        raise NotImplementedError

    def pause_writing(self) -> None:
        if (other := self.joined()) is not None:
            other.pause_reading()

    def resume_writing(self) -> None:
        if (other := self.joined()) is not None:
            other.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _StreamClient(_Spliceable):
    """A TCP/TLS client connection: control connection, or RFC 6062 data connection once joined."""

    def __init__(
        self, server: AsyncTurnServer, lid: ListenerId, admitted: str | None = None
    ) -> None:
        self.server = server
        self.lid = lid
        self.framer = server.core.dialect.framer()
        self.transport: asyncio.Transport | None = None
        self.addr: Address = ("", 0)
        self.peer: _PeerConnection | None = None
        self.admitted = admitted
        """The source IP counted against the connection limits (None: not admitted)."""
        self.made = False
        self.idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made = True
        self.transport = transport  # type: ignore[assignment]
        peername = transport.get_extra_info("peername")
        self.addr = (peername[0], peername[1])
        if self.admitted is None:
            if not self.server._admit(self.addr[0]):
                transport.close()
                return
            self.admitted = self.addr[0]
        self.server._streams[(self.lid, self.addr)] = self
        self._arm_idle()

    def _arm_idle(self) -> None:
        self.idle_timer = asyncio.get_running_loop().call_later(
            self.server.limits.idle_timeout, self._idle_check
        )

    def _idle_check(self) -> None:
        """Close the connection unless it holds an allocation or carries RFC 6062 data: bytes
        it sent do not count (a partial message, Bindings, 401s would keep it forever)."""
        self.idle_timer = None
        if self.peer is not None or self.server.core.holds(self.lid, self.addr):
            self._arm_idle()
        else:
            self.close()

    def data_received(self, data: bytes) -> None:
        if self.peer is not None:
            self.peer.write(data)
            return
        self.framer.feed(data)
        core = self.server.core
        while self.peer is None:
            try:
                frame = self.framer.next_frame()
            except FramingError:
                core.stats["dropped.stream framing"] += 1
                core.stats["dropped"] += 1
                self.close()
                return
            if frame is None:
                return
            if self.server._tracing():
                self.server._trace_in(frame, self.addr, self.lid)
            self.server._execute(core.receive(frame, self.addr, self.lid, time.time()))
        if self.peer is not None and self.framer.buffered:
            self.peer.write(self.framer.take_buffer())

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        limit = self.server.limits.max_write_buffer_bytes
        if self.peer is None and transport.get_write_buffer_size() > limit:
            # a client that does not read its relayed media: drop, as a UDP relay would
            self.server._count_send_drop()
            return
        transport.write(data)

    def joined(self) -> asyncio.Transport | None:
        return self.peer.transport if self.peer is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        if self.admitted is not None:
            server._release(self.admitted)
            self.admitted = None
        if server._streams.get((self.lid, self.addr)) is self:
            del server._streams[(self.lid, self.addr)]
        if self.peer is not None:
            peer, self.peer = self.peer, None
            peer.client = None
            peer.close()
        server._execute(server.core.connection_lost(self.lid, self.addr, time.time()))


class _PeerConnection(_Spliceable):
    """A TCP connection between the relay and a peer (RFC 6062)."""

    def __init__(self, server: AsyncTurnServer, relay: int, connection: int | None) -> None:
        self.server = server
        self.relay = relay
        self.connection = connection
        self.transport: asyncio.Transport | None = None
        self.client: _StreamClient | None = None
        self.pending = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.connection is None:  # a peer dialled the relay
            peername = transport.get_extra_info("peername")
            cid, actions = self.server.core.peer_connection_arrived(
                self.relay, (peername[0], peername[1]), time.time()
            )
            if cid is None:
                transport.close()
                return
            self.connection = cid
            self.server._peers[cid] = self
            self.server._execute(actions)

    def data_received(self, data: bytes) -> None:
        if self.client is not None:
            self.client.write(data)
            return
        self.pending += data
        limit = self.server.limits.max_peer_buffer_bytes
        if len(self.pending) > limit and self.transport is not None:
            self.transport.pause_reading()

    def join(self, client: _StreamClient) -> None:
        self.client = client
        client.peer = self
        if self.pending:
            client.write(bytes(self.pending))
            self.pending.clear()
        if self.transport is not None:
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def joined(self) -> asyncio.Transport | None:
        return self.client.transport if self.client is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        if self.connection is not None:
            server._peers.pop(self.connection, None)
            server._execute(server.core.peer_connection_lost(self.connection, time.time()))
        if self.client is not None:
            client, self.client = self.client, None
            client.peer = None
            client.close()


@dataclass
class _Relay:
    udp: _UdpSocket | None
    tcp: asyncio.Server | None


class AsyncTurnServer:
    """A TURN server on real sockets. ``async with AsyncTurnServer(config, specs) as server``.

    ``dialect`` and ``authenticator`` go to the core (the RFC dialect and long-term credentials
    by default)."""

    def __init__(
        self,
        config: TurnConfig,
        listeners: list[ListenerSpec],
        *,
        limits: TurnListenerLimits | None = None,
        dialect: Dialect = RFC,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.core = TurnServer(config, dialect=dialect, authenticator=authenticator)
        self.limits = limits or TurnListenerLimits()
        self.gate = ConnectionGate(self.limits)
        """Client TCP/TLS connections, those not yet past their first byte included."""
        self.specs = listeners
        self.listeners: list[ListenerId] = []
        """The listeners actually bound (ports resolved)."""
        self._udp: dict[ListenerId, _UdpSocket] = {}
        self._servers: list[asyncio.Server] = []
        self._streams: dict[tuple[ListenerId, Address], _StreamClient] = {}
        self._relays: dict[int, _Relay] = {}
        self._relay_udp: dict[int, _UdpSocket] = {}
        self._peers: dict[int, _PeerConnection] = {}
        self._tasks = aioloop.Tasks()
        self._timer = _CoreTimer(self._on_timer)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listen_socks: list[socket.socket] = []
        self._sniffing: dict[socket.socket, tuple[asyncio.TimerHandle, str]] = {}
        self._trace_file = "EDGESIM_TRACE_FILE" in os.environ
        """Set when the server starts in a process that traces to a file (netns, compose)."""
        self._relay_names: dict[int, str] = {}
        """``ip:port`` of each open relay, for the trace."""
        self._media_out = MediaCounter()
        self._media_in = MediaCounter()

    async def __aenter__(self) -> AsyncTurnServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def listener(self, transport: str) -> ListenerId:
        """The first bound listener of ``transport``."""
        return next(lid for lid in self.listeners if lid.transport == transport)

    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        try:
            for spec in self.specs:
                if spec.transport == "udp":
                    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    try:
                        sock.bind((spec.address, spec.port))
                    except OSError:
                        sock.close()
                        raise
                    _grow_buffers(sock)
                    lid = ListenerId("udp", spec.address, sock.getsockname()[1])
                    self._udp[lid] = _UdpSocket(
                        loop, sock, self._listener_datagram(lid), self._count_send_drop
                    )
                    self.listeners.append(lid)
                elif spec.transport == "tls":
                    self._listen_tls_or_tcp(loop, spec)
                else:
                    holder: list[ListenerId] = []
                    server = await loop.create_server(
                        _stream_factory(self, holder),
                        spec.address,
                        spec.port,
                        ssl=spec.ssl if spec.transport == "tls" else None,
                        reuse_address=True,
                    )
                    port = server.sockets[0].getsockname()[1]
                    lid = ListenerId(spec.transport, spec.address, port)
                    holder.append(lid)
                    self._servers.append(server)
                    self.listeners.append(lid)
        except BaseException:
            await self.stop()
            raise

    def _listen_tls_or_tcp(self, loop: asyncio.AbstractEventLoop, spec: ListenerSpec) -> None:
        """A ``tls`` listener also takes plain TURN over TCP: the first byte decides.

        A TLS ClientHello starts with 0x16; STUN and ChannelData start with 0x00-0x7F. The byte
        is peeked (MSG_PEEK) before asyncio adopts the socket, with or without TLS, so clients
        that fall back to TCP 443 without TLS are served on the same port, as on a real Edge.
        With the [MS-TURN] dialect the first 50 bytes are peeked: the pseudo-TLS ClientHello
        ([MS-TURN] section 2.1.1) looks like TLS but is served in the clear, and an [MS-TURN]
        framing header starts with 0x02 (section 2.1.4).
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((spec.address, spec.port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        lid = ListenerId("tls", spec.address, sock.getsockname()[1])
        self._listen_socks.append(sock)
        loop.add_reader(sock.fileno(), self._accept, loop, lid, sock, spec.ssl)
        self.listeners.append(lid)

    def _accept(
        self,
        loop: asyncio.AbstractEventLoop,
        lid: ListenerId,
        sock: socket.socket,
        tls: ssl.SSLContext | None,
    ) -> None:
        for _ in range(64):
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("accept on %s: %s", lid, exc)
                return
            if not self._admit(addr[0]):
                conn.close()
                continue
            conn.setblocking(False)
            timer = loop.call_later(
                self.limits.first_byte_timeout, self._forget_sniffing, loop, conn
            )
            self._sniffing[conn] = (timer, addr[0])
            loop.add_reader(conn.fileno(), self._sniff, loop, lid, conn, tls)

    def _admit(self, ip: str) -> bool:
        """Count a new client connection from ``ip``; False (counted as dropped) past the total
        or the per-source limit."""
        why = self.gate.admit(ip)
        if why is not None:
            log.debug("connection from %s closed: %s", ip, why)
            self._count_drop("connection limit")
        return why is None

    def _release(self, ip: str) -> None:
        self.gate.release(ip)

    def _forget_sniffing(self, loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
        entry = self._sniffing.pop(conn, None)
        if entry is not None:
            entry[0].cancel()
            self._release(entry[1])
        loop.remove_reader(conn.fileno())
        conn.close()

    def _sniff(
        self,
        loop: asyncio.AbstractEventLoop,
        lid: ListenerId,
        conn: socket.socket,
        tls: ssl.SSLContext | None,
    ) -> None:
        try:
            first = conn.recv(PSEUDO_TLS_CLIENT_LENGTH, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            first = b""
        if self.core.dialect is not RFC and _pseudo_tls_pending(first):
            return  # more of a TLS-looking record is on its way: wait (the timer still runs)
        entry = self._sniffing.pop(conn, None)
        if entry is None:
            return
        timer, ip = entry
        timer.cancel()
        loop.remove_reader(conn.fileno())
        if not first:
            self._release(ip)
            conn.close()
            return
        use_tls = tls if first[0] == 0x16 and not is_pseudo_tls(first) else None
        self._tasks.spawn(self._adopt(loop, _StreamClient(self, lid, admitted=ip), conn, use_tls))

    async def _adopt(
        self,
        loop: asyncio.AbstractEventLoop,
        client: _StreamClient,
        conn: socket.socket,
        tls: ssl.SSLContext | None,
    ) -> None:
        try:
            if tls is None:
                await loop.connect_accepted_socket(lambda: client, conn)
            else:
                await loop.connect_accepted_socket(
                    lambda: client,
                    conn,
                    ssl=tls,
                    ssl_handshake_timeout=self.limits.handshake_timeout,
                )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            log.debug("TLS handshake on %s failed: %s", client.lid, exc)
            conn.close()
            if not client.made and client.admitted is not None:
                self._release(client.admitted)

    async def stop(self) -> None:
        self._timer.cancel()
        loop = self._loop
        for sock in self._listen_socks:
            if loop is not None:
                loop.remove_reader(sock.fileno())
            sock.close()
        self._listen_socks.clear()
        for conn in list(self._sniffing):
            if loop is not None:
                self._forget_sniffing(loop, conn)
        self._tasks.cancel()
        for transport in self._udp.values():
            transport.close()
        self._udp.clear()
        for server in self._servers:
            server.close()
        for stream in list(self._streams.values()):
            stream.close()
        for peer in list(self._peers.values()):
            peer.close()
        for relay in list(self._relays):
            self._close_relay(relay)
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 2.0)
            except TimeoutError:
                log.debug("a TURN listener did not close within 2 s")
        self._servers.clear()

    # -------------------------------------------------------------- actions
    def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            kind = type(action)
            if kind is SendTo:
                assert isinstance(action, SendTo)
                if self._tracing():
                    self._trace_out(action)
                if action.listener.transport == "udp":
                    udp = self._udp.get(action.listener)
                    if udp is not None:
                        udp.sendto(action.data, action.client)
                else:
                    stream = self._streams.get((action.listener, action.client))
                    if stream is not None:
                        stream.write(action.data)
            elif kind is RelayTo:
                assert isinstance(action, RelayTo)
                if self._tracing():
                    self._trace_relayed(action.relay, action.peer, len(action.data))
                relay = self._relay_udp.get(action.relay)
                if relay is not None:
                    relay.sendto(action.data, action.peer)
            elif isinstance(action, OpenRelay):
                self._open_relay(action)
            elif isinstance(action, CloseRelay):
                self._close_relay(action.relay)
            elif isinstance(action, ConnectPeer):
                self._tasks.spawn(self._connect_peer(action))
            elif isinstance(action, ClosePeer):
                peer = self._peers.pop(action.connection, None)
                if peer is not None:
                    peer.close()
            elif isinstance(action, JoinConnection):
                peer = self._peers.get(action.connection)
                client = self._streams.get((action.listener, action.client))
                if peer is not None and client is not None:
                    peer.join(client)
            else:
                assert isinstance(action, CloseClient)
                stream = self._streams.get((action.listener, action.client))
                if stream is not None:
                    stream.close()
        self._rearm()
        core = self.core
        while (event := core.next_event()) is not None:
            log.debug("%s", event)

    def _rearm(self) -> None:
        if self._loop is not None:
            self._timer.rearm(self._loop, self.core.get_timer())

    def _on_timer(self, now: float) -> None:
        self._execute(self.core.handle_timer(now))

    # -------------------------------------------------------------- trace hooks
    def _tracing(self) -> bool:
        return self._trace_file or trace.recorders_attached()

    # Called only while someone records (trace.active()): STUN/TURN transactions one event each,
    # media one event when a relay first carries it to or from a peer and one with the totals
    # when the relay closes.
    def _trace_in(self, data: bytes, client: Address, lid: ListenerId) -> None:
        if data and data[0] < 0x40:
            tracing.record_stun(data, client, (lid.address, lid.port), "received")

    def _trace_out(self, action: SendTo) -> None:
        data = action.data
        if not data or data[0] >= 0x40:
            return  # ChannelData: media, counted where it is relayed
        header = stun.decode_header(data)
        if header is not None and header.method == Method.DATA:
            return  # a Data indication: media too
        lid = action.listener
        tracing.record_stun(data, (lid.address, lid.port), action.client, "sent")

    def _trace_relayed(self, relay: int, peer: Address, size: int) -> None:
        name = self._relay_names.get(relay, f"relay {relay}")
        self._media_out.count(name, tracing.addr(peer), size, event="sent")

    def _trace_from_peer(self, relay: int, peer: Address, size: int) -> None:
        name = self._relay_names.get(relay, f"relay {relay}")
        self._media_in.count(tracing.addr(peer), name, size, event="received")

    def _open_relay(self, action: OpenRelay) -> None:
        loop = self._loop
        assert loop is not None
        self._relay_names[action.relay] = f"{action.address}:{action.port}"
        try:
            if action.transport == "udp":
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                _grow_buffers(sock)
                try:
                    sock.bind((action.address, action.port))
                except OSError:
                    sock.close()
                    raise
                relay = action.relay
                udp = _UdpSocket(loop, sock, self._relay_datagram(relay), self._count_send_drop)
                self._relays[relay] = _Relay(udp, None)
                self._relay_udp[relay] = udp
                self._execute(self.core.relay_opened(relay, time.time()))
            else:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                    sock.bind((action.address, action.port))
                    sock.listen(16)
                except OSError:
                    sock.close()
                    raise
                sock.setblocking(False)
                self._tasks.spawn(self._finish_tcp_relay(action.relay, sock))
        except OSError as exc:
            log.debug("relay port %d: %s", action.port, exc)
            self._execute(self.core.relay_failed(action.relay, time.time()))

    def _listener_datagram(self, lid: ListenerId) -> Callable[[bytes, Address, float], None]:
        receive = self.core.receive
        relays = self._relay_udp

        attached = trace.recorders_attached
        to_file = self._trace_file

        def on_datagram(data: bytes, addr: Address, now: float) -> None:
            tracing_on = to_file or attached()
            if tracing_on:
                self._trace_in(data, addr, lid)
            actions = receive(data, addr, lid, now)
            if len(actions) == 1 and type(actions[0]) is RelayTo:  # the media fast path
                action = actions[0]
                relay = relays.get(action.relay)
                if relay is not None:
                    if tracing_on:
                        self._trace_relayed(action.relay, action.peer, len(action.data))
                    relay.sendto(action.data, action.peer)
            else:
                self._execute(actions)

        return on_datagram

    def _relay_datagram(self, relay: int) -> Callable[[bytes, Address, float], None]:
        relay_received = self.core.relay_received
        listeners = self._udp

        attached = trace.recorders_attached
        to_file = self._trace_file

        def on_datagram(data: bytes, addr: Address, now: float) -> None:
            if to_file or attached():
                self._trace_from_peer(relay, addr, len(data))
            actions = relay_received(relay, data, addr, now)
            if len(actions) == 1 and type(actions[0]) is SendTo:
                action = actions[0]
                udp = listeners.get(action.listener)
                if udp is not None:
                    udp.sendto(action.data, action.client)
                    return
            self._execute(actions)

        return on_datagram

    def _count_send_drop(self) -> None:
        self._count_drop("send buffer full")

    def _count_drop(self, why: str) -> None:
        self.core.stats[f"dropped.{why}"] += 1
        self.core.stats["dropped"] += 1

    async def _finish_tcp_relay(self, relay: int, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(lambda: _PeerConnection(self, relay, None), sock=sock)
        except OSError as exc:
            log.debug("TCP relay %d: %s", relay, exc)
            sock.close()
            self._execute(self.core.relay_failed(relay, time.time()))
            return
        if self.core.allocation(relay) is None:  # deleted while the socket was being set up
            server.close()
            return
        self._relays[relay] = _Relay(None, server)
        self._execute(self.core.relay_opened(relay, time.time()))

    def _close_relay(self, relay: int) -> None:
        name = self._relay_names.pop(relay, None)
        if name is not None and (self._media_out.flows or self._media_in.flows):
            self._media_out.finish(src=name, event="sent")
            self._media_in.finish(dst=name, event="received")
        entry = self._relays.pop(relay, None)
        self._relay_udp.pop(relay, None)
        if entry is None:
            return
        if entry.udp is not None:
            entry.udp.close()
        if entry.tcp is not None:
            entry.tcp.close()

    async def _connect_peer(self, action: ConnectPeer) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(action.source)
            sock.setblocking(False)
            await asyncio.wait_for(loop.sock_connect(sock, action.peer), CONNECT_TIMEOUT)
            protocol = _PeerConnection(self, action.relay, action.connection)
            await loop.create_connection(lambda: protocol, sock=sock)
        except (OSError, TimeoutError) as exc:
            log.debug("Connect to %s from %s failed: %s", action.peer, action.source, exc)
            sock.close()
            self._execute(self.core.peer_connect_failed(action.connection, time.time()))
            return
        self._peers[action.connection] = protocol
        self._execute(self.core.peer_connected(action.connection, time.time()))


def _stream_factory(
    server: AsyncTurnServer, holder: list[ListenerId]
) -> Callable[[], _StreamClient]:
    return lambda: _StreamClient(server, holder[0])


# ------------------------------------------------------------------ the TURN client


class _ClientProtocol(asyncio.Protocol, asyncio.DatagramProtocol):
    """Feeds one :class:`~simulator.media.client.TurnClient` core from a socket."""

    def __init__(self, client: AsyncTurnClient) -> None:
        self.client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client._transport = transport

    def data_received(self, data: bytes) -> None:
        client = self.client
        client.core.receive_data(data, time.time())
        client._process()

    def eof_received(self) -> bool | None:
        client = self.client
        client.core.receive_data(b"", time.time())
        client._process()
        return None

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        client = self.client  # the socket is connected: only the server's datagrams come
        client.core.receive_datagram(data, time.time())
        client._process()

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable on the connected UDP socket: the server may come up later
        self.client._fail(exc, final=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._lost(exc)


class AsyncTurnClient:
    """A STUN/TURN client on one UDP socket or TCP/TLS connection: the asyncio adapter of
    :class:`simulator.media.client.TurnClient`, used by probes, scenarios, the lab's checks,
    benchmarks and tests.

    ``async with await AsyncTurnClient.open(server, "udp", credentials=...) as client``; then
    ``await client.allocate()``, ``create_permission``, ``channel_bind``, ``send_channel_data``,
    ``await client.receive()`` ... Refusals raise :class:`~simulator.media.errors.RequestRefused`
    (with the STUN error code), no answer :class:`TimeoutError`, an answer that is not STUN
    :class:`~simulator.media.errors.NotStunError`, and socket errors :class:`OSError`.
    With ``record``, every transaction is recorded in the trace (:mod:`simulator.trace`), a
    request without answer as ``dropped``.
    """

    def __init__(self, core: TurnClient, server: Address, transport: str, record: bool) -> None:
        self.core = core
        self.server = server
        self.transport_name = transport
        """``udp``, ``tcp`` or ``tls``."""
        self.record = record
        self._tls: tuple[ssl.SSLContext, str | None] | None = None
        """The TLS context and server name, once :meth:`start_tls` ran (for data connections)."""
        self._transport: asyncio.BaseTransport | None = None
        self._loop = asyncio.get_running_loop()
        self._waiters: dict[int, asyncio.Future[tuple[Message, bool]]] = {}
        self._timer = _CoreTimer(self._on_timer)
        self._failure: BaseException | None = None
        self._data: asyncio.Queue[ev.PeerDataReceived] = asyncio.Queue()
        self._attempts: asyncio.Queue[ev.ConnectionAttemptReceived] = asyncio.Queue()
        self._raw = bytearray()
        self._raw_event = asyncio.Event()
        self._closed = False

    # -------------------------------------------------------------- opening
    @classmethod
    async def open(
        cls,
        server: Address,
        transport: str = "udp",
        *,
        credentials: ClientCredentials | None = None,
        sock: socket.socket | None = None,
        local_address: str | None = None,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        config: ClientConfig | None = None,
        dialect: Dialect = RFC,
        record: bool = False,
        pseudo_tls: bool = False,
    ) -> AsyncTurnClient:
        """Open a client to ``server`` over ``transport`` (``udp``, ``tcp``, ``tls``).

        With the [MS-TURN] dialect and ``pseudo_tls``, a ``tcp`` connection opens with the
        pseudo-TLS exchange ([MS-TURN] section 2.1.1), as a Lync client does on TCP 443.

        ``sock`` is a socket to use (UDP: bound; TCP: connected), for example one a lab host's
        namespace made; else one is bound to ``local_address`` (port 0). The UDP socket is
        connected to the server, so an ICMP port unreachable fails the pending request with
        ConnectionRefusedError. ``tls`` wraps a TCP connection (``transport`` ``tls``).
        """
        if transport not in ("udp", "tcp", "tls"):
            raise ValueError(f"transport must be udp, tcp or tls, not {transport!r}")
        stream = transport != "udp"
        if config is None:
            config = ClientConfig(stream=stream)
        elif config.stream != stream:
            raise ValueError("config.stream does not match the transport")
        core = TurnClient(config, credentials, dialect=dialect, transaction_ids=_random_ids)
        client = cls(core, server, transport, record)
        loop = client._loop
        protocol = _ClientProtocol(client)
        if not stream:
            if sock is None:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    sock.bind((local_address or "0.0.0.0", 0))
                except OSError:
                    sock.close()
                    raise
            sock.setblocking(False)
            try:
                sock.connect(server)
            except OSError:
                sock.close()
                raise
            await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
            return client
        if sock is not None:
            await loop.create_connection(lambda: protocol, sock=sock)
        else:
            local = (local_address, 0) if local_address else None
            await loop.create_connection(lambda: protocol, server[0], server[1], local_addr=local)
        if pseudo_tls:
            core.start_pseudo_tls(os.urandom(32))
            client._flush()
        if transport == "tls":
            if tls is None:
                await client.close()
                raise ValueError("transport tls needs an SSL context")
            try:
                await client.start_tls(tls, server_hostname)
            except BaseException:
                await client.close()
                raise
        return client

    async def start_tls(self, tls: ssl.SSLContext, server_hostname: str | None = None) -> None:
        """Run the TLS handshake on the open TCP connection (TURN over TLS)."""
        transport = self._transport
        # by name, not isinstance: uvloop's transports do not subclass asyncio.Transport
        if transport is None or self.transport_name == "udp":
            raise LocalProtocolError("start_tls needs a TCP connection")
        protocol = transport.get_protocol()
        new = await self._loop.start_tls(
            cast(asyncio.WriteTransport, transport),
            protocol,
            tls,
            server_hostname=server_hostname or self.server[0],
        )
        if new is None:
            raise ConnectionResetError("the connection closed during the TLS handshake")
        self._transport = new
        self._tls = (tls, server_hostname)
        self.transport_name = "tls"

    async def __aenter__(self) -> AsyncTurnClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -------------------------------------------------------------- facts
    @property
    def local(self) -> Address:
        """Our transport address (the socket's)."""
        name = self.get_extra_info("sockname")
        return (name[0], name[1]) if name else ("", 0)

    @property
    def relayed(self) -> Address | None:
        return self.core.relayed

    @property
    def mapped(self) -> Address | None:
        return self.core.mapped

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The transport's extra info (``sockname``, ``ssl_object`` ...)."""
        if self._transport is None:
            return default
        return self._transport.get_extra_info(name, default)

    # -------------------------------------------------------------- requests
    async def request(self, method: int, attributes: list[tuple[str, Any]]) -> Message:
        """Send a request (with our credentials, answering one challenge); the success answer."""
        if self._failure is not None:
            raise self._failure
        handle = self.core.request(method, attributes, time.time())
        waiter: asyncio.Future[tuple[Message, bool]] = self._loop.create_future()
        self._waiters[handle] = waiter
        self._flush()
        try:
            answer, signed = await waiter
        finally:
            self._waiters.pop(handle, None)
        if answer.message_class == MessageClass.ERROR:
            code, reason = answer.get("ERROR-CODE", (0, ""))
            raise RequestRefused(
                method_name(method),
                int(code),
                str(reason),
                authenticated=signed,
                realm=answer.get("REALM"),
            )
        return answer

    async def binding(self) -> Address:
        """STUN Binding: our address as the server sees it."""
        answer = await self.request(Method.BINDING, [])
        if self.core.mapped is None:
            raise RemoteProtocolError("Binding success without a mapped address")
        del answer
        return self.core.mapped

    async def allocate(self, transport: str = "udp", *, lifetime: int | None = None) -> Address:
        """Allocate a relay (``tcp``: RFC 6062); the relayed transport address."""
        attrs: list[tuple[str, Any]] = [("REQUESTED-TRANSPORT", UDP if transport == "udp" else TCP)]
        if lifetime is not None:
            attrs.append(("LIFETIME", lifetime))
        await self.request(Method.ALLOCATE, attrs)
        if self.core.relayed is None:
            raise RemoteProtocolError("Allocate success without XOR-RELAYED-ADDRESS")
        return self.core.relayed

    async def create_permission(self, *peers: Address) -> None:
        """CreatePermission; in [MS-TURN] nothing to ask: a Send request installs it."""
        if self.core.ms:
            return
        await self.request(Method.CREATE_PERMISSION, [("XOR-PEER-ADDRESS", p) for p in peers])

    async def channel_bind(self, channel: int, peer: Address) -> None:
        await self.request(
            Method.CHANNEL_BIND, [("CHANNEL-NUMBER", channel), ("XOR-PEER-ADDRESS", peer)]
        )

    async def set_active_destination(self, peer: Address) -> None:
        """[MS-TURN] Set Active Destination: then :meth:`send_raw` and received data go
        unencapsulated to and from ``peer``."""
        await self.request(SET_ACTIVE_DESTINATION, [("DESTINATION-ADDRESS", peer)])

    async def refresh(self, lifetime: int | None = None) -> int:
        """Refresh; the lifetime granted (0 deletes the allocation)."""
        answer = await self.request(
            Method.REFRESH, [] if lifetime is None else [("LIFETIME", lifetime)]
        )
        return int(answer.get("LIFETIME", 0))

    async def release(self, timeout: float = 1.0) -> None:
        """Delete the allocation (Refresh with LIFETIME 0), best effort: errors are ignored."""
        if self.core.relayed is None or self._failure is not None or self._closed:
            return
        with contextlib.suppress(MediaError, OSError, EOFError, TimeoutError):
            await asyncio.wait_for(self.refresh(0), timeout)

    async def connect(self, peer: Address) -> int:
        """RFC 6062 Connect: the relay dials ``peer``; the CONNECTION-ID."""
        answer = await self.request(Method.CONNECT, [("XOR-PEER-ADDRESS", peer)])
        connection = answer.get("CONNECTION-ID")
        if connection is None:
            raise RemoteProtocolError("Connect success without CONNECTION-ID")
        return int(connection)

    async def connection_bind(
        self, connection: int, *, sock: socket.socket | None = None
    ) -> AsyncTurnClient:
        """RFC 6062 ConnectionBind on a new connection to the server (``sock``, or one from our
        local address): the returned client carries the peer's raw bytes
        (:meth:`send_raw`, :meth:`receive_raw`)."""
        if not self.core.config.stream:
            raise LocalProtocolError("ConnectionBind needs a TCP or TLS control connection")
        data = await AsyncTurnClient.open(
            self.server,
            self.transport_name,
            credentials=self.core.credentials,
            sock=sock,
            local_address=None if sock is not None else self.local[0] or None,
            tls=self._tls[0] if self._tls else None,
            server_hostname=self._tls[1] if self._tls else None,
            config=self.core.config,
            dialect=self.core.dialect,
            record=self.record,
        )
        try:
            await data.request(Method.CONNECTION_BIND, [("CONNECTION-ID", connection)])
        except BaseException:
            await data.close()
            raise
        return data

    # -------------------------------------------------------------- data
    def send_channel_data(self, channel: int, data: bytes) -> None:
        self.core.send_channel_data(channel, data)
        self._flush()

    def send_indication(self, peer: Address, data: bytes) -> None:
        self.core.send_indication(peer, data)
        self._flush()

    def send_raw(self, data: bytes) -> None:
        self.core.send_raw(data)
        self._flush()

    async def receive(self, timeout: float) -> ev.PeerDataReceived | None:
        """The next data relayed from a peer (ChannelData or Data indication), None after
        ``timeout``."""
        try:
            return await asyncio.wait_for(self._data.get(), timeout)
        except TimeoutError:
            return None

    async def connection_attempt(self, timeout: float) -> ev.ConnectionAttemptReceived | None:
        """The next RFC 6062 ConnectionAttempt, None after ``timeout``."""
        try:
            return await asyncio.wait_for(self._attempts.get(), timeout)
        except TimeoutError:
            return None

    async def receive_raw(self, size: int, timeout: float) -> bytes:
        """``size`` raw bytes from the peer (RFC 6062 data connection); fewer if the connection
        ended, TimeoutError if they do not come in time."""
        async with asyncio.timeout(timeout):
            while len(self._raw) < size and not self._closed:
                self._raw_event.clear()
                await self._raw_event.wait()
        data = bytes(self._raw[:size])
        del self._raw[:size]
        return data

    async def close(self) -> None:
        self._closed = True
        self._timer.cancel()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.close()
        self._fail(ConnectionAbortedError("the client was closed"))

    # -------------------------------------------------------------- the adapter loop
    def _flush(self) -> None:
        transport = self._transport
        out = self.core.data_to_send()
        if out and transport is not None and not transport.is_closing():
            if self.core.config.stream:
                transport.write(b"".join(out))  # type: ignore[attr-defined]
            else:  # asyncio's datagram transport is not a DatagramTransport subclass
                for datagram in out:
                    transport.sendto(datagram)  # type: ignore[attr-defined]
        self._rearm()

    def _rearm(self) -> None:
        if not self._closed:
            self._timer.rearm(self._loop, self.core.get_timer())

    def _on_timer(self, now: float) -> None:
        self.core.handle_timer(now)
        self._process()

    def _process(self) -> None:
        core = self.core
        while (event := core.next_event()) is not None:
            if isinstance(event, ev.TransactionAnswered):
                if self.record:
                    self._trace(event.sent, event.answer, event.sent_at)
                if event.final:
                    waiter = self._waiters.get(event.request)
                    if waiter is not None and not waiter.done():
                        waiter.set_result((event.answer, event.signed))
            elif isinstance(event, ev.PeerDataReceived):
                self._data.put_nowait(event)
            elif isinstance(event, ev.RawDataReceived):
                self._raw += event.data
                self._raw_event.set()
            elif isinstance(event, ev.TransactionTimedOut):
                if self.record:
                    tracing.record_message(
                        event.sent, self.local, self.server, "dropped", at=event.sent_at
                    )
                waiter = self._waiters.get(event.request)
                if waiter is not None and not waiter.done():
                    waiter.set_exception(
                        TimeoutError(
                            f"{tracing.summary(event.sent)} to {self.server[0]}:{self.server[1]}"
                            f" got no answer within {core.config.timeout:g} s"
                        )
                    )
            elif isinstance(event, ev.ConnectionAttemptReceived):
                self._attempts.put_nowait(event)
            elif isinstance(event, ev.UnexpectedDataReceived):
                # on a stream the framing is lost for good; a stray datagram fails only the
                # requests waiting now
                stream = core.config.stream
                self._fail(NotStunError(event.reason, event.data), final=stream)
                if stream and self._transport is not None:
                    self._transport.close()
            else:
                assert isinstance(event, ev.ConnectionEnded)
                self._fail(EOFError("the server closed the connection"))
        self._flush()

    def _trace(self, sent: Message, answer: Message, sent_at: float) -> None:
        tracing.record_message(sent, self.local, self.server, "sent", at=sent_at)
        tracing.record_message(answer, self.server, self.local, "received")

    def _fail(self, exc: BaseException, *, final: bool = True) -> None:
        """Fail every pending request with ``exc``; with ``final`` the later ones too."""
        if final and self._failure is None:
            self._failure = exc
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(exc)
        self._raw_event.set()

    def _lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._timer.cancel()
        self._fail(exc or EOFError("the server closed the connection"))


def _random_ids() -> bytes:
    return os.urandom(12)
