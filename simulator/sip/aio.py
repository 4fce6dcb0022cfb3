"""asyncio adapter of the SIP cores: TLS/MTLS listeners, outbound connections, the Access Edge.

:class:`SipProtocol` feeds one connection's bytes to a :class:`~.connection.SipConnection` and
hands validated messages to its owner. Listeners accept plain TCP on a socket of their own and
run the TLS handshake with ``loop.connect_accepted_socket``, so that a refused handshake (no
client certificate, unknown CA) is logged with its reason instead of vanishing in the loop's
debug log.

:class:`AccessEdge` runs an :class:`~.proxy.EdgeProxy`: it keeps the connection table (every
connection, inbound or outbound, is a flow the core can route to, so connections are reused both
ways), opens connections the core asks for (DNS SRV/A through the lab resolver, MTLS presenting
the Edge certificate), maps what went wrong to the core's failure kinds, and arms the core's one
timer with ``loop.call_at``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from sipmessage import Request, Response

from simulator import aioloop, trace
from simulator.certificate import PeerCertificate
from simulator.dns.resolver import LabResolver, ResolutionError
from simulator.limits import ConnectionGate
from simulator.sip.build import to_bytes
from simulator.sip.connection import SipConnection, SipLimits
from simulator.sip.errors import RemoteProtocolError
from simulator.sip.events import ConnectionClosed, RequestReceived, ResponseReceived
from simulator.sip.proxy import (
    Action,
    EdgeConfig,
    EdgeProxy,
    Forward,
    Partner,
    Send,
    Side,
    ToFlow,
    ToInternal,
    ToPartner,
    VerifyPartner,
)
from simulator.tls import connect_failure, peer_certificate, tls_failure_reason

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0


def _endpoint(address: object) -> str:
    """``ip:port`` of a socket address tuple (``""`` when unknown)."""
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return ""


def describe(message: Request | Response) -> str:
    """A ladder label: ``MESSAGE sip:bob@contoso.lab`` or ``200 OK``."""
    if isinstance(message, Request):
        return f"{message.method} {message.uri}"
    return f"{message.code} {message.phrase}"


def _trace_message(
    proto: SipProtocol, message: Request | Response, event: str, text: bytes | None = None
) -> None:
    """Record one SIP message on ``proto`` (callers check :func:`trace.active` first)."""
    here, there = proto.local_end, f"{proto.peer[0]}:{proto.peer[1]}"
    src, dst = (here, there) if event == "sent" else (there, here)
    data = text if text is not None else to_bytes(message)
    trace.record(
        "sip",
        src,
        dst,
        describe(message),
        event=event,
        flow=message.headers.get("Call-ID"),
        detail=data.decode("utf-8", "replace"),
    )


class SipOwner(Protocol):
    """What a :class:`SipProtocol` reports to."""

    def on_request(self, proto: SipProtocol, request: Request) -> None: ...

    def on_response(self, proto: SipProtocol, response: Response) -> None: ...

    def on_close(self, proto: SipProtocol) -> None: ...


class SipProtocol(asyncio.Protocol):
    """One SIP connection (after TLS); feeds the sans-IO core and flushes what it queues."""

    _ids = 0

    def __init__(
        self,
        owner: SipOwner,
        *,
        max_message_bytes: int = 64 * 1024,
        label: str = "",
        limits: SipLimits | None = None,
        release_on_connect: bool = True,
    ) -> None:
        """``release_on_connect``: hand messages to the owner as soon as the connection is made
        (False: the owner registers the connection first, then calls :meth:`release`)."""
        SipProtocol._ids += 1
        self.id = SipProtocol._ids
        self.owner = owner
        self.limits = limits or SipLimits(max_message_bytes=max_message_bytes)
        loop = asyncio.get_running_loop()
        self.core = SipConnection(
            max_header_bytes=self.limits.max_header_bytes,
            max_message_bytes=self.limits.max_message_bytes,
            message_timeout=self.limits.message_timeout,
            idle_timeout=self.limits.idle_timeout,
            now=loop.time(),
        )
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.reading_paused = False
        """True while the peer does not read what we send (we stop reading it meanwhile)."""
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.local_end = ""
        self.lost_reason: Exception | None = None
        """Why the connection was lost (None: closed cleanly)."""
        """``ip:port`` of our end of the connection (for traces)."""
        self.peer_cert: PeerCertificate | None = None
        self.label = label
        self.flow_id = 0
        """Set by the owner (the Edge's flow id)."""
        self.closed = asyncio.get_running_loop().create_future()
        self.context: dict[str, Any] = {}
        """Owner's per-connection state."""
        self._out: list[bytes] = []
        self._write_scheduled = False
        self._held: list[bytes] | None = []
        """Bytes that arrived before the owner registered the connection (see :meth:`release`)."""
        self._release_on_connect = release_on_connect

    def attach(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        # backpressure: pause_writing() comes at a quarter of the hard limit
        high = max(16 * 1024, self.limits.max_write_buffer_bytes // 4)
        transport.set_write_buffer_limits(high=high)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = (str(peer[0]), int(peer[1]))
        self.local_end = _endpoint(transport.get_extra_info("sockname"))
        self.peer_cert = peer_certificate(transport.get_extra_info("ssl_object"))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.attach(transport)  # type: ignore[arg-type]
        if self._release_on_connect:
            self.release()

    def release(self) -> None:
        """Start handing messages to the owner (bytes that came early are processed now)."""
        held, self._held = self._held, None
        for data in held or ():
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        if self._held is not None:  # TLS is up but the owner has not registered us yet
            self._held.append(data)
            return
        self.core.receive_data(data, asyncio.get_running_loop().time())
        self._process()

    def eof_received(self) -> bool | None:
        if self._held is not None:
            self._held.append(b"")
            return False
        self.core.receive_data(b"", asyncio.get_running_loop().time())
        self._process()
        return False

    def pause_writing(self) -> None:
        """The peer is not reading: stop reading it, so it cannot make us queue more."""
        if self.transport is not None and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()

    def _rearm(self) -> None:
        """Arm the core's one deadline; an earlier timer is kept and re-armed when it fires."""
        when = self.core.get_timer()
        if when is None or (
            self._timer is not None and self._timer_at is not None and self._timer_at <= when
        ):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = asyncio.get_running_loop().call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.core.handle_timer(asyncio.get_running_loop().time())
        if self.core.must_close:
            log.info(
                "%s conn %d from %s: %s", self.label, self.id, self.peer[0], self.core.timed_out
            )
            self.close()
            return
        self._rearm()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_reason = exc
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None and isinstance(exc, ssl.SSLError) and trace.active():
            # TLS 1.3: a refused client certificate shows up here, after the handshake
            trace.record(
                "sip",
                self.local_end,
                f"{self.peer[0]}:{self.peer[1]}",
                f"TLS refused: {tls_failure_reason(exc)}",
                event="refused",
                detail=f"{type(exc).__name__}: {exc}",
            )
        if not self.closed.done():
            self.closed.set_result(None)
            self.owner.on_close(self)

    def _process(self) -> None:
        core = self.core
        while True:
            try:
                event = core.next_event()
            except RemoteProtocolError as exc:
                log.warning(
                    "%s conn %d from %s: bad message: %s", self.label, self.id, self.peer[0], exc
                )
                continue
            if event is None:
                break
            if trace.active() and isinstance(event, RequestReceived | ResponseReceived):
                message = event.request if isinstance(event, RequestReceived) else event.response
                _trace_message(self, message, "received")
            try:
                if isinstance(event, RequestReceived):
                    self.owner.on_request(self, event.request)
                elif isinstance(event, ResponseReceived):
                    self.owner.on_response(self, event.response)
                elif isinstance(event, ConnectionClosed):
                    break
            except Exception:  # a handler bug must not kill the connection or leak
                log.exception("%s conn %d: handler failed", self.label, self.id)
                if isinstance(event, RequestReceived) and event.request.method != "ACK":
                    from simulator.sip.build import response_for

                    with contextlib.suppress(Exception):
                        self.send(response_for(event.request, 500))
        self.flush()
        if core.must_close:
            self.close()
        else:
            self._rearm()

    def flush(self) -> None:
        """Queue what the core has to send (replies, pongs)."""
        data = self.core.data_to_send()
        if data:
            if trace.active():  # the core's own answers (400, 513): label with the status line
                line = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
                summary = line.split(" ", 1)[1] if line.startswith("SIP/2.0 ") else line
                trace.record(
                    "sip",
                    self.local_end,
                    f"{self.peer[0]}:{self.peer[1]}",
                    summary,
                    detail=data.decode("utf-8", "replace"),
                )
            self.send_bytes(data)

    def send(self, message: Request | Response) -> None:
        data = to_bytes(message)
        if trace.active():
            _trace_message(self, message, "sent", data)
        self.send_bytes(data)

    def send_bytes(self, data: bytes) -> None:
        """Queue bytes; everything queued in one loop iteration leaves in one TLS write."""
        self._out.append(data)
        if not self._write_scheduled:
            self._write_scheduled = True
            asyncio.get_running_loop().call_soon(self._write_out)

    def _write_out(self) -> None:
        self._write_scheduled = False
        if not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() + len(data) > self.limits.max_write_buffer_bytes:
            log.warning(
                "%s conn %d from %s: more than %d bytes queued for a peer that does not read: "
                "closed",
                self.label,
                self.id,
                self.peer[0],
                self.limits.max_write_buffer_bytes,
            )
            transport.abort()
            return
        transport.write(data)

    def close(self) -> None:
        self._write_out()
        if self.transport is not None:
            self.transport.close()


@dataclass
class ListenerSpec:
    """One SIP listener: where, which TLS context, and what to do with a new connection."""

    address: str
    port: int
    context: ssl.SSLContext
    label: str
    on_connection: Callable[[SipProtocol], None]
    owner: SipOwner
    max_message_bytes: int = 64 * 1024
    limits: SipLimits | None = None
    """Sizes, timeouts and caps (default :class:`SipLimits`, with ``max_message_bytes``)."""
    reuse_port: bool = False
    """Share the port with other processes (``SO_REUSEPORT``: Edge workers)."""

    def effective_limits(self) -> SipLimits:
        if self.limits is not None:
            return self.limits
        return SipLimits(max_message_bytes=self.max_message_bytes)


class SipListener:
    """Accepts TCP, admits the source, runs the TLS handshake (to log refusals), hands over.

    The listening socket is ours (``reuse_port``: several worker processes may share it, the
    kernel spreading connections over them) and accepted sockets go through
    ``loop.connect_accepted_socket`` with the TLS context, which raises a refused handshake
    with its reason on asyncio's loop and on uvloop alike (uvloop hands bytes that arrive with
    the connection to the plain protocol, so a later ``start_tls`` would lose the ClientHello).
    """

    def __init__(self, spec: ListenerSpec) -> None:
        self.spec = spec
        self.limits = spec.effective_limits()
        self.gate = ConnectionGate(self.limits)
        """Connections open now, total and per source (TLS handshakes included)."""
        self.sock: socket.socket | None = None
        self.refusals: list[str] = []
        self._tasks = aioloop.Tasks()

    async def start(self) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        spec = self.spec
        self.sock = listening_socket(spec.address, spec.port, reuse_port=spec.reuse_port)
        loop.add_reader(self.sock.fileno(), self._accept, loop)
        sock = self.sock.getsockname()
        return str(sock[0]), int(sock[1])

    def _accept(self, loop: asyncio.AbstractEventLoop) -> None:
        listening = self.sock
        if listening is None:
            return
        for _ in range(64):  # a burst of connections, then back to the loop
            try:
                conn, addr = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the next readiness retries
                log.warning("%s: accept failed: %s", self.spec.label, exc)
                return
            source = str(addr[0])
            refused = self.gate.admit(source)
            if refused is not None:
                if self.gate.refused % 1000 == 1:  # a flood must not flood the log
                    log.warning(
                        "%s: connection from %s refused: %s", self.spec.label, source, refused
                    )
                conn.close()
                continue
            conn.setblocking(False)
            self._tasks.spawn(self._handshake(conn, source))

    async def _handshake(self, conn: socket.socket, source: str) -> None:
        loop = asyncio.get_running_loop()
        spec = self.spec
        try:
            peer: Any = conn.getpeername()
            local: Any = conn.getsockname()
        except OSError:
            peer, local = None, None
        proto = SipProtocol(
            spec.owner, label=spec.label, limits=self.limits, release_on_connect=False
        )
        try:
            tls, _ = await loop.connect_accepted_socket(
                lambda: proto,
                conn,
                ssl=spec.context,
                ssl_handshake_timeout=self.limits.handshake_timeout,
            )
        except asyncio.CancelledError:
            self.gate.release(source)
            conn.close()
            raise
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
            self.gate.release(source)
            conn.close()
            reason = tls_failure_reason(exc)
            text = f"{spec.label}: TLS handshake with {peer[0] if peer else '?'} refused: {reason}"
            log.warning("%s", text)
            if trace.active():  # it reached us and we refused it: an arrow into this host
                trace.record(
                    "sip",
                    _endpoint(peer),
                    _endpoint(local),
                    f"TLS handshake refused: {reason}",
                    event="received",
                    detail=text,
                )
            self.refusals.append(text)
            del self.refusals[:-100]
            return
        proto.closed.add_done_callback(lambda _: self.gate.release(source))
        try:
            spec.on_connection(proto)
        except Exception:
            log.exception("%s: connection setup failed", spec.label)
            tls.close()
            return
        proto.release()

    async def stop(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
        tasks = self._tasks.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)


def listening_socket(address: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A non-blocking TCP listening socket (``SO_REUSEADDR``; ``SO_REUSEPORT`` when several
    processes share the port, as Kamailio's children share theirs)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


async def open_sip(
    owner: SipOwner,
    host: str,
    port: int,
    context: ssl.SSLContext,
    server_hostname: str | None,
    *,
    label: str = "",
    timeout: float = CONNECT_TIMEOUT,
    local_address: str | None = None,
    sock: socket.socket | None = None,
) -> SipProtocol:
    """Connect over TLS; raises OSError, ssl.SSLError or TimeoutError.

    ``sock``: an unconnected socket to connect with (e.g. one made in a lab host's network
    namespace, already bound to its address); ``local_address`` is ignored then.
    """
    loop = asyncio.get_running_loop()
    proto: SipProtocol | None = None

    def factory() -> SipProtocol:
        nonlocal proto
        proto = SipProtocol(owner, label=label)
        return proto

    async def connect() -> None:
        if sock is None:
            await loop.create_connection(
                factory,
                host,
                port,
                ssl=context,
                server_hostname=server_hostname,
                ssl_handshake_timeout=timeout,
                local_addr=(local_address, 0) if local_address else None,
            )
            return
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, port))
        await loop.create_connection(
            factory,
            sock=sock,
            ssl=context,
            server_hostname=server_hostname,
            ssl_handshake_timeout=timeout,
        )

    if sock is not None and local_address is None:
        local_address = sock.getsockname()[0]
    try:
        await asyncio.wait_for(connect(), timeout)
    except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
        if trace.active():
            _trace_connect_failure(exc, local_address, f"{host}:{port}", server_hostname, timeout)
        raise
    assert proto is not None
    return proto


async def connect_once(
    pending: dict[str, asyncio.Future[SipProtocol]],
    key: str,
    connect: Callable[[], Awaitable[SipProtocol]],
    failures: type[Exception] = Exception,
) -> SipProtocol:
    """One connection attempt to ``key`` at a time: the first caller runs ``connect`` and the
    callers that come meanwhile wait for its connection, or its failure (an exception of
    ``failures``, raised in each of them); others raise in the first caller only."""
    future = pending.get(key)
    if future is None:
        future = asyncio.get_running_loop().create_future()
        pending[key] = future
        try:
            proto = await connect()
        except failures as exc:
            future.set_exception(exc)
        else:
            future.set_result(proto)
        finally:
            pending.pop(key, None)
    return await asyncio.shield(future)


def _trace_connect_failure(
    exc: BaseException, local: str | None, remote: str, name: str | None, timeout: float
) -> None:
    """The client side's view of a connection that did not come up: where and why."""
    event, summary = connect_failure(exc, timeout)
    trace.record(
        "sip",
        local or "",
        remote,
        summary,
        event=event,
        detail=f"connecting to {name or remote} ({remote}): {type(exc).__name__}: {exc}",
    )


# ---------------------------------------------------------------------- the Access Edge


@dataclass
class EdgeListeners:
    """Where the Edge listens, and with which TLS contexts (built by the service)."""

    client: tuple[str, int, ssl.SSLContext] | None
    """TLS 443 on the Access interface (server certificate only)."""
    federation: tuple[str, int, ssl.SSLContext] | None
    """MTLS 5061 on the Access interface."""
    internal: tuple[str, int, ssl.SSLContext] | None
    """MTLS 5061 on the internal interface."""


class AccessEdge:
    """The Access Edge's I/O: listeners, the connection table, outbound connections, timers."""

    def __init__(
        self,
        config: EdgeConfig,
        listeners: EdgeListeners,
        *,
        federation_client: ssl.SSLContext,
        internal_client: ssl.SSLContext,
        external_resolver: LabResolver,
        internal_resolver: LabResolver,
        our_hosts: Iterable[str] = (),
    ) -> None:
        self.config = config
        self.proxy = EdgeProxy(config, our_hosts=our_hosts)
        self.listener_specs = listeners
        self.federation_client = federation_client
        self.internal_client = internal_client
        self.external_resolver = external_resolver
        self.internal_resolver = internal_resolver
        self.listeners: list[SipListener] = []
        self.bound: dict[str, tuple[str, int]] = {}
        self.conns: dict[int, SipProtocol] = {}
        self._connecting: dict[str, asyncio.Future[SipProtocol]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks = aioloop.Tasks()

    @property
    def refusals(self) -> list[str]:
        """Every refusal (TLS and SIP) with its reason, newest last."""
        out = list(self.proxy.refusals)
        for listener in self.listeners:
            out += listener.refusals
        return out

    async def start(self) -> dict[str, tuple[str, int]]:
        for kind, side in (
            ("client", Side.CLIENT),
            ("federation", Side.FEDERATION),
            ("internal", Side.INTERNAL),
        ):
            spec = getattr(self.listener_specs, kind)
            if spec is None:
                continue
            address, port, context = spec
            listener = SipListener(
                ListenerSpec(
                    address,
                    port,
                    context,
                    f"access-edge/{kind}",
                    self._accepted(side),
                    self,
                    self.config.max_message_bytes,
                    self.config.limits_for(side),
                )
            )
            self.bound[kind] = await listener.start()
            self.listeners.append(listener)
            self.proxy.our_hosts.add(address)
        return self.bound

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for listener in self.listeners:
            await listener.stop()
        for proto in list(self.conns.values()):
            proto.close()
        self._tasks.cancel()
        self.conns.clear()

    # ------------------------------------------------------------------ connections

    def _accepted(self, side: Side) -> Callable[[SipProtocol], None]:
        def register(proto: SipProtocol) -> None:
            names = proto.peer_cert.names() if proto.peer_cert else ()
            flow = self.proxy.flow_opened(side, proto.peer, names)
            proto.flow_id = flow.id
            self.conns[flow.id] = proto
            log.info(
                "access-edge: %s connection %d from %s (%s)",
                side.value,
                flow.id,
                proto.peer[0],
                ", ".join(names) or "no certificate",
            )

        return register

    def on_close(self, proto: SipProtocol) -> None:
        self.conns.pop(proto.flow_id, None)
        self._run(self.proxy.flow_closed(proto.flow_id))

    def _send_forward(self, proto: SipProtocol, action: Forward) -> None:
        self.proxy.sent_on(action.branch, proto.flow_id)
        proto.send(action.request)

    def on_request(self, proto: SipProtocol, request: Request) -> None:
        self._run(
            self.proxy.receive_request(proto.flow_id, request, asyncio.get_running_loop().time())
        )

    def on_response(self, proto: SipProtocol, response: Response) -> None:
        self._run(
            self.proxy.receive_response(proto.flow_id, response, asyncio.get_running_loop().time())
        )

    # ------------------------------------------------------------------ actions

    def _run(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                proto = self.conns.get(action.flow_id)
                if proto is not None:
                    proto.send(action.message)
            elif isinstance(action, Forward):
                self._forward(action)
            elif isinstance(action, VerifyPartner):
                self._tasks.spawn(self._verify(action))
        self._rearm()

    def _forward(self, action: Forward) -> None:
        target = action.target
        if isinstance(target, ToFlow):
            proto = self.conns.get(target.flow_id)
            if proto is None:
                self._run(
                    self.proxy.next_hop_failed(action.branch, "connect", "the connection is gone")
                )
                return
            self._send_forward(proto, action)
            return
        if isinstance(target, ToInternal):
            flow = self.proxy.internal_flow()
        else:
            flow = self.proxy.flow_for_partner(target.partner.domain)
        if flow is not None and flow.id in self.conns:
            self._send_forward(self.conns[flow.id], action)
            return
        self._tasks.spawn(self._connect_and_send(action))

    async def _connect_and_send(self, action: Forward) -> None:
        target = action.target
        key = "internal" if isinstance(target, ToInternal) else f"partner:{target.partner.domain}"  # type: ignore[union-attr]

        async def connect() -> SipProtocol:
            if isinstance(target, ToInternal):
                return await self._open_internal()
            assert isinstance(target, ToPartner)
            return await self._open_partner(target.partner)

        try:
            proto = await connect_once(self._connecting, key, connect, _HopFailure)
        except _HopFailure as failure:
            self._run(
                self.proxy.next_hop_failed(
                    action.branch, failure.kind, failure.detail, failure.peer
                )
            )
            return
        self._send_forward(proto, action)

    async def _open_internal(self) -> SipProtocol:
        host = self.config.internal_next_hop
        try:
            addresses = await self.internal_resolver.a(host)
        except ResolutionError as exc:
            raise _HopFailure(
                "dns-a", f"cannot resolve the internal next hop: {exc.reason}", host
            ) from None
        proto = await self._open(
            addresses[0],
            self.config.internal_next_hop_port,
            self.internal_client,
            host,
            "access-edge/internal-out",
            self._local("internal"),
        )
        names = proto.peer_cert.names() if proto.peer_cert else ()
        flow = self.proxy.flow_opened(Side.INTERNAL, proto.peer, names, outbound=True)
        proto.flow_id = flow.id
        self.conns[flow.id] = proto
        return proto

    async def _open_partner(self, partner: Partner) -> SipProtocol:
        if partner.proxy_fqdn is not None:
            fqdn, port = partner.proxy_fqdn, 5061
        else:
            name = f"_sipfederationtls._tcp.{partner.domain}"
            try:
                targets = await self.external_resolver.srv(name)
            except ResolutionError as exc:
                raise _HopFailure("srv", f"DNS SRV {name}: {exc.reason}", None) from None
            fqdn, port = targets[0].target, targets[0].port
        try:
            addresses = await self.external_resolver.a(fqdn)
        except ResolutionError as exc:
            raise _HopFailure("dns-a", f"cannot resolve {fqdn}: {exc.reason}", fqdn) from None
        proto = await self._open(
            addresses[0],
            port,
            self.federation_client,
            fqdn,
            "access-edge/federation-out",
            self._local("federation"),
        )
        names = proto.peer_cert.names() if proto.peer_cert else ()
        flow = self.proxy.flow_opened(
            Side.FEDERATION, proto.peer, names, outbound=True, domains=[partner.domain]
        )
        proto.flow_id = flow.id
        self.conns[flow.id] = proto
        log.info(
            "access-edge: federation connection %d to %s (%s:%d) for %s",
            flow.id,
            fqdn,
            addresses[0],
            port,
            partner.domain,
        )
        return proto

    def _local(self, kind: str) -> str | None:
        spec = getattr(self.listener_specs, kind)
        return str(spec[0]) if spec is not None else None

    async def _open(
        self, address: str, port: int, ctx: ssl.SSLContext, name: str, label: str, local: str | None
    ) -> SipProtocol:
        try:
            return await open_sip(self, address, port, ctx, name, label=label, local_address=local)
        except ssl.SSLCertVerificationError as exc:
            raise _HopFailure("untrusted", f"{name}: {tls_failure_reason(exc)}", name) from None
        except ssl.SSLError as exc:
            raise _HopFailure("tls", f"{name}: {tls_failure_reason(exc)}", name) from None
        except ConnectionResetError:  # TCP was up: the peer reset it in the TLS handshake
            raise _HopFailure(
                "tls-reset", f"{name}: the peer reset the connection in the TLS handshake", name
            ) from None
        except (OSError, TimeoutError) as exc:
            detail = getattr(exc, "strerror", None) or type(exc).__name__
            raise _HopFailure(
                "connect", f"cannot connect to {name} ({address}:{port}): {detail}", name
            ) from None

    async def _verify(self, action: VerifyPartner) -> None:
        name = f"_sipfederationtls._tcp.{action.domain}"
        try:
            fqdns = [t.target for t in await self.external_resolver.srv(name)]
        except ResolutionError as exc:
            log.warning("access-edge: open federation check of %s failed: %s", action.domain, exc)
            fqdns = []
        self._run(
            self.proxy.partner_verified(
                action.flow_id,
                action.domain,
                fqdns,
                action.request,
                asyncio.get_running_loop().time(),
            )
        )

    # ------------------------------------------------------------------ timer

    def _rearm(self) -> None:
        when = self.proxy.get_timer()
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            self._timer = asyncio.get_running_loop().call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        self._run(self.proxy.handle_timer(asyncio.get_running_loop().time()))


class _HopFailure(Exception):
    def __init__(self, kind: str, detail: str, peer: str | None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.peer = peer
