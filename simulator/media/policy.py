"""Which peers the relay may reach (RFC 8656 section 21.2.5 leaves it to the server's policy).

A relay that sends wherever a client asks is an open proxy into the networks behind it: the
cloud metadata service at 169.254.169.254, private networks, the server's own listeners. The
default here follows coturn's: loopback peers are refused (its ``--allow-loopback-peers`` is
off), so are the zero network and multicast (its ``--no-multicast-peers``), and the ranges its
example configuration and deployment guides deny with ``denied-peer-ip`` (:data:`RESERVED`);
on top of that the Edge itself and the lab's infrastructure. The lab's hosts are the exception:
they live in reserved ranges (RFC 5737 documentation networks, or 127.b.c.d in the embedded
lab), and the relay reaches those the topology names, in zones it may reach.

:meth:`PeerPolicy.refuse` decides, per address and, where the request names one, per port; the
server core asks it for every XOR-PEER-ADDRESS of CreatePermission and ChannelBind and for
RFC 6062 Connect (403), and drops Send indications it refuses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Container, Mapping
from dataclasses import dataclass, field

Network = ipaddress.IPv4Network
NamedNetworks = tuple[tuple[Network, str], ...]


def _named(*rows: tuple[str, str]) -> NamedNetworks:
    """(network, name) rows as written, networks parsed."""
    return tuple((Network(net), name) for net, name in rows)


NEVER: NamedNetworks = _named(
    ("0.0.0.0/8", "the zero network (RFC 1122)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved (RFC 1112) or broadcast"),
)
"""Never unicast peers: refused whatever the lists say."""

RESERVED: NamedNetworks = _named(
    ("10.0.0.0/8", "a private network (RFC 1918)"),
    ("100.64.0.0/10", "shared address space, carrier-grade NAT (RFC 6598)"),
    ("169.254.0.0/16", "link-local, with cloud metadata services (RFC 3927)"),
    ("172.16.0.0/12", "a private network (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
    ("192.0.2.0/24", "documentation, TEST-NET-1 (RFC 5737)"),
    ("192.88.99.0/24", "6to4 relay anycast (RFC 7526)"),
    ("192.168.0.0/16", "a private network (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("198.51.100.0/24", "documentation, TEST-NET-2 (RFC 5737)"),
    ("203.0.113.0/24", "documentation, TEST-NET-3 (RFC 5737)"),
)
"""The IPv4 ranges coturn deployments deny (``denied-peer-ip``), loopback apart
(:attr:`PeerPolicy.deny_loopback`)."""

LOOPBACK = Network("127.0.0.0/8")


def _find(ip: ipaddress.IPv4Address, table: NamedNetworks) -> str | None:
    return next((name for net, name in table if ip in net), None)


@dataclass(frozen=True)
class PeerPolicy:
    """Which peer addresses the relay refuses (403); see the module docstring.

    The order: never-unicast addresses refused; :attr:`allowed` networks allowed; :attr:`denied`
    networks refused; the Edge's own addresses refused, except the relay address itself (for a
    permission) and its live relayed ports (two clients of one Edge relaying to each other);
    a lab host the topology names allowed unless its zone is in :attr:`denied_zones`; any other
    address of a lab zone's subnet refused (Docker's bridge gateway, the firewalls, bridges);
    then loopback (:attr:`deny_loopback`) and the reserved ranges (:attr:`deny_reserved`)
    refused; anything else allowed.
    """

    lab_hosts: Mapping[ipaddress.IPv4Address, str] = field(default_factory=dict)
    """The lab's host interfaces (their addresses in every runner) -> zone."""
    lab_subnets: NamedNetworks = ()
    """The lab's zone subnets -> zone."""
    own: frozenset[ipaddress.IPv4Address] = frozenset()
    """The Edge's own addresses (every interface, in every runner)."""
    denied_zones: frozenset[str] = frozenset({"perimeter-internal", "corporate"})
    """Zones the relay must not reach (the Edge's internal side, the corporate network)."""
    allowed: tuple[Network, ...] = ()
    """Networks allowed whatever else matches (``allowed_peers``; coturn's allowed-peer-ip)."""
    denied: tuple[Network, ...] = ()
    """Networks refused (``denied_peers``; coturn's denied-peer-ip)."""
    deny_loopback: bool = True
    """Refuse loopback peers that are not lab hosts (coturn: unless allow-loopback-peers)."""
    deny_reserved: bool = True
    """Refuse the :data:`RESERVED` ranges (lab hosts apart)."""

    def refuse(
        self,
        host: str,
        port: int | None = None,
        *,
        relay: str | None = None,
        relay_ports: Container[int] = (),
    ) -> str | None:
        """None if relaying to ``host`` (``port``, when the request names one) is allowed, else
        why not. ``relay`` is the relay address and ``relay_ports`` its ports that hold a live
        allocation."""
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return "not an IP address"
        if not isinstance(ip, ipaddress.IPv4Address):
            return "IPv6 peers are not relayed"
        if (never := _find(ip, NEVER)) is not None:
            return f"peer address is not unicast: {never}"
        if any(ip in net for net in self.allowed):
            return None
        if any(ip in net for net in self.denied):
            return "peer address is in a denied network"
        if ip in self.own or host == relay:
            if host != relay:
                return "peer is the Edge itself"
            if port is not None and port not in relay_ports:
                return "peer is one of the Edge's own listeners or unused relay ports"
            return None
        zone = self.lab_hosts.get(ip)
        if zone is not None:
            return f"peer is in the {zone} zone" if zone in self.denied_zones else None
        subnet = _find(ip, self.lab_subnets)
        if subnet is not None:
            return f"peer is in the {subnet} zone's subnet but no lab host has that address"
        if ip in LOOPBACK and self.deny_loopback:
            return "peer is a loopback address"
        if self.deny_reserved and (reserved := _find(ip, RESERVED)) is not None:
            return f"peer address is {reserved}"
        return None
