"""The probes against the lab's own services.

The local runner has no firewall between zones, so a row that must stay blocked but reaches a
listener is reported as "open where it must not be", as it would be with a broken rule file.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from simulator.errors import ConfigError
from simulator.lab.runners.local import LocalLab
from simulator.lab.topology import Topology
from simulator.pki import LabPki
from simulator.probes.base import Verdict
from simulator.probes.run import JobBuilder, LocalExecutor, build_jobs, run_jobs
from simulator.tls import TlsProblem

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


async def test_sip_rows_against_the_lab_access_edge(
    isolated_topology: Topology, lab_pki: LabPki
) -> None:
    """Any SIP response proves the port is the Edge's SIP behind working TLS/MTLS."""
    topology = isolated_topology
    rows = ["client-in-443", "int-sip-fe-to-edge", "pic-in-5061"]
    jobs = build_jobs(topology, JobBuilder(topology, lab_pki, timeout=2.0), rows=rows)
    async with LocalLab(
        topology, lab_pki.directory, hosts=["edge", "fe", "pic", "dns-int", "dns-ext"]
    ):
        results = {r.row_id: r for r in await run_jobs(jobs, LocalExecutor())}
    for row in rows:
        assert results[row].verdict is Verdict.PASSED, (row, results[row].reason)
        assert results[row].reason.startswith("SIP ")


AV_ROWS = [
    "msn-rtp-tcp-out",
    "msn-stun-out-3478",
    "msn-stun-in-3478",
    "av-turn-443-in",
    "av-relay-udp-out",
    "av-int-stun-3478",
    "av-int-turn-443",
]


async def test_av_rows_against_the_lab_av_edge(
    isolated_topology: Topology, lab_pki: LabPki
) -> None:
    topology = isolated_topology
    jobs = build_jobs(topology, JobBuilder(topology, lab_pki, timeout=3.0), rows=AV_ROWS)
    async with LocalLab(topology, lab_pki.directory, hosts=["edge", "messenger"]) as lab:
        assert any(s.service == "av-edge" and s.state == "running" for s in lab.statuses)
        results = {r.row_id: r for r in await run_jobs(jobs, LocalExecutor())}
    for row in AV_ROWS:
        assert results[row].verdict is Verdict.PASSED, (row, results[row].reason)
    # rows whose protocol names MSTURN are probed as a Lync client speaks, and say so
    for row in ("av-turn-443-in", "av-int-turn-443"):
        assert results[row].reason.startswith("MS-TURN Allocate success"), results[row].reason
        assert results[row].details["dialect"] == "MS-TURN"
    # The seed row "RTP/TCP 50000-59999 from the Edge": the relay connects out from its range.
    egress = results["msn-rtp-tcp-out"].reason
    port = int(egress.split()[1].rsplit(":", 1)[1])
    assert 50000 <= port <= 59999, egress


async def test_a_bad_setting_takes_down_the_services_already_started(
    isolated_topology: Topology, lab_pki: LabPki
) -> None:
    """The Edge's SIP and XMPP listeners start before the A/V Edge reads its settings: when
    those are bad, the lab fails with the entry and leaves nothing listening behind it."""
    bad: dict[str, dict[str, object]] = {"av-edge": {"no_such_key": 1}}
    with pytest.raises(ConfigError, match=r"services\.av-edge: unknown key 'no_such_key'"):
        async with LocalLab(isolated_topology, lab_pki.directory, hosts=["edge"], settings=bad):
            pass
    edge = isolated_topology.host("edge")
    for iface in edge.interfaces:
        for port in (5061, 5269):
            with pytest.raises(ConnectionRefusedError):
                _, writer = await asyncio.open_connection(str(iface.loopback_address), port)
                writer.close()
