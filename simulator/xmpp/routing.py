"""Sans-IO routing policy of the XMPP proxy: where a stanza goes, or which stanza error it gets.

The Edge serves its own domains (``contoso.lab``) through the Front End's XMPP gateway on 23456
and reaches the XMPP partners of its allow list over S2S on 5269 (:rfc:`6120#section-10`).
A stanza that cannot be routed gets a stanza error (:rfc:`6120#section-8.3`) back to its sender,
never silence; an error stanza is never answered with another error (loops).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from simulator.xmpp.s2s import domain_of
from simulator.xmpp.stream import NS_SERVER, NS_STANZA_ERRORS, element, qname, split_qname


@dataclass(frozen=True)
class RoutingPolicy:
    local_domains: frozenset[str]
    """Domains behind the gateway (the Edge's SIP domains)."""
    partner_domains: frozenset[str]
    """The allow list of federated XMPP domains."""


@dataclass(frozen=True)
class ToGateway:
    """Deliver to the Front End's XMPP gateway."""


@dataclass(frozen=True)
class ToPartner:
    domain: str


@dataclass(frozen=True)
class Reject:
    condition: str
    """A stanza error condition (:rfc:`6120#section-8.3.3`)."""
    error_type: str
    text: str


Route = ToGateway | ToPartner | Reject


def route_from_gateway(policy: RoutingPolicy, stanza: ET.Element) -> Route:
    """A stanza the Front End's gateway sent on 23456."""
    to, from_ = domain_of(stanza.get("to")), domain_of(stanza.get("from"))
    if to is None or from_ is None:
        return Reject("bad-request", "modify", "stanzas need both 'from' and 'to'")
    if from_ not in policy.local_domains:
        return Reject(
            "not-allowed", "cancel", "'from' must be an address of a domain this Edge serves"
        )
    if to in policy.local_domains:
        return ToGateway()
    if to in policy.partner_domains:
        return ToPartner(to)
    return Reject("not-allowed", "cancel", "federation with that XMPP domain is not allowed")


def route_from_partner(policy: RoutingPolicy, stanza: ET.Element, partner: str) -> Route:
    """A stanza from an authenticated partner stream (``from`` and ``to`` checked by the core)."""
    if partner not in policy.partner_domains:
        return Reject("not-allowed", "cancel", "federation with that XMPP domain is not allowed")
    if domain_of(stanza.get("to")) in policy.local_domains:
        return ToGateway()
    return Reject("item-not-found", "cancel", "this Edge does not serve that domain")


def stanza_error(
    stanza: ET.Element, condition: str, error_type: str, text: str, by: str | None = None
) -> ET.Element | None:
    """The error reply to ``stanza`` (:rfc:`6120#section-8.3.1`), or None for an error stanza."""
    if stanza.get("type") == "error":
        return None
    ns, local = split_qname(stanza.tag)
    ns = ns or NS_SERVER
    reply = element(
        qname(ns, local),
        {
            "from": stanza.get("to"),
            "to": stanza.get("from"),
            "id": stanza.get("id"),
            "type": "error",
        },
    )
    error = element(qname(ns, "error"), {"type": error_type, "by": by})
    error.append(element(qname(NS_STANZA_ERRORS, condition)))
    error.append(element(qname(NS_STANZA_ERRORS, "text"), text=text))
    reply.append(error)
    return reply
