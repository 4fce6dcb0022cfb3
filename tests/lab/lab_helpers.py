"""What the lab tests share: skip reasons, and which rows the broken rule file must break."""

from __future__ import annotations

import pytest

from simulator.lab.flowcheck import MatrixFlow
from simulator.lab.runners.netns import lab_namespaces, requirements_problem
from simulator.lab.topology import Topology
from simulator.matrix import load_matrix, resolve


def skip_unless_netns() -> None:
    problem = requirements_problem()
    if problem:
        pytest.skip(problem)
    leftovers = lab_namespaces()
    if leftovers:
        pytest.skip(
            f"a netns lab is already up ({leftovers[0]} ...); not touching it: "
            "`edgesim lab down --runner netns` first"
        )


def rows_broken_by_broken_external(topology: Topology, flows: list[MatrixFlow]) -> set[str]:
    """The open rows lab/firewall/broken/external.nft must break: UDP 3478 across fw-external."""
    matrix = load_matrix()
    fw = next(f for f in topology.firewalls if f.id == "fw-external")

    def crosses_external(row_id: str) -> bool:
        res = resolve(matrix.row(row_id), topology)
        return any(
            {s.zone, d.zone} <= set(fw.zones) and s.zone != d.zone
            for s in res.sources
            for d in res.destinations
        )

    return {
        mf.row
        for mf in flows
        if mf.expect_open
        and mf.flow.transport == "udp"
        and mf.flow.port == 3478
        and crosses_external(mf.row)
    }
