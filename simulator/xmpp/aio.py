"""asyncio adapter: runs a sans-IO :class:`~simulator.xmpp.s2s.Session` over a TCP stream.

Every entry point feeds the core, hands its events to the owner, flushes bytes and re-arms the
single timer (STYLE.md section 3). STARTTLS runs here when the core asks for it
(:class:`TlsRequested`); the peer certificate goes back to the core as a
:class:`~simulator.tls.PeerCertificate`. Also here: DNS discovery of a domain's S2S server
(``_xmpp-server._tcp`` SRV, then the A record on 5269) and the connection helpers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from simulator import trace
from simulator.aioloop import open_stream
from simulator.certificate import PeerCertificate
from simulator.dns.resolver import LabResolver, ResolutionError
from simulator.limits import ConnectionLimits, limit
from simulator.tls import connect_failure, peer_certificate, tls_failure_reason
from simulator.xmpp.errors import LocalProtocolError, RemoteProtocolError
from simulator.xmpp.events import (
    Authenticated,
    AuthenticationFailed,
    DialbackVerifyAnswered,
    StanzaReceived,
    StreamClosed,
    StreamErrorReceived,
    TlsRequested,
    XmppEvent,
)
from simulator.xmpp.s2s import Role, Session, SessionConfig

log = logging.getLogger(__name__)

READ_SIZE = 65536
S2S_PORT = 5269
_ids = itertools.count(1)

EventHandler = Callable[["XmppConnection", XmppEvent], None]

_T = "tests/integration/test_listener_limits.py::"


@dataclass(frozen=True)
class XmppListenerLimits(ConnectionLimits):
    """What one XMPP listener accepts (``[services.xmpp-proxy.listener_limits]``)."""

    max_connections: int = limit(
        5_000, "connections, total", _T + "test_xmpp_listener_caps_connections"
    )
    max_per_source: int = limit(
        64, "connections per source address", _T + "test_xmpp_listener_caps_connections"
    )
    handshake_timeout: float = limit(
        10.0, "TLS handshake after STARTTLS, s", _T + "test_xmpp_starttls_handshake_times_out"
    )
    """Seconds for the TLS handshake (after ``<proceed/>``, or from the first byte on 23456)."""
    max_write_buffer_bytes: int = limit(
        4 * 1024 * 1024,
        "bytes queued for a peer that does not read (then close)",
        _T + "test_an_xmpp_peer_that_never_reads_is_dropped",
    )
    """Bytes queued for a peer; beyond, the stream closes (reading already waits on writes)."""


#: Roles on the accepting side of a stream (they record authentication and TLS refusals).
_SERVER_ROLES = (Role.RECEIVING, Role.GATEWAY_SERVER, Role.C2S)


def _endpoint(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return ""


def describe_stanza(stanza: ET.Element) -> str:
    """A ladder label: ``<message> romeo@jabber.lab -> alice@contoso.lab``."""
    name = stanza.tag.rsplit("}", 1)[-1]
    kind = stanza.get("type")
    label = f"<{name}{' ' + kind if kind and kind != 'chat' else ''}>"
    frm, to = stanza.get("from"), stanza.get("to")
    if frm or to:
        label += f" {frm or '?'} -> {to or '?'}"
    return label


def new_stream_id() -> str:
    return secrets.token_hex(8)


class _ConnLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['conn']}] {msg}", kwargs  # type: ignore[index]


class XmppConnection:
    """One XMPP connection: the read loop, STARTTLS, timers, flushing."""

    def __init__(
        self,
        session: Session,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        on_event: EventHandler,
        tls_server: ssl.SSLContext | None = None,
        tls_client: ssl.SSLContext | None = None,
        name: str = "",
        limits: XmppListenerLimits | None = None,
    ) -> None:
        self.session = session
        self.limits = limits or XmppListenerLimits()
        self.reader = reader
        self.writer = writer
        self.on_event = on_event
        self.tls_server = tls_server
        self.tls_client = tls_client
        self.name = name or f"xmpp-{next(_ids)}"
        self.log = _ConnLog(log, {"conn": self.name})
        self.loop = asyncio.get_running_loop()
        self.ready = asyncio.Event()
        self.closed = asyncio.Event()
        self.failure: str | None = None
        """Why the stream ended, when it did not end cleanly."""
        self._flush_scheduled = False
        self.local_end = _endpoint(writer.get_extra_info("sockname"))
        self.peer_end = _endpoint(writer.get_extra_info("peername"))
        """``ip:port`` of both ends (for traces)."""

    def trace(
        self, summary: str, *, event: str = "sent", detail: str = "", outgoing: bool | None = None
    ) -> None:
        """Record an event of this stream, from us to the peer when ``outgoing`` (default: a
        ``sent`` event), else from the peer to us."""
        if not trace.active():
            return
        here, there = self.local_end, self.peer_end
        out = event == "sent" if outgoing is None else outgoing
        src, dst = (here, there) if out else (there, here)
        trace.record(
            "xmpp", src, dst, summary, event=event, flow=self.session.stream_id, detail=detail
        )

    @property
    def server_side(self) -> bool:
        return self.session.role in _SERVER_ROLES

    @property
    def now(self) -> float:
        return self.loop.time()

    def peer_certificate(self) -> PeerCertificate | None:
        return peer_certificate(self.writer.get_extra_info("ssl_object"))

    # ------------------------------------------------------------------ entry points
    async def run(self) -> None:
        try:
            await self._run()
        except (ConnectionError, OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            self.failure = self.failure or f"connection lost: {exc}"
            self.log.info("%s", self.failure)
        except Exception:  # an unexpected bug: generic close, traceback in the log
            self.log.exception("internal error")
            self.failure = "internal error"
        finally:
            await self._close_transport()
            if not self.ready.is_set():
                self.failure = self.failure or "stream closed before it was ready"
            self.closed.set()
            self.ready.set()  # wake waiters; they look at .failure / .closed

    async def _run(self) -> None:
        self._flush()
        while not self.session.closed:
            timer = self.session.get_timer()
            timeout = None if timer is None else max(0.0, timer - self.now)
            try:
                data = await asyncio.wait_for(self.reader.read(READ_SIZE), timeout)
            except TimeoutError:
                self.session.handle_timer(self.now)
                self._process_events()
                await self._drain()
                continue
            try:
                self.session.receive_data(data, self.now)
            except RemoteProtocolError as exc:
                self.failure = f"peer error: <{exc.condition.value}/> {exc.text}"
                self.log.info("%s", self.failure)
            tls = self._process_events()
            await self._drain()
            if tls is not None:
                await self._start_tls(tls)
            if not data:
                break

    def _process_events(self) -> TlsRequested | None:
        tls = None
        while (event := self.session.next_event()) is not None:
            if isinstance(event, TlsRequested):
                tls = event
                continue
            if trace.active():
                self._trace_event(event)
            if isinstance(event, Authenticated):
                self.ready.set()
            elif isinstance(event, AuthenticationFailed):
                self.failure = event.reason
            elif isinstance(event, StreamClosed) and event.error:
                self.failure = self.failure or f"stream error <{event.error}/>"
            try:
                self.on_event(self, event)
            except Exception:
                self.log.exception("event handler failed on %s", type(event).__name__)
        self._flush()
        return tls

    def _trace_event(self, event: XmppEvent) -> None:
        if isinstance(event, StanzaReceived):
            self.trace(
                describe_stanza(event.element),
                event="received",
                detail=ET.tostring(event.element, encoding="unicode"),
            )
        elif isinstance(event, Authenticated) and self.server_side:
            who = event.jid or event.domain
            self.trace(f"authenticated {who} ({event.method})", event="received")
        elif isinstance(event, AuthenticationFailed):
            self.trace(f"authentication refused: {event.reason}", event="refused", outgoing=True)
        elif isinstance(event, StreamErrorReceived):
            self.trace(
                f"<stream:error> {event.condition}", event="received", detail=event.text or ""
            )

    async def _start_tls(self, request: TlsRequested) -> None:

        context = self.tls_server if request.server_side else self.tls_client
        if context is None:
            raise LocalProtocolError("TLS requested but no TLS context configured")
        try:
            await self.writer.start_tls(
                context,
                server_hostname=None if request.server_side else request.server_name,
                ssl_handshake_timeout=self.limits.handshake_timeout,
            )
        except (ssl.SSLError, TimeoutError, ConnectionError) as exc:
            reason = tls_failure_reason(exc)
            # the initiating side records where its stream stopped; the receiving side records
            # the refusal as an arrow that reached it
            self.trace(
                f"STARTTLS refused: {reason}",
                event="received" if request.server_side else "refused",
                detail=str(exc),
                outgoing=not request.server_side,
            )
            raise
        if not request.server_side:
            self.trace(f"STARTTLS: TLS up with {request.server_name or self.peer_end}")
        self.session.tls_established(self.peer_certificate(), self.now)
        self._process_events()
        await self._drain()

    def _flush(self) -> None:
        data = self.session.data_to_send()
        if data and not self.writer.is_closing():
            transport = self.writer.transport
            if transport.get_write_buffer_size() + len(data) > self.limits.max_write_buffer_bytes:
                self.failure = (
                    f"more than {self.limits.max_write_buffer_bytes} bytes queued for a peer "
                    "that does not read"
                )
                self.log.warning("%s: closed", self.failure)
                self.session.close()
                transport.abort()
                return
            self.writer.write(data)

    async def _drain(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    async def _close_transport(self) -> None:
        self._flush()
        if not self.writer.is_closing():
            self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)

    # ------------------------------------------------------------------ commands
    def send_stanza(self, stanza: ET.Element) -> int:
        """Queue a stanza; stanzas sent in the same loop iteration leave in one write. Returns
        its XEP-0198 number (0 without stream management)."""
        number = self.session.send_stanza(stanza, self.now)
        if trace.active():
            self.trace(describe_stanza(stanza), detail=ET.tostring(stanza, encoding="unicode"))
        self._schedule_flush()
        return number

    def acknowledge(self, handled: int) -> None:
        """XEP-0198: the first ``handled`` stanzas received on this stream are handled."""
        self.session.acknowledge(handled)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self._flush()

    def dialback_verified(self, originating: str, receiving: str, valid: bool) -> None:
        self.session.dialback_verified(originating, receiving, valid)
        self._process_events()

    def close(self) -> None:
        self.session.close()
        self._flush()
        if not self.writer.is_closing():
            self.writer.close()


async def resolve_s2s(resolver: LabResolver, domain: str) -> list[tuple[str, int]]:
    """Addresses of ``domain``'s S2S server: SRV ``_xmpp-server._tcp``, else A on 5269
    (:rfc:`6120#section-3.2`)."""
    results: list[tuple[str, int]] = []
    try:
        for target in await resolver.srv(f"_xmpp-server._tcp.{domain}"):
            try:
                results += [(addr, target.port) for addr in await resolver.a(target.target)]
            except ResolutionError:
                continue
    except ResolutionError:
        pass
    if not results:
        results = [(addr, S2S_PORT) for addr in await resolver.a(domain)]
    return results


async def open_session(
    session: Session,
    addresses: list[tuple[str, int]],
    *,
    on_event: EventHandler,
    tls_client: ssl.SSLContext,
    connect_timeout: float = 5.0,
    local_address: str | None = None,
    ssl_now: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> tuple[XmppConnection, asyncio.Task[None]]:
    """Connect to the first address that answers and start the session's read loop."""
    last: Exception | None = None
    for host, port in addresses:
        try:
            reader, writer = await open_stream(
                host,
                port,
                timeout=connect_timeout,
                tls=ssl_now,
                server_hostname=server_hostname,
                local_address=local_address,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            last = exc
            if trace.active():
                _trace_connect_failure(exc, local_address, f"{host}:{port}", connect_timeout)
            continue
        conn = XmppConnection(session, reader, writer, on_event=on_event, tls_client=tls_client)
        conn.trace(
            f"stream open to {session.remote_domain or host}"
            + (" (TLS)" if ssl_now is not None else "")
        )
        session.start(conn.now)
        if ssl_now is not None:
            conn_cert = conn.peer_certificate()
            session.peer_certificate = conn_cert
        task = asyncio.create_task(conn.run(), name=conn.name)
        return conn, task
    raise OSError(f"cannot connect to any of {addresses}: {last}")


def _trace_connect_failure(
    exc: BaseException, local: str | None, remote: str, timeout: float
) -> None:

    event, summary = connect_failure(exc, timeout)
    trace.record("xmpp", local or "", remote, summary, event=event, detail=str(exc))


async def verify_dialback(
    config: SessionConfig,
    resolver: LabResolver,
    *,
    local_domain: str,
    remote_domain: str,
    their_stream_id: str,
    key: str,
    tls_client: ssl.SSLContext,
    timeout: float = 10.0,
    local_address: str | None = None,
) -> bool:
    """The back-connection of XEP-0220 section 2.1.2: ask ``remote_domain``'s authoritative server
    whether ``key`` is right for the stream ``their_stream_id`` it opened to us."""
    answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def on_event(conn: XmppConnection, event: XmppEvent) -> None:
        if isinstance(event, DialbackVerifyAnswered) and not answer.done():
            answer.set_result(event.valid and event.stream_id == their_stream_id)

    session = Session(
        Role.VERIFYING,
        config,
        now=asyncio.get_running_loop().time(),
        stream_id=new_stream_id(),
        local_domain=local_domain,
        remote_domain=remote_domain,
        verify_request=(their_stream_id, key),
    )
    try:
        addresses = await resolve_s2s(resolver, remote_domain)
        conn, task = await open_session(
            session,
            addresses,
            on_event=on_event,
            tls_client=tls_client,
            local_address=local_address,
        )
    except (OSError, ResolutionError) as exc:
        log.info("dialback back-connection to %s failed: %s", remote_domain, exc)
        return False
    closed: asyncio.Future[Any] = asyncio.ensure_future(conn.closed.wait())
    waiters: set[asyncio.Future[Any]] = {answer, closed}
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        return answer.result() if answer.done() else False
    finally:
        closed.cancel()
        conn.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 2.0)
