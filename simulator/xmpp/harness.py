"""A ready-made XMPP lab for tests, benchmarks and scenarios.

:func:`start_xmpp_lab` starts the local lab's Edge, DNS and (optionally) the jabber.lab
emulator, plus the Front End's XMPP gateway emulator with a :class:`RecordingBridge`;
:class:`ChatClient` is a slixmpp user that records the chat messages it receives.
:data:`PORT_MAP` moves the lab's XMPP and DNS ports up (``topology.with_ports(PORT_MAP)``, SRV
records follow), so that a test lab neither needs the real ports nor collides with another lab.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import slixmpp

from simulator.lab.runners.local import LocalLab
from simulator.lab.services import ServiceContext
from simulator.lab.topology import Topology
from simulator.pki import LabPki
from simulator.xmpp.gateway import RecordingBridge, XmppGateway, gateway_from_context
from simulator.xmpp.service import XmppProxyService

#: The ports a test lab moves its XMPP and DNS listeners to (``topology.with_ports(PORT_MAP)``).
PORT_MAP = {5269: 25269, 23456: 33456, 5222: 25222, 53: 25353}

STREAM_HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:server'"
    " xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback'"
    " to='{to}' from='{frm}' version='1.0'>"
)


class ChatClient(slixmpp.ClientXMPP):
    """A slixmpp user that records the chat messages it receives."""

    def __init__(self, jid: str, password: str, ca: Path) -> None:
        super().__init__(jid, password)
        self.ca_certs = ca
        self.enable_direct_tls = False
        self.received: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
        self.presences: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        """(bare JID, ``available`` or ``unavailable``) as presence arrives."""
        self.started: asyncio.Future[bool] = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("message", self._on_message)
        self.add_event_handler("failed_auth", self._on_failed)
        for kind in ("available", "unavailable"):
            self.add_event_handler(f"presence_{kind}", self._on_presence)

    def _on_start(self, _event: object) -> None:
        self.send_presence()
        if not self.started.done():
            self.started.set_result(True)

    def _on_failed(self, _event: object) -> None:
        if not self.started.done():
            self.started.set_exception(RuntimeError("authentication failed"))

    def _on_presence(self, presence: slixmpp.Presence) -> None:
        kind = "unavailable" if presence["type"] == "unavailable" else "available"
        self.presences.put_nowait((str(presence["from"]).split("/")[0].lower(), kind))

    def _on_message(self, msg: slixmpp.Message) -> None:
        self.received.put_nowait((str(msg["from"]), str(msg["type"]), str(msg["body"])))

    async def login(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.connect(host, port)
        await asyncio.wait_for(self.started, timeout)


@dataclass
class XmppLab:
    lab: LocalLab
    topology: Topology
    gateway: XmppGateway
    bridge: RecordingBridge
    proxy: XmppProxyService

    async def stop(self) -> None:
        await self.gateway.stop()
        await self.lab.stop()


async def start_xmpp_lab(
    topology: Topology,
    pki: LabPki,
    settings: dict[str, dict[str, object]] | None = None,
    hosts: list[str] | None = None,
) -> XmppLab:
    """Start ``hosts`` of the lab (default: the Edge, jabber.lab and both DNS servers) and the
    Front End gateway emulator connected to the Edge's 23456."""
    hosts = hosts or ["edge", "jabber", "dns-ext", "dns-int"]
    lab = LocalLab(topology, pki.directory, settings=settings, hosts=hosts)
    await lab.start()
    try:
        proxy = next(s.instance for s in lab.statuses if s.service == "xmpp-proxy")
        assert isinstance(proxy, XmppProxyService)
        bridge = RecordingBridge()
        ctx = ServiceContext(topology, topology.host("fe"), "xmpp-gateway", lab.pki, "local", {})
        gateway = gateway_from_context(ctx, bridge)
        await gateway.start()
    except BaseException:
        await lab.stop()
        raise
    return XmppLab(lab, topology, gateway, bridge, proxy)
