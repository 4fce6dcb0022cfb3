"""The Front End side of the XMPP gateway: SIP users <-> XMPP users, as Lync's gateway does.

A jabber.lab user's chat message reaches alice@contoso.lab as a SIP MESSAGE from
``sip:user@jabber.lab``; alice's SIP MESSAGE to ``sip:user@jabber.lab`` leaves through the
gateway's MTLS link to the Edge (23456) as an XMPP chat message. :func:`attach` connects a
running :class:`~simulator.sip.emulators.server.DomainServer` and an
:class:`~simulator.xmpp.gateway.XmppGateway`; the gateway service calls it on start.
"""

from __future__ import annotations

from collections.abc import Iterable

from simulator.sip.emulators.server import DomainServer
from simulator.xmpp.gateway import XmppGateway


class FrontEndBridge:
    """:class:`~simulator.xmpp.gateway.SipBridge` over the Front End's registrar."""

    def __init__(self, server: DomainServer) -> None:
        self.server = server

    async def deliver_to_sip(self, from_jid: str, to_uri: str, text: str) -> None:
        bare = from_jid.split("/", 1)[0]
        self.server.deliver_message(f"sip:{bare}", to_uri, text)


def attach(server: DomainServer, gateway: XmppGateway, xmpp_domains: Iterable[str]) -> None:
    """Route XMPP->SIP into ``server`` and SIP MESSAGEs for ``xmpp_domains`` into ``gateway``."""
    gateway.bridge = FrontEndBridge(server)
    for domain in xmpp_domains:
        server.gateways[domain.lower()] = gateway.send_from_sip
