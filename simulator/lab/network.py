"""The lab's network layout, rendered from the topology: interface names, routes, gateways.

Both the netns runner and the compose runner use this one plan, so the two labs route alike:

* a firewall joins zones and routes between them (``ip_forward``); it has only its connected
  routes, so a zone beyond the next firewall is unreachable from the other side;
* a host's default route goes via the firewall of its first zone that has one (for the Edge,
  the external firewall); every other zone a firewall of one of its zones joins gets a route via
  that firewall (for the Edge: corporate via the internal firewall);
* hosts keep their ephemeral ports out of every port range the matrix uses as a *source* (the
  Edge's relay range): otherwise a rule such as "UDP from the relay range to the client" would
  also let through any other datagram whose random source port falls in that range.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from simulator.lab.topology import Host, Interface, Topology
from simulator.matrix.model import Matrix

IFNAMSIZ = 15


def link_name(iface: Interface) -> str:
    """The interface's device name inside its host (``access``, ``wan`` ...), at most 15 chars."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", iface.id)[:IFNAMSIZ]
    return name or "eth"


@dataclass(frozen=True)
class Route:
    destination: str
    """``default`` or a subnet."""
    gateway: ipaddress.IPv4Address
    device: str
    """The host's device the gateway is reached on."""

    def ip_args(self) -> list[str]:
        return ["route", "replace", self.destination, "via", str(self.gateway), "dev", self.device]


def host_routes(topology: Topology, host: Host) -> list[Route]:
    """The routes a host needs besides its connected subnets."""
    own_zones = list(host.zones)
    routes: list[Route] = []
    seen: set[str] = set(own_zones)
    default: Route | None = None
    for zone_id in own_zones:
        my_iface = next(i for i in host.interfaces if i.zone == zone_id)
        for fw in topology.firewalls:
            gateway = next((i for i in fw.interfaces if i.zone == zone_id), None)
            if gateway is None:
                continue
            if default is None:
                default = Route("default", gateway.address, link_name(my_iface))
            for other in fw.interfaces:
                if other.zone in seen:
                    continue
                seen.add(other.zone)
                subnet = str(topology.zone(other.zone).subnet)
                routes.append(Route(subnet, gateway.address, link_name(my_iface)))
    if default is not None:
        # A subnet reached via the default gateway needs no route of its own.
        routes = [r for r in routes if r.gateway != default.gateway]
        routes.insert(0, default)
    return routes


#: Linux's default net.ipv4.ip_local_port_range.
EPHEMERAL_DEFAULT = (32768, 60999)


def ephemeral_port_range(matrix: Matrix) -> tuple[int, int]:
    """The largest part of Linux's ephemeral range that no source-side matrix row uses."""
    low, high = EPHEMERAL_DEFAULT
    taken = sorted((r.port_low, r.port_high) for r in matrix.rows if r.port_side == "source")
    pieces: list[tuple[int, int]] = []
    start = low
    for t_low, t_high in taken:
        if t_high < start or t_low > high:
            continue
        if t_low > start:
            pieces.append((start, t_low - 1))
        start = max(start, t_high + 1)
    if start <= high:
        pieces.append((start, high))
    if not pieces:
        return EPHEMERAL_DEFAULT
    return max(pieces, key=lambda p: p[1] - p[0])
