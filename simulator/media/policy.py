"""Which peers the relay may reach (RFC 8656 section 21.2.5 leaves it to the server's policy).

A relay that sends wherever a client asks is an open proxy into the networks behind it. This
module decides, per peer address, whether the relay refuses it (403); the server core asks it
for every CreatePermission, ChannelBind and RFC 6062 Connect.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class PeerPolicy:
    """Which peer addresses the relay refuses (403), decided per IP address.

    The order: an address inside :attr:`allowed` is allowed; inside :attr:`denied` refused; an
    unspecified, multicast or broadcast address refused; an address of the lab mapped to a zone
    of :attr:`denied_zones` refused; any other loopback address refused when
    :attr:`deny_loopback` (in the local runner every lab interface is a 127.b.c.d address, so the
    lab's own addresses are looked up before this rule); anything else allowed.
    """

    lab_zones: tuple[tuple[ipaddress.IPv4Network, str], ...] = ()
    """(network, zone) pairs, most specific first: lab interfaces (/32) and zone subnets."""
    denied_zones: frozenset[str] = frozenset({"perimeter-internal", "corporate"})
    """Zones the relay must not reach (the Edge's internal side, the corporate network)."""
    allowed: tuple[ipaddress.IPv4Network, ...] = ()
    """Explicitly allowed networks (win over everything else)."""
    denied: tuple[ipaddress.IPv4Network, ...] = ()
    """Explicitly refused networks."""
    deny_loopback: bool = True
    """Refuse loopback addresses that are not lab interfaces."""

    def zone_of(self, ip: ipaddress.IPv4Address) -> str | None:
        for network, zone in self.lab_zones:
            if ip in network:
                return zone
        return None

    def refuse(self, host: str) -> str | None:
        """None if relaying to ``host`` is allowed, else the reason it is not."""
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return "not an IP address"
        if not isinstance(ip, ipaddress.IPv4Address):
            return "IPv6 peers are not relayed"
        if any(ip in net for net in self.allowed):
            return None
        if any(ip in net for net in self.denied):
            return "peer address is in a denied network"
        if ip.is_unspecified or ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
            return "peer address is not unicast"
        zone = self.zone_of(ip)
        if zone is not None:
            if zone in self.denied_zones:
                return f"peer is in the {zone} zone"
            return None
        if ip.is_loopback and self.deny_loopback:
            return "peer is a loopback address"
        return None
