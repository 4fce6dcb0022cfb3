"""Verdicts across the user's own firewall: the endpoints, and captures on both sides of it.

A firewall marked ``external = true`` is the user's device: edgesim cannot enter it, so nothing
says what it decided (the lab's own firewalls are traced in their namespaces or containers).
Its verdicts fall back to what the endpoints saw, and every such result says so. To tell a
packet the device dropped from one that was never sent, :class:`DeviceWatch` runs the probes
with a tcpdump in each node on either side of the device (the source host and the destination
host, through the runner's :meth:`~simulator.lab.runners.base.Runner.exec_argv`) and reads, for
each probe's flow:

* the request left the source (seen at the source), reached the destination (seen there);
* the reply left the destination, reached the source.

Then, as a firewall's own trace would (docs/probes.md):

* a row that must stay blocked whose request reached the destination is ``open where it must
  not be`` whatever the destination did: the device let it through;
* a failed open row says whether the device dropped the request (left, never arrived), the reply
  (answered, never came back), or the source never sent it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from simulator.errors import LabError
from simulator.lab.capture import CapturePoint, tcpdumps
from simulator.lab.runners.base import Runner
from simulator.lab.topology import Topology
from simulator.matrix.model import Expectation
from simulator.probes.base import ProbeResult, Verdict
from simulator.records import Record, record

if TYPE_CHECKING:
    from simulator.probes.run import Executor, ProbeJob

log = logging.getLogger(__name__)

_PACKET = re.compile(
    r"\bIP (?P<src>\d+\.\d+\.\d+\.\d+)\.(?P<sport>\d+) > (?P<dst>\d+\.\d+\.\d+\.\d+)\.(?P<dport>\d+)"
    r": (?P<proto>[A-Za-z]+)?"
)


@dataclass(frozen=True)
class Packet:
    src: str
    sport: int
    dst: str
    dport: int
    transport: str
    """``tcp`` or ``udp``."""


def parse_packets(text: str) -> list[Packet]:
    """Packets of ``tcpdump -n -q`` text lines (``IP a.b.c.d.P > e.f.g.h.Q: tcp 0``)."""
    found = []
    for line in text.splitlines():
        match = _PACKET.search(line)
        if match is None:
            continue
        proto = (match["proto"] or "").lower()
        transport = "udp" if proto == "udp" else "tcp" if proto in ("tcp", "flags") else ""
        if "UDP" in line:
            transport = "udp"
        found.append(
            Packet(match["src"], int(match["sport"]), match["dst"], int(match["dport"]), transport)
        )
    return found


@dataclass(frozen=True)
class Crossing:
    """A probe's flow across the user's device."""

    firewall: str
    transport: str
    source: str
    """The address the request leaves from (the relay's, for a relay row)."""
    destination: str
    ports: tuple[int, int]
    """Destination ports the request may go to."""
    source_ports: tuple[int, int] | None
    """Source ports the request leaves from (a relay row: the relay range), None: any."""
    source_node: str
    destination_node: str

    def is_request(self, p: Packet) -> bool:
        return self._goes(p.src, p.sport, p.dst, p.dport)

    def is_reply(self, p: Packet) -> bool:
        return self._goes(p.dst, p.dport, p.src, p.sport)

    def _goes(self, src: str, sport: int, dst: str, dport: int) -> bool:
        """Whether a packet from ``src:sport`` to ``dst:dport`` is this crossing's request."""
        return (
            src == self.source
            and dst == self.destination
            and self.ports[0] <= dport <= self.ports[1]
            and (self.source_ports is None or self.source_ports[0] <= sport <= self.source_ports[1])
        )


@dataclass
class Seen(Record):
    """What the captures beside the device saw of one crossing."""

    request_left: int = field(default=0, metadata=record(key="request_left_source"))
    request_arrived: int = field(default=0, metadata=record(key="request_reached_destination"))
    reply_left: int = field(default=0, metadata=record(key="reply_left_destination"))
    reply_arrived: int = field(default=0, metadata=record(key="reply_reached_source"))


def crossing_of(topology: Topology, ours: Sequence[str], job: ProbeJob) -> Crossing | None:
    """The user's device ``job`` crosses, if any."""
    spec, src, dst, row = job.spec, job.source, job.destination, job.row
    if spec is None or src is None or dst is None or src.zone == dst.zone:
        return None
    fw = topology.firewall_between(src.zone, dst.zone)
    if fw is None or fw.id in ours:
        return None
    if spec.peer is not None:  # the relay sends to the peer from its range
        return Crossing(
            fw.id, row.transport, spec.address, spec.peer[0], (spec.peer[1],) * 2,
            (row.port_low, row.port_high), src.host, dst.host,
        )  # fmt: skip
    if spec.bind is None:
        return None
    high = spec.port_high if spec.port_high is not None else spec.port
    return Crossing(
        fw.id, spec.transport, spec.bind, spec.address, (spec.port, high), None,
        src.host, dst.host,
    )  # fmt: skip


NOTE = "{fw} is your own device (external): not traced; verdict from the endpoints"


def judge(
    result: ProbeResult, crossing: Crossing, seen: Seen | None, expect: Expectation
) -> ProbeResult:
    """``result`` with what the captures beside the device say (see the module docstring)."""
    fw = crossing.firewall
    details = {**result.details, "external_firewall": fw}
    if seen is None:
        note = NOTE.format(fw=fw) + " (no capture beside it)"
        return replace(result, details={**details, "device": note})
    details["capture"] = seen.to_dict()
    details["device"] = NOTE.format(fw=fw) + " and captures beside it"
    details["captured_at"] = [crossing.source_node, crossing.destination_node]
    if result.verdict in (Verdict.SKIPPED, Verdict.ERROR):
        return replace(result, details=details)
    if not seen.request_left:
        fate = f"the request never left {crossing.source_node} (never sent)"
    elif not seen.request_arrived:
        fate = f"{fw} dropped the request: it left {crossing.source_node}, never reached {crossing.destination_node}"
    elif not seen.reply_left:
        fate = f"the request crossed {fw}; {crossing.destination_node} did not answer"
    elif not seen.reply_arrived:
        fate = f"{fw} dropped the reply: it left {crossing.destination_node}, never reached {crossing.source_node}"
    else:
        fate = f"request and reply crossed {fw}"
    details["device_fate"] = fate
    if expect is Expectation.BLOCKED and seen.request_arrived:
        endpoint = result.reason.removeprefix("open where it must not be: ")
        return replace(
            result,
            verdict=Verdict.OPEN_UNEXPECTED,
            reason=f"open where it must not be: {fw} (your own device) let it through: "
            f"{fate} (then the destination: {endpoint})",
            details=details,
        )
    if result.met and result.verdict is Verdict.PASSED:
        return replace(result, details=details)
    return replace(
        result, reason=f"{result.reason}; {fate} (captures beside {fw})", details=details
    )


def _read_part(part: Path) -> str:
    if part.stat().st_size == 0:
        return ""
    done = subprocess.run(
        ["tcpdump", "-r", str(part), "-n", "-q", "-tt"], capture_output=True, text=True, timeout=60
    )
    return done.stdout


@dataclass
class DeviceWatch:
    """An executor that runs ``inner``'s probes with captures beside the user's devices, and
    judges the results of the probes that cross one (see the module docstring)."""

    inner: Executor
    """The executor that runs the probes (a :class:`~simulator.probes.run.RunnerExecutor`)."""
    runner: Runner
    name: str = ""
    own_notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.name = self.name or getattr(self.inner, "name", self.runner.name)
        ours = self.runner.our_firewalls()
        self.own_notes += [
            NOTE.format(fw=fw.id) + " and captures beside it"
            for fw in self.runner.config.topology.firewalls
            if fw.id not in ours
        ]

    @property
    def notes(self) -> list[str]:
        """What the report says about the run: the inner executor's notes, then which
        firewalls are the user's own."""
        return [*getattr(self.inner, "notes", []), *self.own_notes]

    def _points(self, crossings: Sequence[Crossing]) -> list[CapturePoint]:
        nodes: dict[str, set[str]] = {}
        for c in crossings:
            for node in (c.source_node, c.destination_node):
                nodes.setdefault(node, set()).update((c.source, c.destination))
        return [
            CapturePoint(
                node,
                tuple(self.runner.exec_argv(node)),
                bpf="ip and (" + " or ".join(f"host {a}" for a in sorted(addresses)) + ")",
            )
            for node, addresses in sorted(nodes.items())
        ]

    async def run_batch(
        self,
        jobs: Sequence[ProbeJob],
        *,
        concurrency: int = 32,
        on_done: Callable[[ProbeResult], None] | None = None,
    ) -> list[ProbeResult]:
        topology = self.runner.config.topology
        ours = self.runner.our_firewalls()
        crossing = {id(job): c for job in jobs if (c := crossing_of(topology, ours, job))}
        seen: dict[int, Seen] = {}
        batch = getattr(self.inner, "run_batch", None)
        if batch is None:
            raise LabError(f"{self.name}: the probes' executor runs no batches")
        if not crossing:
            return list(await batch(jobs, concurrency=concurrency, on_done=on_done))
        results: list[ProbeResult]
        try:
            if shutil.which("tcpdump") is None:
                raise LabError("tcpdump is missing here")
            with tempfile.TemporaryDirectory(prefix="edgesim-device-") as tmp:
                points = self._points(list(crossing.values()))
                async with tcpdumps(points, Path(tmp)) as dumps:
                    results = list(await batch(jobs, concurrency=concurrency))
                    await asyncio.sleep(0.2)  # the last replies reach the capture
                texts = {d.point.node: _read_part(d.part) for d in dumps}
            packets = {node: parse_packets(text) for node, text in texts.items()}
            for key, c in crossing.items():
                at_source, at_destination = (
                    packets.get(c.source_node, []),
                    packets.get(c.destination_node, []),
                )
                seen[key] = Seen(
                    sum(map(c.is_request, at_source)),
                    sum(map(c.is_request, at_destination)),
                    sum(map(c.is_reply, at_destination)),
                    sum(map(c.is_reply, at_source)),
                )
        except LabError as exc:
            log.warning("no capture beside the user's firewall: %s", exc)
            self.own_notes.append(f"no capture beside the user's firewall: {exc}")
            results = list(await batch(jobs, concurrency=concurrency))
        judged = []
        for job, result in zip(jobs, results, strict=True):
            c = crossing.get(id(job))
            if c is not None:
                result = judge(result, c, seen.get(id(job)), job.row.expect)
            judged.append(result)
            if on_done is not None:
                on_done(result)
        return judged

    async def run(self, job: ProbeJob) -> ProbeResult:
        (result,) = await self.run_batch([job])
        return result
