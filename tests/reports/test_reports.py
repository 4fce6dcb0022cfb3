"""Reports of a probe run: terminal table, JSON, JUnit XML, HTML (opened in headless Chromium)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rich.console import Console

from simulator.lab.topology import Topology
from simulator.matrix import load_matrix
from simulator.probes.base import ProbeResult, TlsProblem, Verdict
from simulator.probes.run import ProbeRun
from simulator.reports.html import to_html
from simulator.reports.json_report import to_dict
from simulator.reports.junit import to_junit
from simulator.reports.table import render_run

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"

#: One run with every kind of verdict, as the lab with a broken rule file would give.
VERDICTS = {
    "pic-in-5061": (
        Verdict.PASSED,
        "SIP 200 OK",
        "pic:wan 203.0.113.20",
        "edge:access 198.51.100.10:5061/tcp",
    ),
    "sipfed-out-5061": (
        Verdict.TLS_FAILED,
        "TLS failed: name mismatch (server certificate: Hostname mismatch)",
        "edge:access 198.51.100.10",
        "fabrikam:wan 203.0.113.10:5061/tcp",
    ),
    "xmpp-in-5269": (
        Verdict.BLOCKED,
        "no answer within 2 s: dropped",
        "jabber:wan 203.0.113.30",
        "edge:access 198.51.100.10:5269/tcp",
    ),
    "neg-inet-sip-5060": (
        Verdict.OPEN_UNEXPECTED,
        "open where it must not be: TCP handshake completed",
        "fabrikam:wan 203.0.113.10",
        "edge:access 198.51.100.10:5060/tcp",
    ),
    "neg-inet-fe-5061": (
        Verdict.REFUSED,
        "connection refused",
        "fabrikam:wan 203.0.113.10",
        "fe:lan 192.0.2.10:5061/tcp",
    ),
    "av-relay-udp-out": (
        Verdict.PROTOCOL_FAILED,
        "ALLOCATE answered 486 Allocation Quota Reached <&>",
        "edge:av 198.51.100.11",
        "messenger:wan 203.0.113.50:5004 via relay 198.51.100.11:3478",
    ),
    "dns-edge-ext": (Verdict.SKIPPED, "dns-ext:wan is not in the target file", "", ""),
}


@pytest.fixture
def run(topology: Topology) -> ProbeRun:
    matrix = load_matrix()
    results = []
    for row_id, (verdict, reason, src, dst) in VERDICTS.items():
        row = matrix.row(row_id)
        results.append(
            ProbeResult(
                row_id,
                row.probe,
                row.expect.value,
                verdict,
                reason,
                src,
                dst,
                {"response": "x"},
                {"connect": 0.01},
                TlsProblem.NAME_MISMATCH if verdict is Verdict.TLS_FAILED else None,
            )
        )
    return ProbeRun(topology, matrix, results, "netns", time.time(), 1.25)


def test_failures_are_the_rows_that_miss_their_expectation(run: ProbeRun) -> None:
    assert [r.row_id for r in run.failures] == [
        "sipfed-out-5061",
        "xmpp-in-5269",
        "neg-inet-sip-5060",
        "av-relay-udp-out",
    ]


def test_table_groups_by_seed_and_sums_up(run: ProbeRun) -> None:
    console = Console(record=True, width=220)
    console.print(render_run(run))
    text = console.export_text()
    assert "Access/SIP(MTLS)/TCP/5061" in text
    assert text.index("Firewall summary - SIP federation") < text.index("sipfed-out-5061")
    assert text.index("Must stay blocked") < text.index("neg-inet-sip-5060")
    assert "✗ open where it must not be" in text
    assert "✓ refused" in text
    assert "2 of 7 rows meet their expectation; 4 do not" in text


def test_json(run: ProbeRun) -> None:
    data = json.loads(json.dumps(to_dict(run)))
    assert data["ok"] is False
    assert data["failures"] == [
        "sipfed-out-5061",
        "xmpp-in-5269",
        "neg-inet-sip-5060",
        "av-relay-udp-out",
    ]
    entry = next(e for e in data["results"] if e["row"] == "sipfed-out-5061")
    assert entry["tls_problem"] == "name mismatch"
    assert entry["row_info"]["label"] == "Access/SIP(MTLS)/TCP/5061"


def test_junit(run: ProbeRun) -> None:
    root = ET.fromstring(to_junit(run).split("\n", 1)[1])
    assert root.tag == "testsuites" and root.get("failures") == "4" and root.get("tests") == "7"
    cases = {c.get("name", "").split()[0]: c for c in root.iter("testcase")}
    failure = cases["neg-inet-sip-5060"].find("failure")
    assert failure is not None and failure.get("type") == "open-unexpected"
    assert failure.get("message", "").startswith("expected blocked, got open where it must not be")
    assert cases["dns-edge-ext"].find("skipped") is not None
    assert cases["pic-in-5061"].find("failure") is None
    suites = [s.get("name") for s in root.iter("testsuite")]
    assert suites[0] == "Firewall summary - SIP federation"


def test_html_is_self_contained_and_escaped(run: ProbeRun) -> None:
    page = to_html(run)
    assert "<svg" in page and "fw-external" in page
    assert not re.search(r"<(script|link|img)\b", page)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "486 Allocation Quota Reached &lt;&amp;&gt;" in page
    assert "Failures (4)" in page
    for row_id in VERDICTS:
        assert f'id="row-{row_id}"' in page
    # every flow with known endpoints is drawn
    assert page.count("marker-end=") == 6


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium is not installed")
def test_html_report_renders_in_headless_chromium(run: ProbeRun, tmp_path: Path) -> None:
    page = tmp_path / "probe-report.html"
    page.write_text(to_html(run), "utf-8")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "probe-report.png"
    shot.unlink(missing_ok=True)
    shutil.copy(page, ARTIFACTS / "probe-report.html")
    args = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1400,1000",
        f"file://{page}",
    ]
    proc = subprocess.run(
        args, capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)}
    )
    assert shot.is_file(), proc.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


CORPUS = Path(__file__).resolve().parents[1] / "firewall" / "corpus"


@pytest.fixture
def traced_run(topology: Topology) -> ProbeRun:
    """A netns run whose firewall found plain SIP open (corpus d06) and dropped UDP 3478."""
    from simulator.firewall.rules import RuleRef
    from simulator.firewall.trace import Decision

    path = CORPUS / "d06-plain-sip-open.nft"
    trunk = RuleRef(
        "fw-external",
        "ip",
        "filter",
        "FORWARD",
        21,
        'ip daddr $EDGE_ACCESS tcp dport 5060 accept comment "SIP trunk (ITSP)"',
        str(path),
        17,
        "SIP trunk (ITSP)",
    )
    policy = RuleRef("fw-external", "ip", "filter", "FORWARD", 0, "policy drop;", str(path), 9)
    matrix = load_matrix()
    opened = Decision("fw-external", "request", "accepted", "ip filter FORWARD", "forward", trunk)
    dropped = Decision(
        "fw-external",
        "request",
        "dropped",
        "ip filter FORWARD",
        "forward",
        None,
        True,
        policy_at=policy,
    )
    sip, stun = matrix.row("neg-inet-sip-5060"), matrix.row("msn-stun-in-3478")
    results = [
        ProbeResult(
            sip.id,
            sip.probe,
            "blocked",
            Verdict.OPEN_UNEXPECTED,
            f"open where it must not be: {opened.describe()}",
            firewall=(opened,),
        ),
        ProbeResult(
            stun.id, stun.probe, "open", Verdict.BLOCKED, dropped.describe(), firewall=(dropped,)
        ),
    ]
    return ProbeRun(topology, matrix, results, "netns", time.time(), 1.0)


def test_reports_name_the_firewall_and_the_deciding_rule(traced_run: ProbeRun) -> None:
    console = Console(record=True, width=220)
    console.print(render_run(traced_run))
    text = console.export_text()
    assert "fw-external request accepted: d06-plain-sip-open.nft:17" in text
    assert "fw-external request dropped: policy drop (ip filter FORWARD)" in text

    data = to_dict(traced_run)
    (sip,) = [r for r in data["results"] if r["row"] == "neg-inet-sip-5060"]
    assert sip["firewall"][0]["rule"]["line"] == 17 and sip["reached"] is False

    suites = ET.fromstring(to_junit(traced_run))
    case = next(c for c in suites.iter("testcase") if c.get("name", "").startswith("neg-inet-sip"))
    prop = case.find("properties/property")
    assert (
        prop is not None and prop.get("value") == "fw-external accepted: d06-plain-sip-open.nft:17"
    )

    page = to_html(traced_run)
    assert '<a href="#f0-L17">d06-plain-sip-open.nft:17</a>' in page
    assert '<a href="#f0-L9">policy drop (ip filter FORWARD)</a>' in page
    # The file itself, the deciding lines highlighted and linked back to their rows.
    assert re.search(
        r'<span id="f0-L17" class="accepted"><span class="n">17</span>.*tcp dport 5060 accept'
        r'.*<a href="#row-neg-inet-sip-5060">',
        page,
    )
    assert '<span id="f0-L9" class="stopped">' in page
