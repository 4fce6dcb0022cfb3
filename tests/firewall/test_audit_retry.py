"""The audit's verdicts hold when a packet goes astray beyond the firewall: a flow whose trace
leaves its fate open (the request crossed, no reply was seen) is sent again, with the
firewalls' connection tracking emptied first, so the retry is judged by the row's own rule and
not by what the first try left in the tracking table. Needs root: the audit builds network
namespaces (run with tpytest --lab)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from simulator.firewall.audit import (
    TOKEN,
    AuditFlow,
    FlowResult,
    RowResult,
    plan,
    rule_files,
    run_flows,
)
from simulator.firewall.render import RETURN_COMMENT
from simulator.firewall.rules import RuleIndex, load_rules
from simulator.firewall.sandbox import Sandbox, requirements_problem
from simulator.lab.topology import Topology
from simulator.matrix.model import load_matrix

pytestmark = pytest.mark.root

ROW = "av-relay-udp-out"
"""Relayed media out: UDP from fixed source ports of the relay range, the row CI once saw
judged "reply dropped" on a busy machine."""


@pytest.fixture(autouse=True)
def _needs_root() -> None:
    problem = requirements_problem()
    if problem:
        pytest.skip(problem)


def lose_first_datagram(namespace: str, port: int) -> None:
    """In a destination's namespace (not a firewall: nothing traced there), drop the first UDP
    datagram to ``port`` and let the later ones in (a quota of one datagram's bytes)."""
    size = 20 + 8 + len(TOKEN)
    script = (
        "table inet lose_first {\n\tchain input {\n"
        "\t\ttype filter hook input priority -10;\n"
        f"\t\tudp dport {port} quota until {size + 1} bytes drop\n\t}}\n}}\n"
    )
    subprocess.run(
        ["ip", "netns", "exec", namespace, "nft", "-f", "-"], input=script, text=True, check=True
    )


async def _setup(box: Sandbox, scratch: Path) -> tuple[dict[str, RuleIndex], list[AuditFlow]]:
    files = rule_files(box.topology, {}, scratch)
    indexes = {fw: await asyncio.to_thread(load_rules, box.node(fw), p) for fw, p in files.items()}
    stand_ins = [h for h in box.hosts if h not in box.topology.hosts]
    rows, _ = plan(box.topology, box.matrix, stand_ins)
    flows = [f for f in rows if f.row == ROW]
    assert flows, f"the topology resolves no flow of {ROW}"
    return indexes, flows


def request_comments(result: FlowResult) -> set[str | None]:
    return {d.rule.comment if d.rule else None for d in result.deciding}


def lose_one_and_send(
    topology: Topology, scratch: Path, retries: int
) -> tuple[list[FlowResult], list[str]]:
    async def main() -> tuple[list[FlowResult], list[str]]:
        async with Sandbox(topology, load_matrix(), "t") as box:
            indexes, flows = await _setup(box, scratch)
            for host in {f.destination_host for f in flows}:
                lose_first_datagram(box.ns(host), flows[0].dport)
            return await run_flows(box, indexes, flows, 0.5, retries=retries)

    return asyncio.run(main())


def test_a_datagram_lost_once_is_not_a_verdict(topology: Topology, tmp_path: Path) -> None:
    results, problems = lose_one_and_send(topology, tmp_path, retries=2)
    assert [r.status for r in results] == ["allowed"] * len(results)
    for result in results:
        # The retry was judged by the row's rule, not by the entry of the first try.
        assert request_comments(result) == {ROW}, result.to_dict()
    assert problems == []


def test_without_a_retry_the_lost_datagram_is_named(topology: Topology, tmp_path: Path) -> None:
    """The counterpart, showing the loss above is real: with no retry one flow stays open, and
    the audit says so rather than passing it off as the firewall's word."""
    results, problems = lose_one_and_send(topology, tmp_path, retries=0)
    lost = [r for r in results if r.status != "allowed"]
    assert [r.status for r in lost] == ["no reply"]
    # The row says so: not "reply dropped", which needs a firewall seen dropping the reply.
    row = RowResult(load_matrix().row(ROW), results)
    assert (row.got, row.met) == ("unsettled", False)
    assert len(problems) == 1
    assert problems[0].startswith(f"row {ROW}, udp ") and "no reply after 1 tries" in problems[0]


def test_forgetting_connections_puts_the_rules_back_in_charge(
    topology: Topology, tmp_path: Path
) -> None:
    async def main() -> list[set[str | None]]:
        async with Sandbox(topology, load_matrix(), "t") as box:
            indexes, flows = await _setup(box, tmp_path)
            seen = []
            for forget in (False, False, True):
                if forget:
                    box.forget_connections()
                results, problems = await run_flows(box, indexes, flows, 0.5, retries=0)
                assert problems == [] and {r.status for r in results} == {"allowed"}
                seen.append(set().union(*(request_comments(r) for r in results)))
            return seen

    first, again, forgotten = asyncio.run(main())
    assert first == {ROW}
    # The same datagrams again: the firewall knows the exchange, the return rule lets them by.
    assert again == {RETURN_COMMENT}
    assert forgotten == {ROW}
