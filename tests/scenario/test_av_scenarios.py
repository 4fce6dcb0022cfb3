"""The A/V scenarios: relayed audio through the A/V Edge, and the fallback to TCP 443 across
the netns lab's real firewall."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.lab.runners.local import LocalLab
from simulator.lab.topology import Topology
from simulator.pki import LabPki
from simulator.scenario.api import Scenario
from simulator.scenario.av import without_udp_3478
from simulator.scenario.run import discover, run_one, select
from tests.siplab import sip_topology

ROOT = Path(__file__).resolve().parents[2]
HOSTS = ["dns-int", "dns-ext", "edge", "fe", "pic"]


@pytest.fixture(scope="module")
def av_topology(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    return sip_topology(tmp_path_factory.mktemp("av"), octet=218)


def _scenario(name: str) -> Scenario:
    scenarios, broken = discover(ROOT / "scenarios")
    assert [b for b in broken if b.path.name.startswith("av_")] == []
    (item,) = select(scenarios, (name,))
    return item


async def test_av_call_relays_audio_on_the_embedded_lab(
    av_topology: Topology, lab_pki: LabPki
) -> None:
    async with LocalLab(av_topology, lab_pki.directory, hosts=HOSTS):
        result = await run_one(_scenario("av-call"), av_topology, "local", lab_pki)
    assert result.status == "passed", f"{result.step}: {result.reason}"

    notes = [e.summary for e in result.events if e.event == "note"]
    assert "media path: the messenger reached the A/V Edge over UDP 3478" in notes
    allocations = [e.summary for e in result.events if e.summary.startswith("Allocate success")]
    assert len(allocations) >= 2
    for summary in allocations:
        port = int(summary.rsplit(":", 1)[1])
        assert 50000 <= port <= 59999, summary

    ladder = result.ladder(av_topology, "local")
    columns = [c.id for c in ladder.columns]
    assert {"messenger", "fw-external", "edge", "internal-user"} <= set(columns)
    arrows = {(columns[a.src], columns[a.dst], a.label) for a in ladder.arrows if a.src >= 0}
    # the messenger's allocation, answered by the Edge, and the 401 challenge before it
    assert ("messenger", "edge", "Allocate request") in arrows
    assert ("edge", "messenger", "401 Unauthorized") in arrows
    assert any(s == "edge" and d == "messenger" and lbl.startswith("Allocate success")
               for s, d, lbl in arrows)  # fmt: skip
    # media summarised: the relay-to-relay flow once with its totals, not per packet
    media = [a for a in ladder.arrows if a.protocol == "media"]
    assert 0 < len(media) <= 12
    assert any(
        columns[a.src] == columns[a.dst] == "edge" and a.label.startswith("media: 50 packets")
        for a in media
    )
    assert not any(a.event == "dropped" for a in ladder.arrows)


async def test_av_call_in_ms_turn_relays_audio_on_the_embedded_lab(
    av_topology: Topology, lab_pki: LabPki
) -> None:
    async with LocalLab(av_topology, lab_pki.directory, hosts=HOSTS):
        result = await run_one(_scenario("av-call-msturn"), av_topology, "local", lab_pki)
    assert result.status == "passed", f"{result.step}: {result.reason}"
    notes = [e.summary for e in result.events if e.event == "note"]
    assert "media path: the messenger reached the A/V Edge over UDP 3478 in MS-TURN" in notes
    labels = [e.summary for e in result.events]
    # [MS-TURN]: Set Active Destination, no channel; both relays on 50000-59999
    assert any(label.startswith("Set Active Destination") for label in labels), labels
    assert not any(label.startswith(("ChannelBind", "malformed")) for label in labels), labels
    allocations = [s for s in labels if s.startswith("Allocate success")]
    assert len(allocations) >= 2
    # the credentials came from the Edge's A/V Authentication service, over 5062
    assert any(
        e.protocol == "sip" and e.dst.endswith(":5062") and e.summary.startswith("SERVICE")
        for e in result.events
    ), [(e.protocol, e.src, e.dst, e.summary) for e in result.events if e.protocol == "sip"]


async def test_av_fallback_is_skipped_without_a_firewall(
    av_topology: Topology, lab_pki: LabPki
) -> None:
    result = await run_one(_scenario("av-fallback"), av_topology, "local", lab_pki)
    assert result.status == "skipped"
    assert "firewall" in result.reason


def _netns_problem() -> str | None:
    if os.geteuid() != 0:
        return "the netns lab needs root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (iproute2 / nftables)"
    return None


def _edgesim(
    *args: str, timeout: float = 180, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "simulator", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env, check=False,
    )  # fmt: skip


@pytest.mark.root
@pytest.mark.skipif(_netns_problem() is not None, reason=str(_netns_problem()))
def test_av_call_and_udp_fallback_across_the_netns_lab(tmp_path: Path) -> None:
    """av-call with 5062 dropped at fw-internal fails at the credentials step; with the shipped
    rules every shipped scenario passes across the real firewalls (A/V in both dialects)."""
    from simulator.lab.runners.netns import lab_namespaces

    if lab_namespaces():
        pytest.skip("a netns lab (es-* namespaces) is already up on this machine: not touching it")
    certs, state = tmp_path / "certs", tmp_path / "state"
    page, trace_file = tmp_path / "ladders.html", tmp_path / "trace.jsonl"
    try:
        # 5062 dropped at the internal firewall (corpus d13) from the start: A/V sign-in gets
        # no relay credentials (an established MTLS connection would outlive a rule change)
        d13 = ROOT / "tests/firewall/corpus/d13-av-auth-5062-dropped.nft"
        up = _edgesim("lab", "up", "--runner", "netns", "--certs", str(certs),
                      "--state-dir", str(state), "--rules", f"fw-internal={d13}",
                      env={"EDGESIM_TRACE_FILE": str(trace_file)})  # fmt: skip
        assert up.returncode == 0, up.stdout + up.stderr
        blocked = _edgesim("scenario", "run", "av-call", "--runner", "netns",
                           "--certs", str(certs), "--format", "json")  # fmt: skip
        assert blocked.returncode == 1, blocked.stdout + blocked.stderr
        shipped = ROOT / "lab/firewall/internal.nft"
        load = _edgesim("lab", "reload-firewall", "--state-dir", str(state),
                        "--rules", f"fw-internal={shipped}")  # fmt: skip
        assert load.returncode == 0, load.stdout + load.stderr
        ran = _edgesim(
            "scenario", "run", "--runner", "netns",  # every shipped scenario
            "--certs", str(certs), "--format", "json", "--html", str(page),
            "--trace-file", str(trace_file),
        )  # fmt: skip
        assert ran.returncode == 0, ran.stdout + ran.stderr
    finally:
        down = _edgesim("lab", "down", "--runner", "netns", "--state-dir", str(state))
    assert down.returncode == 0, down.stdout + down.stderr
    assert lab_namespaces() == []

    results = {s["name"]: s for s in json.loads(ran.stdout)["scenarios"]}
    assert results["av-call"]["status"] == "passed", results["av-call"]["reason"]
    assert results["av-fallback"]["status"] == "passed", results["av-fallback"]["reason"]
    # every shipped scenario passes across the real firewalls: SIP, XMPP and DNS clients leave
    # from their hosts' namespaces too
    failed = {n: (r["step"], r["reason"]) for n, r in results.items() if r["status"] != "passed"}
    assert not failed, failed
    assert len(results) == len(list((ROOT / "scenarios").glob("[!_]*.py")))

    # SIPE signed in over 443 with NTLM, saw presence and chatted (office, fabrikam, public IM,
    # jabber.lab): the ladder carries the NTLM exchange and the signed messages
    details = [e.get("detail") or "" for e in results["sipe-sign-in"]["events"]]
    assert any('WWW-Authenticate: NTLM realm="SIP Communications Service"' in d for d in details)
    assert any('gssapi-data="TlRMTVNTUAAD' in d for d in details)  # AUTHENTICATE_MESSAGE
    assert any("Authentication-Info: NTLM rspauth=" in d for d in details)
    assert any(d.startswith("MESSAGE ") and 'response="01000000' in d for d in details)

    def notes(name: str) -> list[str]:
        return [e["summary"] for e in results[name]["events"] if e["event"] == "note"]

    assert "media path: the messenger reached the A/V Edge over UDP 3478" in notes("av-call")
    assert "media path: the messenger reached the A/V Edge over TCP 443" in notes("av-fallback")
    assert "media path: the messenger reached the A/V Edge over UDP 3478 in MS-TURN" in notes(
        "av-call-msturn"
    )
    assert (
        "media path: the messenger reached the A/V Edge over TCP 443 in MS-TURN (pseudo-TLS)"
        in notes("av-fallback-msturn")
    )
    # with 5062 dropped the call stops at the credentials step, saying which hop and why
    (stopped,) = json.loads(blocked.stdout)["scenarios"]
    assert stopped["status"] == "failed"
    assert stopped["step"] == "bob asks the Front End's MRAS for relay credentials (SIP SERVICE)"
    assert stopped["reason"].startswith("MRAS answered 504 Server Time-out, not 200: the A/V "
                                        "Authentication service edge-int.contoso.lab:5062 is "
                                        "unreachable")  # fmt: skip
    # the blocked attempt: the messenger's Allocate over UDP 3478, from its real address
    for name in ("av-fallback", "av-fallback-msturn"):
        dropped = [e for e in results[name]["events"] if e["event"] == "dropped"]
        assert [(e["src"].split(":")[0], e["dst"], e["summary"]) for e in dropped] == [
            ("203.0.113.50", "198.51.100.11:3478", "Allocate request")
        ], name
    # the Edge's own records (from the lab's trace file): relayed media summarised per flow
    relay_totals = [e for e in results["av-call"]["events"] if e["protocol"] == "media"
                    and e["src"].startswith("198.51.100.11:") and e["summary"].startswith("media: ")]  # fmt: skip
    assert relay_totals and all(
        50000 <= int(e["src"].rsplit(":", 1)[1]) <= 59999 for e in relay_totals
    )
    html = page.read_text()
    assert "fw-external" in html and "&#x2715;" in html  # the drop drawn at the firewall

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed: the ladder page was written but not rendered")
    shot = tmp_path / "scenario-fallback.png"
    shot.unlink(missing_ok=True)
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / '.chromium'}", f"--screenshot={shot}",
         "--window-size=1100,1400", page.as_uri()],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert shot.is_file() and shot.stat().st_size > 10_000, (
        "headless Chromium did not render the ladder"
    )


def test_runner_netns_without_a_lab_is_one_line_error() -> None:
    from simulator.lab.runners.netns import lab_namespaces

    if os.geteuid() == 0 and shutil.which("ip") and lab_namespaces():
        pytest.skip("a netns lab is up on this machine")
    ran = _edgesim("scenario", "run", "av-call", "--runner", "netns", timeout=60)
    assert ran.returncode == 1
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1, ran.stderr
    expected = "no netns lab is up" if os.geteuid() == 0 else "needs root"
    assert lines[0].startswith("error: --runner netns: ") or expected in lines[0]
    assert expected in lines[0]


SHIPPED_RULES = """table inet edgesim {
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		ip saddr 203.0.113.40 ip daddr 198.51.100.11 tcp dport 443 accept
		ip saddr 198.51.100.11 ip daddr 203.0.113.50 udp dport 3478 accept
		ip saddr 203.0.113.50 ip daddr 198.51.100.11 udp dport 3478 accept
		ip saddr 198.51.100.11 ip daddr 203.0.113.50 udp sport 50000-59999 accept
	}
}
"""


def test_fallback_rules_block_udp_3478_to_the_av_edge_only() -> None:
    rules, removed, added = without_udp_3478(SHIPPED_RULES, "198.51.100.11", "203.0.113.50")
    assert removed == ["ip saddr 203.0.113.50 ip daddr 198.51.100.11 udp dport 3478 accept"]
    # the Edge's own STUN to the messenger and the relay's media stay open
    assert "ip saddr 198.51.100.11 ip daddr 203.0.113.50 udp dport 3478 accept" in rules
    assert "udp sport 50000-59999 accept" in rules
    # TCP 443 was open to the remote user only: opened to the messenger, right after the hook
    assert added
    lines = [line.strip() for line in rules.splitlines()]
    hook = lines.index("type filter hook forward priority filter; policy drop;")
    assert lines[hook + 1] == "ip saddr 203.0.113.50 ip daddr 198.51.100.11 tcp dport 443 accept"
    # already open to any source: nothing added
    open_443 = SHIPPED_RULES.replace("ip saddr 203.0.113.40 ip daddr", "ip daddr")
    assert without_udp_3478(open_443, "198.51.100.11", "203.0.113.50")[2] is False
