"""A ready-made XMPP lab for tests, benchmarks and scenarios.

:func:`start_xmpp_lab` starts the local lab's Edge, DNS and (optionally) the jabber.lab
emulator, plus the Front End's XMPP gateway emulator with a :class:`RecordingBridge`;
:class:`ChatClient` is a slixmpp user that records the chat messages it receives.
:func:`shifted_topology` moves the lab's ports up (SRV records follow), so that a test lab
neither needs the real ports nor collides with another lab on the same machine.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path

import slixmpp

from simulator.lab.runners.local import LocalLab
from simulator.lab.services import ServiceContext
from simulator.lab.topology import Topology, default_topology_path
from simulator.pki import LabPki
from simulator.xmpp.gateway import RecordingBridge, XmppGateway, gateway_from_context
from simulator.xmpp.service import XmppProxyService

#: The ports :func:`shifted_topology` moves.
PORT_MAP = {5269: 25269, 23456: 33456, 5222: 25222, 53: 25353}

STREAM_HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:server'"
    " xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback'"
    " to='{to}' from='{frm}' version='1.0'>"
)


def shifted_topology(directory: Path, port_map: dict[int, int] | None = None) -> Path:
    """Write the default topology with ``port_map`` applied to listeners and SRV records."""
    mapping = PORT_MAP if port_map is None else port_map
    text = default_topology_path().read_text()

    def swap(match: re.Match[str]) -> str:
        port = int(match.group(2))
        return f"{match.group(1)}{mapping.get(port, port)}"

    path = directory / "topology.toml"
    path.write_text(re.sub(r"(\bport = )(\d+)\b", swap, text))
    return path


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
