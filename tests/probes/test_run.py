"""Resolving rows into probe jobs, the executors, target files, and a full run on the local lab."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from simulator.errors import ConfigError
from simulator.lab.runners.base import LabConfig
from simulator.lab.runners.compose import ComposeRunner
from simulator.lab.runners.local import LocalLab, LocalRunner
from simulator.lab.runners.netns import NetnsRunner
from simulator.lab.topology import Topology
from simulator.matrix import load_matrix
from simulator.pki import LabPki, LabSecrets
from simulator.probes.base import ProbeResult, Verdict
from simulator.probes.run import (
    JobBuilder,
    LocalExecutor,
    ProbeJob,
    RunnerExecutor,
    build_jobs,
    load_target,
    parse_subprocess_output,
    probe_matrix,
    run_jobs,
)
from simulator.probes.spec import ProbeSpec


def _jobs(topology: Topology, lab_pki: LabPki, **kw: Any) -> dict[str, ProbeJob]:
    builder = JobBuilder(topology, lab_pki, **kw)
    return {j.row.id: j for j in build_jobs(topology, builder)}


def spec_of(job: ProbeJob) -> ProbeSpec:
    """The probe a job runs (the job is not skipped)."""
    assert job.spec is not None, job.skip_reason
    return job.spec


def test_every_row_of_the_default_lab_becomes_a_probe(topology: Topology, lab_pki: LabPki) -> None:
    jobs = _jobs(topology, lab_pki)
    assert len(jobs) == len(load_matrix().rows)
    assert all(j.spec is not None for j in jobs.values())


def test_mtls_row_leaves_from_the_source_loopback_presenting_its_certificate(
    topology: Topology, lab_pki: LabPki
) -> None:
    job = _jobs(topology, lab_pki)["int-sip-fe-to-edge"]
    spec = spec_of(job)
    assert (spec.bind, spec.address, spec.port) == ("127.0.2.10", "127.51.100.130", 5061)
    assert spec.fqdn == "edge-int.contoso.lab"
    assert spec.client_cert == lab_pki.host_cert("fe", "internal")
    assert spec.trust == (lab_pki.trust_bundle,)


def test_lab_addresses_inside_a_namespace(topology: Topology, lab_pki: LabPki) -> None:
    spec = spec_of(_jobs(topology, lab_pki, addresses="lab")["pic-in-5061"])
    assert (spec.bind, spec.address) == ("203.0.113.20", "198.51.100.10")


def test_negative_row_from_any_internet_host_presents_a_certificate(
    topology: Topology, lab_pki: LabPki
) -> None:
    job = _jobs(topology, lab_pki)["neg-inet-sip-int-5061"]
    assert job.source is not None and job.source.host == "fabrikam"
    assert spec_of(job).client_cert == lab_pki.host_cert("fabrikam", "fabrikam")


def test_relay_rows_talk_to_the_edge_turn_server_and_relay_to_the_destination(
    topology: Topology, lab_pki: LabPki
) -> None:
    jobs = _jobs(topology, lab_pki)
    udp = spec_of(jobs["av-relay-udp-out"])
    assert (udp.address, udp.port, udp.peer) == ("127.51.100.11", 3478, ("127.0.113.50", 5004))
    tcp = spec_of(jobs["msn-rtp-tcp-out"])
    assert (tcp.address, tcp.port, tcp.peer) == ("127.51.100.11", 3478, ("127.0.113.50", 5004))


def test_range_rows_keep_the_range_and_dns_rows_ask_a_partner_srv(
    topology: Topology, lab_pki: LabPki
) -> None:
    jobs = _jobs(topology, lab_pki)
    relay = spec_of(jobs["neg-inet-relay-tcp-in"])
    assert (relay.port, relay.port_high) == (50000, 59999)
    assert spec_of(jobs["dns-edge-ext"]).dns_name == "_sipfederationtls._tcp.fabrikam.lab"


def test_unknown_row_is_a_config_error(topology: Topology, lab_pki: LabPki) -> None:
    with pytest.raises(ConfigError, match="no such row"):
        build_jobs(topology, JobBuilder(topology, lab_pki), rows=["nope"])


def test_runner_executor_commands_enter_the_source_host(
    topology: Topology, lab_pki: LabPki
) -> None:
    job = build_jobs(topology, JobBuilder(topology, lab_pki), rows=["pic-in-5061"])[0]
    netns = NetnsRunner(LabConfig(topology, certs_dir=Path("/c")), python="python3")
    assert RunnerExecutor(netns, timeout=1.5).command(job) == [
        "ip", "netns", "exec", "es-pic",
        "python3", "-m", "simulator", "--topology", str(topology.path),
        "probe", "--row", "pic-in-5061", "--format", "json", "--inside", "--timeout", "1.5",
        "--source", "pic:wan", "--certs", "/c",
    ]  # fmt: skip
    named = NetnsRunner(LabConfig(topology, name="ci2"))
    assert RunnerExecutor(named).command(job)[:4] == ["ip", "netns", "exec", "esci2-pic"]
    compose = ComposeRunner(LabConfig(topology, compose_file=Path("lab/compose.yml")))
    command = RunnerExecutor(compose, timeout=2).command(job)
    assert command[:7] == ["docker", "compose", "-f", "lab/compose.yml", "exec", "-T", "pic"]
    assert command[7:12] == ["python3", "-m", "simulator", "probe", "--row"]
    assert command[-2:] == ["--certs", "/var/lib/edgesim/certs"]


def test_parse_subprocess_output(topology: Topology, lab_pki: LabPki) -> None:
    job = build_jobs(topology, JobBuilder(topology, lab_pki), rows=["pic-in-5061"])[0]
    inner = ProbeResult(
        "pic-in-5061",
        "sip-mtls",
        "open",
        Verdict.PASSED,
        "SIP 200 OK",
        "pic:wan 203.0.113.20",
        "edge:access 198.51.100.10:5061/tcp",
        runner="here",
    )
    out = json.dumps({"results": [inner.to_dict()]}).encode()
    parsed = parse_subprocess_output(job, out, b"", "netns")
    assert (
        parsed.verdict is Verdict.PASSED
        and parsed.runner == "netns"
        and parsed.reason == "SIP 200 OK"
    )
    broken = parse_subprocess_output(job, b"", b'Cannot open network namespace "es-pic"\n', "netns")
    assert broken.verdict is Verdict.ERROR
    assert broken.reason == 'the probe inside pic failed: Cannot open network namespace "es-pic"'


async def test_subprocess_executor_runs_the_real_cli(
    topology: Topology, lab_pki: LabPki, tmp_path: Path
) -> None:
    """The runner executor's inner command, run without a namespace (the local runner enters
    none): the same JSON round trip as inside a netns or compose host."""
    local = LocalRunner(LabConfig(topology, certs_dir=lab_pki.directory))
    jobs = build_jobs(topology, JobBuilder(topology, lab_pki), rows=["neg-inet-sip-5060"])
    results = await run_jobs(jobs, RunnerExecutor(local, timeout=1, name="netns"))
    assert results[0].runner == "netns"
    # Inside "here" mode the lab addresses (203.0.113.x) are not on this machine: the probe says so.
    assert results[0].verdict is Verdict.ERROR
    assert "cannot bind the source address" in results[0].reason


async def test_full_run_on_the_local_lab(isolated_topology: Topology, lab_pki: LabPki) -> None:
    """DNS is the service that exists today: its rows pass; closed ports are refused."""
    topology = isolated_topology
    async with LocalLab(topology, lab_pki.directory, hosts=["dns-int", "dns-ext"]):
        run = await probe_matrix(
            topology, LocalExecutor(), JobBuilder(topology, lab_pki, timeout=1.0)
        )
    by_row = {r.row_id: r for r in run.results}
    assert by_row["dns-edge-ext"].verdict is Verdict.PASSED
    assert by_row["dns-edge-ext"].details["answers"] == ["0 0 5061 sip.fabrikam.lab"]
    internal = topology.interface("edge:internal").loopback()
    assert by_row["dns-edge-int"].source == f"edge:internal {internal}"
    assert by_row["neg-inet-sip-5060"].met
    assert by_row["pic-in-5061"].verdict is Verdict.REFUSED and not by_row["pic-in-5061"].met
    assert run.duration < 5


def test_target_file_maps_rows_onto_a_real_deployment(
    topology: Topology, lab_pki: LabPki, tmp_path: Path
) -> None:
    (tmp_path / "ca.pem").write_bytes(lab_pki.trust_bundle.read_bytes())
    (tmp_path / "edge.pem").write_bytes(lab_pki.host_cert("edge", "public").pem.read_bytes())
    (tmp_path / "prod.toml").write_text("""
[target]
name = "contoso production"
ca_bundle = "ca.pem"
client_cert = "edge.pem"
source_address = "127.9.0.1"
zones = ["internet"]
timeout = 4

[endpoints."edge:access"]
address = "127.9.0.10"
fqdn = "sip.contoso.example"
domain = "contoso.example"
""")
    target = load_target(tmp_path / "prod.toml")
    jobs = {j.row.id: j for j in build_jobs(topology, JobBuilder(topology, lab_pki), target=target)}
    spec = jobs["pic-in-5061"].spec
    assert spec is not None
    assert (spec.address, spec.bind, spec.fqdn, spec.domain) == (
        "127.9.0.10",
        "127.9.0.1",
        "sip.contoso.example",
        "contoso.example",
    )
    assert spec.trust == (tmp_path / "ca.pem",)
    assert spec.client_cert is not None and spec.client_cert.cert == tmp_path / "edge.pem"
    assert spec.timeout == 4
    assert jobs["pic-out-5061"].spec is None
    assert (
        jobs["pic-out-5061"].skip_reason
        == "source zone 'perimeter-external': this machine is not there"
    )
    assert jobs["xmpp-gw-23456"].skip_reason == "source zone 'corporate': this machine is not there"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[target]\nbogus = 1\n[endpoints.x]\naddress='1'", "unknown key 'bogus'"),
        ("[target]\n", "describe at least one endpoint"),
        ("[target]\nca_bundle = 'missing.pem'\n", "does not exist"),
        ("[endpoints.'edge:access']\nfqdn = 'x'\n", "an endpoint needs 'address'"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_bad_target_files(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "t.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_target(tmp_path / "t.toml")


def test_turn_probes_use_the_probe_credentials_of_the_topology(
    topology: Topology, lab_pki: LabPki
) -> None:
    spec = spec_of(_jobs(topology, lab_pki)["av-relay-udp-out"])
    generated = LabSecrets(lab_pki.directory).get("av-edge/users/edgesim-probe")
    assert spec.turn is not None
    assert (spec.turn.username, spec.turn.password) == ("edgesim-probe", generated)
    assert len(generated) >= 24  # generated for this lab, not a password from the source
