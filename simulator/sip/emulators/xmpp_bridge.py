"""The Front End side of the XMPP gateway: SIP users <-> XMPP users, as Lync's gateway does.

A jabber.lab user's chat message reaches alice@contoso.lab as a SIP MESSAGE from
``sip:user@jabber.lab``; alice's SIP MESSAGE to ``sip:user@jabber.lab`` leaves through the
gateway's MTLS link to the Edge (23456) as an XMPP chat message and is answered 200 only once
jabber.lab's server has it, otherwise with the SIP status of the XMPP error
(:data:`XMPP_TO_SIP`). Presence goes both ways: a SIP SUBSCRIBE to ``sip:romeo@jabber.lab``
becomes an XMPP subscription whose presence comes back as NOTIFYs; an XMPP contact subscribed
to a SIP user gets that user's sign-ins and sign-outs. :func:`attach` connects a running
:class:`~simulator.sip.emulators.server.DomainServer` and an
:class:`~simulator.xmpp.gateway.XmppGateway`; the gateway service calls it on start.
"""

from __future__ import annotations

from collections.abc import Iterable

from simulator.sip.emulators.server import DomainServer, GatewayRefused
from simulator.xmpp.gateway import DeliveryFailed, XmppGateway

#: XMPP stanza error condition (:rfc:`6120#section-8.3.3`) -> the SIP status the sender of the
#: SIP MESSAGE gets. edgesim's table, from the meaning of each condition: RFC 7247 section 5
#: defines an interworking mapping that the project could not read through its search tool.
XMPP_TO_SIP: dict[str, int] = {
    "bad-request": 400,
    "jid-malformed": 400,
    "not-acceptable": 488,
    "forbidden": 403,
    "not-allowed": 403,
    "not-authorized": 403,
    "policy-violation": 403,
    "item-not-found": 404,
    "gone": 410,
    "recipient-unavailable": 480,
    "service-unavailable": 480,
    "redirect": 480,
    "feature-not-implemented": 501,
    "internal-server-error": 500,
    "undefined-condition": 500,
    "resource-constraint": 503,
    "remote-server-not-found": 504,
    "remote-server-timeout": 504,
}


class FrontEndBridge:
    """:class:`~simulator.xmpp.gateway.SipBridge` over the Front End's registrar."""

    def __init__(self, server: DomainServer) -> None:
        self.server = server

    async def deliver_to_sip(self, from_jid: str, to_uri: str, text: str) -> None:
        bare = from_jid.split("/", 1)[0]
        self.server.deliver_message(f"sip:{bare}", to_uri, text)

    def presence_to_sip(self, from_jid: str, to_uri: str, available: bool) -> None:
        self.server.remote_presence_changed(f"sip:{from_jid.split('/', 1)[0]}", available)

    def sip_user(self, uri: str) -> bool:
        user, _, domain = uri.removeprefix("sip:").partition("@")
        return domain == self.server.config.domain and user in self.server.config.users

    def sip_available(self, uri: str) -> bool:
        return self.server.available(uri)


class XmppLink:
    """:class:`~simulator.sip.emulators.server.GatewayLink` over the XMPP gateway."""

    def __init__(self, gateway: XmppGateway) -> None:
        self.gateway = gateway

    async def send_message(self, from_uri: str, to_address: str, text: str) -> None:
        try:
            await self.gateway.send_from_sip(from_uri, to_address, text)
        except DeliveryFailed as exc:
            status = XMPP_TO_SIP.get(exc.condition, 500)
            detail = f": {exc.text}" if exc.text else ""
            raise GatewayRefused(status, f"XMPP <{exc.condition}/>{detail}") from None

    def subscribe(self, from_uri: str, to_address: str) -> None:
        self.gateway.subscribe_from_sip(from_uri, to_address)

    def unsubscribe(self, from_uri: str, to_address: str) -> None:
        self.gateway.unsubscribe_from_sip(from_uri, to_address)


def attach(server: DomainServer, gateway: XmppGateway, xmpp_domains: Iterable[str]) -> None:
    """Route XMPP into ``server``, and ``server``'s MESSAGEs and presence subscriptions for
    ``xmpp_domains`` (and its users' presence) into ``gateway``."""
    gateway.bridge = FrontEndBridge(server)
    link = XmppLink(gateway)
    for domain in xmpp_domains:
        server.gateways[domain.lower()] = link
    server.presence_listeners.append(gateway.presence_from_sip)
