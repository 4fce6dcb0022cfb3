"""Ladders: hosts ordered by zone with the firewalls between them; drops stop at the firewall."""

from __future__ import annotations

from simulator.scenario.ladder import build_ladder, render_svg, render_text
from simulator.trace import HostMap, TraceEvent, TraceRecorder, record


def ev(t, src, dst, summary, event="sent", protocol="sip"):
    return TraceEvent(t, protocol, src, dst, summary, event)


def test_columns_follow_the_zones_with_firewalls_between(topology):
    hosts = HostMap(topology, "netns")
    events = [
        ev(1.0, "203.0.113.40:40000", "198.51.100.10:443", "REGISTER sip:contoso.lab"),
        ev(1.1, "198.51.100.130:5061", "192.0.2.10:5061", "REGISTER sip:contoso.lab"),
        ev(1.2, "192.0.2.10:5061", "198.51.100.130:5061", "200 OK"),
    ]
    ladder = build_ladder("t", events, topology, hosts)
    assert [(c.id, c.kind) for c in ladder.columns] == [
        ("remote-user", "host"),
        ("fw-external", "firewall"),
        ("edge", "host"),
        ("fw-internal", "firewall"),
        ("fe", "host"),
    ]
    assert [(a.src, a.dst, a.label) for a in ladder.arrows] == [
        (0, 2, "REGISTER sip:contoso.lab"),
        (2, 4, "REGISTER sip:contoso.lab"),
        (4, 2, "200 OK"),
    ]
    assert [round(a.offset, 3) for a in ladder.arrows] == [0.0, 0.1, 0.2]


def test_a_dropped_message_stops_at_the_firewall(topology):
    hosts = HostMap(topology, "netns")
    events = [
        ev(0.0, "203.0.113.50:3478", "198.51.100.11:3478", "Binding request", "dropped", "stun")
    ]
    ladder = build_ladder("udp blocked", events, topology, hosts)
    (arrow,) = ladder.arrows
    assert ladder.columns[arrow.dst].id == "fw-external"
    text = render_text(ladder)
    arrow_line = next(line for line in text.splitlines() if line.startswith("  +0.000"))
    fw_x = 9 + 1 * 20 + 10  # prefix + centre of column 1 (the firewall)
    assert arrow_line[fw_x] == "X"
    assert (
        "." not in arrow_line[fw_x:] and arrow_line[fw_x + 1 :].strip() == "|"
    )  # nothing reaches the Edge
    assert "&#x2715;" in render_svg(ladder)


def test_a_traced_drop_stops_at_the_firewall_that_dropped_it_labelled_with_the_rule(topology):
    from dataclasses import replace

    hosts = HostMap(topology, "netns")
    dropped = ev(0.0, "192.0.2.10:40000", "198.51.100.130:23456", "stream", "dropped", "xmpp")
    events = [
        ev(0.0, "203.0.113.40:40000", "198.51.100.10:443", "REGISTER", "sent"),
        replace(dropped, blocked_at="fw-internal", blocked_by="internal.nft:34"),
    ]
    ladder = build_ladder("xmpp blocked", events, topology, hosts)
    arrow = ladder.arrows[1]
    assert ladder.columns[arrow.dst].id == "fw-internal"
    assert (arrow.label, arrow.blocked) == ("stream", "fw-internal: internal.nft:34")
    assert ">fw-internal: internal.nft:34</text>" in render_svg(ladder)
    lines = render_text(ladder).splitlines()
    x = next(i for i, line in enumerate(lines) if line.startswith("  +0.000") and "X" in line)
    fw_column = 9 + 3 * 20 + 10  # remote-user, fw-external, edge, fw-internal
    assert lines[x][fw_column] == "X"
    assert lines[x + 1][fw_column:] == "^ fw-internal: internal.nft:34"


def test_sender_and_receiver_records_of_one_message_draw_one_arrow(topology):
    hosts = HostMap(topology, "local")
    events = [
        ev(1.0, "127.0.113.10:5061", "127.51.100.10:5061", "MESSAGE sip:alice@contoso.lab"),
        ev(
            1.001,
            "127.0.113.10:5061",
            "127.51.100.10:5061",
            "MESSAGE sip:alice@contoso.lab",
            "received",
        ),
        ev(1.5, "127.0.113.20:5061", "127.51.100.10:5061", "OPTIONS sip:contoso.lab", "received"),
    ]
    ladder = build_ladder("t", events, topology, hosts)
    assert [a.label for a in ladder.arrows] == [
        "MESSAGE sip:alice@contoso.lab",
        "OPTIONS sip:contoso.lab",
    ]


def test_steps_are_drawn_across_the_ladder_not_as_a_host(topology):
    hosts = HostMap(topology, "local")
    events = [
        TraceEvent(0.0, "note", "", "", "alice signs in", "note"),
        ev(0.1, "127.0.113.40:1", "127.51.100.10:443", "REGISTER sip:contoso.lab"),
    ]
    ladder = build_ladder("t", events, topology, hosts)
    assert [c.id for c in ladder.columns] == ["remote-user", "fw-external", "edge"]
    assert "== alice signs in" in render_text(ladder)
    assert "alice signs in</text>" in render_svg(ladder)


def test_labels_are_escaped_in_svg(topology):
    hosts = HostMap(topology, "local")
    events = [
        ev(
            0,
            "127.0.113.30:1",
            "127.51.100.10:5269",
            "<message to='a@contoso.lab'/>",
            protocol="xmpp",
        )
    ]
    svg = render_svg(build_ladder("x", events, topology, hosts))
    assert "&lt;message to=&#x27;a@contoso.lab&#x27;/&gt;" in svg


def test_record_costs_nothing_without_a_recorder_and_collects_with_one(monkeypatch):
    monkeypatch.delenv("EDGESIM_TRACE_FILE", raising=False)
    record("sip", "a", "b", "lost")  # no sink: dropped on the floor
    with TraceRecorder() as rec:
        record("sip", "127.0.0.1:1", "127.0.0.2:2", "OPTIONS sip:x")
    record("sip", "a", "b", "after")
    assert [e.summary for e in rec.events] == ["OPTIONS sip:x"]


def test_trace_file_sink_round_trips(tmp_path, monkeypatch):
    path = tmp_path / "trace.jsonl"
    monkeypatch.setenv("EDGESIM_TRACE_FILE", str(path))
    record(
        "dns", "198.51.100.10", "203.0.113.53:53", "query SRV _sipfederationtls._tcp.fabrikam.lab"
    )
    monkeypatch.delenv("EDGESIM_TRACE_FILE")
    rec = TraceRecorder()
    rec.extend_from_files([path, tmp_path / "missing.jsonl"])
    assert [(e.protocol, e.summary) for e in rec.events] == [
        ("dns", "query SRV _sipfederationtls._tcp.fabrikam.lab")
    ]
