"""A scenario changes and restores the rules a firewall holds, whatever the user named their
tables and chains and whichever family they use: ``Lab.firewall_rules`` lists every table the
user loaded (never edgesim's own trace tables) and ``firewall_changed`` puts them back.

Needs root: the firewall is a network namespace of its own with nftables (tpytest --lab)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.firewall.rules import FirewallNode, load_rules
from simulator.lab.topology import Topology
from simulator.pki import LabPki
from simulator.scenario.api import Lab
from simulator.scenario.av import without_udp_3478

NS = "edgesim219-scnfw"
FIREWALL = "fw-external"
AV, MESSENGER = "198.51.100.11", "203.0.113.50"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nft") is None,
        reason="a firewall namespace with nftables needs root, iproute2 and nft",
    ),
]

# A rule file as an administrator writes it: their own table and chain names, the ip family,
# a jump to a chain of their own, and a second table in another family.
USER_RULES = f"""\
table ip perimeter {{
	chain from_internet {{
		ip daddr {AV} udp dport 3478 accept comment "stun"
		ip daddr {AV} tcp dport 443 ip saddr 203.0.113.40 accept
	}}
	chain FWD {{
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		iifname "ext0" jump from_internet
	}}
}}
table inet mgmt {{
	chain in {{
		type filter hook input priority filter; policy accept;
		tcp dport 22 drop
	}}
}}
"""
TRACE_TABLE = """\
table inet edgesim-trace-test {
	chain pre {
		type filter hook prerouting priority -350;
	}
}
"""


@pytest.fixture
def namespace() -> Iterator[str]:
    subprocess.run(["ip", "netns", "del", NS], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "add", NS], check=True, timeout=10)
    try:
        yield NS
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False, timeout=10)


def ruleset(namespace: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", namespace, "nft", "list", "ruleset"],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout  # fmt: skip


def test_a_scenario_changes_and_restores_the_users_own_tables(
    namespace: str, topology: Topology, tmp_path: Path
) -> None:
    rules = tmp_path / "perimeter.nft"
    rules.write_text(USER_RULES)
    node = FirewallNode(FIREWALL, ("ip", "netns", "exec", namespace))
    load_rules(node, rules)
    node.nft(["-f", "-"], stdin=TRACE_TABLE)  # a trace session's table: edgesim's, not theirs
    lab = Lab(topology, "netns", LabPki(tmp_path / "certs"), namespaces={FIREWALL: namespace})

    async def scenario() -> tuple[str, str, str, str]:
        before = await lab.firewall_rules(FIREWALL)
        changed, removed, _ = without_udp_3478(before, AV, MESSENGER)
        assert removed == [f'ip daddr {AV} udp dport 3478 accept comment "stun"']
        async with lab.firewall_changed(FIREWALL, changed):
            during = ruleset(namespace)
        return before, during, ruleset(namespace), await lab.firewall_rules(FIREWALL)

    before, during, after, restored = asyncio.run(scenario())
    assert "table ip perimeter" in before and "table inet mgmt" in before
    assert "edgesim-trace" not in before
    assert "udp dport 3478 accept" not in during
    # the messenger may reach TCP 443 instead, at the top of the user's own forward chain
    assert f"ip saddr {MESSENGER} ip daddr {AV} tcp dport 443 accept" in during
    assert "table inet edgesim-trace-test" in during
    # afterwards: the user's tables as they were, the trace table untouched, nothing added
    assert restored == before
    assert "table inet edgesim-trace-test" in after
    assert after.count("table ") == 3
