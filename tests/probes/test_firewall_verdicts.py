"""Verdicts judged at the firewall: what the kernel's trace says overrides what the endpoints
inferred (the issue's case first: an open firewall in front of an Edge that resets 5060)."""

from __future__ import annotations

from simulator.firewall.rules import RuleRef
from simulator.firewall.trace import ACCEPTED, DROPPED, NOT_FORWARDED, REJECTED, Decision
from simulator.matrix import load_matrix
from simulator.matrix.model import MatrixRow
from simulator.probes.base import ProbeResult, Verdict
from simulator.probes.firewall import job_flows, judge
from simulator.probes.spec import ProbeSpec

MATRIX = load_matrix()
SIP_TRUNK = RuleRef(
    "fw-external",
    "ip",
    "filter",
    "FORWARD",
    17,
    'ip daddr $EDGE_ACCESS tcp dport 5060 accept comment "SIP trunk (ITSP)"',
    "/etc/fw/edge.nft",
    17,
    "SIP trunk (ITSP)",
)
RETURN = RuleRef("fw-external", "ip", "filter", "FORWARD", 3, "ct state established accept")


def result(row: MatrixRow, verdict: Verdict, reason: str) -> ProbeResult:
    return ProbeResult(row.id, row.probe, row.expect.value, verdict, reason)


def fate(direction: str, action: str, rule: RuleRef | None = None) -> Decision:
    return Decision(
        "fw-external",
        direction,
        action,
        "ip filter FORWARD",
        "forward",
        rule,
        policy=rule is None and action != NOT_FORWARDED,
    )


def test_a_blocked_row_whose_packet_crossed_is_open_whatever_the_destination_did() -> None:
    row = MATRIX.row("neg-inet-sip-5060")
    endpoint = result(
        row, Verdict.REFUSED, "connection refused (TCP reset or ICMP port unreachable)"
    )
    assert endpoint.met  # what the endpoints alone would certify
    judged = judge(
        endpoint, row, [fate("request", ACCEPTED, SIP_TRUNK), fate("reply", ACCEPTED, RETURN)]
    )
    assert judged.verdict is Verdict.OPEN_UNEXPECTED and not judged.met
    assert judged.reason == (
        "open where it must not be: fw-external accepted the request: edge.nft:17 "
        '`ip daddr $EDGE_ACCESS tcp dport 5060 accept comment "SIP trunk (ITSP)"` '
        "(then the destination: connection refused (TCP reset or ICMP port unreachable))"
    )
    assert judged.reached is True


def test_a_blocked_row_stopped_at_the_firewall_says_where() -> None:
    row = MATRIX.row("neg-inet-relay-tcp-in")
    endpoint = result(row, Verdict.BLOCKED, "no answer within 2 s: dropped")
    judged = judge(endpoint, row, [fate("request", DROPPED)])
    assert judged.verdict is Verdict.BLOCKED and judged.met
    assert judged.reason == (
        "fw-external dropped the request: the policy (drop) of chain ip filter FORWARD"
    )
    rejected = judge(endpoint, row, [fate("request", REJECTED, SIP_TRUNK)])
    assert rejected.verdict is Verdict.REFUSED and rejected.met
    unrouted = result(row, Verdict.REFUSED, "ICMP network unreachable")
    judged = judge(unrouted, row, [fate("request", NOT_FORWARDED)])
    assert judged.verdict is Verdict.BLOCKED and judged.met
    assert judged.reason.startswith("fw-external did not forward the request")


def test_an_open_row_that_failed_says_request_or_reply_and_where() -> None:
    row = MATRIX.row("fed-in-5061")
    timed_out = result(row, Verdict.BLOCKED, "no answer within 2 s: dropped")
    reply = judge(timed_out, row, [fate("request", ACCEPTED, SIP_TRUNK), fate("reply", DROPPED)])
    assert reply.verdict is Verdict.BLOCKED
    assert reply.reason == (
        "fw-external dropped the reply: the policy (drop) of chain ip filter FORWARD"
    )
    assert reply.reached is True  # the destination answered; its answer died on the way back
    request = judge(timed_out, row, [fate("request", DROPPED)])
    assert request.reason.startswith("fw-external dropped the request")
    assert request.reached is False


def test_an_open_row_failing_beyond_the_firewall_keeps_the_endpoint_verdict() -> None:
    row = MATRIX.row("fed-in-5061")
    tls = result(row, Verdict.TLS_FAILED, "TLS failed: unknown CA (...)")
    judged = judge(
        tls, row, [fate("request", ACCEPTED, SIP_TRUNK), fate("reply", ACCEPTED, RETURN)]
    )
    assert judged.verdict is Verdict.TLS_FAILED
    assert (
        judged.reason
        == "TLS failed: unknown CA (...) (the firewalls passed its first packets both ways)"
    )
    passed = result(row, Verdict.PASSED, "SIP 200 OK")
    assert judge(passed, row, [fate("request", ACCEPTED, SIP_TRUNK)]).reason == "SIP 200 OK"
    # no lab firewall saw it: the endpoints' word stands
    assert judge(tls, row, []) == tls


def test_results_carry_the_decisions_through_json() -> None:
    row = MATRIX.row("neg-inet-sip-5060")
    judged = judge(
        result(row, Verdict.REFUSED, "reset"), row, [fate("request", ACCEPTED, SIP_TRUNK)]
    )
    again = ProbeResult.from_dict(judged.to_dict())
    assert again == judged and again.firewall[0].rule == SIP_TRUNK


def test_which_packets_a_probe_sends_across() -> None:
    relay = MATRIX.row("av-relay-udp-out")
    spec = ProbeSpec(
        "turn-relay-udp", "198.51.100.11", 3478, peer=("203.0.113.50", 5004), transport="udp"
    )
    (flow,) = job_flows(relay, spec)
    assert (flow.source, flow.destination, flow.dport, flow.sport) == (
        "198.51.100.11",
        "203.0.113.50",
        (5004, 5004),
        (50000, 59999),
    )
    sampled = MATRIX.row("neg-inet-relay-tcp-in")
    spec = ProbeSpec("tcp-connect", "198.51.100.11", 50000, 59999, bind="203.0.113.10")
    (flow,) = job_flows(sampled, spec)
    assert (flow.source, flow.dport, flow.sport) == ("203.0.113.10", (50000, 59999), None)
    assert job_flows(sampled, ProbeSpec("tcp-connect", "198.51.100.11", 50000)) == []
