"""What a user's own firewall needs to stand in a lab zone: ``edgesim lab plan``.

A firewall marked ``external = true`` is the user's device; edgesim renders nothing for it, so
the user configures it by hand. :func:`appliance_plan` derives everything from the topology and
the port matrix (no hand-kept copy):

* its interfaces: per zone, the link of this machine the zone is on (``parent``), the device's
  address and prefix, and the lab hosts that route through it (their default route, or the
  route to a zone beyond);
* its routes: the connected subnets only. The rules only ever let flows through between two
  zones the device joins (as the lab's own firewalls do), so no zone beyond another firewall
  needs a route, and leaving it unrouted keeps it unreachable, as in the lab;
* the rule list: one allow rule per open matrix row and source/destination pair between the
  zones it joins, in matrix order (what ``edgesim firewall render`` writes as nftables for the
  lab's firewalls), then "established/related return traffic", then deny everything else; the
  rows that must stay blocked across it are listed, with no rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from simulator.errors import UsageError
from simulator.firewall.render import plan_firewall
from simulator.lab.network import host_routes
from simulator.lab.topology import Firewall, Topology
from simulator.matrix import load_matrix
from simulator.matrix.model import Matrix
from simulator.records import Record, record


@dataclass(frozen=True)
class PlanInterface(Record):
    """The device's interface in one zone."""

    name: str
    """The topology's name for it (``outside``)."""
    zone: str
    subnet: str
    address: str
    """``203.0.113.1/24``: the address and prefix to configure."""
    parent: str | None
    """The link of the lab machine the zone is on (None: a lab firewall, no link)."""
    routed_by: tuple[str, ...]
    """``remote-user:wan (default)``: the lab hosts whose routes point at this address."""


@dataclass(frozen=True)
class PlanRule(Record):
    """One allow rule: a matrix row between two concrete endpoints."""

    action: ClassVar[str] = "allow"
    number: int = field(metadata=record(then=("action",)))
    row: str
    label: str
    """The seed tables' notation: ``Access/SIP(MTLS)/TCP/5061``."""
    transport: str
    source: str
    """``203.0.113.10 (fabrikam:wan)``."""
    destination: str
    ports: str
    port_side: str
    """``destination`` (dport) or ``source`` (sport: the A/V Edge's relay range going out)."""

    @property
    def text(self) -> str:
        side = "dport" if self.port_side == "destination" else "sport"
        return (
            f"{self.action} {self.transport} from {self.source} to {self.destination} {side} "
            f"{self.ports}"
        )


@dataclass
class AppliancePlan:
    firewall: Firewall
    interfaces: list[PlanInterface]
    rules: list[PlanRule]
    blocked_rows: list[str]
    """Rows that must stay blocked across the device (no rule: the default deny)."""
    unrouted: list[str]
    """Zones the device must not route to (beyond another firewall)."""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "firewall": self.firewall.id,
            "external": self.firewall.external,
            "description": self.firewall.description,
            "interfaces": [i.to_dict() for i in self.interfaces],
            "routes": {"connected": [i.subnet for i in self.interfaces], "none_to": self.unrouted},
            "rules": [r.to_dict() for r in self.rules],
            "after_rules": ["allow established,related", "deny everything else"],
            "must_stay_blocked": self.blocked_rows,
            "notes": self.notes,
        }


def _routed_by(topology: Topology, address: str) -> tuple[str, ...]:
    users: list[str] = []
    for host in topology.hosts:
        for route in host_routes(topology, host):
            if str(route.gateway) == address:
                what = "default" if route.destination == "default" else route.destination
                users.append(f"{host.id} ({what})")
    return tuple(users)


def appliance_plan(
    topology: Topology, firewall: Firewall, matrix: Matrix | None = None
) -> AppliancePlan:
    """What ``firewall`` must be configured with for the lab's matrix to hold across it."""
    matrix = matrix if matrix is not None else load_matrix()
    interfaces = [
        PlanInterface(
            iface.id,
            iface.zone,
            str(topology.zone(iface.zone).subnet),
            f"{iface.address}/{topology.zone(iface.zone).subnet.prefixlen}",
            iface.parent,
            _routed_by(topology, str(iface.address)),
        )
        for iface in firewall.interfaces
    ]
    flows = plan_firewall(firewall, topology, matrix)
    rules = [
        PlanRule(
            number,
            rule.row.id,
            rule.row.label,
            rule.row.transport,
            f"{rule.source} ({rule.source_ref})",
            f"{rule.destination} ({rule.destination_ref})",
            rule.row.ports,
            rule.row.port_side,
        )
        for number, rule in enumerate(flows.accepted, start=1)
    ]
    joined = set(firewall.zones)
    unrouted = [zone.id for zone in topology.zones if zone.id not in joined]
    notes = [
        "stateful: allow established,related (return traffic and ICMP errors), drop invalid",
        "no NAT: the lab's addresses are routed end to end",
        "the lab's own firewalls answer ping on their addresses and accept nothing else addressed "
        "to themselves",
    ]
    if any(r.port_side == "source" for r in rules):
        notes.append(
            "a 'sport' rule matches the source port: the A/V Edge's relay range connecting out"
        )
    return AppliancePlan(
        firewall, interfaces, rules, [row.id for row in flows.dropped], unrouted, notes
    )


def appliance_plans(
    topology: Topology, firewalls: tuple[str, ...] = (), matrix: Matrix | None = None
) -> list[AppliancePlan]:
    """Plans for ``firewalls`` (ids); none given: the external ones, or every firewall when the
    topology marks none external (to copy a lab firewall onto a device)."""
    if firewalls:
        chosen = []
        for fw_id in firewalls:
            try:
                chosen.append(topology.firewall(fw_id))
            except KeyError:
                known = ", ".join(fw.id for fw in topology.firewalls)
                raise UsageError(f"no firewall '{fw_id}' in the topology ({known})") from None
    else:
        chosen = list(topology.external_firewalls or topology.firewalls)
    matrix = matrix if matrix is not None else load_matrix()
    return [appliance_plan(topology, fw, matrix) for fw in chosen]
