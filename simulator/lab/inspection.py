"""SSL inspection in the lab: where the middlebox goes, the rules that divert TCP 443 to it, and
its process (``edgesim lab up --runner netns --inspect-tls``; docs/firewall.md, "SSL
inspection").

The middlebox belongs to the external firewall: the lab firewall that joins a public zone
holding no Edge interface (the internet) to the Edge's zones. It intercepts TCP 443 toward the
Edge interfaces behind it that listen on TCP 443 (the Access Edge and the A/V Edge).

How the flows reach it, so that the firewall's own rules still decide both legs (a real box
applies its policy, then inspects what it allowed):

* the firewall's namespace marks client packets to those addresses on TCP 443 (table
  ``edgesim-inspect``, left alone by rule reloads); a policy route sends marked packets over a
  link (``tls0``) to the middlebox's namespace (``<firewall>-tls``), so they cross the
  firewall's forward chain as before, with the inspection link as their output interface;
* there ``tproxy`` hands them to the proxy, which keeps the original destination, and the
  proxy's own connection to the server leaves from the client's address back through the
  firewall's forward chain; its replies (connection-marked) are routed back to the middlebox.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from simulator.errors import LabError
from simulator.lab.topology import Topology
from simulator.middlebox.aio import InspectingProxy, transparent_listener
from simulator.middlebox.ca import InspectionCa

log = logging.getLogger(__name__)

PORT = 443
"""What is inspected: TCP 443 (client SIP over TLS, TURN over TLS and [MS-TURN] pseudo-TLS)."""
PROXY_PORT = 4430
"""Where the proxy listens in its namespace (``tproxy`` diverts to it)."""
MARK = 0x1E5
ROUTE_TABLE = 445
FIREWALL_LINK = "tls0"
"""The inspection link's end in the firewall's namespace."""
MIDDLEBOX_LINK = "fw0"
"""Its end in the middlebox's namespace."""
LINK_NET = ipaddress.IPv4Network("169.254.44.0/30")
"""The inspection link: link-local, inside the lab's own namespaces only."""
TABLE = "edgesim-inspect"
CA_FILE = "inspection-ca.crt"
"""The middlebox CA's certificate, in the lab's state directory (what a managed client would
be given to trust)."""


@dataclass(frozen=True)
class InspectionPlan:
    firewall: str
    """The lab firewall the middlebox belongs to."""
    targets: tuple[str, ...]
    """Addresses whose TCP 443 is inspected."""
    port: int = PORT

    @property
    def node(self) -> str:
        """The middlebox's node name (its namespace is the lab's prefix + this)."""
        return f"{self.firewall}-tls"

    @property
    def firewall_address(self) -> str:
        return str(LINK_NET.network_address + 1)

    @property
    def middlebox_address(self) -> str:
        return str(LINK_NET.network_address + 2)

    def describe(self) -> str:
        where = ", ".join(f"{t}:{self.port}" for t in self.targets)
        return f"{self.firewall} inspects TLS to {where} (middlebox namespace {self.node})"


def inspection_plan(topology: Topology) -> InspectionPlan:
    """Where the lab's middlebox goes; a :class:`LabError` when the topology has no lab firewall
    between the internet and Edge interfaces listening on TCP 443."""
    edge_zones = {i.zone for h in topology.hosts_with_role("edge") for i in h.interfaces}
    for fw in topology.lab_firewalls:
        outside = [z for z in fw.zones if topology.zone(z).public and z not in edge_zones]
        if not outside:
            continue
        targets = []
        for host in topology.hosts_with_role("edge"):
            for iface in host.interfaces:
                if iface.zone in fw.zones and iface.zone not in outside:
                    lst = host.listener_on(iface.id, "tcp", PORT, PORT)
                    if lst is not None:
                        targets.append(str(iface.address))
        if targets:
            return InspectionPlan(fw.id, tuple(targets))
    raise LabError(
        "--inspect-tls: no lab firewall stands between the internet (a public zone without the "
        "Edge) and Edge interfaces listening on TCP 443"
    )


def firewall_rules(plan: InspectionPlan) -> str:
    """The firewall side: divert client flows to the middlebox, route its replies back."""
    targets = ", ".join(plan.targets)
    link = FIREWALL_LINK
    return f"""table ip {TABLE} {{
	chain steer {{
		type filter hook prerouting priority mangle; policy accept;
		iifname "{link}" ct state new ct mark set {MARK:#x} comment "the middlebox's own leg"
		iifname != "{link}" ct mark {MARK:#x} meta mark set {MARK:#x} comment "its replies"
		iifname != "{link}" ip daddr {{ {targets} }} tcp dport {plan.port} meta mark set {MARK:#x} comment "inspected"
	}}
}}
"""


def middlebox_rules(plan: InspectionPlan) -> str:
    """The middlebox side: ``tproxy`` hands diverted flows to the proxy's socket."""
    return f"""table ip {TABLE} {{
	chain divert {{
		type filter hook prerouting priority mangle; policy accept;
		iifname "{MIDDLEBOX_LINK}" tcp dport {plan.port} tproxy to :{PROXY_PORT} accept
	}}
}}
"""


def firewall_commands(plan: InspectionPlan) -> list[list[str]]:
    """``ip`` commands in the firewall's namespace (after the link exists)."""
    prefix = LINK_NET.prefixlen
    return [
        ["ip", "addr", "add", f"{plan.firewall_address}/{prefix}", "dev", FIREWALL_LINK],
        ["ip", "link", "set", FIREWALL_LINK, "up"],
        ["ip", "rule", "add", "fwmark", f"{MARK:#x}", "lookup", str(ROUTE_TABLE)],
        [
            "ip",
            "route",
            "add",
            "default",
            "via",
            plan.middlebox_address,
            "dev",
            FIREWALL_LINK,
            "table",
            str(ROUTE_TABLE),
        ],
        ["sysctl", "-q", "-w", f"net.ipv4.conf.{FIREWALL_LINK}.rp_filter=0"],
    ]


def middlebox_commands(plan: InspectionPlan) -> list[list[str]]:
    """``ip`` commands in the middlebox's namespace: its address, its way back through the
    firewall, and every packet from the firewall delivered locally (``tproxy`` and the
    replies to its transparent sockets)."""
    prefix = LINK_NET.prefixlen
    return [
        ["ip", "link", "set", "lo", "up"],
        ["ip", "addr", "add", f"{plan.middlebox_address}/{prefix}", "dev", MIDDLEBOX_LINK],
        ["ip", "link", "set", MIDDLEBOX_LINK, "up"],
        ["ip", "route", "add", "default", "via", plan.firewall_address],
        ["ip", "rule", "add", "iif", MIDDLEBOX_LINK, "lookup", str(ROUTE_TABLE)],
        ["ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", str(ROUTE_TABLE)],
        ["sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=0"],
        ["sysctl", "-q", "-w", f"net.ipv4.conf.{MIDDLEBOX_LINK}.rp_filter=0"],
    ]


async def run_middlebox(
    workdir: Path, ca_out: Path, upstream_trust: Sequence[Path], ready_file: Path | None
) -> None:
    """The middlebox process (``edgesim lab middlebox``, in its namespace): a fresh CA (its
    certificate written to ``ca_out``), the proxy on :data:`PROXY_PORT`, ``ready_file``
    written once it listens; runs until SIGTERM or SIGINT."""
    from simulator.lab.session import until_signalled  # the runners import this module

    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca = InspectionCa(datetime.datetime.now(datetime.UTC))
    ca_out.write_bytes(ca.cert_pem)
    proxy = InspectingProxy(ca, workdir, upstream_trust=upstream_trust)
    server = await proxy.serve(transparent_listener(PROXY_PORT))

    def ready() -> None:
        if ready_file is not None:
            ready_file.write_text(f'{{"middlebox": {PROXY_PORT}}}\n')

    async with server:
        await until_signalled(ready)
    log.info("middlebox stopped: %s", dict(proxy.stats))
