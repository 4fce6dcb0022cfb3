"""Reading nft's trace: packets grouped, each one's fate and the rule (file and line) or the
policy that decided it. The vectors were captured from a real firewall (vectors/monitor.txt)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from simulator.firewall.rules import build_index, parse_listing
from simulator.firewall.source import read_source
from simulator.firewall.trace import (
    ACCEPTED,
    DROPPED,
    NOT_FORWARDED,
    REJECTED,
    Decision,
    Packet,
    TraceFlow,
    decide,
    flow_decisions,
    parse_trace,
    trace_table,
)

VECTORS = Path(__file__).resolve().parent / "vectors"
TABLE = "edgesim-trace-349ec700"


def captured() -> tuple[list[str], object]:
    lines = (VECTORS / "monitor.txt").read_text().splitlines()
    index = build_index(
        "fw",
        read_source(VECTORS / "forward.iptables"),
        parse_listing((VECTORS / "listing.json").read_text()),
    )
    return lines, index


def test_index_maps_every_kernel_handle_to_its_iptables_line() -> None:
    _, index = captured()
    assert {k[2]: (r.chain, r.line) for k, r in index.rules.items()} == {  # type: ignore[attr-defined]
        5: ("FORWARD", 8),
        6: ("FORWARD", 9),
        7: ("FORWARD", 10),
        8: ("FORWARD", 11),
        9: ("LYNC", 12),
    }
    assert index.unmapped == []  # type: ignore[attr-defined]


def test_each_flow_gets_the_kernel_decision_and_its_line() -> None:
    lines, index = captured()
    traces = parse_trace(lines, "fw", TABLE)

    def fates(port: int) -> list[tuple[str, str, int | None, bool, int]]:
        flow = TraceFlow("tcp", "10.9.1.2", "10.9.2.2", (port, port))
        return [
            (d.direction, d.action, d.rule.line if d.rule else None, d.policy, d.count)
            for d in flow_decisions(flow, traces, index)  # type: ignore[arg-type]
        ]

    # The SYN by the "row sip" rule (line 9), the rest of the connection both ways by the
    # conntrack rule (line 8).
    assert fates(5061) == [
        ("request", ACCEPTED, 9, False, 1),
        ("reply", ACCEPTED, 8, False, 2),
        ("request", ACCEPTED, 8, False, 2),
    ]
    assert fates(5060) == [("request", REJECTED, 10, False, 1)]
    assert fates(5062)[0] == ("request", ACCEPTED, 12, False, 1)
    assert fates(5999) == [("request", DROPPED, None, True, 1)]
    (syn,) = [t for t in traces if t.packet.dport == 5062 and t.packet.flags == "syn"]
    d = decide(syn, "request", index)  # type: ignore[arg-type]
    assert (d.chain, d.hook) == ("ip filter LYNC", "forward")  # a jump runs in its base hook
    assert d.rule is not None and d.rule.text == "-A LYNC -s 10.9.1.0/24 -j ACCEPT"
    assert d.describe() == (
        "fw accepted the request: forward.iptables:12 `-A LYNC -s 10.9.1.0/24 -j ACCEPT`"
    )
    (dropped,) = [t for t in traces if t.packet.dport == 5999]
    assert decide(dropped, "request", index).describe() == (  # type: ignore[arg-type]
        "fw dropped the request: the policy (drop) of chain ip filter FORWARD (forward.iptables:5)"
    )


def test_packets_without_a_verdict_and_other_sessions() -> None:
    pre = 'trace id 01 inet T pre packet: iif "a" ip saddr 1.1.1.1 ip daddr 2.2.2.2 ip protocol udp udp sport 5 udp dport 53'
    lines = [
        pre,
        "trace id 01 inet T pre rule ip saddr 1.1.1.1 meta nftrace set 1 # handle 4 (verdict continue)",
        "trace id 01 inet T pre policy accept",
        # the same id again: a new packet (the kernel reuses ids once a packet is gone)
        pre,
        'trace id 01 inet T post packet: oif "b" ip saddr 1.1.1.1 ip daddr 2.2.2.2',
        "trace id 01 inet T post policy accept",
        # another session's table and a packet it traced: not ours
        'trace id 02 inet edgesim-trace-other pre packet: iif "a" ip saddr 1.1.1.1 ip daddr 2.2.2.2 tcp sport 1 tcp dport 2',
        "trace id 02 ip filter FORWARD policy drop",
    ]
    first, second = parse_trace(lines, "fw", "T")
    assert first.packet == Packet("udp", "1.1.1.1", "2.2.2.2", 5, 53, "", "a")
    assert decide(first, "request").action == NOT_FORWARDED
    assert decide(first, "request").describe() == (
        "fw did not forward the request: no rule dropped it and no route leads to its destination"
    )
    assert second.crossed and decide(second, "request").by == "no chain (nothing filters this hook)"


def test_flow_directions() -> None:
    relay = TraceFlow("udp", "198.51.100.11", "203.0.113.50", (5004, 5004), (50000, 59999))
    assert relay.matches(Packet("udp", "198.51.100.11", "203.0.113.50", 50001, 5004)) == "request"
    assert relay.matches(Packet("udp", "203.0.113.50", "198.51.100.11", 5004, 50001)) == "reply"
    assert relay.matches(Packet("udp", "198.51.100.11", "203.0.113.50", 40000, 5004)) is None
    assert relay.matches(Packet("icmp", "203.0.113.50", "198.51.100.11")) == "reply"
    assert relay.matches(Packet("tcp", "198.51.100.11", "203.0.113.50", 50001, 5004)) is None


def test_decisions_survive_json() -> None:
    lines, index = captured()
    traces = parse_trace(lines, "fw", TABLE)
    flow = TraceFlow("tcp", "10.9.1.2", "10.9.2.2", (5061, 5061))
    for d in flow_decisions(flow, traces, index):  # type: ignore[arg-type]
        assert Decision.from_dict(d.to_dict()) == d


def test_trace_table_sets_for_known_ports_rules_for_ranges() -> None:
    text = trace_table(
        "edgesim-trace-x",
        [
            TraceFlow("tcp", "10.0.0.1", "10.0.0.2", (5061, 5061), (40000, 40000)),
            TraceFlow("udp", "10.0.0.1", "10.0.0.3", (5004, 5004), (50000, 59999)),
        ],
        handshake_only=True,
    )
    assert "elements = { 10.0.0.1 . 10.0.0.2 . tcp . 40000 . 5061 }" in text
    assert "elements = { 10.0.0.2 . 10.0.0.1 . tcp . 5061 . 40000 }" in text
    assert (
        "ip saddr 10.0.0.1 ip daddr 10.0.0.3 meta l4proto udp th dport 5004 "
        "th sport 50000-59999 meta nftrace set 1" in text
    )
    assert "tcp flags & (syn | ack) == syn meta nftrace set 1" in text
    assert "type filter hook postrouting priority 10000" in text


@pytest.mark.root
def test_trace_table_is_valid_nftables() -> None:
    if shutil.which("nft") is None or shutil.which("unshare") is None:
        pytest.skip("needs nft and unshare (Debian nftables, util-linux)")
    text = trace_table(
        "edgesim-trace-x",
        [
            TraceFlow("tcp", "10.0.0.1", "10.0.0.2", (5061, 5061), (40000, 40000)),
            TraceFlow("tcp", "10.0.0.1", "10.0.0.2", (50000, 59999)),
        ],
        handshake_only=True,
    )
    # A throwaway network namespace: nft checks the script against the kernel there.
    done = subprocess.run(
        ["unshare", "-n", "nft", "-c", "-f", "-"], input=text, capture_output=True, text=True
    )
    if done.returncode != 0 and "Operation not permitted" in done.stderr:
        pytest.skip("needs root")
    assert done.returncode == 0, done.stderr
