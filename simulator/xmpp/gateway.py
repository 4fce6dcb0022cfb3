"""The Front End's XMPP gateway emulator: XMPP on the Edge's 23456 <-> the Front End's SIP users.

Lync's XMPP gateway sits on the Front End pool and connects to the Edge's XMPP proxy over MTLS
(TCP 23456), presenting the Front End's certificate; stanzas flow both ways on that connection.
This emulator translates, as that gateway does:

- chat: an XMPP ``<message>`` with a body to a SIP user becomes a call on the :class:`SipBridge`
  (the Front End delivers it as a SIP MESSAGE); a SIP MESSAGE to ``romeo@jabber.lab``
  (:meth:`XmppGateway.send_from_sip`) becomes an XMPP chat message, and returns only once the
  partner's server has it: the link runs XEP-0198 acknowledgements and the Edge acknowledges a
  stanza only when delivery is confirmed (or answered with an error, which
  :meth:`~XmppGateway.send_from_sip` raises as :class:`DeliveryFailed`);
- presence (:rfc:`6121`): a SIP user's subscription to an XMPP contact (SIP SUBSCRIBE) becomes
  ``subscribe`` plus a ``probe``; the contact's ``available``/``unavailable`` presence reaches the
  SIP side (NOTIFY); an XMPP user's ``subscribe`` to a SIP user is approved (``subscribed``) for
  an existing user, answered ``unsubscribed`` otherwise, and from then on the SIP user's presence
  (registered or not) goes to that watcher, probes included; ``unsubscribe``/``unsubscribed``
  end it;
- the server's own iq: XEP-0199 ping and XEP-0092 version for ``contoso.lab``, ping for a user's
  bare JID; any other request gets ``service-unavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from simulator import __version__, aioloop
from simulator.lab.services import ServiceContext
from simulator.pki import CertPaths
from simulator.tls import client_context
from simulator.xmpp.aio import XmppConnection, new_stream_id, open_session
from simulator.xmpp.events import StanzaReceived, StanzasAcknowledged, XmppEvent
from simulator.xmpp.routing import stanza_error
from simulator.xmpp.s2s import Role, Session, SessionConfig, bare_jid
from simulator.xmpp.stream import NS_SERVER, NS_STANZA_ERRORS, StreamTimers, element, qname

log = logging.getLogger(__name__)

GATEWAY_NAME = "edgesim XMPP gateway (Lync Server 2013 emulation)"
"""What the gateway answers to XEP-0092 version."""
DELIVERY_WAIT = 30.0
"""Seconds a SIP MESSAGE waits for the Edge to confirm delivery."""


class SipBridge(Protocol):
    """What the gateway needs from the SIP Front End (wired by the lab)."""

    async def deliver_to_sip(self, from_jid: str, to_uri: str, text: str) -> None:
        """Deliver an XMPP chat message to a SIP user as a SIP MESSAGE (``to_uri`` is
        ``sip:alice@contoso.lab``). Raise :class:`LookupError` when the user is unknown or not
        registered: the XMPP sender then gets ``<service-unavailable/>``."""
        ...

    def presence_to_sip(self, from_jid: str, to_uri: str, available: bool) -> None:
        """The XMPP contact ``from_jid`` is (un)available, as ``to_uri`` should see it."""
        ...

    def sip_user(self, uri: str) -> bool:
        """True when ``uri`` is a user of the SIP side (subscriptions to it are approved)."""
        ...

    def sip_available(self, uri: str) -> bool:
        """True when the SIP user ``uri`` is signed in (their presence is available)."""
        ...


class DeliveryFailed(Exception):
    """The partner never got a stanza: the XMPP error condition and text (RFC 6120 8.3.3)."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text


@dataclass
class RecordingBridge:
    """A SipBridge that records what it is given (tests, and labs without the SIP side)."""

    delivered: list[tuple[str, str, str]] = field(default_factory=list)
    unknown: set[str] = field(default_factory=set)
    """SIP URIs to treat as unknown users."""
    arrived: asyncio.Queue[tuple[str, str, str]] = field(default_factory=asyncio.Queue)
    presence: asyncio.Queue[tuple[str, str, bool]] = field(default_factory=asyncio.Queue)
    """(XMPP contact, SIP user, available) as presence reaches the SIP side."""
    online: set[str] = field(default_factory=set)
    """SIP URIs whose presence is available."""

    async def deliver_to_sip(self, from_jid: str, to_uri: str, text: str) -> None:
        if to_uri in self.unknown:
            raise LookupError(to_uri)
        self.delivered.append((from_jid, to_uri, text))
        self.arrived.put_nowait((from_jid, to_uri, text))

    def presence_to_sip(self, from_jid: str, to_uri: str, available: bool) -> None:
        self.presence.put_nowait((from_jid, to_uri, available))

    def sip_user(self, uri: str) -> bool:
        return uri not in self.unknown

    def sip_available(self, uri: str) -> bool:
        return uri in self.online


def sip_uri_of(jid: str) -> str:
    return "sip:" + bare_jid(jid)


def jid_of(sip_uri: str) -> str:
    return sip_uri.removeprefix("sips:").removeprefix("sip:").split(";", 1)[0]


def error_condition(stanza: ET.Element) -> tuple[str, str]:
    """(condition, text) of an error stanza (:rfc:`6120#section-8.3.2`)."""
    error = next((c for c in stanza if c.tag.endswith("}error")), None)
    if error is None:
        return "undefined-condition", ""
    condition, text = "undefined-condition", ""
    for child in error:
        if child.tag.startswith(f"{{{NS_STANZA_ERRORS}}}"):
            local = child.tag.split("}", 1)[1]
            if local == "text":
                text = child.text or ""
            else:
                condition = local
    return condition, text


class XmppGateway:
    """Connects to the Edge's 23456 and bridges to SIP; reconnect is the owner's business."""

    def __init__(
        self,
        *,
        edge_address: tuple[str, int],
        edge_name: str,
        domain: str,
        cert: CertPaths,
        trust: list[Path],
        bridge: SipBridge,
        local_address: str | None = None,
    ) -> None:
        self.edge_address = edge_address
        self.edge_name = edge_name
        self.domain = domain
        self.bridge = bridge
        self.local_address = local_address
        self.tls = client_context(trust, cert=cert)
        self.config = SessionConfig(
            local_domains=frozenset({domain}), timers=StreamTimers(None, 60.0)
        )
        self.conn: XmppConnection | None = None
        self.task: asyncio.Task[None] | None = None
        self.errors: asyncio.Queue[ET.Element] = asyncio.Queue()
        """Stanza errors the Edge returned for what we sent."""
        self.watchers: dict[str, set[str]] = {}
        """SIP URI -> the XMPP contacts subscribed to its presence (bare JIDs)."""
        self.watching: dict[str, set[str]] = {}
        """XMPP contact (bare JID) -> the SIP URIs subscribed to its presence."""
        self._sent: dict[int, tuple[str, asyncio.Future[None]]] = {}
        """XEP-0198 number -> (stanza id, who waits for its delivery)."""
        self._by_id: dict[str, asyncio.Future[None]] = {}
        self._tasks = aioloop.Tasks()

    async def start(self, timeout: float = 10.0) -> None:
        session = Session(
            Role.GATEWAY_CLIENT,
            self.config,
            now=asyncio.get_running_loop().time(),
            stream_id=new_stream_id(),
            local_domain=self.domain,
            remote_domain=self.domain,
        )
        self.conn, self.task = await open_session(
            session,
            [self.edge_address],
            on_event=self._event,
            tls_client=self.tls,
            ssl_now=self.tls,
            server_hostname=self.edge_name,
            local_address=self.local_address,
        )
        await asyncio.wait_for(self.conn.ready.wait(), timeout)
        if not self.conn.session.ready:
            raise ConnectionError(f"the Edge refused the gateway: {self.conn.failure}")
        self.task.add_done_callback(self._link_down)

    def _link_down(self, _task: object) -> None:
        for _, future in self._sent.values():
            if not future.done():
                future.set_exception(
                    DeliveryFailed("remote-server-timeout", "the link to the Edge closed")
                )
        self._sent.clear()
        self._by_id.clear()

    async def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        for task in [*self._tasks, *([self.task] if self.task else [])]:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 2.0)

    @property
    def connected(self) -> bool:
        return self.conn is not None and self.conn.session.ready

    def _send(self, stanza: ET.Element) -> int:
        if self.conn is None or not self.conn.session.ready:
            raise ConnectionError("the gateway is not connected to the Edge")
        return self.conn.send_stanza(stanza)

    # ------------------------------------------------------------------ SIP -> XMPP
    async def send_from_sip(
        self, from_uri: str, to_jid: str, text: str, timeout: float = DELIVERY_WAIT
    ) -> None:
        """A SIP MESSAGE from a Front End user to an XMPP address, sent as a chat message.

        Returns once the partner's server has it (the Edge's XEP-0198 acknowledgement); raises
        :class:`DeliveryFailed` with the XMPP error when it never got there, ``TimeoutError``
        when no answer came, :class:`ConnectionError` when the Edge link is down.
        """
        stanza_id = new_stream_id()
        stanza = element(
            qname(NS_SERVER, "message"),
            {"from": jid_of(from_uri), "to": to_jid, "type": "chat", "id": stanza_id},
            children=[element(qname(NS_SERVER, "body"), text=text)],
        )
        number = self._send(stanza)
        if number == 0:  # an Edge without XEP-0198: nothing to wait for
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sent[number] = (stanza_id, future)
        self._by_id[stanza_id] = future
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        finally:
            self._sent.pop(number, None)
            self._by_id.pop(stanza_id, None)

    def subscribe_from_sip(self, from_uri: str, to_jid: str) -> None:
        """A SIP user subscribed to an XMPP contact's presence: ``subscribe`` and a ``probe``."""
        contact = bare_jid(to_jid).lower()
        self.watching.setdefault(contact, set()).add(from_uri.lower())
        for kind in ("subscribe", "probe"):
            self._send(_presence(jid_of(from_uri), contact, kind))

    def unsubscribe_from_sip(self, from_uri: str, to_jid: str) -> None:
        contact = bare_jid(to_jid).lower()
        self.watching.get(contact, set()).discard(from_uri.lower())
        self._send(_presence(jid_of(from_uri), contact, "unsubscribe"))

    def presence_from_sip(self, uri: str, available: bool) -> None:
        """A SIP user signed in or out: their XMPP watchers get it."""
        if not self.connected:
            return
        for contact in sorted(self.watchers.get(uri.lower(), set())):
            self._send(_presence(jid_of(uri), contact, None if available else "unavailable"))

    # ------------------------------------------------------------------ XMPP -> SIP
    def _event(self, conn: XmppConnection, event: XmppEvent) -> None:
        if isinstance(event, StanzasAcknowledged):
            for number in sorted(n for n in self._sent if n <= event.count):
                _, future = self._sent.pop(number)
                if not future.done():
                    future.set_result(None)
            return
        if not isinstance(event, StanzaReceived):
            return
        stanza = event.element
        if stanza.get("type") == "error":
            waiter = self._by_id.get(stanza.get("id") or "")
            if waiter is not None and not waiter.done():
                waiter.set_exception(DeliveryFailed(*error_condition(stanza)))
            self.errors.put_nowait(stanza)
            return
        if stanza.tag == qname(NS_SERVER, "message"):
            body = stanza.findtext(qname(NS_SERVER, "body"))
            if body is not None:
                self._tasks.spawn(self._to_sip(conn, stanza, body))
        elif stanza.tag == qname(NS_SERVER, "presence"):
            self._presence(conn, stanza)
        elif stanza.tag == qname(NS_SERVER, "iq"):
            reply = self._iq(stanza)
            if reply is not None:
                conn.send_stanza(reply)

    def _iq(self, stanza: ET.Element) -> ET.Element | None:
        """The gateway answers for contoso.lab and its users' bare JIDs (RFC 6120 10.3)."""
        if stanza.get("type") not in ("get", "set"):
            return None
        to = stanza.get("to") or ""
        child = stanza[0] if len(stanza) else None
        tag = child.tag if child is not None else ""
        result = element(
            qname(NS_SERVER, "iq"),
            {"type": "result", "id": stanza.get("id"), "from": to, "to": stanza.get("from")},
        )
        if stanza.get("type") == "get" and tag == qname("urn:xmpp:ping", "ping"):
            return result
        if (
            stanza.get("type") == "get"
            and tag == qname("jabber:iq:version", "query")
            and ("@" not in to)
        ):
            result.append(
                element(
                    qname("jabber:iq:version", "query"),
                    children=[
                        element(qname("jabber:iq:version", "name"), text=GATEWAY_NAME),
                        element(qname("jabber:iq:version", "version"), text=__version__),
                    ],
                )
            )
            return result
        return stanza_error(
            stanza,
            "service-unavailable",
            "cancel",
            "the gateway does not answer this request",
            by=self.domain,
        )

    def _presence(self, conn: XmppConnection, stanza: ET.Element) -> None:
        kind = stanza.get("type")
        contact = bare_jid(stanza.get("from") or "").lower()
        to_uri = sip_uri_of(stanza.get("to") or "").lower()
        user = jid_of(to_uri)
        if kind == "subscribe":
            if self.bridge.sip_user(to_uri):
                self.watchers.setdefault(to_uri, set()).add(contact)
                conn.send_stanza(_presence(user, contact, "subscribed"))
                conn.send_stanza(self._current(to_uri, contact))
            else:
                conn.send_stanza(_presence(user, contact, "unsubscribed"))
        elif kind == "probe":
            if contact in self.watchers.get(to_uri, set()):
                conn.send_stanza(self._current(to_uri, contact))
        elif kind == "unsubscribe":
            self.watchers.get(to_uri, set()).discard(contact)
        elif kind == "unsubscribed":
            self.watching.get(contact, set()).discard(to_uri)
            self.bridge.presence_to_sip(contact, to_uri, False)
        elif kind in (None, "unavailable"):
            self.bridge.presence_to_sip(contact, to_uri, kind is None)

    def _current(self, uri: str, contact: str) -> ET.Element:
        available = self.bridge.sip_available(uri)
        return _presence(jid_of(uri), contact, None if available else "unavailable")

    async def _to_sip(self, conn: XmppConnection, stanza: ET.Element, body: str) -> None:
        try:
            await self.bridge.deliver_to_sip(
                stanza.get("from") or "", sip_uri_of(stanza.get("to") or ""), body
            )
        except LookupError:
            reply = stanza_error(
                stanza,
                "service-unavailable",
                "cancel",
                "the user is not available on SIP",
                by=self.domain,
            )
            if reply is not None and not conn.closed.is_set():
                conn.send_stanza(reply)
        except Exception:
            log.exception("SIP bridge failed")
            reply = stanza_error(
                stanza, "internal-server-error", "wait", "the SIP side failed", by=self.domain
            )
            if reply is not None and not conn.closed.is_set():
                conn.send_stanza(reply)


def _presence(from_: str, to: str, kind: str | None) -> ET.Element:
    attrs = {"from": from_, "to": to}
    if kind is not None:
        attrs["type"] = kind
    return element(qname(NS_SERVER, "presence"), attrs)


@dataclass(frozen=True)
class XmppGatewaySettings:
    """``[services.xmpp-gateway]``: the Front End's XMPP gateway."""

    edge: str = "edge"
    """Host id of the Edge whose ``xmpp-mtls`` listener the gateway connects to."""
    domain: str | None = None
    """The SIP/XMPP domain the gateway serves (default: the host's domain)."""
    retry: float = 2.0
    """Seconds between attempts to (re)connect to the Edge."""
    xmpp_domains: tuple[str, ...] | None = None
    """XMPP domains the Front End routes to the gateway (default: the domains of hosts with role
    ``xmpp-partner``)."""


def gateway_from_context(ctx: ServiceContext, bridge: SipBridge) -> XmppGateway:
    """A gateway for the Front End host of ``ctx``, aimed at the Edge's xmpp-mtls listener."""
    settings = ctx.typed_settings(XmppGatewaySettings)
    edge_id = settings.edge
    edge = ctx.topology.host(edge_id)
    listener = next(lst for lst in edge.listeners if lst.proto == "xmpp-mtls")
    edge_iface = edge.interface(listener.interface)
    our_iface = ctx.host.interfaces[0]
    ca = our_iface.ca or "internal"
    return XmppGateway(
        edge_address=(ctx.address(edge_iface), listener.port),
        edge_name=edge_iface.fqdn or "",
        domain=settings.domain or ctx.host.domain or "contoso.lab",
        cert=ctx.pki.require(ctx.pki.host_cert(ctx.host.id, ca)),
        trust=[ctx.pki.ca_cert(edge_iface.ca or "internal")],
        bridge=bridge,
        local_address=ctx.address(our_iface),
    )


__all__ = [
    "DeliveryFailed",
    "RecordingBridge",
    "SipBridge",
    "XmppGateway",
    "error_condition",
    "gateway_from_context",
]
