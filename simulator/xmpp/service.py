"""Lab services: the Edge's XMPP proxy, the jabber.lab partner emulator, the Front End gateway.

Settings are typed and checked at start (a wrong key or type is a ConfigError naming the
topology file and the entry): ``[services.xmpp-proxy]`` is :class:`XmppProxySettings`,
``[services.xmpp-partner]`` :class:`XmppPartnerSettings` (both :class:`S2SSettings`: dialback,
SASL EXTERNAL, timers, ``listener_limits``), ``[services.xmpp-gateway]``
:class:`simulator.xmpp.gateway.XmppGatewaySettings`; each field's docstring says what it does.

Secrets (``dialback_secret``, passwords) are the lab's own, generated beside its PKI and shown by
``edgesim secrets`` (:mod:`simulator.pki.secrets`); none ships in the source.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from simulator import __version__, aioloop
from simulator.certificate import PeerCertificate
from simulator.dns.resolver import LabResolver, ResolutionError
from simulator.errors import ConfigError, EdgesimError
from simulator.lab.services import BoundListener, ServiceContext
from simulator.lab.topology import Interface
from simulator.limits import ConnectionGate
from simulator.pki import CertPaths
from simulator.tls import client_context, server_context
from simulator.xmpp.aio import (
    XmppConnection,
    XmppListenerLimits,
    new_stream_id,
    open_session,
    resolve_s2s,
    verify_dialback,
)
from simulator.xmpp.events import (
    Authenticated,
    DialbackVerifyNeeded,
    StanzaReceived,
    XmppEvent,
)
from simulator.xmpp.presence import PresenceServer
from simulator.xmpp.routing import (
    Reject,
    RoutingPolicy,
    ToGateway,
    ToPartner,
    route_from_gateway,
    route_from_partner,
    stanza_error,
)
from simulator.xmpp.s2s import Role, Session, SessionConfig, bare_jid, domain_of
from simulator.xmpp.stream import (
    NS_CLIENT,
    NS_SERVER,
    StreamTimers,
    element,
    qname,
    split_qname,
)

log = logging.getLogger(__name__)

MAX_QUEUED = 10_000
"""Stanzas queued per partner while its outbound stream is negotiated."""
NS_PING = "urn:xmpp:ping"
NS_VERSION = "jabber:iq:version"
DELIVERY_TIMEOUT = 15.0
"""Seconds a partner has to answer the ping that confirms delivery (setting delivery_timeout)."""

Delivery = Callable[[str | None, str], None]
"""Told how a stanza sent to a partner ended: (None, "") when the partner's server has it,
(stanza error condition, text) when it never got there."""


@dataclass(frozen=True)
class S2SSettings:
    """What the Edge's XMPP proxy and the partner emulator share (``[services.xmpp-proxy]``,
    ``[services.xmpp-partner]``); every key is optional."""

    dialback_secret: str | None = None
    """The secret dialback keys are made from (XEP-0185): the lab's own, generated beside its
    PKI (:mod:`simulator.pki.secrets`); without one, a random secret for this run."""
    idle_timeout: float = 600.0
    """Seconds a stream may stay silent before it is closed with ``<connection-timeout/>``."""
    keepalive: float = 60.0
    """Seconds of silence after which we send a whitespace keepalive."""
    allow_dialback: bool = True
    """Accept and use server dialback (XEP-0220) when SASL EXTERNAL is not possible."""
    allow_external: bool = True
    """Offer and use SASL EXTERNAL (certificate authentication, XEP-0178)."""
    verify_server_names: bool | None = None
    """The partner's certificate must name the domain dialled (XEP-0178, RFC 6125); default:
    true for the Edge, as each server is built."""
    delivery_timeout: float = DELIVERY_TIMEOUT
    """Seconds a partner has to answer the ping that confirms a stanza's delivery."""
    listener_limits: XmppListenerLimits = field(default_factory=XmppListenerLimits)
    """Connection caps, TLS handshake timeout and write cap of the listeners (docs/limits.md)."""


@dataclass(frozen=True)
class XmppProxySettings(S2SSettings):
    """``[services.xmpp-proxy]``: the Edge's XMPP proxy."""

    partners: tuple[str, ...] | None = None
    """Allowed XMPP partner domains; a stanza to or from another domain gets ``<not-allowed/>``
    (default: the domains of hosts with role ``xmpp-partner``)."""
    domains: tuple[str, ...] | None = None
    """Domains served through the gateway (default: the host's domain)."""
    gateway_names: tuple[str, ...] | None = None
    """Certificate names accepted on 23456 (default: the FQDNs of the ``front-end`` hosts)."""
    access_cert: str | None = None
    """A certificate file for the access interface other than the lab one (e.g. one naming
    ``contoso.lab`` itself, so partners accept SASL EXTERNAL); with ``access_key``."""
    access_key: str | None = None
    """The key file of ``access_cert``."""


@dataclass(frozen=True)
class XmppPartnerSettings(S2SSettings):
    """``[services.xmpp-partner]``: the jabber.lab emulator."""

    users: dict[str, str] = field(default_factory=dict)
    """User name -> password of the c2s users (the topology lists names; each lab generates
    their passwords, :mod:`simulator.pki.secrets`)."""


def _lower(names: Iterable[str]) -> frozenset[str]:
    return frozenset(n.lower() for n in names)


def _present(names: Iterable[str | None]) -> list[str]:
    return sorted({n for n in names if n})


def in_namespace(stanza: ET.Element, ns: str) -> ET.Element:
    """A copy of ``stanza`` whose own elements move to ``ns`` (jabber:client <-> jabber:server)."""
    old_ns, local = split_qname(stanza.tag)
    copy = ET.Element(qname(ns, local), dict(stanza.attrib))
    copy.text, copy.tail = stanza.text, None
    for child in stanza:
        child_ns, _ = split_qname(child.tag)
        if child_ns == old_ns:
            new_child = in_namespace(child, ns)
            new_child.tail = child.tail
            copy.append(new_child)
        else:
            copy.append(child)
    return copy


@dataclass
class _Outbound:
    domain: str
    queue: list[tuple[ET.Element, Delivery | None]] = field(default_factory=list)
    conn: XmppConnection | None = None
    task: asyncio.Task[None] | None = None
    unconfirmed: list[Delivery] = field(default_factory=list)
    """Written since the last delivery ping."""
    awaiting: dict[str, list[Delivery]] = field(default_factory=dict)
    """Delivery ping id -> the stanzas its answer confirms."""
    ping_scheduled: bool = False


def server_iq(stanza: ET.Element, domain: str, name: str) -> ET.Element | None:
    """The answer of the server ``domain`` to an iq addressed to it: XEP-0199 ping, XEP-0092
    version, ``service-unavailable`` for any other get/set (:rfc:`6120#section-8.2.3`); None
    for results and errors (never answered)."""
    kind = stanza.get("type")
    if kind not in ("get", "set"):
        return None
    child = stanza[0] if len(stanza) else None
    ns, _ = split_qname(stanza.tag)
    if child is not None and kind == "get" and child.tag == qname(NS_PING, "ping"):
        return element(
            qname(ns or NS_SERVER, "iq"),
            {"type": "result", "id": stanza.get("id"), "from": domain, "to": stanza.get("from")},
        )
    if child is not None and kind == "get" and child.tag == qname(NS_VERSION, "query"):
        reply = element(
            qname(ns or NS_SERVER, "iq"),
            {"type": "result", "id": stanza.get("id"), "from": domain, "to": stanza.get("from")},
        )
        reply.append(
            element(
                qname(NS_VERSION, "query"),
                children=[
                    element(qname(NS_VERSION, "name"), text=name),
                    element(qname(NS_VERSION, "version"), text=__version__),
                ],
            )
        )
        return reply
    return stanza_error(
        stanza, "service-unavailable", "cancel", "this server does not answer that", by=domain
    )


class S2SServer:
    """What the proxy and the partner emulator share: S2S in on 5269, S2S out, dialback."""

    def __init__(
        self,
        ctx: ServiceContext,
        *,
        iface: Interface,
        domains: frozenset[str],
        partners: frozenset[str] | None,
        cert: CertPaths,
        settings: S2SSettings,
        verify_names: bool = True,
    ) -> None:
        self.ctx = ctx
        self.iface = iface
        self.address = ctx.address(iface)
        self.domains = domains
        self.domain = sorted(domains)[0]
        self.cert = cert
        # The lab's own (simulator.pki.secrets); a context built without one gets a random
        # secret: dialback keys must never be computable offline (XEP-0185).
        secret = settings.dialback_secret or secrets.token_urlsafe(18)
        verify = settings.verify_server_names
        self.config = SessionConfig(
            local_domains=domains,
            dialback_secret=secret.encode(),
            partner_domains=partners,
            allow_external=settings.allow_external,
            allow_dialback=settings.allow_dialback,
            verify_server_names=verify_names if verify is None else verify,
            timers=StreamTimers(
                idle_timeout=settings.idle_timeout, keepalive_interval=settings.keepalive
            ),
        )
        trust = [ctx.pki.trust_bundle]
        ctx.pki.require(cert)
        self.tls_server = server_context(cert, client_trust=trust)
        # chain verified here; the name is checked by the session against the domain dialled
        # (XEP-0178, RFC 6125), not against the SRV target the socket went to
        self.tls_client = client_context(trust, cert=cert, check_hostname=False)
        self.our_cert = PeerCertificate.from_der(ssl.PEM_cert_to_DER_cert(cert.cert.read_text()))
        self.resolver: LabResolver = ctx.resolver(iface)
        self.listener_limits = settings.listener_limits
        self.gates: dict[int, ConnectionGate] = {}
        """Listening port -> its connection gate."""
        self.servers: list[asyncio.Server] = []
        self.connections: set[XmppConnection] = set()
        self.tasks = aioloop.Tasks()
        self.outbound: dict[str, _Outbound] = {}
        self.inbound_auth: dict[str, str] = {}
        """Partner domain -> how it authenticated on its inbound stream (last one)."""
        self.outbound_auth: dict[str, str] = {}
        """Partner domain -> how we authenticated to it on our outbound stream."""
        self.delivery_timeout = settings.delivery_timeout

    # ------------------------------------------------------------------ lifecycle
    async def listen(
        self,
        port: int,
        handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
        address: str | None = None,
        **kw: object,
    ) -> asyncio.Server:
        """Serve ``handler`` on ``port``, behind a :class:`ConnectionGate` of its own."""
        gate = ConnectionGate(self.listener_limits.connections)

        async def gated(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = writer.get_extra_info("peername")
            source = str(peer[0]) if isinstance(peer, tuple) else "?"
            refused = gate.admit(source)
            if refused is not None:
                if gate.refused % 1000 == 1:
                    log.warning("%s: stream from %s refused: %s", self.ctx.service, source, refused)
                writer.transport.abort()
                return
            try:
                await handler(reader, writer)
            finally:
                gate.release(source)

        server = await asyncio.start_server(gated, address or self.address, port, **kw)  # type: ignore[arg-type]
        self.gates[int(server.sockets[0].getsockname()[1])] = gate
        self.servers.append(server)
        return server

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        for conn in list(self.connections):
            conn.close()
        for task in self.tasks.cancel():
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 2.0)
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)
        self.servers.clear()

    # ------------------------------------------------------------------ inbound S2S
    def accept(
        self,
        role: Role,
        config: SessionConfig,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_event: Callable[[XmppConnection, XmppEvent], None],
        *,
        starttls: bool = True,
        peer_certificate: PeerCertificate | None = None,
        name: str = "",
    ) -> XmppConnection:
        """The connection of a stream that arrived on one of our listeners: a fresh session of
        ``role`` under the listeners' limits, offering STARTTLS with our certificate
        (``starttls``; the gateway's listener is TLS from the first byte)."""
        session = Session(
            role,
            config,
            now=asyncio.get_running_loop().time(),
            stream_id=new_stream_id(),
            peer_certificate=peer_certificate,
        )
        return XmppConnection(
            session,
            reader,
            writer,
            on_event=on_event,
            tls_server=self.tls_server if starttls else None,
            name=name,
            limits=self.listener_limits,
        )

    async def serve(self, conn: XmppConnection) -> None:
        """Run ``conn`` to its end, counted in :attr:`connections` meanwhile."""
        self.connections.add(conn)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)

    async def handle_s2s(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = self.accept(Role.RECEIVING, self.config, reader, writer, self._s2s_event)
        await self.serve(conn)

    def _s2s_event(self, conn: XmppConnection, event: XmppEvent) -> None:
        if isinstance(event, Authenticated):
            self.inbound_auth[event.domain] = event.method
            log.info("inbound stream from %s authenticated by %s", event.domain, event.method)
        elif isinstance(event, DialbackVerifyNeeded):
            self.tasks.spawn(self._dialback(conn, event), f"dialback-{event.originating}")
        elif isinstance(event, StanzaReceived):
            partner = domain_of(event.element.get("from")) or ""
            self.from_partner(event.element, partner)

    async def _dialback(self, conn: XmppConnection, event: DialbackVerifyNeeded) -> None:
        valid = await verify_dialback(
            self.config,
            self.resolver,
            local_domain=event.receiving,
            remote_domain=event.originating,
            their_stream_id=event.stream_id,
            key=event.key,
            tls_client=self.tls_client,
            local_address=self.address,
        )
        log.info("dialback for %s: %s", event.originating, "valid" if valid else "invalid")
        if not conn.closed.is_set():
            conn.dialback_verified(event.originating, event.receiving, valid)

    def from_partner(self, stanza: ET.Element, partner: str) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ outbound S2S
    def send_to_partner(
        self, domain: str, stanza: ET.Element, delivery: Delivery | None = None
    ) -> None:
        """Send ``stanza`` on our outbound stream to ``domain`` (opened on demand; queued while
        it is negotiated). ``delivery`` is told once the partner's server has the stanza, or
        that it never got there."""
        link = self.outbound.get(domain)
        if link is not None and link.conn is not None and link.conn.session.ready:
            self._write(link, stanza, delivery)
            return
        if link is None or (link.task is not None and link.task.done()):
            link = _Outbound(domain)
            self.outbound[domain] = link
            link.task = self.tasks.spawn(self._connect(link), f"s2s-out-{domain}")
        if len(link.queue) >= MAX_QUEUED:
            if delivery is not None:
                delivery("resource-constraint", "too many stanzas queued")
            else:
                self.bounce(stanza, "resource-constraint", "wait", "too many stanzas queued")
            return
        link.queue.append((stanza, delivery))

    def _write(self, link: _Outbound, stanza: ET.Element, delivery: Delivery | None) -> None:
        assert link.conn is not None
        link.conn.send_stanza(stanza)
        if delivery is None:
            return
        link.unconfirmed.append(delivery)
        if not link.ping_scheduled:
            link.ping_scheduled = True
            asyncio.get_running_loop().call_soon(self._delivery_ping, link)

    def _delivery_ping(self, link: _Outbound) -> None:
        """Follow what was written with an XEP-0199 ping: the partner processes a stream in
        order (:rfc:`6120#section-10.1`), so its answer, result or error, proves that it has
        the stanzas sent before it."""
        link.ping_scheduled = False
        if not link.unconfirmed or link.conn is None or not link.conn.session.ready:
            return
        ping_id = f"es-delivery-{new_stream_id()}"
        link.awaiting[ping_id], link.unconfirmed = link.unconfirmed, []
        ping = element(
            qname(NS_SERVER, "iq"),
            {"type": "get", "id": ping_id, "from": self.domain, "to": link.domain},
            children=[element(qname(NS_PING, "ping"))],
        )
        link.conn.send_stanza(ping)
        asyncio.get_running_loop().call_later(
            self.delivery_timeout, self._delivery_timed_out, link, ping_id
        )

    def _delivery_timed_out(self, link: _Outbound, ping_id: str) -> None:
        for delivery in link.awaiting.pop(ping_id, []):
            delivery("remote-server-timeout", "the partner did not confirm delivery")

    def delivery_confirmed(self, stanza: ET.Element, partner: str) -> bool:
        """True when ``stanza`` (from ``partner``) answers one of our delivery pings."""
        if not stanza.tag.endswith("}iq") or stanza.get("type") not in ("result", "error"):
            return False
        link = self.outbound.get(partner)
        ping_id = stanza.get("id") or ""
        if link is None or ping_id not in link.awaiting or stanza.get("from") != partner:
            return False
        for delivery in link.awaiting.pop(ping_id):
            delivery(None, "")
        return True

    async def _connect(self, link: _Outbound) -> None:
        session = Session(
            Role.INITIATING,
            self.config,
            now=asyncio.get_running_loop().time(),
            stream_id=new_stream_id(),
            local_domain=self.domain,
            remote_domain=link.domain,
            can_external=self.our_cert.matches(self.domain),
        )
        try:
            addresses = await resolve_s2s(self.resolver, link.domain)
            conn, task = await open_session(
                session,
                addresses,
                on_event=self._outbound_event,
                tls_client=self.tls_client,
                local_address=self.address,
            )
        except (OSError, ResolutionError) as exc:
            log.info("cannot reach %s: %s", link.domain, exc)
            self._fail_queue(link, "remote-server-not-found", "cannot connect to the partner")
            return
        link.conn = conn
        self.connections.add(conn)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.ready.wait(), 20.0)
            if conn.session.ready:
                queued, link.queue = link.queue, []
                for stanza, delivery in queued:
                    self._write(link, stanza, delivery)
            else:
                self._fail_queue(
                    link, "remote-server-timeout", "could not authenticate to the partner"
                )
                conn.close()
            await task
        finally:
            self.connections.discard(conn)
            if self.outbound.get(link.domain) is link:
                del self.outbound[link.domain]
            self._fail_queue(link, "remote-server-timeout", "the partner stream closed")

    def _outbound_event(self, conn: XmppConnection, event: XmppEvent) -> None:
        if isinstance(event, StanzaReceived):
            self.from_partner(event.element, conn.session.remote_domain or "")
        elif isinstance(event, Authenticated):
            self.outbound_auth[event.domain] = event.method
            log.info("outbound stream to %s authenticated by %s", event.domain, event.method)

    def _fail_queue(self, link: _Outbound, condition: str, text: str) -> None:
        """Bounce what never left, and tell whoever waits for a delivery that it did not come
        (the waiter answers its sender itself)."""
        queued, link.queue = link.queue, []
        error_type = "cancel" if "found" in condition else "wait"
        for stanza, delivery in queued:
            if delivery is not None:
                delivery(condition, text)
            else:
                self.bounce(stanza, condition, error_type, text)
        waiting = link.unconfirmed + [d for ds in link.awaiting.values() for d in ds]
        link.unconfirmed, link.awaiting = [], {}
        for delivery in waiting:
            delivery(condition, f"{text} before confirming delivery")

    def bounce(self, stanza: ET.Element, condition: str, error_type: str, text: str) -> None:
        raise NotImplementedError


# ====================================================================== the Edge's proxy


class XmppProxyService(S2SServer):
    """The Edge's XMPP proxy: S2S on the access interface, the gateway link on 23456."""

    def __init__(self, ctx: ServiceContext) -> None:
        settings = ctx.typed_settings(XmppProxySettings)
        s2s = next((lst for lst in ctx.listeners if lst.proto == "xmpp-s2s"), None)
        mtls = next((lst for lst in ctx.listeners if lst.proto == "xmpp-mtls"), None)
        if s2s is None or mtls is None:
            raise EdgesimError(
                f"{ctx.host.id}: xmpp-proxy needs an xmpp-s2s and an xmpp-mtls listener"
            )
        self.s2s_listener, self.mtls_listener = s2s, mtls
        access = ctx.host.interface(s2s.interface)
        domains = _lower(settings.domains or (ctx.host.domain or "contoso.lab",))
        default_partners = [h.domain for h in ctx.topology.hosts_with_role("xmpp-partner")]
        partners = _lower(
            settings.partners if settings.partners is not None else _present(default_partners)
        )
        cert = ctx.pki.interface_cert(access)
        if settings.access_cert is not None:
            if settings.access_key is None:
                raise ConfigError(
                    ctx.topology.path, "services.xmpp-proxy.access_cert", "needs access_key too"
                )
            cert = CertPaths(
                Path(settings.access_cert), Path(settings.access_key), Path(settings.access_cert)
            )
        super().__init__(
            ctx, iface=access, domains=domains, partners=partners, cert=cert, settings=settings
        )
        self.policy = RoutingPolicy(domains, partners)
        internal = ctx.host.interface(mtls.interface)
        self.internal_address = ctx.address(internal)
        fe_names = [
            n
            for h in ctx.topology.hosts_with_role("front-end")
            for i in h.interfaces
            for n in i.fqdns
        ]
        self.gateway_config = SessionConfig(
            local_domains=domains,
            gateway_names=tuple(n.lower() for n in (settings.gateway_names or fe_names)),
            timers=self.config.timers,
        )
        internal_cert = ctx.pki.require(ctx.pki.interface_cert(internal))
        self.tls_internal = server_context(
            internal_cert,
            client_trust=[ctx.pki.ca_cert(internal.ca or "internal")],
            require_client_cert=True,
        )
        self.gateways: list[XmppConnection] = []
        self.stats = {"from_partner": 0, "from_gateway": 0, "rejected": 0}
        self._handled: dict[XmppConnection, tuple[int, set[int]]] = {}
        """Gateway link -> (stanzas handled in a row, those handled out of order): XEP-0198."""

    async def start(self) -> list[BoundListener]:
        s2s = await self.listen(self.s2s_listener.port, self.handle_s2s)
        self.address_internal = self.internal_address
        server = await self.listen(
            self.mtls_listener.port,
            self.handle_gateway,
            self.internal_address,
            ssl=self.tls_internal,
            ssl_handshake_timeout=self.listener_limits.handshake_timeout,
        )
        return [
            BoundListener(self.s2s_listener, "tcp", self.address, _port(s2s)),
            BoundListener(self.mtls_listener, "tcp", self.internal_address, _port(server)),
        ]

    async def check(self, bound: BoundListener) -> str | None:
        """Open a stream: on 5269 the features must offer STARTTLS; on 23456 (MTLS, checked
        with the Edge's own internal certificate, which is not a Front End's) the Edge must
        answer with an XMPP stream."""
        ssl_ctx = None
        if bound.listener.proto == "xmpp-mtls":
            internal = self.ctx.host.interface(bound.listener.interface)
            ssl_ctx = client_context(
                [self.ctx.pki.ca_cert(internal.ca or "internal")],
                cert=self.ctx.pki.interface_cert(internal),
                check_hostname=False,
            )
        reader, writer = await asyncio.open_connection(bound.address, bound.port, ssl=ssl_ctx)
        try:
            writer.write(
                f"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                f"xmlns:stream='http://etherx.jabber.org/streams' to='{self.domain}' "
                f"version='1.0'>".encode()
            )
            data = b""
            while b"</stream:features>" not in data and len(data) < 8192:
                chunk = await reader.read(4096)
                if not chunk:
                    break
                data += chunk
            if ssl_ctx is not None:
                return None if b"<stream:stream" in data else "no XMPP stream on the MTLS port"
            return None if b"starttls" in data else "no STARTTLS in the stream features"
        finally:
            writer.close()

    # ------------------------------------------------------------------ 23456
    async def handle_gateway(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        cert = PeerCertificate.from_der(
            writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        )
        conn = self.accept(
            Role.GATEWAY_SERVER,
            self.gateway_config,
            reader,
            writer,
            self._gateway_event,
            starttls=False,
            peer_certificate=cert,
            name="gateway",
        )
        try:
            await self.serve(conn)
        finally:
            self._handled.pop(conn, None)
            if conn in self.gateways:
                self.gateways.remove(conn)

    def _gateway_event(self, conn: XmppConnection, event: XmppEvent) -> None:
        if isinstance(event, Authenticated):
            self.gateways.append(conn)
        elif isinstance(event, StanzaReceived):
            self.stats["from_gateway"] += 1
            self.from_gateway(event.element, conn, event.sequence)

    def from_gateway(self, stanza: ET.Element, conn: XmppConnection, sequence: int = 0) -> None:
        """Route a stanza of the gateway; it counts as handled (XEP-0198) once it is answered
        with an error, back on this link, or in the partner's server (delivery confirmed)."""
        route = route_from_gateway(self.policy, stanza)
        if isinstance(route, Reject):
            self.stats["rejected"] += 1
            reply = stanza_error(
                stanza, route.condition, route.error_type, route.text, by=self.domain
            )
            if reply is not None:
                conn.send_stanza(reply)
        elif isinstance(route, ToGateway):
            conn.send_stanza(stanza)
        elif isinstance(route, ToPartner):

            def delivered(condition: str | None, text: str) -> None:
                if condition is not None:
                    error_type = "cancel" if "found" in condition else "wait"
                    self.bounce(stanza, condition, error_type, text)
                self._handle(conn, sequence)

            self.send_to_partner(route.domain, stanza, delivered if sequence else None)
            if sequence:
                return
        self._handle(conn, sequence)

    def _handle(self, conn: XmppConnection, sequence: int) -> None:
        """Stanza ``sequence`` of the gateway link is handled: acknowledge the run so far."""
        if not sequence or conn.closed.is_set():
            return
        handled, early = self._handled.get(conn, (0, set()))
        early.add(sequence)
        while handled + 1 in early:
            handled += 1
            early.discard(handled)
        self._handled[conn] = (handled, early)
        conn.acknowledge(handled)

    def from_partner(self, stanza: ET.Element, partner: str) -> None:
        if self.delivery_confirmed(stanza, partner):
            return
        self.stats["from_partner"] += 1
        route = route_from_partner(self.policy, stanza, partner)
        if isinstance(route, Reject):
            self.bounce(stanza, route.condition, route.error_type, route.text)
        elif not self.gateways:
            self.bounce(
                stanza,
                "service-unavailable",
                "wait",
                "the Front End's XMPP gateway is not connected",
            )
        else:
            self.gateways[0].send_stanza(stanza)

    def bounce(self, stanza: ET.Element, condition: str, error_type: str, text: str) -> None:
        self.stats["rejected"] += 1
        reply = stanza_error(stanza, condition, error_type, text, by=self.domain)
        if reply is None:
            return
        to_domain = domain_of(reply.get("to"))
        if to_domain in self.domains:
            if self.gateways:
                self.gateways[0].send_stanza(reply)
        elif to_domain in self.policy.partner_domains:
            self.send_to_partner(to_domain, reply)


def _port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


# ====================================================================== jabber.lab emulator


class XmppPartnerService(S2SServer):
    """A small XMPP server for a partner domain: c2s users and S2S both ways."""

    def __init__(self, ctx: ServiceContext) -> None:
        settings = ctx.typed_settings(XmppPartnerSettings)
        s2s = next((lst for lst in ctx.listeners if lst.proto == "xmpp-s2s"), None)
        if s2s is None:
            raise EdgesimError(f"{ctx.host.id}: xmpp-partner needs an xmpp-s2s listener")
        self.s2s_listener = s2s
        self.c2s_listener = next((lst for lst in ctx.listeners if lst.proto == "xmpp-c2s"), None)
        iface = ctx.host.interface(s2s.interface)
        domain = (ctx.host.domain or iface.fqdn or "jabber.lab").lower()
        self.users = {user.lower(): password for user, password in settings.users.items()}
        super().__init__(
            ctx,
            iface=iface,
            domains=frozenset({domain}),
            partners=None,
            cert=ctx.pki.interface_cert(iface),
            settings=settings,
        )
        self.c2s_config = SessionConfig(
            local_domains=self.domains, users=self.users, timers=self.config.timers
        )
        self.clients: dict[str, list[XmppConnection]] = {}
        self.presence = PresenceServer(self.domains)
        """Rosters and presence of the users (:rfc:`6121`)."""

    async def start(self) -> list[BoundListener]:
        bound = []
        s2s = await self.listen(self.s2s_listener.port, self.handle_s2s)
        bound.append(BoundListener(self.s2s_listener, "tcp", self.address, _port(s2s)))
        if self.c2s_listener is not None:
            c2s = await self.listen(self.c2s_listener.port, self.handle_c2s)
            bound.append(BoundListener(self.c2s_listener, "tcp", self.address, _port(c2s)))
        return bound

    async def handle_c2s(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = self.accept(Role.C2S, self.c2s_config, reader, writer, self._c2s_event)
        session = conn.session
        try:
            await self.serve(conn)
        finally:
            if session.jid is not None:
                conns = self.clients.get(bare_jid(session.jid), [])
                if conn in conns:
                    conns.remove(conn)
                for stanza in self.presence.disconnected(session.jid):
                    self.route(stanza)

    def _c2s_event(self, conn: XmppConnection, event: XmppEvent) -> None:
        if isinstance(event, Authenticated) and event.jid:
            self.clients.setdefault(bare_jid(event.jid), []).append(conn)
            self.presence.connected(event.jid)
        elif isinstance(event, StanzaReceived):
            stanza = in_namespace(event.element, NS_SERVER)
            if stanza.tag == qname(NS_SERVER, "presence") and conn.session.jid:
                for out in self.presence.from_user(conn.session.jid, stanza):
                    self.route(out)
                return
            self.route(stanza)

    def route(self, stanza: ET.Element) -> None:
        """Route a stanza (jabber:server namespace) from a local user or a partner."""
        to_domain = domain_of(stanza.get("to"))
        if to_domain in self.domains:
            self.deliver_local(stanza)
        elif to_domain:
            self.send_to_partner(to_domain, stanza)

    def deliver_local(self, stanza: ET.Element) -> None:
        to = stanza.get("to") or ""
        if "@" not in to and stanza.tag == qname(NS_SERVER, "iq"):
            reply = server_iq(stanza, self.domain, "edgesim jabber.lab emulator")
            if reply is not None:
                self.route(reply)
            return
        if stanza.tag == qname(NS_SERVER, "presence") and stanza.get("type") != "error":
            deliver, elsewhere = self.presence.for_user(stanza)
            for out in elsewhere:
                self.route(out)
            for out in deliver:
                self._to_resources(out)
            return
        conns = self.clients.get(bare_jid(to).lower(), [])
        if "/" in to:
            conns = [c for c in conns if c.session.jid == to] or conns
        if not conns:
            self.bounce(stanza, "service-unavailable", "cancel", "the user is not online")
            return
        client_stanza = in_namespace(stanza, NS_CLIENT)
        for conn in conns[:1] if stanza.tag.endswith("}iq") else conns:
            conn.send_stanza(client_stanza)

    def _to_resources(self, stanza: ET.Element) -> None:
        """Presence for a user: to its connected resources, dropped when none (RFC 6121)."""
        to = stanza.get("to") or ""
        conns = self.clients.get(bare_jid(to).lower(), [])
        if "/" in to:
            conns = [c for c in conns if c.session.jid == to] or conns
        client_stanza = in_namespace(stanza, NS_CLIENT)
        for conn in conns:
            conn.send_stanza(client_stanza)

    def from_partner(self, stanza: ET.Element, partner: str) -> None:
        self.route(stanza)

    def bounce(self, stanza: ET.Element, condition: str, error_type: str, text: str) -> None:
        reply = stanza_error(stanza, condition, error_type, text, by=self.domain)
        if reply is not None and domain_of(reply.get("to")):
            self.route(reply)


# ====================================================================== Front End gateway


class XmppGatewayService:
    """The Front End's XMPP gateway as a lab service (host ``fe``): see :mod:`.gateway`.

    ``bridge`` is a :class:`~simulator.xmpp.gateway.RecordingBridge` until the lab wires the SIP
    Front End (set ``service.gateway.bridge`` before or after start). When the Edge is not up
    yet, the gateway keeps retrying every ``retry`` seconds (setting, default 2) in the
    background; ``connected`` is set whenever the link is up.
    """

    def __init__(self, ctx: ServiceContext) -> None:
        from simulator.xmpp.gateway import (
            RecordingBridge,
            XmppGateway,
            XmppGatewaySettings,
            gateway_from_context,
        )

        self.ctx = ctx
        self.bridge = RecordingBridge()
        self.gateway: XmppGateway = gateway_from_context(ctx, self.bridge)
        self.settings = ctx.typed_settings(XmppGatewaySettings)
        self.retry = self.settings.retry
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> list[BoundListener]:
        self._attach_front_end()
        self._task = asyncio.create_task(self._keep_connected(), name="xmpp-gateway")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), 5.0)
        return []

    def _attach_front_end(self) -> None:
        """Bridge to the SIP Front End on this host (started before us: see ``services``)."""
        server = getattr(self.ctx.neighbours.get("front-end"), "server", None)
        if server is None:
            log.warning(
                "%s: no SIP Front End on this host; XMPP messages are recorded, not delivered",
                self.ctx.host.id,
            )
            return
        from simulator.sip.emulators.xmpp_bridge import attach

        configured = self.settings.xmpp_domains
        domains = (
            list(configured)
            if configured is not None
            else _present([h.domain for h in self.ctx.topology.hosts_with_role("xmpp-partner")])
        )
        attach(server, self.gateway, domains)
        log.info("%s: XMPP gateway bridged to the Front End for %s", self.ctx.host.id, domains)

    async def _keep_connected(self) -> None:
        while True:
            try:
                await self.gateway.start()
            except (OSError, ConnectionError, TimeoutError, ssl.SSLError) as exc:
                log.info("XMPP gateway cannot reach the Edge yet: %s", exc)
                await asyncio.sleep(self.retry)
                continue
            self.connected.set()
            conn = self.gateway.conn
            if conn is not None:
                await conn.closed.wait()
            self.connected.clear()
            await asyncio.sleep(self.retry)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        await self.gateway.stop()
