"""A stand-in for a user's own firewall: a network namespace with its own nftables rules, set up
by the tests (never by edgesim), joined to the lab only through veth links the tests create.

    internet zone hosts          stand-in appliance            perimeter-external hosts
    (macvlans on appl0)   <-->   appl0 ~ outside | inside ~ appl1   <-->   (macvlans on appl1)

Each zone of the external firewall gets a veth pair: one end (``outside``, ``inside`` ...) in
the appliance's namespace with the firewall's address in that zone, the other end (``appl0``,
``appl1`` ...) left in this namespace, up, without an address: the ``parent`` the topology names
for the zone. Nothing is attached to the machine's own interfaces.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from simulator.lab.topology import Topology, default_topology_path, load_topology

NAMESPACE = "edgesim-appliance"
"""Not a lab prefix (``es-``, ``es<name>-``): no ``lab down`` ever removes it."""
FIREWALL = "fw-external"


def run(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, input=stdin)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stderr}"
    return done.stdout


def parent_names(topology: Topology, firewall: str = FIREWALL) -> dict[str, str]:
    """Zone -> the veth end in this namespace the zone's macvlans hang off."""
    fw = topology.firewall(firewall)
    return {iface.zone: f"appl{index}" for index, iface in enumerate(fw.interfaces)}


def external_topology(directory: Path, firewall: str = FIREWALL) -> Path:
    """The default topology with ``firewall`` marked external, each zone on its ``appl<N>``."""
    topology = load_topology()
    text = default_topology_path().read_text()
    start = text.index(f'id = "{firewall}"')
    end = text.index("[[", start)
    block = text[start:end]
    edited = re.sub(r'rules = "[^"]*"\n', "external = true\n", block)
    for zone, parent in parent_names(topology, firewall).items():
        edited = edited.replace(f'zone = "{zone}", ', f'zone = "{zone}", parent = "{parent}", ')
    path = directory / "appliance.toml"
    path.write_text(text[:start] + edited + text[end:])
    return path


class StandIn:
    """The stand-in appliance for ``firewall`` of ``topology`` (see the module docstring)."""

    def __init__(self, topology: Topology, firewall: str = FIREWALL) -> None:
        self.topology = topology
        self.firewall = topology.firewall(firewall)
        self.parents = parent_names(topology, firewall)

    def create(self) -> None:
        self.remove()
        run("ip", "netns", "add", NAMESPACE)
        run("ip", "-n", NAMESPACE, "link", "set", "lo", "up")
        for iface in self.firewall.interfaces:
            parent = self.parents[iface.zone]
            prefix = self.topology.zone(iface.zone).subnet.prefixlen
            run("ip", "link", "add", parent, "type", "veth", "peer", "name", iface.id,
                "netns", NAMESPACE)  # fmt: skip
            run("sysctl", "-q", "-w", f"net.ipv6.conf.{parent}.disable_ipv6=1")
            run("ip", "link", "set", parent, "up")
            run("ip", "-n", NAMESPACE, "addr", "add", f"{iface.address}/{prefix}", "dev", iface.id)
            run("ip", "-n", NAMESPACE, "link", "set", iface.id, "up")
        run("ip", "netns", "exec", NAMESPACE, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")

    def load(self, rules: Path) -> None:
        """The appliance's own rules (``nft -f`` in its namespace: the test's act, not edgesim's)."""
        run("ip", "netns", "exec", NAMESPACE, "nft", "-f", str(rules))

    def exec_argv(self) -> list[str]:
        return ["ip", "netns", "exec", NAMESPACE]

    def remove(self) -> None:
        subprocess.run(["ip", "netns", "del", NAMESPACE], capture_output=True, timeout=60)
        for parent in self.parents.values():  # gone with their peers; only after a crash here
            subprocess.run(["ip", "link", "del", parent], capture_output=True, timeout=60)
