"""Matrix rows, their validation, and their resolution against a topology."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from simulator.errors import ConfigError
from simulator.lab.topology import Interface, Topology, parse_port_range, read_toml
from simulator.records import Record, record

PROBE_KINDS: dict[str, str] = {
    "sip-tls": "SIP OPTIONS over TLS (server certificate only)",
    "sip-mtls": "SIP OPTIONS over MTLS, presenting the source host's certificate",
    "xmpp-s2s": "XMPP server-to-server stream open and STARTTLS, up to stream features",
    "xmpp-mtls": "XMPP stream over MTLS, up to stream features",
    "stun-udp": "STUN Binding over UDP, with the mapped address",
    "turn-tcp": "TURN Allocate over TCP",
    "turn-tls": "TURN Allocate over TLS",
    "turn-relay-udp": "TURN Allocate plus a relayed UDP round trip to the destination",
    "relay-tcp-egress": "TCP connection from the relay range to the destination (RFC 6062 Connect)",
    "tcp-connect": "TCP connect to the port (sampled ports for a range)",
    "dns": "DNS query for the lab's SRV records",
}

_ROW_KEYS = {
    "id", "seed", "role", "protocol", "transport", "ports", "port_side", "source",
    "destination", "expect", "probe", "notes",
}  # fmt: skip


class Expectation(enum.Enum):
    OPEN = "open"
    BLOCKED = "blocked"


@dataclass(frozen=True)
class Seed:
    id: str
    title: str
    document: str


@dataclass(frozen=True)
class MatrixRow(Record):
    """A row of the port matrix (JSON, ``edgesim matrix --json``: with its ``label`` and
    ``ports``, not the two port fields)."""

    id: str
    """Stable identifier, e.g. ``pic-in-5061``."""
    seed: str = field(metadata=record(then=("label",)))
    """Id of the seed table the row comes from (or ``implicit`` / ``negative``)."""
    role: str
    """The Edge role as the seed tables name it: Access, A/V, XMPP, DNS."""
    protocol: str
    """As the seed tables write it: ``SIP(MTLS)``, ``STUN,MSTURN``, ``RTP`` ..."""
    transport: str = field(metadata=record(then=("ports", "port_side")))
    """``tcp`` or ``udp``."""
    port_low: int = field(metadata=record(omit=True))
    port_high: int = field(metadata=record(omit=True))
    source: str
    """Topology selector of the source (see ``rows.toml``)."""
    destination: str
    """Topology selector of the destination."""
    expect: Expectation
    probe: str
    """Probe kind, a key of :data:`PROBE_KINDS`."""
    port_side: str = "destination"
    """Which side the port (range) is on: ``destination`` or ``source``."""
    notes: str = ""

    @property
    def ports(self) -> str:
        if self.port_low == self.port_high:
            return str(self.port_low)
        return f"{self.port_low}-{self.port_high}"

    @property
    def label(self) -> str:
        """The seed tables' notation: ``Access/SIP(MTLS)/TCP/5061``."""
        return f"{self.role}/{self.protocol}/{self.transport.upper()}/{self.ports}"


@dataclass(frozen=True)
class Endpoint(Record):
    host: str
    interface: str
    zone: str
    address: str
    """The address in the lab (netns and compose runners)."""
    loopback: str
    """The address the local runner uses."""
    fqdn: str | None

    @classmethod
    def of(cls, iface: Interface) -> Endpoint:
        return cls(
            iface.host, iface.id, iface.zone, str(iface.address), str(iface.loopback()), iface.fqdn
        )

    @property
    def ref(self) -> str:
        return f"{self.host}:{self.interface}"


@dataclass(frozen=True)
class ResolvedRow(Record):
    """A row resolved against a topology (JSON: the endpoints and problems, not the row)."""

    row: MatrixRow = field(metadata=record(omit=True))
    sources: tuple[Endpoint, ...]
    destinations: tuple[Endpoint, ...]
    problems: tuple[str, ...] = field(default=())
    """Why the row could not be resolved against this topology (empty when it could)."""

    @property
    def resolved(self) -> bool:
        return not self.problems and bool(self.sources) and bool(self.destinations)


@dataclass(frozen=True)
class Matrix:
    path: Path
    seeds: dict[str, Seed]
    rows: tuple[MatrixRow, ...]

    def row(self, row_id: str) -> MatrixRow:
        for row in self.rows:
            if row.id == row_id:
                return row
        raise KeyError(row_id)

    def by_seed(self) -> dict[str, list[MatrixRow]]:
        grouped: dict[str, list[MatrixRow]] = {sid: [] for sid in self.seeds}
        for row in self.rows:
            grouped[row.seed].append(row)
        return grouped


def default_matrix_path() -> Path:
    return Path(str(resources.files("simulator.matrix").joinpath("rows.toml")))


def load_matrix(path: Path | str | None = None) -> Matrix:
    """Load and validate the matrix (the shipped rows when ``path`` is None)."""
    path = Path(path) if path is not None else default_matrix_path()
    data = read_toml(path, "matrix")

    def fail(entry: str, message: str) -> ConfigError:
        return ConfigError(path, entry, message)

    seeds: dict[str, Seed] = {}
    for sid, table in data.get("seeds", {}).items():
        if not isinstance(table, dict) or not isinstance(table.get("title"), str):
            raise fail(f"seeds[{sid}]", "a seed needs a 'title'")
        seeds[sid] = Seed(sid, table["title"], str(table.get("document", "")))

    rows: list[MatrixRow] = []
    for index, table in enumerate(data.get("rows", [])):
        entry = f"rows[{table.get('id', index)}]" if isinstance(table, dict) else f"rows[{index}]"
        if not isinstance(table, dict):
            raise fail(entry, "a row must be a table")
        unknown = sorted(set(table) - _ROW_KEYS)
        if unknown:
            raise fail(entry, f"unknown key '{unknown[0]}'")
        for key in ("id", "seed", "role", "protocol", "transport", "ports", "source",
                    "destination", "expect", "probe"):  # fmt: skip
            if not isinstance(table.get(key), str):
                raise fail(entry, f"missing or non-string '{key}'")
        if any(r.id == table["id"] for r in rows):
            raise fail(entry, "row id used twice")
        if table["seed"] not in seeds:
            raise fail(entry, f"seed '{table['seed']}' is not defined")
        if table["transport"] not in ("tcp", "udp"):
            raise fail(entry, "transport must be 'tcp' or 'udp'")
        if table["probe"] not in PROBE_KINDS:
            raise fail(entry, f"unknown probe kind '{table['probe']}'")
        port_side = table.get("port_side", "destination")
        if port_side not in ("source", "destination"):
            raise fail(entry, "port_side must be 'source' or 'destination'")
        try:
            expect = Expectation(table["expect"])
        except ValueError:
            raise fail(entry, "expect must be 'open' or 'blocked'") from None
        low, high = parse_port_range(table["ports"], fail, entry)
        rows.append(
            MatrixRow(
                id=table["id"],
                seed=table["seed"],
                role=table["role"],
                protocol=table["protocol"],
                transport=table["transport"],
                port_low=low,
                port_high=high,
                source=table["source"],
                destination=table["destination"],
                expect=expect,
                probe=table["probe"],
                port_side=port_side,
                notes=str(table.get("notes", "")),
            )
        )
    return Matrix(path, seeds, tuple(rows))


# -------------------------------------------------------------------- resolution


def _listens(iface: Interface, topo: Topology, row: MatrixRow) -> bool:
    if row.port_side != "destination":
        return False
    host = topo.host(iface.host)
    return host.listener_on(iface.id, row.transport, row.port_low, row.port_high) is not None


def _select(
    selector: str, topo: Topology, row: MatrixRow, as_destination: bool
) -> tuple[list[Interface], str | None]:
    """Interfaces matching a selector, or a reason why there are none."""
    if "@" in selector:
        head, _, zone = selector.partition("@")
        if head != "any":
            return [], f"selector '{selector}': only 'any@<zone>' is supported"
        try:
            topo.zone(zone)
        except KeyError:
            return [], f"selector '{selector}': no zone '{zone}' in the topology"
        candidates = [i for i in topo.interfaces() if i.zone == zone]
        if as_destination:
            listening = [i for i in candidates if _listens(i, topo, row)]
            if row.port_side == "destination":
                if not listening:
                    return [], f"no host in zone '{zone}' listens on {row.transport}/{row.ports}"
                return listening, None
        return candidates, None if candidates else f"no host in zone '{zone}'"

    role, _, iface_id = selector.partition(":")
    hosts = topo.hosts_with_role(role)
    if not hosts:
        return [], f"no host with role '{role}' in the topology"
    found: list[Interface] = []
    for host in hosts:
        if iface_id:
            try:
                found.append(host.interface(iface_id))
            except KeyError:
                return [], f"host '{host.id}' has no interface '{iface_id}'"
        elif len(host.interfaces) == 1:
            found.append(host.interfaces[0])
        else:
            listening = [i for i in host.interfaces if _listens(i, topo, row)]
            found.extend(listening or host.interfaces[:1])
    return found, None


def resolve(row: MatrixRow, topo: Topology) -> ResolvedRow:
    """Resolve a row's selectors to endpoints of ``topo``."""
    problems: list[str] = []
    sources, problem = _select(row.source, topo, row, as_destination=False)
    if problem:
        problems.append(f"source: {problem}")
    destinations, problem = _select(row.destination, topo, row, as_destination=True)
    if problem:
        problems.append(f"destination: {problem}")
    # A flow from a host to itself crosses no network.
    destinations = [
        d for d in destinations if all(d.host != s.host for s in sources)
    ] or destinations
    return ResolvedRow(
        row,
        tuple(Endpoint.of(i) for i in sources),
        tuple(Endpoint.of(i) for i in destinations),
        tuple(problems),
    )


def resolve_all(matrix: Matrix, topo: Topology) -> list[ResolvedRow]:
    return [resolve(row, topo) for row in matrix.rows]


def row_to_dict(row: MatrixRow) -> dict[str, Any]:
    """``row.to_dict()`` (the CLI's name for it)."""
    return row.to_dict()


def resolved_to_dict(resolved: ResolvedRow) -> dict[str, Any]:
    """``resolved.to_dict()`` (the CLI's name for it)."""
    return resolved.to_dict()
