"""The Front End's XMPP gateway emulator: XMPP on the Edge's 23456 <-> the Front End's SIP users.

Lync's XMPP gateway sits on the Front End pool and connects to the Edge's XMPP proxy over MTLS
(TCP 23456), presenting the Front End's certificate; stanzas flow both ways on that connection.
This emulator turns a chat message to ``alice@contoso.lab`` into a call on a :class:`SipBridge`
(the SIP Front End delivers it as a SIP MESSAGE), and a SIP MESSAGE from alice to
``romeo@jabber.lab`` (:meth:`XmppGateway.send_from_sip`) into an XMPP message.

Only ``<message>`` with a ``<body>`` is translated; presence and iq get a stanza error
``feature-not-implemented`` for iq requests and are otherwise ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from simulator.lab.services import ServiceContext
from simulator.pki import CertPaths
from simulator.tls import client_context
from simulator.xmpp.aio import XmppConnection, new_stream_id, open_session
from simulator.xmpp.events import StanzaReceived, XmppEvent
from simulator.xmpp.routing import stanza_error
from simulator.xmpp.s2s import Role, Session, SessionConfig, bare_jid
from simulator.xmpp.stream import NS_SERVER, StreamTimers, element, qname

log = logging.getLogger(__name__)


class SipBridge(Protocol):
    """What the gateway needs from the SIP Front End (wired by the lab)."""

    async def deliver_to_sip(self, from_jid: str, to_uri: str, text: str) -> None:
        """Deliver an XMPP chat message to a SIP user as a SIP MESSAGE (``to_uri`` is
        ``sip:alice@contoso.lab``). Raise :class:`LookupError` when the user is unknown or not
        registered: the XMPP sender then gets ``<service-unavailable/>``."""
        ...


class XmppSide(Protocol):
    """What the SIP Front End calls for SIP -> XMPP (implemented by :class:`XmppGateway`)."""

    async def send_from_sip(self, from_uri: str, to_jid: str, text: str) -> None:
        """Send a SIP MESSAGE's text from ``from_uri`` (``sip:alice@contoso.lab``) to the XMPP
        address ``to_jid``; raises :class:`ConnectionError` when the Edge link is down."""
        ...


@dataclass
class RecordingBridge:
    """A SipBridge that records what it is given (tests, and labs without the SIP side)."""

    delivered: list[tuple[str, str, str]] = field(default_factory=list)
    unknown: set[str] = field(default_factory=set)
    """SIP URIs to treat as unknown users."""
    arrived: asyncio.Queue[tuple[str, str, str]] = field(default_factory=asyncio.Queue)

    async def deliver_to_sip(self, from_jid: str, to_uri: str, text: str) -> None:
        if to_uri in self.unknown:
            raise LookupError(to_uri)
        self.delivered.append((from_jid, to_uri, text))
        self.arrived.put_nowait((from_jid, to_uri, text))


def sip_uri_of(jid: str) -> str:
    return "sip:" + bare_jid(jid)


def jid_of(sip_uri: str) -> str:
    return sip_uri.removeprefix("sips:").removeprefix("sip:").split(";", 1)[0]


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
        self._tasks: set[asyncio.Task[None]] = set()

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

    async def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        for task in [*self._tasks, *([self.task] if self.task else [])]:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 2.0)

    @property
    def connected(self) -> bool:
        return self.conn is not None and self.conn.session.ready

    async def send_from_sip(self, from_uri: str, to_jid: str, text: str) -> None:
        """A SIP MESSAGE from a Front End user to an XMPP address: send it as a chat message."""
        if self.conn is None or not self.conn.session.ready:
            raise ConnectionError("the gateway is not connected to the Edge")
        stanza = element(
            qname(NS_SERVER, "message"),
            {"from": jid_of(from_uri), "to": to_jid, "type": "chat", "id": new_stream_id()},
            children=[element(qname(NS_SERVER, "body"), text=text)],
        )
        self.conn.send_stanza(stanza)

    def _event(self, conn: XmppConnection, event: XmppEvent) -> None:
        if not isinstance(event, StanzaReceived):
            return
        stanza = event.element
        if stanza.get("type") == "error":
            self.errors.put_nowait(stanza)
            return
        if stanza.tag == qname(NS_SERVER, "message"):
            body = stanza.findtext(qname(NS_SERVER, "body"))
            if body is not None:
                task = asyncio.create_task(self._to_sip(conn, stanza, body))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        elif stanza.tag == qname(NS_SERVER, "iq") and stanza.get("type") in ("get", "set"):
            reply = stanza_error(
                stanza,
                "feature-not-implemented",
                "cancel",
                "the gateway does not answer this request",
                by=self.domain,
            )
            if reply is not None:
                conn.send_stanza(reply)

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


def gateway_from_context(ctx: ServiceContext, bridge: SipBridge) -> XmppGateway:
    """A gateway for the Front End host of ``ctx``, aimed at the Edge's xmpp-mtls listener."""
    edge_id = str(ctx.settings.get("edge", "edge"))
    edge = ctx.topology.host(edge_id)
    listener = next(lst for lst in edge.listeners if lst.proto == "xmpp-mtls")
    edge_iface = edge.interface(listener.interface)
    our_iface = ctx.host.interfaces[0]
    ca = our_iface.ca or "internal"
    return XmppGateway(
        edge_address=(ctx.address(edge_iface), listener.port),
        edge_name=edge_iface.fqdn or "",
        domain=str(ctx.settings.get("domain", ctx.host.domain or "contoso.lab")),
        cert=ctx.pki.require(ctx.pki.host_cert(ctx.host.id, ca)),
        trust=[ctx.pki.ca_cert(edge_iface.ca or "internal")],
        bridge=bridge,
        local_address=ctx.address(our_iface),
    )


__all__ = ["RecordingBridge", "SipBridge", "XmppGateway", "XmppSide", "gateway_from_context"]
