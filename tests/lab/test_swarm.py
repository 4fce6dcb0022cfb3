"""The swarm runner: the stack file it renders, and a real single-node swarm (``docker swarm init``
on this machine, left as the test found it) on which every matrix row meets its expectation and
every shipped scenario passes, as on the compose lab."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.errors import LabError
from simulator.lab.runners.swarm import (
    ZONE_LABEL,
    alias,
    home_zone,
    network_name,
    render_stack,
    zones_from_env,
)
from simulator.lab.topology import Topology, load_topology
from simulator.matrix import load_matrix
from tests.lab.appliance import external_topology
from tests.lab.lab_helpers import (
    PROBE_TIMEOUT_ARGS,
    build_test_image,
    docker_problem,
    ip_forward_by_service,
)

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "edgesim:test"
LAB = "swtest"
RULES = {
    "fw-external": ROOT / "lab/firewall/external.nft",
    "fw-internal": ROOT / "lab/firewall/internal.nft",
}
SUBNETS = {
    "internet": "10.77.1.0/24",
    "perimeter-external": "10.77.2.0/24",
    "perimeter-internal": "10.77.3.0/24",
    "corporate": "10.77.4.0/24",
}


def _service_block(text: str, node: str) -> str:
    start = text.index(f"\n  {node}:\n")
    end = text.find("\n\n", start + 1)
    return text[start:end]


def test_the_stack_file_keeps_no_address_of_its_own_and_opens_nothing(
    topology: Topology,
) -> None:
    text = render_stack(topology, stack="lab1", rules=RULES, subnets=SUBNETS).stack
    assert "ports:" not in text and "ipv4_address" not in text and "network_mode" not in text
    assert "placement" not in text  # no node labelled: Swarm places anywhere
    for zone in topology.zones:
        assert (
            f"  {zone.id}:\n    external: true\n    name: {network_name('lab1', zone.id)}" in text
        )
    for fw in topology.firewalls:
        block = _service_block(text, fw.id)
        assert "cap_add: [NET_ADMIN]" in block and 'net.ipv4.ip_forward: "1"' in block
        assert "endpoint_mode: dnsrr" in block
        for iface in fw.interfaces:
            assert f'aliases: ["{alias(fw.id, iface.zone)}"]' in block
    for host in topology.hosts:
        block = _service_block(text, host.id)
        assert "ip_local_port_range" in block and "cap_add: [NET_ADMIN]" in block
        assert f'"lab", "serve", "--host", "{host.id}", "--runner", "swarm"' in block
        for zone_id in host.zones:
            assert f'aliases: ["{alias(host.id, zone_id)}"]' in block
    env = re.search(r'EDGESIM_SWARM_ZONES: "([^"]*)"', text)
    assert env is not None and zones_from_env({"EDGESIM_SWARM_ZONES": env[1]}) == SUBNETS


def test_only_the_firewall_tasks_forward(topology: Topology) -> None:
    """As in the compose lab: a task copies the machine's ``ip_forward``; hosts turn it off."""
    text = render_stack(topology, stack="lab1", rules=RULES, subnets=SUBNETS).stack
    forwarding = ip_forward_by_service(text)
    firewalls = {fw.id for fw in topology.lab_firewalls}
    assert forwarding == {n: "1" if n in firewalls else "0" for n in forwarding}
    assert set(forwarding) == firewalls | {h.id for h in topology.hosts}


def test_placement_by_zone_labels_and_content_named_configs(
    topology: Topology, tmp_path: Path
) -> None:
    files = render_stack(topology, stack="lab1", rules=RULES, subnets=SUBNETS, placement=True)
    assert home_zone(topology, "edge") == "perimeter-external"
    assert home_zone(topology, "fw-internal") == "perimeter-internal"
    for node in ("edge", "fe", "fw-external"):
        label = f"node.labels.{ZONE_LABEL}{home_zone(topology, node)} == true"
        assert f'constraints: ["{label}"]' in _service_block(files.stack, node)
    edited = tmp_path / "external.nft"
    edited.write_text(RULES["fw-external"].read_text() + "\n# an edit\n")
    again = render_stack(
        topology, stack="lab1", rules={**RULES, "fw-external": edited}, subnets=SUBNETS
    )
    before, after = files.configs["fw-external-rules"], again.configs["fw-external-rules"]
    assert before[0] != after[0] and after[1] == edited  # a new config for new content
    assert files.configs["fw-internal-rules"] == again.configs["fw-internal-rules"]


def test_zones_on_the_users_own_firewall_are_refused(tmp_path: Path) -> None:
    topo = load_topology(external_topology(tmp_path))
    with pytest.raises(LabError, match=r"cannot attach zones to your own firewall \(fw-ext"):
        render_stack(topo, stack="lab1", rules=RULES, subnets=SUBNETS)


@pytest.mark.docker
def test_docker_reads_the_stack_file(topology: Topology, tmp_path: Path) -> None:
    if docker_problem():
        pytest.skip(str(docker_problem()))
    if subprocess.run(["docker", "stack", "config", "--help"], capture_output=True).returncode:
        pytest.skip("this Docker CLI has no `docker stack config`")
    path = tmp_path / "stack.yml"
    path.write_text(render_stack(topology, stack="lab1", rules=RULES, subnets=SUBNETS).stack)
    done = subprocess.run(
        ["docker", "stack", "config", "-c", str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "NET_ADMIN" in done.stdout and "dnsrr" in done.stdout


# ------------------------------------------------------------------ a real swarm


def docker(*args: str, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    assert not check or done.returncode == 0, f"docker {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def edgesim(*args: str, state: Path, timeout: float = 420) -> subprocess.CompletedProcess[str]:
    """``edgesim ARGS`` from the checkout, with the lab PKI beside the lab's state: the default,
    a checkout's certs/, would be written into the repository (every command but `lab flows`
    takes --certs)."""
    env = dict(os.environ, EDGESIM_STATE_DIR=str(state), EDGESIM_IMAGE=IMAGE, COLUMNS="200")
    certs = [] if args[:2] == ("lab", "flows") else ["--certs", str(state / "certs")]
    return subprocess.run(
        [sys.executable, "-m", "simulator", *args, *certs], capture_output=True, text=True,
        timeout=timeout, cwd=ROOT, env=env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def swarm(topology: Topology) -> Iterator[str]:
    """This engine as a single-node swarm manager with every zone's label; afterwards the
    engine, its labels and its networks are as they were."""
    problem = docker_problem()
    if problem:
        pytest.skip(problem)
    if subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode:
        pytest.skip("no Docker engine answers (scripts/setup-docker.sh starts one)")
    state = docker("info", "--format", "{{.Swarm.LocalNodeState}}")
    networks_before = set(docker("network", "ls", "--format", "{{.Name}}").split())
    joined = state == "inactive"
    if joined:
        # Loopback only: nothing listens on, or is attached to, the machine's interfaces.
        docker("swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:2377")
    elif docker("info", "--format", "{{.Swarm.ControlAvailable}}") != "true":
        pytest.skip(f"this engine is in a swarm ({state}) but not a manager")
    node = docker("info", "--format", "{{.Swarm.NodeID}}")
    before = json.loads(docker("node", "inspect", "--format", "{{json .Spec.Labels}}", node))
    added = [f"{ZONE_LABEL}{z.id}" for z in topology.zones if f"{ZONE_LABEL}{z.id}" not in before]
    try:
        for label in added:
            docker("node", "update", "--label-add", f"{label}=true", node)
        yield node
    finally:
        for label in added:
            docker("node", "update", "--label-rm", label, node, check=False)
        if joined:
            docker("swarm", "leave", "--force", check=False)
            for name in set(docker("network", "ls", "--format", "{{.Name}}").split()):
                if name not in networks_before:  # docker_gwbridge, made by `swarm init`
                    docker("network", "rm", name, check=False)


@pytest.fixture(scope="module")
def swarm_lab(swarm: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    state = tmp_path_factory.mktemp("swarm")
    if docker("stack", "ls", "--format", "{{.Name}}", check=False).count(LAB):
        pytest.skip(f"a swarm lab {LAB} is up: `edgesim lab down --runner swarm --name {LAB}`")
    build_test_image(IMAGE)
    try:
        up = edgesim("lab", "up", "--runner", "swarm", "--name", LAB, state=state)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield state
    finally:
        edgesim("lab", "down", "--runner", "swarm", "--name", LAB, state=state)


@pytest.mark.docker
def test_tasks_carry_their_lab_addresses_beside_swarms(swarm_lab: Path, topology: Topology) -> None:
    status = edgesim("lab", "status", "--runner", "swarm", "--name", LAB, state=swarm_lab)
    assert status.returncode == 0, status.stderr
    av = topology.interface("edge:av")
    assert f"{av.address}/" in status.stdout and ", swarm)" in status.stdout
    dns = topology.hosts_with_role("dns-external")[0].interfaces[0]
    assert f"{dns.address}:53/udp (dns) answers" in status.stdout
    assert "not running" not in status.stdout
    stack = (swarm_lab / LAB / "stack.yml").read_text()
    assert f"node.labels.{ZONE_LABEL}internet == true" in stack  # the node is labelled


@pytest.mark.docker
def test_every_matrix_row_meets_its_expectation_across_the_swarm(swarm_lab: Path) -> None:
    done = edgesim("probe", "--runner", "swarm", "--name", LAB, "--format", "json",
                   *PROBE_TIMEOUT_ARGS, state=swarm_lab)  # fmt: skip
    results = json.loads(done.stdout)["results"]
    unmet = {r["row"]: f"{r['verdict']}: {r['reason']}" for r in results if not r["met"]}
    assert not unmet, unmet
    assert done.returncode == 0
    assert {r["runner"] for r in results} == {"swarm"}
    assert len(results) == len(load_matrix().rows)


@pytest.mark.docker
def test_every_shipped_scenario_passes_across_the_swarm(swarm_lab: Path) -> None:
    done = edgesim("scenario", "run", "--runner", "swarm", "--name", LAB, "--format", "json",
                   state=swarm_lab)  # fmt: skip
    results = {s["name"]: s for s in json.loads(done.stdout)["scenarios"]}
    failed = {n: (r["step"], r["reason"]) for n, r in results.items() if r["status"] != "passed"}
    assert not failed, failed
    assert len(results) == len(list((ROOT / "scenarios").glob("[!_]*.py")))


@pytest.mark.docker
def test_reloaded_rules_apply_in_the_firewall_task(swarm_lab: Path) -> None:
    broken = ROOT / "lab/firewall/broken/external.nft"
    flows = ("lab", "flows", "--runner", "swarm", "--name", LAB, "--json",
             "--row", "msn-stun-in-3478")  # fmt: skip
    reload = edgesim("lab", "reload-firewall", "--runner", "swarm", "--name", LAB,
                     "--rules", f"fw-external={broken}", state=swarm_lab)  # fmt: skip
    assert reload.returncode == 0, reload.stderr
    try:
        (row,) = json.loads(edgesim(*flows, state=swarm_lab).stdout)["rows"]
        assert row["got"] == "blocked"
    finally:
        edgesim("lab", "reload-firewall", "--runner", "swarm", "--name", LAB, state=swarm_lab)
    (row,) = json.loads(edgesim(*flows, state=swarm_lab).stdout)["rows"]
    assert row["got"] == "open"


@pytest.mark.docker
def test_load_runs_in_the_source_tasks_and_sees_the_firewall_tasks(swarm_lab: Path) -> None:
    done = edgesim("load", "--runner", "swarm", "--name", LAB, "--json", "--sessions", "10",
                   "--allocations", "10", "--hold", "1", state=swarm_lab)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for result in report["results"]:
        assert result["established"] == result["after_hold"] == 10, result
    external = next(fw for fw in report["firewalls"] if fw["firewall"] == "fw-external")
    assert external["conntrack_peak"] >= 10 + 2 * 10


@pytest.mark.docker
def test_down_removes_the_stack_and_its_networks(swarm_lab: Path) -> None:
    down = edgesim("lab", "down", "--runner", "swarm", "--name", LAB, state=swarm_lab)
    assert down.returncode == 0 and "removed 12 task(s)" in down.stdout, down.stderr
    assert docker("stack", "ls", "--format", "{{.Name}}").count(LAB) == 0
    assert not docker("network", "ls", "--filter", "label=org.edgesim.swarm-lab", "-q")
    assert not docker("config", "ls", "--filter", f"label=com.docker.stack.namespace={LAB}", "-q")
    again = edgesim("lab", "down", "--runner", "swarm", "--name", LAB, state=swarm_lab)
    assert again.returncode == 0 and "nothing to remove" in again.stdout
