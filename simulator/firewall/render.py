"""nftables rules for the lab firewalls, rendered from the port matrix and the topology.

Each firewall of the topology joins two (or more) zones and routes between them. Its rule file
lets through exactly the matrix rows that are expected ``open`` and whose source and destination
zones it joins, with concrete addresses and ports, and nothing else:

* one ``table inet edgesim`` per firewall, replaced as a whole when the file is loaded again
  (``nft -f FILE`` is idempotent, so ``edgesim lab reload-firewall`` is just that);
* the ``forward`` chain has policy drop; ``ct state established,related`` is accepted (return
  traffic, ICMP errors), ``ct state invalid`` dropped; then one rule per row and
  source/destination pair, whose nftables ``comment`` is the matrix row id it was rendered for
  (the firewall trace names that rule, so a verdict says which row's rule decided);
* rows with ``port_side = "source"`` (the Edge's relay range as source) match ``sport``;
* negative rows get no rule: the policy drops them, and the file says so in a comment;
* the ``input`` chain (traffic to the firewall itself) allows ping and nothing else new.

Not implemented: NAT (the lab uses routed addresses end to end), IPv6 rows.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import simulator
from simulator.lab.topology import Firewall, Topology
from simulator.matrix import Expectation, MatrixRow, load_matrix, resolve
from simulator.matrix.model import Matrix

TABLE = "edgesim"


@dataclass(frozen=True)
class FlowRule:
    """One accepted flow: a matrix row between two concrete endpoints."""

    row: MatrixRow
    source: str
    """Source address."""
    destination: str
    """Destination address."""
    source_ref: str
    destination_ref: str

    @property
    def nft(self) -> str:
        ports = str(self.row.port_low)
        if self.row.port_high != self.row.port_low:
            ports = f"{self.row.port_low}-{self.row.port_high}"
        side = "sport" if self.row.port_side == "source" else "dport"
        return (
            f"ip saddr {self.source} ip daddr {self.destination} "
            f"{self.row.transport} {side} {ports} accept comment {_quote(self.row.id)}"
        )


def _quote(text: str) -> str:
    """An nftables string (the comment of a rule)."""
    return '"' + text.replace('"', "'") + '"'


#: Comments of the rules every rendered forward chain starts with.
RETURN_COMMENT = "return traffic"
INVALID_COMMENT = "invalid packets"


@dataclass(frozen=True)
class FirewallPlan:
    firewall: Firewall
    accepted: tuple[FlowRule, ...]
    """Open rows crossing this firewall, in matrix order."""
    dropped: tuple[MatrixRow, ...]
    """Negative rows crossing this firewall (dropped by the policy)."""


def plan_firewall(fw: Firewall, topology: Topology, matrix: Matrix) -> FirewallPlan:
    """The flows a firewall lets through: open rows whose two zones it joins."""
    zones = set(fw.zones)
    accepted: list[FlowRule] = []
    dropped: list[MatrixRow] = []
    for row in matrix.rows:
        resolved = resolve(row, topology)
        if not resolved.resolved:
            continue
        pairs = [
            (s, d)
            for s in resolved.sources
            for d in resolved.destinations
            if s.zone != d.zone and {s.zone, d.zone} <= zones
        ]
        if not pairs:
            continue
        if row.expect is Expectation.OPEN:
            accepted += [FlowRule(row, s.address, d.address, s.ref, d.ref) for s, d in pairs]
        else:
            dropped.append(row)
    return FirewallPlan(fw, tuple(accepted), tuple(dropped))


def render_firewall(fw: Firewall, topology: Topology, matrix: Matrix | None = None) -> str:
    """The nftables rule file of one firewall."""
    matrix = matrix if matrix is not None else load_matrix()
    plan = plan_firewall(fw, topology, matrix)
    lines = [
        "#!/usr/sbin/nft -f",
        f"# {fw.id}: {fw.description}" if fw.description else f"# {fw.id}",
        "#",
        "# Rendered by `edgesim firewall render` from the port matrix and the topology: it lets",
        "# through exactly the matrix rows expected open between the zones this firewall joins.",
        "# Edit it to try your own rules, then `edgesim lab reload-firewall` (netns runner) or",
        f"# `docker compose restart {fw.id}`; `edgesim firewall render` writes it anew.",
        "#",
    ]
    for iface in fw.interfaces:
        zone = topology.zone(iface.zone)
        lines.append(f"#   {iface.id:<8} {iface.address} in zone {zone.id} ({zone.subnet})")
    lines += [
        "",
        "# Loading this file replaces the whole table (idempotent reload).",
        f"table inet {TABLE}",
        f"delete table inet {TABLE}",
        "",
        f"table inet {TABLE} {{",
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy drop;",
        "\t\tct state established,related accept",
        "\t\tct state invalid drop",
        '\t\tiifname "lo" accept',
        "\t\ticmp type echo-request accept",
        "\t}",
        "",
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy drop;",
        f"\t\tct state established,related accept comment {_quote(RETURN_COMMENT)}",
        f"\t\tct state invalid drop comment {_quote(INVALID_COMMENT)}",
    ]
    last = None
    for rule in plan.accepted:
        if rule.row.id != last:
            lines += ["", f"\t\t# {rule.row.id}: {rule.row.label} ({rule.row.seed})"]
            if rule.row.notes:
                lines += [f"\t\t#   {text}" for text in textwrap.wrap(rule.row.notes, 80)]
            last = rule.row.id
        lines.append(f"\t\t#   {rule.source_ref} -> {rule.destination_ref}")
        lines.append(f"\t\t{rule.nft}")
    if plan.dropped:
        lines += ["", "\t\t# Must stay blocked (no rule; the policy drops them):"]
        lines += [f"\t\t#   {r.id}: {r.label}: {r.source} -> {r.destination}" for r in plan.dropped]
    lines += [
        "\t}",
        "",
        "\tchain output {",
        "\t\ttype filter hook output priority filter; policy accept;",
        "\t}",
        "}",
        "",
    ]
    return "\n".join(lines)


def render_all(
    topology: Topology, out_dir: Path | None = None, matrix: Matrix | None = None
) -> dict[Path, str]:
    """Every firewall's rule file: ``{path: text}``.

    Paths are the topology's ``rules`` entries, relative to ``out_dir`` when given (the file
    name only), else as the topology writes them (relative to the repository root).
    """
    matrix = matrix if matrix is not None else load_matrix()
    files: dict[Path, str] = {}
    for fw in topology.lab_firewalls:  # an external firewall's rules live on the device
        path = Path(fw.rules)
        if out_dir is not None:
            path = out_dir / path.name
        files[path] = render_firewall(fw, topology, matrix)
    return files


def topology_rules_path(fw: Firewall) -> Path | None:
    """The firewall's rule file as the topology names it: absolute, or relative to the current
    directory or to the repository edgesim runs from; None when not found (an installed
    edgesim without the repository renders it instead)."""
    relative = Path(fw.rules)
    if relative.is_absolute():
        return relative if relative.is_file() else None
    root = Path(simulator.__file__).resolve().parent.parent
    for candidate in (Path.cwd() / relative, root / relative):
        if candidate.is_file():
            return candidate
    return None


def write_all(
    topology: Topology, out_dir: Path | None = None, root: Path | None = None
) -> list[Path]:
    """Render and write every rule file; returns the paths written."""
    written: list[Path] = []
    for path, text in render_all(topology, out_dir).items():
        target = path if path.is_absolute() or root is None else root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        written.append(target)
    return written


# ------------------------------------------------------------------ the broken example

BROKEN_NOTE = """\
# DELIBERATELY BROKEN copy of external.nft, for negative tests and demonstrations:
#   - the UDP 3478 (STUN) rules are removed: A/V with Live Messenger breaks;
#   - TCP 23456 (the XMPP gateway port) is opened to the whole internet.
# Regenerate with `edgesim firewall render --broken-example`.
"""


def render_broken_external(topology: Topology, matrix: Matrix | None = None) -> str:
    """The external firewall's file with UDP 3478 removed and TCP 23456 open to the internet."""
    fw = next(f for f in topology.firewalls if f.id == "fw-external")
    outside = next(i for i in fw.interfaces if topology.zone(i.zone).id == "internet")
    subnet = topology.zone(outside.zone).subnet
    text = render_firewall(fw, topology, matrix)
    out: list[str] = []
    for line in text.splitlines():
        if " udp dport 3478 accept" in line and not line.lstrip().startswith("#"):
            out.append(line.replace("\t\tip saddr", "\t\t# BROKEN: removed: ip saddr"))
            continue
        out.append(line)
        if line.strip().startswith("ct state invalid drop comment"):
            out += [
                "",
                "\t\t# BROKEN: the XMPP gateway port opened to the internet",
                f"\t\tip saddr {subnet} tcp dport 23456 accept",
            ]
    head, _, rest = "\n".join(out).partition("\n")
    return f"{head}\n{BROKEN_NOTE}{rest}\n"
