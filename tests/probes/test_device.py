"""Verdicts across the user's own firewall, from captures beside it: what a capture line says,
and how the endpoint's verdict is judged with it (the lab itself: tests/lab/test_external_firewall)."""

from __future__ import annotations

from simulator.matrix.model import Expectation
from simulator.probes.base import ProbeResult, Verdict
from simulator.probes.device import Crossing, Packet, Seen, judge, parse_packets

LINES = """\
1733212345.000001 eth0  Out IP 203.0.113.50.40001 > 198.51.100.11.3478: UDP, length 20
1733212345.000002 IP 198.51.100.11.3478 > 203.0.113.50.40001: UDP, length 32
1733212345.000003 access In  IP 203.0.113.10.33333 > 198.51.100.10.5060: tcp 0
1733212345.000004 ARP, Request who-has 203.0.113.1 tell 203.0.113.50, length 28
"""

STUN = Crossing(
    "fw-external", "udp", "203.0.113.50", "198.51.100.11", (3478, 3478), None,
    "messenger", "edge",
)  # fmt: skip


def test_capture_lines_become_packets() -> None:
    assert parse_packets(LINES) == [
        Packet("203.0.113.50", 40001, "198.51.100.11", 3478, "udp"),
        Packet("198.51.100.11", 3478, "203.0.113.50", 40001, "udp"),
        Packet("203.0.113.10", 33333, "198.51.100.10", 5060, "tcp"),
    ]
    request, reply, other = parse_packets(LINES)
    assert STUN.is_request(request) and not STUN.is_request(reply)
    assert STUN.is_reply(reply) and not STUN.is_reply(other)


def test_relay_crossings_match_the_relay_range_as_source() -> None:
    relay = Crossing(
        "fw-external", "udp", "198.51.100.11", "203.0.113.50", (5004, 5004), (50000, 59999),
        "edge", "messenger",
    )  # fmt: skip
    assert relay.is_request(Packet("198.51.100.11", 50123, "203.0.113.50", 5004, "udp"))
    assert not relay.is_request(Packet("198.51.100.11", 40000, "203.0.113.50", 5004, "udp"))
    assert relay.is_reply(Packet("203.0.113.50", 5004, "198.51.100.11", 50123, "udp"))


def _result(verdict: Verdict, expect: str, reason: str) -> ProbeResult:
    return ProbeResult("row", "stun-udp", expect, verdict, reason, runner="netns")


def test_a_dropped_request_is_named_with_the_device() -> None:
    result = judge(
        _result(Verdict.BLOCKED, "open", "no answer within 2 s: dropped"),
        STUN,
        Seen(request_left=3),
        Expectation.OPEN,
    )
    assert result.verdict is Verdict.BLOCKED
    assert result.reason == (
        "no answer within 2 s: dropped; fw-external dropped the request: it left messenger, "
        "never reached edge (captures beside fw-external)"
    )
    assert result.details["capture"]["request_left_source"] == 3
    assert "not traced; verdict from the endpoints and captures" in result.details["device"]


def test_a_dropped_reply_and_a_request_never_sent() -> None:
    reply = judge(
        _result(Verdict.BLOCKED, "open", "no answer"),
        STUN,
        Seen(request_left=1, request_arrived=1, reply_left=1),
        Expectation.OPEN,
    )
    assert "fw-external dropped the reply: it left edge, never reached messenger" in reply.reason
    never = judge(_result(Verdict.BLOCKED, "open", "no answer"), STUN, Seen(), Expectation.OPEN)
    assert never.details["device_fate"] == "the request never left messenger (never sent)"
    error = judge(_result(Verdict.ERROR, "open", "cannot bind"), STUN, Seen(), Expectation.OPEN)
    assert error.reason == "cannot bind" and "device_fate" not in error.details


def test_a_blocked_row_whose_request_crossed_is_open_where_it_must_not_be() -> None:
    """The Edge resets plain SIP: alone, the endpoint would call the row blocked (refused)."""
    result = judge(
        _result(Verdict.REFUSED, "blocked", "connection refused (TCP reset)"),
        STUN,
        Seen(request_left=1, request_arrived=1, reply_left=1, reply_arrived=1),
        Expectation.BLOCKED,
    )
    assert result.verdict is Verdict.OPEN_UNEXPECTED and not result.met
    assert result.reason.startswith(
        "open where it must not be: fw-external (your own device) let it through"
    )
    assert result.reason.endswith("(then the destination: connection refused (TCP reset))")


def test_without_a_capture_the_verdict_is_the_endpoints_and_says_so() -> None:
    original = _result(Verdict.PASSED, "open", "Binding success")
    result = judge(original, STUN, None, Expectation.OPEN)
    assert result.verdict is Verdict.PASSED and result.reason == original.reason
    assert result.details["device"].endswith("verdict from the endpoints (no capture beside it)")
