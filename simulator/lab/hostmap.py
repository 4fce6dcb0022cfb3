"""Lab hosts and zones from the addresses a runner uses: how trace events (recorded with the
addresses the adapters saw) are placed on a ladder's columns."""

from __future__ import annotations

from simulator.lab.runners import addressing_of
from simulator.lab.topology import Topology


def _ip(address: str) -> str:
    host, sep, port = address.rpartition(":")
    return host if sep and port.isdigit() else address


class HostMap:
    """Maps the addresses a runner uses back to lab hosts and zones."""

    def __init__(self, topology: Topology, runner: str) -> None:
        self.topology = topology
        self._by_ip: dict[str, tuple[str, str]] = {}
        loopback = addressing_of(runner) == "loopback"
        for iface in topology.interfaces():
            ip = str(iface.loopback() if loopback else iface.address)
            self._by_ip[ip] = (iface.host, iface.zone)
            self._by_ip.setdefault(str(iface.address), (iface.host, iface.zone))

    def host(self, address: str) -> str:
        """The host owning ``address``, or the address itself when it is not a lab host."""
        return self._by_ip.get(_ip(address), (_ip(address), ""))[0]

    def zone(self, address: str) -> str:
        return self._by_ip.get(_ip(address), ("", ""))[1]
