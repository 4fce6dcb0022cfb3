"""Bring your own firewall: a topology marks a firewall external; edgesim renders nothing for it,
attaches its zones to the links the topology names, and probes the device itself.

The device here is a stand-in (``appliance.py``): a namespace whose nftables rules the test
loads, joined to the lab only through veths. With the same rules, the probe must find the same
defects across it as across the netns lab's own firewall.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from simulator.cli import cli
from simulator.errors import ConfigError, LabError
from simulator.firewall.render import plan_firewall
from simulator.lab.plan import appliance_plans
from simulator.lab.runners import get_runner
from simulator.lab.runners.base import LabConfig
from simulator.lab.runners.compose import render_compose
from simulator.lab.runners.netns import check_parent, lab_namespaces
from simulator.lab.topology import Topology, default_topology_path, load_topology
from simulator.matrix import load_matrix
from tests.lab.appliance import FIREWALL, NAMESPACE, StandIn, external_topology, parent_names
from tests.lab.lab_helpers import PROBE_TIMEOUT_ARGS

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "lab/firewall/external.nft"
BROKEN = ROOT / "lab/firewall/broken/external.nft"


@pytest.fixture
def appliance_toml(tmp_path: Path) -> Path:
    return external_topology(tmp_path)


# ------------------------------------------------------------------ the topology


def test_an_external_firewall_loads_with_its_zones_on_the_named_links(
    appliance_toml: Path, topology: Topology
) -> None:
    topo = load_topology(appliance_toml)
    fw = topo.firewall(FIREWALL)
    assert fw.external and fw.rules == ""
    assert [f.id for f in topo.lab_firewalls] == ["fw-internal"]
    parents = parent_names(topology)
    assert {z: topo.zone_parent(z) for z in parents} == parents
    assert topo.zone_parent("corporate") is None


def _edited(tmp_path: Path, old: str, new: str) -> Path:
    text = default_topology_path().read_text()
    assert old in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(old, new, 1))
    return path


FW_LINE = 'rules = "lab/firewall/external.nft"\n'
OUTSIDE = '{ id = "outside", zone = "internet", address = "203.0.113.1" }'
INSIDE = '{ id = "inside", zone = "perimeter-external", address = "198.51.100.1" }'


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        pytest.param(
            [(FW_LINE, "external = true\n")],
            "firewalls[fw-external].interfaces[outside]: an external firewall's interface needs "
            "'parent': the link of this machine its zone is attached to (e.g. eth1.101)",
            id="no-parent",
        ),
        pytest.param(
            [(OUTSIDE, OUTSIDE.replace(" }", ', parent = "eth1" }'))],
            "firewalls[fw-external].interfaces[outside]: 'parent' is only for an external "
            "firewall's interfaces (external = true)",
            id="parent-on-a-lab-firewall",
        ),
        pytest.param(
            [(FW_LINE, FW_LINE + "external = true\n")],
            "firewalls[fw-external]: an external firewall's rules live on the device: edgesim "
            "loads none",
            id="rules-on-an-external-firewall",
        ),
        pytest.param(
            [
                (FW_LINE, "external = true\n"),
                (OUTSIDE, OUTSIDE.replace(" }", ', parent = "vlan101" }')),
                (INSIDE, INSIDE.replace(" }", ', parent = "vlan101" }')),
            ],
            "firewalls[fw-external].interfaces[inside]: parent 'vlan101' carries zone 'internet' "
            "already; give each zone its own link (a VLAN sub-interface each)",
            id="two-zones-one-link",
        ),
        pytest.param(
            [
                (FW_LINE, "external = true\n"),
                (OUTSIDE, OUTSIDE.replace(" }", ', parent = "eth1/2" }')),
            ],
            "firewalls[fw-external].interfaces[outside]: parent 'eth1/2' is not a network "
            "interface name (1-15 characters)",
            id="bad-link-name",
        ),
        pytest.param(
            [(FW_LINE, 'external = "yes"\n')],
            "firewalls[fw-external]: 'external' must be bool, not str",
            id="external-not-a-bool",
        ),
    ],
)
def test_bad_external_firewalls_are_one_line_naming_the_file_and_entry(
    tmp_path: Path, edits: list[tuple[str, str]], message: str
) -> None:
    text = default_topology_path().read_text()
    for old, new in edits:
        assert old in text
        text = text.replace(old, new, 1)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_topology(path)
    assert str(caught.value) == f"{path}: {message}"
    result = CliRunner().invoke(cli, ["--topology", str(path), "lab", "plan"])
    assert result.exit_code == 2 and message in result.output.replace("\n", "")


def test_one_zone_on_two_links_is_refused(tmp_path: Path) -> None:
    """A second external firewall putting a zone on another link than the first."""
    text = external_topology(tmp_path).read_text()
    block = (
        '\n[[firewalls]]\nid = "fw-other"\nexternal = true\ninterfaces = [\n'
        '  { id = "a", zone = "internet", address = "203.0.113.2", parent = "other0" },\n'
        '  { id = "b", zone = "corporate", address = "192.0.2.2", parent = "other1" },\n]\n'
    )
    path = tmp_path / "two.toml"
    path.write_text(text.replace("\n[[hosts]]", block + "\n[[hosts]]", 1))
    with pytest.raises(ConfigError, match=r"firewalls\[fw-other\]\.interfaces\[a\]: zone "
                       r"'internet' is on parent 'appl0' already \(fw-external:outside\)"):  # fmt: skip
        load_topology(path)


# ------------------------------------------------------------------ what edgesim renders


def test_no_rules_and_no_container_for_the_device_and_macvlan_zones(appliance_toml: Path) -> None:
    topo = load_topology(appliance_toml)
    text = render_compose(topo, Path("appliance.toml"))
    assert "  fw-external:\n" not in text and "  fw-internal:\n" in text
    for zone, parent in parent_names(topo).items():
        network = text[text.index(f"\n  {zone}:\n    driver:") :]
        assert network.split("\n")[2:5] == [
            "    driver: macvlan",
            "    driver_opts:",
            f'      parent: "{parent}"',
        ]
        device = topo.firewall(FIREWALL).interface_in(zone)
        assert device is not None
        assert f"gateway: {device.address}" in network.split("\n  ", 2)[1] + network
    assert "parent" not in text[text.index("\n  corporate:\n") :]
    result = CliRunner().invoke(
        cli, ["--topology", str(appliance_toml), "firewall", "render", "--stdout"]
    )
    assert result.exit_code == 0 and "fw-internal" in result.output
    assert "fw-external" not in result.output


def test_the_runners_run_only_their_own_firewalls(appliance_toml: Path, tmp_path: Path) -> None:
    topo = load_topology(appliance_toml)
    for name in ("netns", "compose"):
        runner = get_runner(name, LabConfig(topo, state_dir=tmp_path))
        assert runner.our_firewalls() == ("fw-internal",)
        with pytest.raises(LabError, match=r"fw-external is your own device \(external = true\)"):
            runner.load_rules(FIREWALL)
    assert get_runner("local", LabConfig(topo)).our_firewalls() == ()
    result = CliRunner().invoke(
        cli,
        ["--topology", str(appliance_toml), "lab", "reload-firewall",
         "--rules", f"fw-external={BROKEN}"],
    )  # fmt: skip
    assert result.exit_code == 2 and "fw-external is your own device" in result.output


ACCEPT = re.compile(
    r"ip saddr (\S+) ip daddr (\S+) (tcp|udp) (dport|sport) (\S+) accept comment \"([^\"]+)\""
)


def _accepts(nft: str) -> set[tuple[str, ...]]:
    """(saddr, daddr, proto, dport|sport, ports, row) of every accept rule of a rendered file."""
    return {match.groups() for match in ACCEPT.finditer(nft)}


def test_lab_plan_is_the_matrix_as_the_devices_rule_list(appliance_toml: Path) -> None:
    """The plan's rules are exactly the accept rules of the lab's own rendered file."""
    result = CliRunner().invoke(cli, ["--topology", str(appliance_toml), "lab", "plan", "--json"])
    assert result.exit_code == 0, result.output
    (plan,) = json.loads(result.output)["firewalls"]
    assert plan["firewall"] == FIREWALL and plan["external"] is True
    assert [(i["zone"], i["address"], i["parent"]) for i in plan["interfaces"]] == [
        ("internet", "203.0.113.1/24", "appl0"),
        ("perimeter-external", "198.51.100.1/25", "appl1"),
    ]
    assert "remote-user (default)" in plan["interfaces"][0]["routed_by"]
    assert plan["routes"]["none_to"] == ["perimeter-internal", "corporate"]
    rules = {
        (
            r["source"].split()[0],
            r["destination"].split()[0],
            r["transport"],
            "dport" if r["port_side"] == "destination" else "sport",
            r["ports"],
            r["row"],
        )
        for r in plan["rules"]
    }
    assert rules == _accepts(RULES.read_text()) != set()
    topo = load_topology(appliance_toml)
    dropped = plan_firewall(topo.firewall(FIREWALL), topo, load_matrix()).dropped
    assert plan["must_stay_blocked"] == [row.id for row in dropped] != []

    table = CliRunner().invoke(
        cli, ["--topology", str(appliance_toml), "lab", "plan"], env={"COLUMNS": "250"}
    )
    assert "fw-external: your own device (external)" in table.output
    assert "everything else" in table.output and "appl0" in table.output
    assert appliance_plans(load_topology(), ())[0].firewall.id == "fw-external"  # none external


# ------------------------------------------------------------------ the lab around the device

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("ip") and shutil.which("nft")),
    reason="builds network namespaces, veths and nftables rules: needs root, ip and nft",
)


@pytest.mark.root
@needs_root
def test_a_parent_carrying_the_default_route_or_missing_is_refused() -> None:
    """Inside a namespace of the test's own (the machine's links are never touched)."""
    ns = "edgesim-parent-test"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        inside = ["ip", "netns", "exec", ns]
        for args in (
            ["ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1"],
            ["ip", "link", "set", "up0", "up"],
            ["ip", "addr", "add", "192.0.2.200/24", "dev", "up0"],
            ["ip", "route", "add", "default", "via", "192.0.2.1"],
            ["ip", "link", "add", "spare0", "type", "veth", "peer", "name", "spare1"],
        ):
            subprocess.run([*inside, *args], check=True)
        script = (
            "from simulator.lab.runners.netns import check_parent\n"
            "from simulator.errors import LabError\n"
            "for link in ('up0', 'nolink', 'spare0'):\n"
            "    try:\n        check_parent(link); print(link, 'ok')\n"
            "    except LabError as exc:\n        print(link, exc)\n"
        )
        out = subprocess.run(
            [*inside, sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        assert out[0].startswith("up0 parent link 'up0' carries this machine's default route")
        assert out[1].startswith("nolink parent link 'nolink' (an external firewall's zone) does")
        assert out[2] == "spare0 ok"
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    assert callable(
        check_parent
    )  # imported for the docs: the function under test runs in the namespace


def edgesim(*args: str, state: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, EDGESIM_STATE_DIR=str(state), COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "simulator", *args], capture_output=True, text=True,
        timeout=timeout, cwd=ROOT, env=env,
    )  # fmt: skip


def probe(state: Path, name: str, top: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    done = edgesim(
        *top, "probe", "--runner", "netns", "--name", name, "--format", "json",
        "--certs", str(state / "certs"), *PROBE_TIMEOUT_ARGS, state=state,
    )  # fmt: skip
    assert done.stdout, done.stderr
    return {r["row"]: r for r in json.loads(done.stdout)["results"]}


@pytest.fixture
def stand_in(topology: Topology) -> Iterator[StandIn]:
    device = StandIn(topology)
    device.create()
    try:
        yield device
    finally:
        device.remove()


@pytest.mark.root
@needs_root
def test_the_probe_finds_the_same_defects_across_the_device_as_across_the_lab_firewall(
    tmp_path: Path, appliance_toml: Path, stand_in: StandIn
) -> None:
    for name in ("xfw", "xref"):
        if lab_namespaces(name):
            pytest.skip(f"a netns lab named {name} is up: `edgesim lab down --name {name}`")
    top = ("--topology", str(appliance_toml))
    stand_in.load(RULES)
    up = edgesim(*top, "lab", "up", "--runner", "netns", "--name", "xfw",
                 "--certs", str(tmp_path / "certs"), state=tmp_path)  # fmt: skip
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        # Nothing of the lab in the device: its namespace holds only the test's links.
        links = subprocess.run([*stand_in.exec_argv(), "ip", "-br", "link"],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert sorted(line.split("@")[0].split()[0] for line in links.splitlines()) == [
            "inside", "lo", "outside",
        ]  # fmt: skip
        clean = probe(tmp_path, "xfw", top)
        assert len(clean) == len(load_matrix().rows)
        unmet = {row: r["reason"] for row, r in clean.items() if not r["met"]}
        assert not unmet, unmet

        # Every row across the device says it is judged from the endpoints and captures.
        crossing = clean["msn-stun-in-3478"]["details"]
        assert crossing["external_firewall"] == "fw-external"
        assert "fw-external is your own device (external): not traced" in crossing["device"]
        assert crossing["capture"]["reply_reached_source"] > 0
        assert "external_firewall" not in clean["int-sip-fe-to-edge"]["details"]  # ours

        # The shipped scenarios across the device; the one that changes a firewall's rules is
        # skipped for the device, never run against it.
        done = edgesim(*top, "scenario", "run", "--runner", "netns", "--name", "xfw",
                       "--format", "json", "--certs", str(tmp_path / "certs"), state=tmp_path)  # fmt: skip
        scenarios = {r["name"]: r for r in json.loads(done.stdout)["scenarios"]}
        fallback = scenarios.pop("av-fallback")
        assert fallback["status"] == "skipped", fallback
        assert "fw-external is your own device" in fallback["reason"]
        bad = {n: (r["step"], r["reason"]) for n, r in scenarios.items()
               if r["status"] not in ("passed", "skipped")}  # fmt: skip
        assert not bad, bad
        assert {"federation-im", "xmpp-chat", "av-call", "remote-user-im"} <= {
            n for n, r in scenarios.items() if r["status"] == "passed"
        }

        stand_in.load(BROKEN)
        across_device = probe(tmp_path, "xfw", top)
        stun = across_device["msn-stun-in-3478"]
        assert stun["verdict"] == "blocked"
        assert (
            "fw-external dropped the request: it left messenger, never reached edge"
            in (stun["reason"])
        )

        # Plain SIP opened on the device: the Edge resets 5060, the endpoint alone would say
        # "refused" (blocked, met); the capture beside the device shows it crossed.
        opened = tmp_path / "sip-5060.nft"
        rules = RULES.read_text()
        forward = rules.index("policy drop;", rules.index("hook forward")) + len("policy drop;")
        opened.write_text(
            rules[:forward] + "\n\t\tip daddr 198.51.100.10 tcp dport 5060 accept" + rules[forward:]
        )
        stand_in.load(opened)
        sip = probe(tmp_path, "xfw", top)["neg-inet-sip-5060"]
        assert sip["verdict"] == "open-unexpected", sip
        assert "fw-external (your own device) let it through" in sip["reason"]
    finally:
        down = edgesim(*top, "lab", "down", "--name", "xfw", state=tmp_path)
    assert down.returncode == 0, down.stderr
    assert not any(NAMESPACE in ns for ns in lab_namespaces("xfw"))

    # The same rules in the netns lab's own fw-external.
    ref_state = tmp_path / "ref"
    up = edgesim("lab", "up", "--runner", "netns", "--name", "xref",
                 "--certs", str(ref_state / "certs"), state=ref_state)  # fmt: skip
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        reload = edgesim("lab", "reload-firewall", "--name", "xref",
                         "--rules", f"fw-external={BROKEN}", state=ref_state)  # fmt: skip
        assert reload.returncode == 0, reload.stderr
        across_lab = probe(ref_state, "xref")
    finally:
        edgesim("lab", "down", "--name", "xref", state=ref_state)

    def defects(results: dict[str, dict[str, object]]) -> dict[str, object]:
        return {row: r["verdict"] for row, r in results.items() if not r["met"]}

    assert defects(across_device) == defects(across_lab) != {}
