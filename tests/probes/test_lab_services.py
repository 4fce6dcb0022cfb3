"""The probes against the lab's own services, where this tree has them (skip with the reason).

The local runner has no firewall between zones, so a row that must stay blocked but reaches a
listener is reported as "open where it must not be", as it would be with a broken rule file.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest

from simulator.lab.runners.local import LocalLab
from simulator.lab.topology import Topology
from simulator.pki import LabPki
from simulator.probes.base import TlsProblem, Verdict
from simulator.probes.run import JobBuilder, LocalExecutor, build_jobs, run_jobs

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("simulator.xmpp.service") is None,
    reason="the XMPP proxy service (issue #4) is not in this tree",
)

ROWS = ["xmpp-in-5269", "xmpp-out-5269", "xmpp-gw-23456", "neg-inet-xmpp-23456"]


async def test_xmpp_rows_against_the_lab_xmpp_proxy(
    isolated_topology: Topology, lab_pki: LabPki
) -> None:
    topology = isolated_topology
    builder = JobBuilder(topology, lab_pki, timeout=2.0)
    jobs = build_jobs(topology, builder, rows=ROWS)
    # The Front End presenting the Edge's server-only certificate (no clientAuth) on 23456.
    gw = next(j for j in jobs if j.row.id == "xmpp-gw-23456")
    assert gw.spec is not None
    bad = dataclasses.replace(
        gw,
        spec=dataclasses.replace(
            gw.spec, client_cert=lab_pki.bad_cert("server-only", "edge", "internal")
        ),
    )
    async with LocalLab(topology, lab_pki.directory, hosts=["edge", "jabber", "fe"]) as lab:
        assert any(s.service == "xmpp-proxy" and s.state == "running" for s in lab.statuses)
        results = {r.row_id: r for r in await run_jobs(jobs, LocalExecutor())}
        [bad_result] = await run_jobs([bad], LocalExecutor())
    for row in ("xmpp-in-5269", "xmpp-out-5269", "xmpp-gw-23456"):
        assert results[row].verdict is Verdict.PASSED, (row, results[row].reason)
    assert results["xmpp-in-5269"].reason.startswith("XMPP stream over STARTTLS, features: ")
    assert results["xmpp-gw-23456"].reason.startswith("XMPP stream over MTLS")
    assert bad_result.verdict is Verdict.TLS_FAILED
    assert bad_result.tls_problem is TlsProblem.CLIENT_CERT_REJECTED
    negative = results["neg-inet-xmpp-23456"]
    assert negative.verdict is Verdict.OPEN_UNEXPECTED
    assert negative.reason.startswith("open where it must not be: ")
