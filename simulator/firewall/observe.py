"""Tracing a running lab's firewalls while probes or scenarios send their packets.

:func:`traced` opens a :class:`~simulator.firewall.trace.TraceSession` in every firewall of a
runner's lab (through :meth:`Runner.firewall_node <simulator.lab.runners.base.Runner.firewall_node>`),
with the rule index of the file the firewall loaded (:meth:`Runner.rules_path`), for the flows
given; when the block ends every session has read its last event. :class:`LabTrace` then says
what each firewall decided for a flow. A lab without firewalls (the embedded one) traces
nothing and says so through :attr:`LabTrace.available`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from simulator.errors import EdgesimError
from simulator.firewall.rules import FirewallNode, RuleIndex, build_index, current_index
from simulator.firewall.trace import Decision, PacketTrace, TraceFlow, TraceSession, first_fates
from simulator.lab.runners.base import Runner
from simulator.lab.topology import Topology
from simulator.matrix.model import MatrixRow, resolve

log = logging.getLogger(__name__)


@dataclass
class LabTrace:
    """The sessions of one traced run (read them after the ``async with`` block)."""

    sessions: list[TraceSession] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Why the trace may be incomplete (a firewall that could not be traced, lost events)."""

    @property
    def available(self) -> bool:
        return bool(self.sessions)

    def decisions(self, flows: Sequence[TraceFlow]) -> list[Decision]:
        """What every firewall decided for these flows' packets."""
        return [d for s in self.sessions for flow in flows for d in s.decisions(flow)]

    def packets(self) -> list[PacketTrace]:
        return [p for s in self.sessions for p in s.traces]

    def stopped(self, src: str, dst: str, dport: int | None) -> Decision | None:
        """Where a flow from ``src`` to ``dst`` (port ``dport``, None: any) died: the first
        packet of it, or of its replies, that a firewall dropped, rejected or did not forward
        (TCP or UDP, whichever the trace saw)."""
        span = (dport, dport) if dport is not None else None
        for s in self.sessions:
            for transport in ("tcp", "udp"):
                fates = s.decisions(TraceFlow(transport, src, dst, span))
                request, reply = first_fates(fates, "request"), first_fates(fates, "reply")
                for d in [*request, *reply]:
                    if not d.crossed:
                        return d
        return None


def row_flows(row: MatrixRow, topology: Topology) -> list[TraceFlow]:
    """The flows a matrix row stands for, every source to every destination."""
    resolved = resolve(row, topology)
    span = (row.port_low, row.port_high)
    return [
        TraceFlow(
            row.transport,
            s.address,
            d.address,
            *((None, span) if row.port_side == "source" else (span, None)),
        )
        for s in resolved.sources
        for d in resolved.destinations
        if s.host != d.host
    ]


def _index(node: FirewallNode, path: Path) -> RuleIndex:
    try:
        return current_index(node, path)
    except EdgesimError as exc:
        # The rules stay traceable by handle; only the lines are missing.
        log.warning("%s: no line numbers: %s", node.id, exc)
        index = current_index(node, None)
        return build_index(node.id, None, index.chains)


@contextlib.asynccontextmanager
async def traced(
    runner: Runner, flows: Sequence[TraceFlow], *, handshake_only: bool = False
) -> AsyncIterator[LabTrace]:
    """Trace ``flows`` in every firewall of ``runner``'s lab for the duration of the block."""
    trace = LabTrace()
    if not runner.has_firewalls or not flows:
        yield trace
        return

    async def open_session(firewall: str) -> TraceSession:
        node = runner.firewall_node(firewall)
        index = await asyncio.to_thread(_index, node, runner.rules_path(firewall))
        session = TraceSession(node, flows, index, handshake_only=handshake_only)
        await session.start()
        return session

    firewalls = list(runner.our_firewalls())  # never the user's own device
    opened = await asyncio.gather(*(open_session(fw) for fw in firewalls), return_exceptions=True)
    trace.sessions = [s for s in opened if isinstance(s, TraceSession)]
    for firewall, outcome in zip(firewalls, opened, strict=True):
        if isinstance(outcome, EdgesimError):
            trace.problems.append(f"{firewall} not traced: {outcome}")
        elif isinstance(outcome, BaseException):
            await asyncio.gather(*(s.stop() for s in trace.sessions))
            raise outcome
    try:
        yield trace
    finally:
        await asyncio.gather(*(s.stop() for s in trace.sessions))
        trace.problems += [f"{s.node.id}: {s.problem}" for s in trace.sessions if s.problem]
