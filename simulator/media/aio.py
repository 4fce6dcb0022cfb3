"""asyncio adapter of the TURN core: listeners, relay sockets, peer connections, one timer.

Every entry point feeds :class:`~simulator.media.turn.TurnServer` and carries out the actions it
returns (``_execute``), then re-arms the core's single timer. Time given to the core is
``time.time()`` (epoch seconds: time-limited usernames carry an epoch expiry).

Relay sockets: a UDP relay is a datagram socket bound to the A/V address and a port of the
range the core chose; a TCP relay (RFC 6062) is a listening socket with SO_REUSEPORT, and each
Connect binds a new socket to the same address and port (SO_REUSEPORT) *before* connecting, so
the outbound connection leaves from the relay range, as the seed row "A/V/RTP/TCP/50,000-59,999
from the Edge to clients" expects.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import struct
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from simulator import trace
from simulator.media import stun, tracing
from simulator.media.errors import FramingError, RemoteProtocolError
from simulator.media.framing import StreamFramer
from simulator.media.stun import Message, MessageClass, Method
from simulator.media.tracing import MediaCounter
from simulator.media.turn import (
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
    TurnConfig,
    TurnServer,
)

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
BATCH = 256
"""Datagrams read per readiness event of a UDP socket."""
UDP_BUFFER = 4 * 1024 * 1024
"""Socket buffers of UDP listeners and relays: a burst of media must not overflow the kernel's
default (about 200 KiB, some 270 small datagrams), which is what lost packets under load."""
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)


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


MAX_PEER_BUFFER = 256 * 1024
"""Bytes a peer connection buffers before its ConnectionBind, then it stops reading."""
MAX_STREAM_BUFFER = 1024 * 1024
"""Unsent bytes to a TCP/TLS client beyond which relayed media to it is dropped."""
MAX_STREAMS = 4096
"""Client TCP/TLS connections at once; more are closed on arrival (counted)."""
IDLE_TIMEOUT = 60.0
SNIFF_TIMEOUT = 10.0
"""Seconds a connection to a TLS-or-TCP listener may take to send its first byte."""
"""A client connection without an allocation that stays silent this long is closed."""


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


class _StreamClient(asyncio.Protocol):
    """A TCP/TLS client connection: control connection, or RFC 6062 data connection once joined."""

    def __init__(self, server: AsyncTurnServer, lid: ListenerId) -> None:
        self.server = server
        self.lid = lid
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.addr: Address = ("", 0)
        self.peer: _PeerConnection | None = None
        self.active = True
        self.idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peername = transport.get_extra_info("peername")
        self.addr = (peername[0], peername[1])
        if len(self.server._streams) >= MAX_STREAMS:
            self.server._count_send_drop()
            transport.close()
            return
        self.server._streams[(self.lid, self.addr)] = self
        self.idle_timer = asyncio.get_running_loop().call_later(
            self.server.idle_timeout, self._idle_check
        )

    def _idle_check(self) -> None:
        """Close a connection that sent nothing for IDLE_TIMEOUT and holds no allocation."""
        self.idle_timer = None
        holds = self.peer is not None or self.server.core.holds(self.lid, self.addr)
        if not self.active and not holds:
            self.close()
            return
        self.active = False
        self.idle_timer = asyncio.get_running_loop().call_later(
            self.server.idle_timeout, self._idle_check
        )

    def data_received(self, data: bytes) -> None:
        self.active = True
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
        if self.peer is None and transport.get_write_buffer_size() > MAX_STREAM_BUFFER:
            # a client that does not read its relayed media: drop, as a UDP relay would
            self.server._count_send_drop()
            return
        transport.write(data)

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        if server._streams.get((self.lid, self.addr)) is self:
            del server._streams[(self.lid, self.addr)]
        if self.peer is not None:
            peer, self.peer = self.peer, None
            peer.client = None
            peer.close()
        server._execute(server.core.connection_lost(self.lid, self.addr, time.time()))


class _PeerConnection(asyncio.Protocol):
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
        if len(self.pending) > MAX_PEER_BUFFER and self.transport is not None:
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

    def pause_writing(self) -> None:
        if self.client is not None and self.client.transport is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client is not None and self.client.transport is not None:
            self.client.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        if self.connection is not None:
            server._peers.pop(self.connection, None)
            server._execute(server.core.peer_connection_lost(self.connection, time.time()))
        if self.client is not None:
            client, self.client = self.client, None
            client.peer = None
            client.close()


class _Relay:
    def __init__(self, udp: _UdpSocket | None, tcp: asyncio.Server | None) -> None:
        self.udp = udp
        self.tcp = tcp


class AsyncTurnServer:
    """A TURN server on real sockets. ``async with AsyncTurnServer(config, specs) as server``."""

    def __init__(
        self,
        config: TurnConfig,
        listeners: list[ListenerSpec],
        *,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.core = TurnServer(config)
        self.idle_timeout = idle_timeout
        self.specs = listeners
        self.listeners: list[ListenerId] = []
        """The listeners actually bound (ports resolved)."""
        self._udp: dict[ListenerId, _UdpSocket] = {}
        self._servers: list[asyncio.Server] = []
        self._streams: dict[tuple[ListenerId, Address], _StreamClient] = {}
        self._relays: dict[int, _Relay] = {}
        self._relay_udp: dict[int, _UdpSocket] = {}
        self._peers: dict[int, _PeerConnection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listen_socks: list[socket.socket] = []
        self._sniffing: dict[socket.socket, asyncio.TimerHandle] = {}
        self._trace_file = "EDGESIM_TRACE_FILE" in os.environ
        """Set when the server starts in a process that traces to a file (netns, compose)."""
        self._relay_names: dict[int, str] = {}
        """``ip:port`` of each open relay, for the trace."""
        self._media_out = MediaCounter()
        self._media_in = MediaCounter()

    async def __aenter__(self) -> AsyncTurnServer:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
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
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("accept on %s: %s", lid, exc)
                return
            if len(self._sniffing) + len(self._streams) >= MAX_STREAMS:
                conn.close()
                self._count_send_drop()
                continue
            conn.setblocking(False)
            timer = loop.call_later(SNIFF_TIMEOUT, self._forget_sniffing, loop, conn)
            self._sniffing[conn] = timer
            loop.add_reader(conn.fileno(), self._sniff, loop, lid, conn, tls)

    def _forget_sniffing(self, loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
        timer = self._sniffing.pop(conn, None)
        if timer is not None:
            timer.cancel()
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
            first = conn.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            first = b""
        timer = self._sniffing.pop(conn, None)
        if timer is not None:
            timer.cancel()
        loop.remove_reader(conn.fileno())
        if not first:
            conn.close()
            return
        use_tls = tls if first[0] == 0x16 else None
        self._spawn(self._adopt(loop, lid, conn, use_tls))

    async def _adopt(
        self,
        loop: asyncio.AbstractEventLoop,
        lid: ListenerId,
        conn: socket.socket,
        tls: ssl.SSLContext | None,
    ) -> None:
        try:
            if tls is None:
                await loop.connect_accepted_socket(lambda: _StreamClient(self, lid), conn)
            else:
                await loop.connect_accepted_socket(
                    lambda: _StreamClient(self, lid), conn, ssl=tls, ssl_handshake_timeout=10.0
                )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            log.debug("TLS handshake on %s failed: %s", lid, exc)
            conn.close()

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = self._loop
        for sock in self._listen_socks:
            if loop is not None:
                loop.remove_reader(sock.fileno())
            sock.close()
        self._listen_socks.clear()
        for conn in list(self._sniffing):
            if loop is not None:
                self._forget_sniffing(loop, conn)
        for task in list(self._tasks):
            task.cancel()
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
                self._spawn(self._connect_peer(action))
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
        at = self.core.get_timer()
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None and self._loop is not None:
            self._timer = self._loop.call_later(max(0.0, at - time.time()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._execute(self.core.handle_timer(time.time()))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
                self._spawn(self._finish_tcp_relay(action.relay, sock))
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
        self.core.stats["dropped.send buffer full"] += 1
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


# ------------------------------------------------------------------ a probing TURN client


@dataclass(frozen=True)
class RelayProbe:
    """What :func:`probe_relay` found."""

    ok: bool
    """Bytes sent through the relay came back from the peer."""
    reason: str
    """``relayed round trip`` or why not (an error code, a timeout ...)."""
    relayed: Address | None = None
    """XOR-RELAYED-ADDRESS of the allocation."""
    mapped: Address | None = None
    """XOR-MAPPED-ADDRESS: the client as the server saw it."""
    error_code: int | None = None
    """The STUN error that stopped the probe, if one did."""


class _ClientChannel:
    """One client connection to a TURN server (UDP socket or TCP/TLS stream), request/answer."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.framer = StreamFramer()
        self.writer: asyncio.StreamWriter | None = None
        self.reader: asyncio.StreamReader | None = None
        self.udp: asyncio.DatagramTransport | None = None
        self.server: Address = ("", 0)
        self.task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, server: Address, transport: str, tls: ssl.SSLContext | None, hostname: str | None
    ) -> _ClientChannel:
        self = cls()
        self.server = server
        loop = asyncio.get_running_loop()
        if transport == "udp":
            queue = self.queue

            class _Proto(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                    queue.put_nowait(data)

            self.udp, _ = await loop.create_datagram_endpoint(_Proto, remote_addr=server)
        else:
            self.reader, self.writer = await asyncio.open_connection(
                server[0], server[1], ssl=tls, server_hostname=hostname if tls else None
            )
            self.task = asyncio.ensure_future(self._read())
        return self

    async def _read(self) -> None:
        assert self.reader is not None
        while data := await self.reader.read(65536):
            for frame in self.framer.frames(data):
                self.queue.put_nowait(frame)

    def send(self, data: bytes) -> None:
        if self.udp is not None:
            self.udp.sendto(data)
        elif self.writer is not None:
            self.writer.write(data)

    async def request(self, data: bytes, tid: bytes, timeout: float) -> Message:
        deadline = time.monotonic() + timeout
        tries = 0
        while True:
            if tries == 0 or self.udp is not None:
                self.send(data)  # UDP retransmits (RFC 8489 section 6.2.1, simplified)
            tries += 1
            wait = min(0.5 * tries, deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError
            try:
                frame = await asyncio.wait_for(self.queue.get(), wait)
            except TimeoutError:
                continue
            if frame[0] < 0x40:
                message = stun.parse(frame)
                if message.transaction_id == tid:
                    return message

    def local(self) -> Address | None:
        source = self.udp if self.udp is not None else self.writer
        name = source.get_extra_info("sockname") if source is not None else None
        return (name[0], name[1]) if name else None

    def close(self) -> None:
        if self.udp is not None:
            self.udp.close()
        if self.writer is not None:
            self.writer.close()
        if self.task is not None:
            self.task.cancel()


class _Auth:
    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password
        self.attrs: list[tuple[str, object]] = []
        self.key: bytes | None = None

    def learn(self, challenge: Message) -> bool:
        """Take REALM/NONCE from a 401/438; False if it carries none."""
        realm, nonce = challenge.get("REALM"), challenge.get("NONCE")
        if realm is None or nonce is None:
            return False
        self.key = stun.long_term_key(self.username, realm, self.password)
        self.attrs = [("USERNAME", self.username), ("REALM", realm), ("NONCE", nonce)]
        return True


async def _ask(
    channel: _ClientChannel,
    auth: _Auth,
    method: int,
    attrs: list[tuple[str, object]],
    timeout: float,
) -> Message:
    for _ in range(3):
        tid = os.urandom(12)
        message = Message(method, MessageClass.REQUEST, tid, [*attrs, *auth.attrs])
        reply = await channel.request(stun.encode(message, integrity_key=auth.key), tid, timeout)
        code = reply.get("ERROR-CODE", (0, ""))[0]
        if code in (401, 438) and (code == 438 or not auth.attrs) and auth.learn(reply):
            continue
        return reply
    return reply


async def probe_relay(
    server: Address,
    username: str,
    password: str,
    peer: Address,
    *,
    transport: str = "udp",
    relay_transport: str = "udp",
    tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    payload: bytes = b"edgesim relay probe",
    timeout: float = 5.0,
) -> RelayProbe:
    """Allocate on ``server``, send ``payload`` to an echoing ``peer`` through the relay, expect it
    back, release the allocation.

    ``transport`` is how the client reaches the server (``udp``, ``tcp``, ``tls``);
    ``relay_transport`` ``tcp`` makes an RFC 6062 TCP allocation and a Connect, so the relay dials
    the peer from its port range (the seed row "A/V/RTP/TCP/50,000-59,999").
    """
    auth = _Auth(username, password)
    try:
        channel = await asyncio.wait_for(
            _ClientChannel.open(server, transport, tls, server_hostname), timeout
        )
    except (OSError, TimeoutError) as exc:
        return RelayProbe(False, f"cannot reach the TURN server: {exc}")
    data_writer: asyncio.StreamWriter | None = None
    try:
        requested = 17 if relay_transport == "udp" else 6
        reply = await _ask(
            channel, auth, Method.ALLOCATE, [("REQUESTED-TRANSPORT", requested)], timeout
        )
        code = reply.get("ERROR-CODE", (None, ""))[0]
        if code is not None:
            return RelayProbe(False, f"Allocate failed: {code}", error_code=code)
        relayed = reply.get("XOR-RELAYED-ADDRESS")
        mapped = reply.get("XOR-MAPPED-ADDRESS")

        def failed(step: str, answer: Message) -> RelayProbe:
            error = answer.get("ERROR-CODE", (0, ""))[0]
            return RelayProbe(False, f"{step} failed: {error}", relayed, mapped, error)

        answer = await _ask(
            channel, auth, Method.CREATE_PERMISSION, [("XOR-PEER-ADDRESS", peer)], timeout
        )
        if answer.message_class != MessageClass.SUCCESS:
            return failed("CreatePermission", answer)
        if relay_transport == "udp":
            answer = await _ask(
                channel,
                auth,
                Method.CHANNEL_BIND,
                [("CHANNEL-NUMBER", 0x4000), ("XOR-PEER-ADDRESS", peer)],
                timeout,
            )
            if answer.message_class != MessageClass.SUCCESS:
                return failed("ChannelBind", answer)
            frame = struct.pack("!HH", 0x4000, len(payload)) + payload
            if transport != "udp" and len(payload) % 4:
                frame += bytes(4 - len(payload) % 4)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                channel.send(frame)
                try:
                    got = await asyncio.wait_for(channel.queue.get(), 0.5)
                except TimeoutError:
                    continue
                if got[:2] == b"\x40\x00" and got[4 : 4 + len(payload)] == payload:
                    return RelayProbe(True, "relayed round trip", relayed, mapped)
            return RelayProbe(False, "no echo through the relay", relayed, mapped)
        answer = await _ask(channel, auth, Method.CONNECT, [("XOR-PEER-ADDRESS", peer)], timeout)
        if answer.message_class != MessageClass.SUCCESS:
            return failed("Connect", answer)
        connection_id = answer.get("CONNECTION-ID")
        data_reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                server[0], server[1], ssl=tls, server_hostname=server_hostname if tls else None
            ),
            timeout,
        )
        data_writer = writer
        tid = os.urandom(12)
        bind = Message(
            Method.CONNECTION_BIND,
            MessageClass.REQUEST,
            tid,
            [("CONNECTION-ID", connection_id), *auth.attrs],
        )
        writer.write(stun.encode(bind, integrity_key=auth.key))
        framer = StreamFramer()
        bound: Message | None = None
        while bound is None:
            chunk = await asyncio.wait_for(data_reader.read(4096), timeout)
            if not chunk:
                return RelayProbe(False, "ConnectionBind: connection closed", relayed, mapped)
            framer.feed(chunk)
            frame_ = framer.next_frame()
            if frame_ is not None:
                bound = stun.parse(frame_)
        if bound.message_class != MessageClass.SUCCESS:
            return failed("ConnectionBind", bound)
        writer.write(payload)
        echoed = framer.take_buffer()
        while len(echoed) < len(payload):
            chunk = await asyncio.wait_for(data_reader.read(4096), timeout)
            if not chunk:
                break
            echoed += chunk
        if echoed[: len(payload)] == payload:
            return RelayProbe(True, "relayed round trip", relayed, mapped)
        return RelayProbe(False, "no echo through the TCP relay", relayed, mapped)
    except TimeoutError:
        return RelayProbe(False, "no answer from the TURN server")
    except (OSError, RemoteProtocolError) as exc:
        return RelayProbe(False, f"TURN exchange failed: {exc}")
    finally:
        if auth.attrs and channel.writer is None:
            refresh = Message(
                Method.REFRESH, MessageClass.REQUEST, os.urandom(12), [("LIFETIME", 0), *auth.attrs]
            )
            channel.send(stun.encode(refresh, integrity_key=auth.key))
        channel.close()
        if data_writer is not None:
            data_writer.close()
