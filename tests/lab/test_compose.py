"""The compose lab: the committed file is the renderer's output, valid for Compose, and a real
Docker lab routes every matrix row through the firewall containers as the rules say."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from simulator.cli import cli
from simulator.lab.flowcheck import FlowResult, check_flows, matrix_flows
from simulator.lab.runners.compose import docker_gateway, render_compose
from simulator.lab.runners.netns import NetnsRunner
from simulator.lab.topology import Topology
from simulator.matrix import load_matrix
from tests.captures import XMPP_MESSAGE, needs_capture_tools, tcp_conversations, xmpp_bodies
from tests.lab.lab_helpers import (
    PROBE_TIMEOUT,
    PROBE_TIMEOUT_ARGS,
    base_image,
    docker_problem,
    ip_forward_by_service,
    rows_broken_by_broken_external,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROJECT = "edgesim-test"
IMAGE = "edgesim:test"


def test_committed_compose_file_is_the_rendered_one(topology: Topology) -> None:
    assert COMPOSE_FILE.read_text() == render_compose(topology), (
        "docker-compose.yml drifted from the topology: run `edgesim lab compose-render`"
    )


def test_compose_file_publishes_nothing_and_keeps_lab_addresses(topology: Topology) -> None:
    text = COMPOSE_FILE.read_text()
    assert "ports:" not in text and "network_mode" not in text
    for zone in topology.zones:
        gateway = docker_gateway(topology, zone)
        assert gateway in zone.subnet
        assert f"gateway: {gateway}" in text
        lab_addresses = {i.address for i in topology.interfaces()}
        lab_addresses |= {i.address for fw in topology.firewalls for i in fw.interfaces}
        assert gateway not in lab_addresses
    for fw in topology.firewalls:
        assert f"nft -f /etc/edgesim/firewall/{Path(fw.rules).name}" in text


def test_only_the_firewall_containers_forward(topology: Topology) -> None:
    """A container copies ``ip_forward`` from the machine (1 where Docker runs): hosts turn it
    off, so none routes around the firewalls (the Edge sits in both perimeter zones)."""
    forwarding = ip_forward_by_service(render_compose(topology))
    firewalls = {fw.id for fw in topology.lab_firewalls}
    assert forwarding == {n: "1" if n in firewalls else "0" for n in forwarding}
    assert set(forwarding) == firewalls | {h.id for h in topology.hosts}


def compose(
    *args: str, check: bool = True, timeout: float = 180, base: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, EDGESIM_IMAGE=IMAGE)
    if base is not None:
        env["EDGESIM_BASE"] = base
    done = subprocess.run(
        ["docker", "compose", "-p", PROJECT, "-f", str(COMPOSE_FILE), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )
    if check:
        assert done.returncode == 0, f"docker compose {' '.join(args)}: {done.stderr[-2000:]}"
    return done


@pytest.mark.docker
def test_docker_compose_config_validates_the_file() -> None:
    problem = docker_problem()
    if problem:
        pytest.skip(problem)
    done = compose("config", "--quiet")
    assert done.stderr.strip() == ""


def project_resources() -> dict[str, list[str]]:
    label = f"label=com.docker.compose.project={PROJECT}"
    found = {}
    for kind in ("container", "network"):
        out = subprocess.run(
            ["docker", kind, "ls", "--all", "--quiet", "--filter", label]
            if kind == "container"
            else ["docker", kind, "ls", "--quiet", "--filter", label],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        found[kind] = out.split()
    return found


@pytest.fixture(scope="module")
def compose_lab(topology: Topology) -> Iterator[None]:
    problem = docker_problem()
    if problem:
        pytest.skip(problem)
    if subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode != 0:
        pytest.skip("no Docker engine answers (scripts/setup-docker.sh starts one)")
    running = subprocess.run(
        [
            "docker",
            "network",
            "ls",
            "--quiet",
            "--filter",
            "label=com.docker.compose.project=edgesim",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()
    if running:
        pytest.skip("the edgesim compose lab is up (its subnets are taken); `docker compose down`")
    base = base_image()
    compose("down", "--remove-orphans", "--timeout", "2", check=False)
    try:
        # What the README tells a user: the compose file builds its own image from the source.
        compose(
            "up", "--build", "--detach", "--wait", "--wait-timeout", "120", timeout=900, base=base
        )
        yield
    finally:
        compose("down", "--remove-orphans", "--timeout", "2", check=False)


def compose_exec(host: str) -> list[str]:
    return ["docker", "compose", "-p", PROJECT, "-f", str(COMPOSE_FILE), "exec", "-T", host]


def row_outcomes(results: list[FlowResult]) -> dict[str, bool]:
    passed: dict[str, list[bool]] = {}
    for r in results:
        passed.setdefault(r.flow.row, []).append(r.ok)
    mixed = {row: oks for row, oks in passed.items() if any(oks) and not all(oks)}
    assert not mixed, mixed
    return {row: all(oks) for row, oks in passed.items()}


@pytest.mark.docker
def test_matrix_rows_across_the_firewall_containers(compose_lab: None, topology: Topology) -> None:
    flows = matrix_flows(topology)
    env = dict(os.environ, EDGESIM_IMAGE=IMAGE)
    results = check_flows(flows, compose_exec, timeout=1.5, env=env)
    got = row_outcomes(results)
    expected = {mf.row: mf.expect_open for mf in flows}
    wrong = {
        r.flow.row: f"{r.flow.flow}: {r.detail}"
        for r in results
        if got[r.flow.row] != expected[r.flow.row]
    }
    assert not wrong, wrong

    # The broken external rules (mounted with the rest of lab/firewall): UDP 3478 rows break.
    breaking = rows_broken_by_broken_external(topology, flows)
    assert breaking
    reload = ["nft", "-f"]
    try:
        done = subprocess.run(
            [*compose_exec("fw-external"), *reload, "/etc/edgesim/firewall/broken/external.nft"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        broken = row_outcomes(check_flows(flows, compose_exec, timeout=1.5, env=env))
    finally:
        subprocess.run(
            [*compose_exec("fw-external"), *reload, "/etc/edgesim/firewall/external.nft"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
    assert {row for row in broken if broken[row] != got[row]} == breaking


@pytest.mark.docker
def test_reload_firewall_applies_the_mounted_rules(
    compose_lab: None, topology: Topology, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", PROJECT)
    monkeypatch.setenv("EDGESIM_IMAGE", IMAGE)
    stun = [mf for mf in matrix_flows(topology) if mf.row == "msn-stun-in-3478"]
    fw = compose_exec("fw-external")
    done = subprocess.run(
        [*fw, "nft", "-f", "/etc/edgesim/firewall/broken/external.nft"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert not any(r.ok for r in check_flows(stun, compose_exec, timeout=1.5))
    certs = ["--certs", str(tmp_path / "certs")]  # not the checkout's certs/
    result = CliRunner().invoke(cli, ["lab", "reload-firewall", "--runner", "compose", *certs])
    assert result.exit_code == 0, result.output
    assert all(r.ok for r in check_flows(stun, compose_exec, timeout=1.5))


@pytest.mark.docker
def test_status_shows_addresses_and_answering_listeners(
    compose_lab: None, topology: Topology, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", PROJECT)
    monkeypatch.setenv("COLUMNS", "200")
    certs = ["--certs", str(tmp_path / "certs")]  # not the checkout's certs/
    result = CliRunner().invoke(cli, ["lab", "status", "--runner", "compose", *certs])
    assert result.exit_code == 0, result.output
    av = topology.interface("edge:av")
    assert f"{av.address}/" in result.output  # the second address lab serve added
    dns = topology.hosts_with_role("dns-external")[0].interfaces[0]
    assert f"{dns.address}:53/udp (dns) answers" in result.output
    assert "not running" not in result.output


@pytest.mark.docker
def test_dns_query_crosses_the_external_firewall(compose_lab: None) -> None:
    script = (
        "import asyncio; from simulator.dns.resolver import LabResolver; "
        "r = LabResolver(('203.0.113.53', 53), timeout=3); "
        "print(asyncio.run(r.srv('_sipfederationtls._tcp.fabrikam.lab'))[0].target)"
    )
    done = subprocess.run(
        [*compose_exec("edge"), "python3", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "sip.fabrikam.lab"


@pytest.mark.docker
def test_every_matrix_row_at_protocol_level_from_inside_the_containers(
    compose_lab: None, tmp_path: Path
) -> None:
    """`edgesim probe --runner compose`: each row probed from a container of its source zone."""
    env = dict(os.environ, COMPOSE_PROJECT_NAME=PROJECT, EDGESIM_IMAGE=IMAGE)
    # --certs: from the checkout the default is its certs/, which the probe would write
    certs = ["--certs", str(tmp_path / "certs")]
    done = subprocess.run(
        [sys.executable, "-m", "simulator", "probe", "--runner", "compose", *certs,
         "--format", "json", *PROBE_TIMEOUT_ARGS],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
    )  # fmt: skip
    results = json.loads(done.stdout)["results"]
    unmet = {r["row"]: f"{r['verdict']}: {r['reason']}" for r in results if not r["met"]}
    assert not unmet, unmet
    assert done.returncode == 0
    assert {r["runner"] for r in results} == {"compose"}
    assert len(results) == len(load_matrix().rows)


@pytest.mark.docker
def test_every_shipped_scenario_passes_across_the_firewall_containers(
    compose_lab: None, tmp_path: Path
) -> None:
    """`edgesim scenario run --runner compose`: clients leave from their hosts' containers."""
    env = dict(os.environ, COMPOSE_PROJECT_NAME=PROJECT, EDGESIM_IMAGE=IMAGE)
    done = subprocess.run(
        [sys.executable, "-m", "simulator", "scenario", "run", "--runner", "compose",
         "--format", "json", "--html", str(tmp_path / "compose-scenarios.html")],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=env,
    )  # fmt: skip
    results = {s["name"]: s for s in json.loads(done.stdout)["scenarios"]}
    failed = {n: (r["step"], r["reason"]) for n, r in results.items() if r["status"] != "passed"}
    assert not failed, failed
    assert len(results) == len(list((ROOT / "scenarios").glob("[!_]*.py")))
    assert done.returncode == 0


@pytest.mark.docker
@pytest.mark.root
def test_firewall_verdicts_match_the_netns_lab(
    compose_lab: None, topology: Topology, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The same rule files give the same verdicts, decided by the same rules, on the compose
    lab (traced inside the firewall containers) as on the netns lab."""
    import asyncio

    from simulator.lab.runners import get_runner
    from simulator.lab.runners.base import LabConfig, Runner
    from simulator.probes.run import plan_probes, probe_matrix
    from tests.firewall.corpus_helpers import load_corpus, probe_fate, summary

    if os.geteuid() != 0 or not shutil.which("nsenter"):
        pytest.skip("loading and tracing the firewall containers needs root and nsenter")
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", PROJECT)
    monkeypatch.setenv("EDGESIM_IMAGE", IMAGE)
    _, defects = load_corpus()
    cases: dict[str, dict[str, Path]] = {"shipped": {}}
    cases |= {
        d.id: {d.firewall: d.file}
        for d in defects
        if d.id
        in (
            "d06-plain-sip-open",
            "d08-stateless",
            "d10-no-23456-internal",
            "d12-plain-sip-open",
        )
    }

    def verdicts(runner: Runner) -> dict[str, dict[str, tuple[str, str]]]:
        out: dict[str, dict[str, tuple[str, str]]] = {}
        for case, rules in cases.items():
            for fw in topology.firewalls:
                runner.load_rules(fw.id, rules.get(fw.id))
            builder, executor = plan_probes(runner, tmp_path / "certs", timeout=PROBE_TIMEOUT)
            run = asyncio.run(probe_matrix(topology, executor, builder))
            assert run.notes == [], run.notes
            out[case] = {}
            for r in run.results:
                d = probe_fate(r.firewall)
                fate = summary(d.direction, d.action, d.rule, d.policy) if d else "not traced"
                out[case][r.row_id] = (r.verdict.value, fate)
        return out

    netns = get_runner(
        "netns", LabConfig(topology, tmp_path / "certs", name="fwp", state_dir=tmp_path / "ns")
    )
    assert isinstance(netns, NetnsRunner)
    if netns.namespaces():
        pytest.skip("a netns lab named fwp is already up")
    asyncio.run(netns.up())
    try:
        on_netns = verdicts(netns)
    finally:
        asyncio.run(netns.down())
    compose_runner = get_runner(
        "compose",
        LabConfig(topology, tmp_path / "certs", compose_file=COMPOSE_FILE, state_dir=tmp_path),
    )
    try:
        on_compose = verdicts(compose_runner)
    finally:
        for fw in topology.firewalls:
            compose_runner.load_rules(fw.id, None)
    differ = {
        (case, row): (verdict, on_netns.get(case, {}).get(row))
        for case, rows in on_compose.items()
        for row, verdict in rows.items()
        if on_netns.get(case, {}).get(row) != verdict
    }
    assert differ == {}, "\n".join(f"{k}: compose {c} netns {n}" for k, (c, n) in differ.items())
    assert on_compose.keys() == on_netns.keys()
    # ... and both are the corpus's answer.
    for d in defects:
        if d.id in on_compose:
            unmet = {
                row
                for row, (verdict, _) in on_compose[d.id].items()
                if verdict
                not in (("blocked", "refused") if row.startswith("neg-") else ("passed",))
            }
            assert unmet == set(d.broken), d.id


@pytest.mark.docker
@pytest.mark.root
def test_scenario_captures_in_the_containers_decrypt_in_tshark(
    compose_lab: None, tmp_path: Path
) -> None:
    """`scenario run --runner compose --pcap`: tcpdump in every container, the containers' TLS
    key logs (SSLKEYLOGFILE in the compose file) and this process's, embedded."""
    needs_capture_tools()
    env = dict(os.environ, COMPOSE_PROJECT_NAME=PROJECT, EDGESIM_IMAGE=IMAGE)
    done = subprocess.run(
        [sys.executable, "-m", "simulator", "scenario", "run", "xmpp-chat", "--runner",
         "compose", "--pcap", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    pcap = tmp_path / "xmpp-chat.pcapng"
    # romeo's client-to-server leg is new in every run, whatever streams earlier tests left open.
    assert XMPP_MESSAGE in xmpp_bodies(pcap), (done.stdout[-3000:], tcp_conversations(pcap))


@pytest.mark.docker
def test_down_leaves_no_containers_or_networks(compose_lab: None) -> None:
    assert project_resources()["container"], "the lab is up before"
    compose("down", "--remove-orphans", "--timeout", "2")
    assert project_resources() == {"container": [], "network": []}
