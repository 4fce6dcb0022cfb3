"""What a firewall decided for each packet of the flows we care about, in the kernel's words.

A :class:`TraceSession` works in one firewall (a :class:`~simulator.firewall.rules.FirewallNode`)
without touching the rules it enforces. It adds a table of its own, ``inet edgesim-trace-<id>``:

* a ``prerouting`` chain at priority -350 (before conntrack, before any user chain) whose rules
  set ``meta nftrace set 1`` on the packets of the given :class:`TraceFlow` s only: the request
  direction, the reply direction and ICMP errors coming back;
* a ``postrouting`` chain at priority 10000 (after any user chain) with no rules: a traced packet
  that reaches it has crossed the firewall;
* a ``sync`` set: adding an element is an event ``nft monitor`` prints, so the session knows when
  the monitor listens and when every earlier trace event has been read.

``nft -a monitor`` (run in the firewall through the node's argv prefix) prints the kernel's
trace events: for each traced packet the chains it went through, each rule that gave a verdict
(with its handle) and each chain policy applied. :func:`parse_trace` groups them per packet;
:func:`decide` reads a packet's fate: dropped or rejected by a rule or a chain's policy,
accepted (and by which rule), or neither (not forwarded: no route). The rule handle is named by
the :class:`~simulator.firewall.rules.RuleIndex` (file, line, text as written, comment).

nftables 1.0.6 prints trace events as text even with ``-j``; that text is what is parsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from simulator.errors import LabError
from simulator.firewall.rules import OURS, FirewallNode, RuleIndex, RuleRef
from simulator.records import Record, record

log = logging.getLogger(__name__)

TRACE_PREFIX = f"{OURS}trace-"
PRE_PRIORITY = -350
POST_PRIORITY = 10000
SYNC_TIMEOUT = 10.0
SYNC_RETRY = 0.025
NFT_TIMEOUT = 20.0


@dataclass(frozen=True)
class TraceFlow:
    """Packets to trace: one flow between two addresses, both directions."""

    transport: str
    """``tcp`` or ``udp``."""
    source: str
    destination: str
    dport: tuple[int, int] | None = None
    """Destination port range of the request (None: any)."""
    sport: tuple[int, int] | None = None
    """Source port range of the request (the relay range of egress media rows)."""

    def matches(self, packet: Packet) -> str | None:
        """``request``, ``reply`` or None: which direction of this flow ``packet`` is."""
        if packet.proto == "icmp":
            if packet.src == self.destination and packet.dst == self.source:
                return "reply"
            return None
        if packet.proto != self.transport:
            return None
        if (packet.src, packet.dst) == (self.source, self.destination) and (
            _within(packet.dport, self.dport) and _within(packet.sport, self.sport)
        ):
            return "request"
        if (packet.src, packet.dst) == (self.destination, self.source) and (
            _within(packet.sport, self.dport) and _within(packet.dport, self.sport)
        ):
            return "reply"
        return None


def _within(port: int | None, span: tuple[int, int] | None) -> bool:
    return span is None or (port is not None and span[0] <= port <= span[1])


def _ports(keyword: str, span: tuple[int, int] | None) -> str:
    if span is None:
        return ""
    low, high = span
    return f" th {keyword} {low}" if low == high else f" th {keyword} {low}-{high}"


def _exact(span: tuple[int, int] | None) -> int | None:
    return span[0] if span is not None and span[0] == span[1] else None


_TUPLE = "ip saddr . ip daddr . meta l4proto . th sport . th dport"
_SET_TYPE = "ipv4_addr . ipv4_addr . inet_proto . inet_service . inet_service"


def trace_table(name: str, flows: Sequence[TraceFlow], *, handshake_only: bool = False) -> str:
    """The nft script that (re)creates the session's table for ``flows``.

    Flows with both ports known go into sets (a lookup per packet however many flows there
    are); the others (a port range, any source port) get a rule each. ``handshake_only``: of
    TCP, trace only SYN, SYN-ACK and RST (what decides whether a connection is let through),
    so that hundreds of flows at once stay few events.
    """
    req: list[str] = []
    rep: list[str] = []
    err: list[str] = []
    rules: list[str] = []
    syn = reply_flags = ""
    if handshake_only:
        syn = " tcp flags & (syn | ack) == syn"
        reply_flags = " tcp flags & (syn | rst) != 0"
    for f in flows:
        err.append(f"{f.destination} . {f.source}")
        sport, dport = _exact(f.sport), _exact(f.dport)
        if sport is not None and dport is not None:
            req.append(f"{f.source} . {f.destination} . {f.transport} . {sport} . {dport}")
            rep.append(f"{f.destination} . {f.source} . {f.transport} . {dport} . {sport}")
            continue
        flags = (syn, reply_flags) if f.transport == "tcp" else ("", "")
        rules.append(
            f"ip saddr {f.source} ip daddr {f.destination} meta l4proto {f.transport}"
            f"{_ports('dport', f.dport)}{_ports('sport', f.sport)}{flags[0]}"
        )
        rules.append(
            f"ip saddr {f.destination} ip daddr {f.source} meta l4proto {f.transport}"
            f"{_ports('sport', f.dport)}{_ports('dport', f.sport)}{flags[1]}"
        )

    def elements(items: list[str]) -> str:
        unique = list(dict.fromkeys(items))
        return f" elements = {{ {', '.join(unique)} }};" if unique else ""

    for proto in ("tcp", "udp"):
        flags = (syn, reply_flags) if proto == "tcp" else ("", "")
        rules.append(f"meta l4proto {proto} {_TUPLE} @req{flags[0]}")
        rules.append(f"meta l4proto {proto} {_TUPLE} @rep{flags[1]}")
    rules.append("meta l4proto icmp ip saddr . ip daddr @err")
    body = "".join(f"\t\t{r} meta nftrace set 1\n" for r in dict.fromkeys(rules))
    return (
        f"table inet {name}\n"
        f"delete table inet {name}\n"
        f"table inet {name} {{\n"
        f"\tset req {{ type {_SET_TYPE};{elements(req)} }}\n"
        f"\tset rep {{ type {_SET_TYPE};{elements(rep)} }}\n"
        f"\tset err {{ type ipv4_addr . ipv4_addr;{elements(err)} }}\n"
        "\tset sync { type ipv4_addr; }\n"
        "\tchain pre {\n"
        f"\t\ttype filter hook prerouting priority {PRE_PRIORITY}; policy accept;\n"
        f"{body}"
        "\t}\n"
        "\tchain post {\n"
        f"\t\ttype filter hook postrouting priority {POST_PRIORITY}; policy accept;\n"
        "\t}\n"
        "}\n"
    )


# ------------------------------------------------------------------ parsing


@dataclass(frozen=True)
class Packet:
    """A traced packet's headers, as the trace printed them in the first chain."""

    proto: str
    """``tcp``, ``udp``, ``icmp`` or the IP protocol name."""
    src: str
    dst: str
    sport: int | None = None
    dport: int | None = None
    flags: str = ""
    """TCP flags (``syn``, ``0x12`` ...) or the ICMP type."""
    iif: str = ""

    def __str__(self) -> str:
        src = f"{self.src}:{self.sport}" if self.sport is not None else self.src
        dst = f"{self.dst}:{self.dport}" if self.dport is not None else self.dst
        flags = f" [{_FLAG_NAMES.get(self.flags, self.flags)}]" if self.flags else ""
        return f"{self.proto} {src} -> {dst}{flags}"


_FLAG_NAMES = {"0x12": "syn,ack", "0x14": "rst,ack", "0x11": "fin,ack", "0x18": "psh,ack"}


@dataclass(frozen=True)
class TraceEvent:
    """One line of the trace: a chain's verdict on a packet."""

    family: str
    table: str
    chain: str
    kind: str
    """``rule``, ``policy`` or ``verdict``."""
    verdict: str
    """``accept``, ``drop``, ``continue``, ``jump NAME``, ``return`` ..."""
    handle: int | None = None
    text: str = ""
    """The rule as the kernel lists it."""


@dataclass
class PacketTrace:
    """Everything one firewall's trace said about one packet."""

    firewall: str
    packet: Packet
    events: list[TraceEvent] = field(default_factory=list)
    crossed: bool = False
    """The packet reached the session's postrouting chain: it left the firewall."""


_LINE = re.compile(
    r"^trace id (?P<id>\S+) (?P<family>\S+) (?P<table>\S+) (?P<chain>\S+) (?P<rest>.*)$"
)
_RULE = re.compile(
    r"^rule (?P<text>.*?)(?: # handle (?P<handle>\d+))? \(verdict (?P<verdict>[^)]*)\)\s*$"
)
_FIELDS = {
    "src": re.compile(r"\bip saddr (\S+)"),
    "dst": re.compile(r"\bip daddr (\S+)"),
    "proto": re.compile(r"\bip protocol (\S+)"),
    "sport": re.compile(r"\b(?:tcp|udp) sport (\d+)"),
    "dport": re.compile(r"\b(?:tcp|udp) dport (\d+)"),
    "tcp": re.compile(r"\btcp (?:sport|dport|flags)\b"),
    "udp": re.compile(r"\budp (?:sport|dport)\b"),
    "flags": re.compile(r"\btcp flags == (\S+)"),
    "icmp": re.compile(r"\bicmp type (\S+)"),
    "iif": re.compile(r'\biif "([^"]*)"'),
}


def parse_packet(text: str) -> Packet | None:
    found = {
        k: m.group(1) if m.groups() else m.group(0)
        for k, p in _FIELDS.items()
        if (m := p.search(text))
    }
    if "src" not in found or "dst" not in found:
        return None
    if "icmp" in found:
        proto, flags = "icmp", found["icmp"]
    elif "tcp" in found:
        proto, flags = "tcp", found.get("flags", "")
    elif "udp" in found:
        proto, flags = "udp", ""
    else:
        proto, flags = found.get("proto", "ip"), ""
    return Packet(
        proto,
        found["src"],
        found["dst"],
        int(found["sport"]) if "sport" in found else None,
        int(found["dport"]) if "dport" in found else None,
        flags,
        found.get("iif", ""),
    )


def parse_trace(lines: Sequence[str], firewall: str, table: str) -> list[PacketTrace]:
    """Group ``nft monitor`` lines into packets; ``table`` is the session's trace table.

    A packet starts where the session's ``pre`` chain prints it; the kernel reuses trace ids
    once a packet is gone, never while it is being traced. Events of other edgesim tables
    (another session) are left out.
    """
    packets: list[PacketTrace] = []
    open_: dict[str, PacketTrace] = {}
    for raw in lines:
        m = _LINE.match(raw.strip())
        if m is None:
            continue
        tid, fam, tbl, chain, rest = m.group("id", "family", "table", "chain", "rest")
        if tbl == table:
            if chain == "pre" and rest.startswith("packet:"):
                packet = parse_packet(rest)
                if packet is not None:
                    open_[tid] = PacketTrace(firewall, packet)
                    packets.append(open_[tid])
            elif chain == "post" and tid in open_:
                open_[tid].crossed = True
            continue
        record = open_.get(tid)
        if record is None or tbl.startswith(OURS) or rest.startswith("packet:"):
            continue
        if rest.startswith("rule "):
            rm = _RULE.match(rest)
            if rm is None:
                continue
            handle = int(rm.group("handle")) if rm.group("handle") else None
            record.events.append(
                TraceEvent(fam, tbl, chain, "rule", rm.group("verdict"), handle, rm.group("text"))
            )
        elif rest.startswith(("policy ", "verdict ")):
            kind, _, verdict = rest.partition(" ")
            record.events.append(TraceEvent(fam, tbl, chain, kind, verdict.strip()))
    return packets


# ------------------------------------------------------------------ decisions

ACCEPTED = "accepted"
DROPPED = "dropped"
REJECTED = "rejected"
NOT_FORWARDED = "not forwarded"


@dataclass(frozen=True)
class Decision(Record):
    """What one firewall did with a packet of a flow (JSON: :mod:`simulator.records`, with
    :attr:`by` last)."""

    firewall: str
    direction: str
    """``request`` or ``reply``."""
    action: str
    """``accepted``, ``dropped``, ``rejected`` or ``not forwarded`` (no chain dropped it, yet
    it never left: no route to the destination)."""
    chain: str = ""
    """``family table chain`` of the deciding verdict; empty when nothing decided."""
    hook: str | None = None
    rule: RuleRef | None = None
    """The deciding rule; None when the chain's policy decided (or nothing did)."""
    policy: bool = False
    """The chain's policy decided."""
    packet: str = ""
    """The first such packet: ``tcp 203.0.113.10:40312 -> 198.51.100.10:5061 [syn]``."""
    count: int = 1
    """Packets of the flow and direction that met this same fate."""
    policy_at: RuleRef | None = field(default=None, metadata=record(then=("by",)))
    """When the policy decided: where it is written (the chain's ``policy`` line)."""

    @property
    def crossed(self) -> bool:
        return self.action == ACCEPTED

    @property
    def fate(self) -> tuple[object, ...]:
        """What tells two decisions apart (the packet and the count do not)."""
        return (self.firewall, self.direction, self.action, self.chain, self.rule)

    @property
    def by(self) -> str:
        """``external.nft:34 `...` `` or ``policy drop of inet edgesim forward``."""
        if self.rule is not None:
            comment = ""
            if self.rule.comment and self.rule.comment not in self.rule.text:
                comment = f" ({self.rule.comment})"
            return f"{self.rule.where} `{self.rule.text}`{comment}"
        if self.policy:
            verb = "drop" if self.action in (DROPPED, REJECTED) else "accept"
            at = f" ({self.policy_at.where})" if self.policy_at else ""
            return f"the policy ({verb}) of chain {self.chain}{at}"
        if self.action == NOT_FORWARDED:
            return "no rule dropped it and no route leads to its destination"
        return "no chain (nothing filters this hook)"

    @property
    def where(self) -> str:
        """In a few words: ``external.nft:34``, ``policy drop (ip filter FORWARD)``, ``no route``."""
        if self.rule is not None:
            return self.rule.where
        if self.policy:
            verb = "accept" if self.action == ACCEPTED else "drop"
            return f"policy {verb} ({self.chain})"
        if self.action == ACCEPTED:
            return "no rule (nothing filters this hook)"
        return "no route"

    def describe(self) -> str:
        """``fw-external dropped the request: the policy (drop) of chain inet edgesim forward``."""
        if self.action == NOT_FORWARDED:
            return f"{self.firewall} did not forward the {self.direction}: {self.by}"
        return f"{self.firewall} {self.action} the {self.direction}: {self.by}"


def decide(trace: PacketTrace, direction: str, index: RuleIndex | None = None) -> Decision:
    """The fate of one traced packet (see the module docstring)."""
    accepted: TraceEvent | None = None
    for event in trace.events:
        verdict = event.verdict.split()[0] if event.verdict else ""
        if verdict in ("drop", "accept"):
            if verdict == "drop":
                return _decision(trace, direction, event, index)
            if event.kind != "verdict":
                accepted = event
    if trace.crossed:
        if accepted is None:
            return Decision(trace.firewall, direction, ACCEPTED, packet=str(trace.packet))
        return _decision(trace, direction, accepted, index)
    return Decision(trace.firewall, direction, NOT_FORWARDED, packet=str(trace.packet))


def _decision(
    trace: PacketTrace, direction: str, event: TraceEvent, index: RuleIndex | None
) -> Decision:
    chain = f"{event.family} {event.table} {event.chain}"
    rule = None
    if event.kind == "rule" and event.handle is not None:
        if index is not None:
            rule = index.rule(event.family, event.table, event.chain, event.handle, event.text)
        else:
            rule = RuleRef(
                trace.firewall, event.family, event.table, event.chain, event.handle, event.text
            )
    action = ACCEPTED
    if event.verdict.startswith("drop"):
        text = rule.text if rule else event.text
        action = REJECTED if re.search(r"\breject\b|\bREJECT\b", text) else DROPPED
    hook = None
    if index is not None:
        # A chain reached by jump has no hook: it runs in the base chain that jumped to it.
        for e in trace.events[: trace.events.index(event) + 1]:
            hook = index.hook_of(e.family, e.table, e.chain) or hook
    policy_at = None
    if event.kind == "policy" and index is not None:
        policy_at = index.policies.get((event.family, event.table, event.chain))
    return Decision(
        trace.firewall,
        direction,
        action,
        chain,
        hook,
        rule,
        event.kind == "policy",
        str(trace.packet),
        policy_at=policy_at,
    )


def first_fates(decisions: Sequence[Decision], direction: str) -> list[Decision]:
    """Per firewall, the fate of the first packet of ``direction`` (the SYN, the first
    datagram): the one that decides whether the flow gets through."""
    seen: dict[str, Decision] = {}
    for d in decisions:
        if d.direction == direction:
            seen.setdefault(d.firewall, d)
    return list(seen.values())


def _tuple(p: Packet) -> tuple[str, str, str, int | None, int | None]:
    return (p.proto, p.src, p.dst, p.sport, p.dport)


def flow_decisions(
    flow: TraceFlow, traces: Sequence[PacketTrace], index: RuleIndex | None = None
) -> list[Decision]:
    """Per firewall and direction, each distinct fate of the flow's packets, first seen first.

    Only connections this trace saw opened count: a reply (or an ICMP error) to a request sent
    before the session began, say a SYN-ACK retransmitted for a connection an earlier rule set
    dropped, is not this flow's."""
    matched = [(t, flow.matches(t.packet)) for t in traces]
    opened = {_tuple(t.packet) for t, d in matched if d == "request"}
    out: list[Decision] = []
    for trace, direction in matched:
        if direction is None:
            continue
        p = trace.packet
        if direction == "reply" and (
            not opened
            if p.proto == "icmp"
            else (p.proto, p.dst, p.src, p.dport, p.sport) not in opened
        ):
            continue
        d = decide(trace, direction, index)
        for i, seen in enumerate(out):
            if seen.fate == d.fate:
                out[i] = replace(seen, count=seen.count + 1)
                break
        else:
            out.append(d)
    return out


def distinct(decisions: Iterable[Decision]) -> list[Decision]:
    """``decisions`` without the repeats of a fate (:attr:`Decision.fate`), first seen first."""
    out: dict[tuple[object, ...], Decision] = {}
    for d in decisions:
        out.setdefault(d.fate, d)
    return list(out.values())


# ------------------------------------------------------------------ the session


class TraceSession:
    """Trace ``flows`` in one firewall while the caller sends them (an async context manager)."""

    def __init__(
        self,
        node: FirewallNode,
        flows: Sequence[TraceFlow],
        index: RuleIndex | None = None,
        *,
        handshake_only: bool = False,
    ) -> None:
        self.node = node
        self.flows = list(flows)
        self.index = index
        self.handshake_only = handshake_only
        self.table = f"{TRACE_PREFIX}{secrets.token_hex(4)}"
        self.lines: list[str] = []
        self.traces: list[PacketTrace] = []
        self.problem: str | None = None
        """Set when the monitor reported lost events (the trace may be incomplete)."""
        self._proc: asyncio.subprocess.Process | None = None
        self._pid: str | None = None
        self._reader: asyncio.Task[None] | None = None
        self._seen = asyncio.Event()
        self._sync = 0
        self._by_tuple: dict[tuple[str, str, str, int | None, int | None], list[PacketTrace]] | None
        self._by_tuple = None
        self._order: dict[int, int] = {}

    async def _nft(self, args: Sequence[str], stdin: str | None = None) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self.node.argv,
            "nft",
            *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, err = await asyncio.wait_for(
                proc.communicate(stdin.encode() if stdin is not None else None), NFT_TIMEOUT
            )
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise LabError(f"{self.node.id}: nft {args[0]} did not finish") from None
        if proc.returncode != 0:
            raise LabError(f"{self.node.id}: nft {' '.join(args[:2])}: {err.decode().strip()}")

    async def start(self) -> None:
        script = trace_table(self.table, self.flows, handshake_only=self.handshake_only)
        await self._nft(["-f", "-"], script)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.node.argv,
                "sh",
                "-c",
                "echo $$; exec nft -a monitor",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            assert self._proc.stdout is not None
            first = await asyncio.wait_for(self._proc.stdout.readline(), SYNC_TIMEOUT)
            self._pid = first.decode().strip()
            if not self._pid.isdigit():
                raise LabError(f"{self.node.id}: nft monitor did not start")
            self._reader = asyncio.create_task(self._read())
            await self.sync()
        except BaseException:
            await self._teardown()
            raise

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stream = self._proc.stdout
        marker = f"add element inet {self.table} sync"
        while line := await stream.readline():
            text = line.decode("utf-8", "replace")
            if text.startswith(marker):
                self._seen.set()
            elif text.startswith("trace id"):
                self.lines.append(text)

    async def sync(self) -> None:
        """Return once the monitor has printed every event the kernel sent before this call."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SYNC_TIMEOUT
        while True:
            self._sync += 1
            self._seen.clear()
            n = self._sync
            await self._nft(
                [
                    "add",
                    "element",
                    "inet",
                    self.table,
                    "sync",
                    f"{{ 127.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255} }}",
                ]
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._seen.wait(), SYNC_RETRY)
                return
            if self._reader is not None and self._reader.done():
                raise LabError(f"{self.node.id}: nft monitor exited")
            if loop.time() > deadline:
                raise LabError(
                    f"{self.node.id}: nft monitor did not answer within {SYNC_TIMEOUT:g} s"
                )

    async def stop(self) -> list[PacketTrace]:
        """Read the last events, stop the monitor, remove the table; the packets traced."""
        try:
            await self.sync()
        finally:
            await self._teardown()
        self.traces = parse_trace(self.lines, self.node.id, self.table)
        self._order = {id(trace): n for n, trace in enumerate(self.traces)}
        self._by_tuple = None
        return self.traces

    async def _teardown(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if self._pid:
                killer = await asyncio.create_subprocess_exec(
                    *self.node.argv,
                    "kill",
                    self._pid,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                await killer.wait()
            else:
                # Not after the kill above: Popen.terminate() polls first and would reap the
                # process behind asyncio's child watcher.
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
            if self._reader is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self._reader), 5.0)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    self._reader.cancel()
            err = b""
            if proc.stderr is not None:
                with contextlib.suppress(TimeoutError):
                    err = await asyncio.wait_for(proc.stderr.read(), 5.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5.0)
            if b"No buffer space" in err or b"ENOBUFS" in err:
                self.problem = "the kernel dropped trace events (too many at once)"
        with contextlib.suppress(LabError):
            await self._nft(["delete", "table", "inet", self.table])

    def decisions(self, flow: TraceFlow) -> list[Decision]:
        """The decisions on ``flow``'s packets (after :meth:`stop`)."""
        sport, dport = _exact(flow.sport), _exact(flow.dport)
        if sport is None or dport is None:
            return flow_decisions(flow, self.traces, self.index)
        if self._by_tuple is None:
            self._by_tuple = {}
            for trace in self.traces:
                p = trace.packet
                key = (p.proto, p.src, p.dst, p.sport, p.dport)
                self._by_tuple.setdefault(key, []).append(trace)
        t, a, b = flow.transport, flow.source, flow.destination
        candidates = [
            *self._by_tuple.get((t, a, b, sport, dport), ()),
            *self._by_tuple.get((t, b, a, dport, sport), ()),
            *self._by_tuple.get(("icmp", b, a, None, None), ()),
        ]
        candidates.sort(key=lambda trace: self._order[id(trace)])
        return flow_decisions(flow, candidates, self.index)

    async def __aenter__(self) -> TraceSession:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if exc[0] is None:
            await self.stop()
        else:
            await self._teardown()
