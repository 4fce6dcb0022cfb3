"""blocked / refused / ICMP unreachable for real: nftables in a network namespace of our own.

The probes run inside the namespace (``ip netns exec``, as the netns runner does), against
127.x addresses on its loopback, with an nftables output chain that drops or rejects by port.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a network namespace"),
    pytest.mark.skipif(
        shutil.which("ip") is None or shutil.which("nft") is None,
        reason="needs iproute2 (ip) and nftables (nft)",
    ),
]

# On the input hook, as a firewall between hosts would act: the sender sees no local error.
RULES = """
table ip probetest {
  chain out {
    type filter hook output priority 0; policy accept;
    udp dport 7007 drop
  }
  chain in {
    type filter hook input priority 0; policy accept;
    tcp dport 7001 drop
    tcp dport 7002 reject with tcp reset
    tcp dport 7003 reject with icmp type host-unreachable
    tcp dport 7004 reject with icmp type net-unreachable
    udp dport 7005 drop
    udp dport 7006 reject with icmp type port-unreachable
  }
}
"""

SCRIPT = r"""
import asyncio, json, sys
from simulator.probes.spec import ProbeSpec
from simulator.probes.registry import PROBES

async def main():
    out = {}
    for name, kind, port in json.loads(sys.argv[1]):
        spec = ProbeSpec(kind, "127.9.9.2", port, bind="127.9.9.1", fqdn="sip.fabrikam.lab",
                         timeout=0.6)
        outcome = await PROBES[kind](spec)
        out[name] = [outcome.verdict.value, outcome.reason]
    print(json.dumps(out))

asyncio.run(main())
"""

CASES = [
    ("tcp-drop", "tcp-connect", 7001),
    ("tcp-reset", "tcp-connect", 7002),
    ("tcp-host-unreachable", "tcp-connect", 7003),
    ("tcp-net-unreachable", "tcp-connect", 7004),
    ("sip-drop", "sip-mtls", 7001),
    ("stun-drop", "stun-udp", 7005),
    ("stun-port-unreachable", "stun-udp", 7006),
    ("dns-drop", "dns", 7005),
    ("stun-local-drop", "stun-udp", 7007),
]


@pytest.fixture(scope="module")
def verdicts() -> Iterator[dict[str, list[str]]]:
    ns = f"edgesim-probetest-{uuid.uuid4().hex[:6]}"  # no lab's name
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "-f", "-"], input=RULES, text=True, check=True
        )
        root = Path(__file__).resolve().parents[2]
        proc = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", SCRIPT, json.dumps(CASES)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        assert proc.returncode == 0, proc.stderr
        yield json.loads(proc.stdout)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


@pytest.mark.parametrize(
    ("case", "verdict", "reason"),
    [
        ("tcp-drop", "blocked", "no answer within 0.6 s: dropped (1 of 1 sampled ports)"),
        ("tcp-reset", "refused", "connection refused (TCP reset or ICMP port unreachable)"),
        ("tcp-host-unreachable", "refused", "ICMP host unreachable"),
        ("tcp-net-unreachable", "refused", "ICMP network unreachable"),
        ("sip-drop", "blocked", "no answer within 0.6 s: dropped"),
        ("stun-drop", "blocked", "no answer within 0.6 s: dropped"),
        ("stun-port-unreachable", "refused", "ICMP port unreachable"),
        ("dns-drop", "blocked", "no answer within 0.6 s: dropped"),
        (
            "stun-local-drop",
            "blocked",
            "dropped by a firewall on the source host (Operation not permitted)",
        ),
    ],
)
def test_verdict_through_nftables(
    verdicts: dict[str, list[str]], case: str, verdict: str, reason: str
) -> None:
    assert verdicts[case] == [verdict, reason]
