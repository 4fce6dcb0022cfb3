"""The embedded lab skips, with the reason, the rows it cannot judge."""

from __future__ import annotations

from types import SimpleNamespace

from simulator.lab.topology import Topology
from simulator.pki import LabPki
from simulator.probes.run import NO_FIREWALL, JobBuilder, build_jobs, embedded_lab_adjust


def test_negative_rows_and_rows_without_their_service_are_skipped_with_the_reason(
    topology: Topology, lab_pki: LabPki
) -> None:
    statuses = [
        SimpleNamespace(host="edge", service="access-edge", state="not available"),
        SimpleNamespace(host="edge", service="xmpp-proxy", state="running"),
        SimpleNamespace(host="edge", service="av-edge", state="not available"),
        SimpleNamespace(host="dns-ext", service="dns", state="running"),
    ]
    jobs = {
        j.row.id: j
        for j in build_jobs(
            topology,
            JobBuilder(topology, lab_pki, addresses="loopback"),
            adjust=embedded_lab_adjust(topology, statuses),
        )
    }
    assert jobs["neg-inet-fe-5061"].spec is None
    assert jobs["neg-inet-fe-5061"].skip_reason == NO_FIREWALL
    assert jobs["pic-in-5061"].spec is None
    assert (
        jobs["pic-in-5061"].skip_reason
        == "edge's access-edge is not available yet (issue #3 (Access Edge))"
    )
    # a relay row needs the relay itself: the A/V Edge on the source side
    assert jobs["av-relay-udp-out"].skip_reason.startswith("edge's av-edge is not available yet")
    # rows whose services run are probed
    assert jobs["xmpp-in-5269"].spec is not None
    assert jobs["dns-edge-ext"].spec is not None
