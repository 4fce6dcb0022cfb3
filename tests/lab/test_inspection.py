"""SSL inspection on the netns lab (``lab up --inspect-tls``): the rows and the scenario that
cross the middlebox fail saying "intercepted by a TLS-inspecting middlebox" and name its CA; the
rows beside it pass; with the diversion off the same rows pass; a managed client that trusts the
box's CA gets through it (the box really relays). One lab for the module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.lab.inspection import TABLE, firewall_rules
from simulator.lab.runners.base import LabConfig
from simulator.lab.runners.netns import NetnsRunner, lab_namespaces
from simulator.lab.topology import Topology
from simulator.middlebox.ca import CA_NAME
from tests.lab.lab_helpers import PROBE_TIMEOUT_ARGS, skip_unless_netns

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
NAME = "tlsi"
INTERCEPTED = "intercepted by a TLS-inspecting middlebox"
CROSSING = ("client-in-443", "av-turn-443-in")
"""The rows through fw-external to the Edge's TCP 443."""
BESIDE = ("xmpp-in-5269", "av-int-turn-443")
"""Rows the middlebox does not see (another port, the internal side)."""


@pytest.fixture(scope="module")
def lab(topology: Topology, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsRunner]:
    skip_unless_netns()
    if lab_namespaces(NAME):
        pytest.skip(f"a netns lab named {NAME} is already up: not touching it")
    base = tmp_path_factory.mktemp("inspect")
    config = LabConfig(
        topology, certs_dir=base / "certs", name=NAME, state_dir=base / NAME, inspect_tls=True
    )
    runner = NetnsRunner(config)
    runner.bring_up()
    try:
        yield runner
    finally:
        runner.teardown()


def edgesim(lab: NetnsRunner, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "EDGESIM_LAB": NAME,
        "EDGESIM_STATE_DIR": str(lab.state_dir.parent),
        "COLUMNS": "200",
        "NO_COLOR": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "simulator", *args, "--certs", str(lab.certs_dir)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env, check=False,
    )  # fmt: skip


def probe(lab: NetnsRunner) -> dict[str, dict[str, object]]:
    rows = [a for row in (*CROSSING, *BESIDE) for a in ("--row", row)]
    ran = edgesim(lab, "probe", "--runner", "netns", *rows, "--format", "json", *PROBE_TIMEOUT_ARGS)
    assert ran.stdout, ran.stderr
    return {r["row"]: r for r in json.loads(ran.stdout)["results"]}


def test_rows_through_the_middlebox_fail_as_intercepted(lab: NetnsRunner) -> None:
    results = probe(lab)
    for row in CROSSING:
        got = results[row]
        assert got["verdict"] == "tls-failed", got["reason"]
        assert got["tls_problem"] == INTERCEPTED
        assert str(got["reason"]).startswith(f"TLS failed: {INTERCEPTED}: the certificate"), row
        assert f"issued by '{CA_NAME}', a CA the lab did not issue" in str(got["reason"])
        # the firewall's own rules still decided: its rule for the row accepted the request
        assert any(d["direction"] == "request" and d["action"] == "accepted"
                   and row in str(d["by"]) for d in got["firewall"]), got["firewall"]  # type: ignore[attr-defined]  # fmt: skip
    assert "TLS alert 'protocol version' instead of the pseudo-TLS ServerHello" in str(
        results["av-turn-443-in"]["reason"]
    )
    assert "unknown CA" in str(results["client-in-443"]["reason"])
    for row in BESIDE:
        assert results[row]["verdict"] == "passed", results[row]["reason"]


def test_the_scenarios_through_the_middlebox_fail_as_intercepted(lab: NetnsRunner) -> None:
    """The A/V fallbacks (TURN over TLS 443) and a remote user's sign-in (SIP over TLS 443)."""
    ran = edgesim(lab, "scenario", "run", "av-fallback-msturn", "av-fallback", "remote-user-im",
                  "--runner", "netns", "--format", "json")  # fmt: skip
    assert ran.returncode == 1, ran.stdout + ran.stderr
    results = {s["name"]: s for s in json.loads(ran.stdout)["scenarios"]}
    for name in ("av-fallback-msturn", "av-fallback"):
        assert results[name]["status"] == "failed", name
        assert results[name]["reason"].startswith(
            f"the messenger cannot reach the A/V Edge over TCP 443: {INTERCEPTED}: the "
            "certificate presented on 198.51.100.11:443 for av.contoso.lab is issued by "
            f"'{CA_NAME}'"
        ), results[name]["reason"]
    assert (
        "TLS alert 'protocol version' instead of the pseudo-TLS ServerHello"
        in (results["av-fallback-msturn"]["reason"])
    )
    assert results["remote-user-im"]["reason"].startswith(
        f"alice@contoso.lab cannot reach sip.contoso.lab: {INTERCEPTED}: the certificate "
        f"presented on 198.51.100.10:443 for sip.contoso.lab is issued by '{CA_NAME}'"
    ), results["remote-user-im"]["reason"]
    assert (
        "(the client saw: the certificate does not chain to a trusted CA"
        in results["remote-user-im"]["reason"]
    )


def test_a_client_trusting_the_box_ca_gets_through_it(lab: NetnsRunner) -> None:
    script = (
        "import asyncio, json\n"
        "from simulator.probes.spec import ProbeSpec\n"
        "from simulator.probes.sip import probe_sip_tls\n"
        f"spec = ProbeSpec('sip-tls', '198.51.100.10', 443, bind='203.0.113.40', "
        f"fqdn='sip.contoso.lab', trust=({str(lab.inspection_ca)!r},), timeout=5.0)\n"
        "o = asyncio.run(probe_sip_tls(spec))\n"
        "print(json.dumps([o.verdict.value, o.reason, o.details]))\n"
    )
    ran = subprocess.run(
        [*lab.exec_argv("remote-user"), sys.executable, "-c", script],
        capture_output=True, text=True, timeout=60, env=lab.exec_env(), check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    verdict, reason, details = json.loads(ran.stdout)
    assert (verdict, details["server_issuer"]) == ("passed", CA_NAME), reason
    assert reason.startswith("SIP 200"), reason


def test_with_the_diversion_off_the_same_rows_pass(lab: NetnsRunner) -> None:
    plan = lab.inspection
    assert plan is not None
    fw = lab.firewall_node(plan.firewall)
    fw.nft(["delete", "table", "ip", TABLE])
    try:
        results = probe(lab)
    finally:
        fw.nft(["-f", "-"], stdin=firewall_rules(plan))
    for row in (*CROSSING, *BESIDE):
        assert results[row]["verdict"] == "passed", results[row]["reason"]
