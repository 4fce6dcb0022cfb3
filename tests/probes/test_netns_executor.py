"""The runner executor end to end: ``ip netns exec <ns> python3 -m simulator probe --inside``.

A namespace of our own stands for the host ``fabrikam`` and holds the lab addresses of the
destinations on its loopback; nftables drops 5060, a listener answers on the relay range, and
nothing listens on the Edge's internal 5061. Each verdict comes back through the JSON.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.lab.runners.base import LabConfig, LabName
from simulator.lab.runners.netns import NetnsRunner
from simulator.lab.topology import Topology
from simulator.pki import LabPki
from simulator.probes.base import Verdict
from simulator.probes.run import JobBuilder, RunnerExecutor, build_jobs, run_jobs

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a network namespace"),
    pytest.mark.skipif(
        shutil.which("ip") is None or shutil.which("nft") is None,
        reason="needs iproute2 (ip) and nftables (nft)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
LISTENER = (
    "import socket, sys\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('198.51.100.11', 50000)); s.listen(8); print('ready', flush=True)\n"
    "sys.stdin.read()\n"
)


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    """A one-namespace "lab" (a random name) holding fabrikam's and the Edge's addresses."""
    name = uuid.uuid4().hex[:6]
    ns = LabName(name).namespace("fabrikam")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    listener = None
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        for address in ("203.0.113.10", "198.51.100.10", "198.51.100.11", "198.51.100.130"):
            subprocess.run(
                ["ip", "-n", ns, "addr", "add", f"{address}/32", "dev", "lo"], check=True
            )
        rules = (
            "table ip t {\n chain in {\n  type filter hook input priority 0; policy accept;\n"
            "  tcp dport 5060 drop\n }\n}\n"
        )
        subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules, text=True, check=True
        )
        listener = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", LISTENER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        yield name
    finally:
        if listener is not None:
            listener.communicate("", timeout=5)
        subprocess.run(["ip", "netns", "del", ns], check=False)


async def test_rows_probed_inside_the_source_namespace(
    namespace: str, topology: Topology, lab_pki: LabPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = ["neg-inet-sip-5060", "neg-inet-sip-int-5061", "neg-inet-relay-tcp-in"]
    jobs = build_jobs(topology, JobBuilder(topology, lab_pki), rows=rows)
    runner = NetnsRunner(LabConfig(topology, certs_dir=lab_pki.directory, name=namespace))
    executor = RunnerExecutor(runner, timeout=0.8)
    results = {r.row_id: r for r in await asyncio.wait_for(run_jobs(jobs, executor), 60)}
    assert {r.runner for r in results.values()} == {"netns"}
    assert results["neg-inet-sip-5060"].verdict is Verdict.BLOCKED
    assert results["neg-inet-sip-5060"].source == "fabrikam:wan 203.0.113.10"
    assert results["neg-inet-sip-int-5061"].verdict is Verdict.REFUSED
    relay = results["neg-inet-relay-tcp-in"]
    assert relay.verdict is Verdict.OPEN_UNEXPECTED
    assert relay.reason == (
        "open where it must not be: TCP handshake completed on port 50000 of 5 sampled"
    )
    assert [r.met for r in results.values()] == [True, True, False]
