"""The compose runner: docker-compose.yml rendered from the topology, and container set-up.

(The renderer follows; :func:`configure_container_network` runs inside a host's container.)
"""

from __future__ import annotations

import ipaddress
import json
import logging
import subprocess

from simulator.errors import LabError
from simulator.lab.network import host_routes
from simulator.lab.topology import Host, Topology

log = logging.getLogger(__name__)


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise LabError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


def configure_container_network(topology: Topology, host: Host) -> None:
    """Inside a host's container: add the host's extra addresses and its routes via the firewalls.

    Docker gives each container one address per network (the first interface of the host in that
    zone); a second interface in the same zone (the Edge's A/V address) is added here, and the
    default route is moved from Docker's bridge gateway to the zone's lab firewall.
    """
    addrs = json.loads(_ip("-j", "-4", "addr", "show"))
    device_of_zone: dict[str, str] = {}
    present: set[str] = set()
    for link in addrs:
        for info in link.get("addr_info", []):
            present.add(info["local"])
            address = ipaddress.IPv4Address(info["local"])
            for zone in topology.zones:
                if address in zone.subnet:
                    device_of_zone.setdefault(zone.id, link["ifname"])
    for iface in host.interfaces:
        device = device_of_zone.get(iface.zone)
        if device is None:
            raise LabError(f"{host.id}: no network of zone {iface.zone} in this container")
        if str(iface.address) not in present:
            prefix = topology.zone(iface.zone).subnet.prefixlen
            _ip("addr", "add", f"{iface.address}/{prefix}", "dev", device)
    for route in host_routes(topology, host):
        iface_zone = next(
            i.zone for i in host.interfaces if route.gateway in topology.zone(i.zone).subnet
        )
        args = route.ip_args()
        args[-1] = device_of_zone[iface_zone]
        _ip(*args)
        log.info("%s: ip %s", host.id, " ".join(args))
