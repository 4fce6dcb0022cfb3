"""A ready-made XMPP lab for tests, benchmarks and scenarios.

:func:`start_xmpp_lab` starts the local lab's Edge, DNS and (optionally) the jabber.lab
emulator, plus the Front End's XMPP gateway emulator with a :class:`RecordingBridge`;
:class:`~simulator.xmpp.client.ChatClient` is the XMPP user that drives it.
:data:`PORT_MAP` moves the lab's XMPP and DNS ports up (``topology.with_ports(PORT_MAP)``, SRV
records follow), so that a test lab neither needs the real ports nor collides with another lab.
"""

from __future__ import annotations

from dataclasses import dataclass

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
