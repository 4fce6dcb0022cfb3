"""Every matrix row across the real nftables firewalls of the netns lab.

With the rendered rules every open row gets through and every negative row is dropped; with the
deliberately broken external rules exactly the rows that break changes, and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.lab.flowcheck import Flow, MatrixFlow, check_flows, matrix_flows
from simulator.lab.runners.base import LabConfig
from simulator.lab.runners.netns import NetnsRunner
from simulator.lab.topology import Topology
from tests.lab.lab_helpers import rows_broken_by_broken_external, skip_unless_netns

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
BROKEN = ROOT / "lab/firewall/broken/external.nft"


@pytest.fixture(scope="module")
def netns_lab(
    topology: Topology, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NetnsRunner]:
    skip_unless_netns()
    state = tmp_path_factory.mktemp("state")
    lab = NetnsRunner(LabConfig(topology, certs_dir=state / "certs", state_dir=state))
    lab.build_network()
    try:
        yield lab
    finally:
        lab.teardown()


def outcomes(
    lab: NetnsRunner, flows: list[MatrixFlow]
) -> tuple[dict[str, bool], dict[str, list[str]]]:
    """Per row: whether all its flows got through (None of them may half-pass), and details."""
    results = check_flows(flows, lab.exec_argv, python=lab.python, env=lab.exec_env())
    passed: dict[str, list[bool]] = {}
    details: dict[str, list[str]] = {}
    for r in results:
        passed.setdefault(r.flow.row, []).append(r.ok)
        details.setdefault(r.flow.row, []).append(f"{r.flow.flow}: {r.detail}")
    mixed = {row for row, oks in passed.items() if any(oks) and not all(oks)}
    assert not mixed, {row: details[row] for row in mixed}
    return {row: all(oks) for row, oks in passed.items()}, details


def test_open_rows_pass_and_negative_rows_are_dropped(
    netns_lab: NetnsRunner, topology: Topology
) -> None:
    flows = matrix_flows(topology)
    expected = {mf.row: mf.expect_open for mf in flows}
    got, details = outcomes(netns_lab, flows)
    wrong = {row: details[row] for row in expected if got[row] != expected[row]}
    assert not wrong, wrong
    # The matrix exercises both verdicts.
    assert any(expected.values()) and not all(expected.values())


def test_broken_external_rules_change_exactly_the_affected_rows(
    netns_lab: NetnsRunner, topology: Topology
) -> None:
    flows = matrix_flows(topology)
    fw = next(f for f in topology.firewalls if f.id == "fw-external")
    inet = next(i for i in fw.interfaces if i.zone == "internet")
    access = topology.interface("edge:access")
    # Not a matrix row: the XMPP gateway port on the Edge's public side, from the internet.
    probe_23456 = MatrixFlow(
        "extra-inet-23456",
        False,
        "jabber",
        "edge",
        Flow("tcp", str(access.address), 23456, str(topology.interface("jabber:wan").address)),
    )

    breaks = rows_broken_by_broken_external(topology, flows)
    assert breaks, "the matrix has UDP 3478 rows across the external firewall"
    assert inet.zone == "internet"

    good, _ = outcomes(netns_lab, [*flows, probe_23456])
    try:
        assert netns_lab.load_rules("fw-external", BROKEN).path == BROKEN
        assert netns_lab.rules_path("fw-external") == BROKEN
        broken, details = outcomes(netns_lab, [*flows, probe_23456])
    finally:
        shipped = netns_lab.load_rules("fw-external").path
    assert shipped == ROOT / "lab/firewall/external.nft"
    assert netns_lab.rules_path("fw-external") == shipped

    changed = {row for row in good if good[row] != broken[row]}
    assert changed == breaks | {probe_23456.row}, {row: details[row] for row in changed}
    assert all(not broken[row] for row in breaks)
    assert broken[probe_23456.row] and not good[probe_23456.row]
    # Reloading the rendered rules restores every verdict.
    restored, _ = outcomes(netns_lab, [*flows, probe_23456])
    assert restored == good
