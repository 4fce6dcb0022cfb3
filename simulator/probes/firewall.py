"""Verdicts judged at the firewall: a probe's result combined with what the lab firewalls'
trace says happened to its packets.

The endpoints alone cannot tell a closed firewall from an open one in front of a host that
resets the connection; the firewall's own trace can. :func:`judge` applies the rules of
docs/probes.md ("Verdicts from the firewall"):

* a row that must stay blocked is ``open where it must not be`` as soon as its request crossed
  every firewall that saw it, whatever the destination then did (reset, ICMP, silence), and the
  accepting rule is named; otherwise it is blocked (``refused`` when a firewall rejected it)
  where the trace says it died;
* a row expected open that failed says whether its request or its reply was dropped, by which
  firewall and rule or policy; when both crossed, the failure is the destination's and the
  endpoint's verdict stands;
* a flow no firewall saw keeps the endpoint's verdict (it crossed no lab firewall).

:func:`job_flows` says which packets of a probe job to trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from simulator.firewall.trace import REJECTED, Decision, TraceFlow, first_fates
from simulator.matrix.model import Expectation, MatrixRow
from simulator.probes.base import ProbeResult, Verdict
from simulator.probes.spec import ProbeSpec


def job_flows(row: MatrixRow, spec: ProbeSpec | None) -> list[TraceFlow]:
    """The flows a probe of ``row`` sends across the lab (its source address must be known)."""
    if spec is None:
        return []
    if spec.peer is not None:
        # Relay rows: the relay (on the TURN server's address) sends to the peer from its
        # port range; the probe's own TURN exchange stays inside the relay's host.
        sport = (row.port_low, row.port_high) if row.port_side == "source" else None
        return [TraceFlow(row.transport, spec.address, spec.peer[0], (spec.peer[1],) * 2, sport)]
    if spec.bind is None:
        return []
    high = spec.port_high if spec.port_high is not None else spec.port
    return [TraceFlow(spec.transport, spec.bind, spec.address, (spec.port, high))]


def _through(decisions: Sequence[Decision], direction: str) -> tuple[bool, Decision | None]:
    """Whether ``direction`` crossed every firewall that saw it; the first that stopped it."""
    first = first_fates(decisions, direction)
    stopped = next((d for d in first if not d.crossed), None)
    return bool(first) and stopped is None, stopped


def _stopped_verdict(stopped: Decision) -> Verdict:
    """A firewall stopped the packet: ``refused`` when a rule rejected it, else ``blocked``
    (dropped, or not forwarded for want of a route: whether the ICMP error the firewall then
    sends reaches the source depends on the kernel's rate limit, not on the rules)."""
    return Verdict.REFUSED if stopped.action == REJECTED else Verdict.BLOCKED


def judge(result: ProbeResult, row: MatrixRow, decisions: Sequence[Decision]) -> ProbeResult:
    """``result`` with the firewalls' decisions attached and its verdict judged at the firewall."""
    judged = replace(result, firewall=tuple(decisions))
    if result.verdict in (Verdict.SKIPPED, Verdict.ERROR) or not decisions:
        return judged
    through, stopped = _through(decisions, "request")
    if row.expect is Expectation.BLOCKED:
        if through:
            accepting = "; ".join(d.describe() for d in first_fates(decisions, "request"))
            endpoint = result.reason.removeprefix("open where it must not be: ")
            return replace(
                judged,
                verdict=Verdict.OPEN_UNEXPECTED,
                reason=f"open where it must not be: {accepting} (then the destination: {endpoint})",
            )
        if stopped is None:  # pragma: no cover - decisions exist, so a first fate exists
            return judged
        verdict = _stopped_verdict(stopped)
        return replace(judged, verdict=verdict, reason=stopped.describe())
    if result.verdict is Verdict.PASSED:
        return judged
    if stopped is not None:
        verdict = _stopped_verdict(stopped)
        return replace(judged, verdict=verdict, reason=stopped.describe())
    if not through:
        return judged
    reply_through, reply_stopped = _through(decisions, "reply")
    if reply_stopped is not None:
        return replace(judged, verdict=Verdict.BLOCKED, reason=reply_stopped.describe())
    if reply_through:
        return replace(
            judged, reason=f"{result.reason} (the firewalls passed its first packets both ways)"
        )
    return replace(
        judged, reason=f"{result.reason} (the request crossed the firewalls; nothing came back)"
    )
