"""``edgesim firewall audit``: every matrix row through a user's rules, in the kernel, no lab.

The topology's firewalls are built in a :class:`~simulator.firewall.sandbox.Sandbox` with the
user's rule files loaded as written (:func:`~simulator.firewall.rules.load_rules`; a firewall
without ``--rules`` gets its topology file). Stand-in hosts listen on every port a flow needs
(TCP listeners complete handshakes, UDP sockets echo), and from their own addresses:

* every matrix row, as concrete flows (:func:`simulator.lab.flowcheck.matrix_flows`: each
  source and destination pair, port ranges at both ends and the middle);
* openings no row explains: from each zone to every host interface of the zones listed after
  it in the topology (the internet first, the corporate network last), on every port a listener
  of the topology uses and on the sensitive ports (:data:`SENSITIVE`), from each host of the
  outer zone and from an address of it no host has; a flow some row covers is judged by the row.

Each flow is traced in every firewall (:class:`~simulator.firewall.trace.TraceSession`, TCP
handshakes only): the verdict is the kernel's, and names the deciding rule (file, line, text,
comment) or the chain's policy. A row expected open is met when each of its flows' requests and
replies crossed; a row that must stay blocked is met when no request crossed, whatever the
destination answered. A flow of the openings whose request crossed is "open beyond the matrix".

A flow whose trace leaves its fate open (its request crossed and no firewall saw a reply: a late
answer on a busy machine, a packet lost beyond the firewalls) is sent again, up to
:data:`RETRIES` times, with the firewalls' connection tracking emptied first; one still open is
named in the report's problems, never passed off as the firewall's word (:func:`unsettled`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.errors import LabError
from simulator.firewall.render import render_all, topology_rules_path
from simulator.firewall.rules import RuleIndex, load_rules
from simulator.firewall.sandbox import Sandbox, inside
from simulator.firewall.trace import (
    Decision,
    TraceFlow,
    TraceSession,
    distinct,
    first_fates,
)
from simulator.lab.flowcheck import matrix_flows, sample_ports
from simulator.lab.topology import Interface, Topology
from simulator.matrix.model import Expectation, Matrix, MatrixRow, load_matrix, resolve

DEFAULT_TIMEOUT = 0.5
RETRIES = 2
"""How many times a flow whose fate the trace left open is sent again (:func:`unsettled`)."""
TOKEN = b"edgesim-audit"

#: Ports that must never be open from outside, whatever the matrix says: (transport, port, name).
SENSITIVE: tuple[tuple[str, int, str], ...] = (
    ("tcp", 22, "SSH"),
    ("tcp", 389, "LDAP"),
    ("tcp", 444, "Lync internal HTTPS"),
    ("tcp", 445, "SMB"),
    ("tcp", 636, "LDAPS"),
    ("tcp", 1433, "SQL Server"),
    ("tcp", 3389, "RDP"),
    ("tcp", 5062, "Lync A/V authentication"),
    ("tcp", 5063, "Lync internal SIP"),
    ("tcp", 8057, "Lync web conferencing (PSOM)"),
)


@dataclass(frozen=True)
class AuditFlow:
    """One flow the audit sends: a row's or an opening's."""

    row: str | None
    """The matrix row it checks; None for an opening probe."""
    expect_open: bool
    source: str
    """``host:interface`` (``any@internet`` for the zone's stand-in)."""
    destination: str
    source_host: str
    destination_host: str
    transport: str
    src: str
    dst: str
    dport: int
    sport: int = 0
    """Fixed source port (the relay range); 0: an ephemeral one."""
    label: str = ""
    """What an opening probes: ``3389/tcp (RDP)``."""


@dataclass
class FlowResult:
    flow: AuditFlow
    decisions: list[Decision]
    endpoint: str
    """What the stand-in saw: ``answered``, ``refused``, ``no answer``."""
    sport: int = 0

    def _first(self, direction: str) -> list[Decision]:
        return first_fates(self.decisions, direction)

    @property
    def request_through(self) -> bool:
        """Every firewall that saw the request let it through."""
        first = self._first("request")
        return bool(first) and all(d.crossed for d in first)

    @property
    def status(self) -> str:
        """``allowed``, ``reply dropped``, ``no reply``, ``blocked`` or ``not seen``."""
        if not self._first("request"):
            return "not seen"
        if not self.request_through:
            return "blocked"
        replies = self._first("reply")
        if not replies:
            return "no reply"
        return "allowed" if all(d.crossed for d in replies) else "reply dropped"

    @property
    def deciding(self) -> list[Decision]:
        """What decided this flow: the stopping decision, else the accepting one(s)."""
        request, reply = self._first("request"), self._first("reply")
        stopped = [d for d in request if not d.crossed]
        if stopped:
            return stopped[:1]
        reply_stopped = [d for d in reply if not d.crossed]
        return reply_stopped[:1] or request

    def to_dict(self) -> dict[str, Any]:
        f = self.flow
        return {
            "source": f.source,
            "destination": f.destination,
            "flow": f"{f.transport} {f.src}:{self.sport or f.sport} -> {f.dst}:{f.dport}",
            "status": self.status,
            "endpoint": self.endpoint,
            "decisions": [d.to_dict() for d in self.decisions],
        }


def row_heading(row: MatrixRow) -> dict[str, Any]:
    """The keys that open a row's entry in the audit's and the diff's JSON."""
    return {"row": row.id, "label": row.label, "expect": row.expect.value}


@dataclass
class RowResult:
    row: MatrixRow
    flows: list[FlowResult]

    @property
    def expect_open(self) -> bool:
        return self.row.expect is Expectation.OPEN

    @property
    def judged(self) -> list[FlowResult]:
        return [f for f in self.flows if f.status != "not seen"]

    @property
    def got(self) -> str:
        """``allowed``, ``blocked``, ``partly allowed``, ``reply dropped``, ``unsettled`` (a
        request went through and no firewall ever saw its reply, even sent again: the audit's
        problems name the flow) or ``crosses no firewall``."""
        judged = self.judged
        if not judged:
            return "crosses no firewall"
        statuses = {f.status for f in judged}
        if statuses == {"allowed"}:
            return "allowed"
        if not any(f.request_through for f in judged):
            return "blocked"
        if "no reply" in statuses and statuses <= {"allowed", "no reply"}:
            return "unsettled"
        if statuses <= {"reply dropped", "no reply"}:
            return "reply dropped"
        return "partly allowed"

    @property
    def met(self) -> bool:
        judged = self.judged
        if not judged:
            return True
        if self.expect_open:
            return all(f.status == "allowed" for f in judged)
        return not any(f.request_through for f in judged)

    @property
    def deciding(self) -> list[Decision]:
        """The decisions that explain the verdict, each once."""
        judged = self.judged
        if self.met:
            relevant = judged
        elif self.expect_open:
            relevant = [f for f in judged if f.status != "allowed"]
        else:
            relevant = [f for f in judged if f.request_through]
        return distinct(d for f in relevant for d in f.deciding)

    def to_dict(self) -> dict[str, Any]:
        return {
            **row_heading(self.row),
            "got": self.got,
            "met": self.met,
            "deciding": [d.to_dict() for d in self.deciding],
            "flows": [f.to_dict() for f in self.flows],
        }


@dataclass
class Opening:
    """A flow no row explains that got through a firewall."""

    result: FlowResult

    @property
    def flow(self) -> AuditFlow:
        return self.result.flow

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.flow.label,
            "source": self.flow.source,
            "destination": self.flow.destination,
            "transport": self.flow.transport,
            "port": self.flow.dport,
            "deciding": [d.to_dict() for d in self.result.deciding],
        }


@dataclass
class AuditReport:
    topology: Topology
    rules: dict[str, Path]
    """Firewall -> the rule file audited."""
    rows: list[RowResult]
    openings: list[Opening]
    """Flows no row explains that got through."""
    duration: float
    flows: int
    probed: list[FlowResult] = field(default_factory=list)
    """Every flow of the openings check, through or not."""
    problems: list[str] = field(default_factory=list)
    """Lines the user should know: chains whose rules have no line, lost trace events."""

    @property
    def failing(self) -> list[RowResult]:
        return [r for r in self.rows if not r.met]

    @property
    def ok(self) -> bool:
        return not self.failing and not self.openings

    def to_dict(self) -> dict[str, Any]:
        return {
            "topology": self.topology.name,
            "rules": {fw: str(p) for fw, p in self.rules.items()},
            "ok": self.ok,
            "duration": round(self.duration, 3),
            "flows": self.flows,
            "failing": [r.row.id for r in self.failing],
            "rows": [r.to_dict() for r in self.rows],
            "openings": [o.to_dict() for o in self.openings],
            "problems": self.problems,
        }


# ------------------------------------------------------------------ planning


def _ports_to_check(topology: Topology) -> list[tuple[str, int, str]]:
    ports: dict[tuple[str, int], str] = {}
    for listener in topology.listeners():
        for transport in listener.transports:
            for port in sample_ports(listener.port_low, listener.port_high):
                ports.setdefault((transport, port), f"{port}/{transport} ({listener.proto})")
    for transport, port, name in SENSITIVE:
        ports[(transport, port)] = f"{port}/{transport} ({name})"
    return [(t, p, label) for (t, p), label in sorted(ports.items(), key=lambda kv: kv[0][1])]


def _ref(iface: Interface) -> str:
    """``host:interface``; a zone's stand-in is ``any@<zone>``."""
    return iface.host if iface.host.startswith("any@") else iface.ref


def _covers(
    row: MatrixRow, refs: tuple[set[str], set[str]], src: Interface, dst: Interface
) -> bool:
    sources, destinations = refs
    source_ok = src.ref in sources or row.source == f"any@{src.zone}"
    return source_ok and dst.ref in destinations


def plan(
    topology: Topology, matrix: Matrix, stand_ins: Sequence[Any]
) -> tuple[list[AuditFlow], list[AuditFlow]]:
    """The row flows and the opening flows of an audit."""
    resolved = [
        (row, ({e.ref for e in r.sources}, {e.ref for e in r.destinations}))
        for row in matrix.rows
        if (r := resolve(row, topology)).resolved and row.port_side == "destination"
    ]
    zones = [z.id for z in topology.zones]
    every = [*topology.interfaces(), *(i for h in stand_ins for i in h.interfaces)]
    ports = _ports_to_check(topology)
    openings: list[AuditFlow] = []
    for i, outer in enumerate(zones):
        sources = [s for s in every if s.zone == outer]
        for inner in zones[i + 1 :]:
            for dst in topology.interfaces():
                if dst.zone != inner:
                    continue
                for src in sources:
                    if src.host == dst.host:
                        continue
                    for transport, port, label in ports:
                        if any(
                            row.transport == transport
                            and row.port_low <= port <= row.port_high
                            and _covers(row, refs, src, dst)
                            for row, refs in resolved
                        ):
                            continue
                        openings.append(
                            AuditFlow(
                                None,
                                False,
                                _ref(src),
                                dst.ref,
                                src.host,
                                dst.host,
                                transport,
                                str(src.address),
                                str(dst.address),
                                port,
                                label=label,
                            )
                        )
    reserved = {(f.transport, f.dst, f.dport) for f in openings}
    rows: list[AuditFlow] = []
    for mf in matrix_flows(topology, matrix, reserved):
        f = mf.flow
        src = next(
            i
            for i in topology.host(mf.source_host).interfaces
            if str(i.address) == f.source_address
        )
        dst = next(
            i for i in topology.host(mf.destination_host).interfaces if str(i.address) == f.address
        )
        rows.append(
            AuditFlow(
                mf.row,
                mf.expect_open,
                src.ref,
                dst.ref,
                mf.source_host,
                mf.destination_host,
                f.transport,
                str(f.source_address),
                f.address,
                f.port,
                f.source_port,
            )
        )
    return rows, openings


# ------------------------------------------------------------------ sending


class _Echo:
    """UDP sockets that echo every datagram."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.socks: list[socket.socket] = []

    def add(self, sock: socket.socket) -> None:
        self.socks.append(sock)
        self.loop.add_reader(sock.fileno(), self._echo, sock)

    def _echo(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            data, peer = sock.recvfrom(2048)
            sock.sendto(data, peer)

    def close(self) -> None:
        for sock in self.socks:
            self.loop.remove_reader(sock.fileno())
            sock.close()


def _socket(transport: str) -> socket.socket:
    kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setblocking(False)
    return sock


async def _send(sock: socket.socket, flow: AuditFlow, timeout: float) -> str:
    loop = asyncio.get_running_loop()
    try:
        if flow.transport == "tcp":
            await asyncio.wait_for(loop.sock_connect(sock, (flow.dst, flow.dport)), timeout)
            return "answered"
        sock.connect((flow.dst, flow.dport))
        await loop.sock_sendall(sock, TOKEN)
        reply = await asyncio.wait_for(loop.sock_recv(sock, 2048), timeout)
        return "answered" if reply == TOKEN else f"unexpected answer {reply[:20]!r}"
    except TimeoutError:
        return "no answer"
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        return exc.strerror or str(exc)


def unsettled(result: FlowResult, trace_lost: bool = False) -> bool:
    """A flow whose trace leaves its fate open, to be sent again: its request crossed but no
    firewall saw a reply (a late answer, a packet the kernel had not yet traced), or no
    firewall saw it and it got no answer; with ``trace_lost`` (the kernel dropped trace events
    in that round) also one no firewall saw. A request or reply seen dropped, and one seen
    through both ways, are the firewall's word and stand."""
    status = result.status
    if status == "no reply":
        return True
    return status == "not seen" and (trace_lost or result.endpoint != "answered")


async def _send_round(
    box: Sandbox,
    indexes: dict[str, RuleIndex],
    flows: Sequence[AuditFlow],
    timeout: float,
) -> tuple[list[FlowResult], list[str]]:
    """Send ``flows`` at once from their sources, each traced in every firewall."""
    clients: list[tuple[AuditFlow, socket.socket, int]] = []
    try:
        for flow in flows:
            with inside(box.ns(flow.source_host)):
                sock = _socket(flow.transport)
                if flow.transport == "tcp":
                    # Closed with a reset: the address pair is free again at once, for a
                    # retry from the same fixed source port (the relay range).
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.bind((flow.src, flow.sport))
            clients.append((flow, sock, sock.getsockname()[1]))
        traced = [
            TraceFlow(f.transport, f.src, f.dst, (f.dport, f.dport), (sport, sport))
            for f, _, sport in clients
        ]
        sessions = [
            TraceSession(box.node(fw.id), traced, indexes.get(fw.id), handshake_only=True)
            for fw in box.topology.firewalls
        ]
        await asyncio.gather(*(s.start() for s in sessions))
        try:
            endpoints = await asyncio.gather(*(_send(s, f, timeout) for f, s, _ in clients))
        finally:
            await asyncio.gather(*(s.stop() for s in sessions))
        problems = [f"{s.node.id}: {s.problem}" for s in sessions if s.problem]
        results = []
        for (flow, _, sport), t, endpoint in zip(clients, traced, endpoints, strict=True):
            decisions = [d for s in sessions for d in s.decisions(t)]
            results.append(FlowResult(flow, decisions, endpoint, sport))
        return results, problems
    finally:
        for _, sock, _ in clients:
            sock.close()


async def run_flows(
    box: Sandbox,
    indexes: dict[str, RuleIndex],
    flows: Sequence[AuditFlow],
    timeout: float,
    *,
    retries: int = RETRIES,
) -> tuple[list[FlowResult], list[str]]:
    """Listeners at the destinations, every flow sent at once and traced in every firewall.

    Flows left :func:`unsettled` are sent again, up to ``retries`` times, each time with the
    firewalls' connection tracking emptied (so the rules decide again, not ``ct state
    established``) and twice the time to answer; one unsettled after that is named in the
    problems.
    """
    loop = asyncio.get_running_loop()
    echo = _Echo(loop)
    listeners: list[socket.socket] = []
    try:
        for host, transport, address, port in sorted(
            {(f.destination_host, f.transport, f.dst, f.dport) for f in flows}
        ):
            with inside(box.ns(host)):
                sock = _socket(transport)
                sock.bind((address, port))
            if transport == "tcp":
                sock.listen(256)
                listeners.append(sock)
            else:
                echo.add(sock)
        results, lost = await _send_round(box, indexes, flows, timeout)
        problems: list[str] = []
        for _ in range(retries):
            again = [n for n, r in enumerate(results) if unsettled(r, bool(lost))]
            if not again:
                break
            # The kernel's lost trace events of the last round: its unsettled flows go again.
            problems += [f"{p} (its unsettled flows were sent again)" for p in lost]
            try:
                box.forget_connections()
            except LabError as exc:
                problems.append(f"{exc}; flows sent again may be let by as established")
            timeout *= 2
            retried, lost = await _send_round(box, indexes, [flows[n] for n in again], timeout)
            for n, result in zip(again, retried, strict=True):
                results[n] = result
        problems += lost
        left = [r for r in results if unsettled(r)]
        problems += [
            f"{_flow_text(r)}: {r.status} after {retries + 1} tries (the firewalls' word on it "
            "is incomplete)"
            for r in left
        ]
        return results, problems
    finally:
        echo.close()
        for sock in listeners:
            sock.close()


def _flow_text(result: FlowResult) -> str:
    f = result.flow
    what = f"row {f.row}" if f.row else f"opening {f.label}"
    return f"{what}, {f.transport} {f.src}:{result.sport or f.sport} -> {f.dst}:{f.dport}"


# ------------------------------------------------------------------ the audit


def rule_files(topology: Topology, rules: dict[str, Path], scratch: Path) -> dict[str, Path]:
    """Every firewall's file: the user's, else the topology's (rendered when not found)."""
    files: dict[str, Path] = {}
    rendered: dict[Path, str] | None = None
    for fw in topology.firewalls:
        if fw.id in rules:
            files[fw.id] = Path(rules[fw.id])
            continue
        path = topology_rules_path(fw)
        if path is None:
            rendered = rendered or render_all(topology, scratch)
            path = scratch / Path(fw.rules).name
            path.write_text(rendered[path])
        files[fw.id] = path
    return files


async def audit_in(
    box: Sandbox, files: dict[str, Path], matrix: Matrix, timeout: float = DEFAULT_TIMEOUT
) -> AuditReport:
    """Load ``files`` into the sandbox's firewalls and audit them."""
    started = time.perf_counter()
    loaded = await asyncio.gather(
        *(asyncio.to_thread(load_rules, box.node(fw), path) for fw, path in files.items())
    )
    indexes = dict(zip(files, loaded, strict=True))
    problems = [f"{fw}: {why}" for fw, index in indexes.items() for why in index.unmapped]
    stand_ins = [h for h in box.hosts if h not in box.topology.hosts]
    row_flows, opening_flows = plan(box.topology, matrix, stand_ins)
    results, trace_problems = await run_flows(box, indexes, [*row_flows, *opening_flows], timeout)
    problems += trace_problems
    by_row: dict[str, list[FlowResult]] = {}
    openings: list[Opening] = []
    probed: list[FlowResult] = []
    for result in results:
        if result.flow.row is not None:
            by_row.setdefault(result.flow.row, []).append(result)
            continue
        probed.append(result)
        if result.request_through:
            openings.append(Opening(result))
    rows = [RowResult(row, by_row[row.id]) for row in matrix.rows if row.id in by_row]
    return AuditReport(
        box.topology,
        files,
        rows,
        openings,
        time.perf_counter() - started,
        len(results),
        probed,
        problems,
    )


async def audit(
    topology: Topology,
    rules: dict[str, Path] | None = None,
    *,
    matrix: Matrix | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    tag: str = "",
) -> AuditReport:
    """Build a sandbox, audit the rule files in it, remove it (see the module docstring)."""
    matrix = matrix or load_matrix()
    unknown = sorted(set(rules or {}) - {fw.id for fw in topology.firewalls})
    if unknown:
        raise LabError(f"no firewall '{unknown[0]}' in the topology")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgesim-audit-") as scratch:
        files = rule_files(topology, dict(rules or {}), Path(scratch))
        async with Sandbox(topology, matrix, tag) as box:
            report = await audit_in(box, files, matrix, timeout)
    report.duration = time.perf_counter() - started
    return report
