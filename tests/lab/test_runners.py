"""The runner interface: the registry, lab names, and a fifth runner the command line lists and
uses without an edit in ``cli/`` (a fake registered by the test)."""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from click.testing import CliRunner

import simulator.lab.runners as runners_pkg
from simulator.cli import cli
from simulator.errors import LabError, UsageError
from simulator.firewall.rules import FirewallNode
from simulator.lab.runners import addressing_of, get_runner, runner_class, runner_names
from simulator.lab.runners.base import (
    LabConfig,
    LabName,
    LabStatus,
    ListenerCheck,
    ListenerInfo,
    LoadResult,
    NodeStatus,
    Runner,
    ServiceState,
    Vantage,
)
from simulator.lab.topology import Host, Topology
from simulator.pki import LabPki

CLI_DIR = Path(__file__).resolve().parents[2] / "simulator" / "cli"


def test_the_four_runners_and_their_capabilities() -> None:
    assert runner_names() == ["local", "netns", "compose", "swarm"]
    assert runner_names(persistent=True) == ["netns", "compose", "swarm"]
    assert runner_names(has_firewalls=False) == ["local"]
    assert addressing_of("local") == "loopback" and addressing_of("swarm") == "lab"
    with pytest.raises(UsageError, match=r"no runner 'kube' .*local, netns, compose, swarm"):
        runner_class("kube")


def test_every_runner_module_registers_its_runner() -> None:
    """One module per runner: each public module of the package registers a runner class."""
    registered = {runner_class(name) for name in runner_names()}
    for module in pkgutil.iter_modules(runners_pkg.__path__):
        if module.name == "base" or module.name.startswith("_"):
            continue
        mod = importlib.import_module(f"simulator.lab.runners.{module.name}")
        defined = {v for v in vars(mod).values() if isinstance(v, type) and v in registered}
        assert defined, f"lab/runners/{module.name}.py registers no runner"


def test_lab_names_prefix_namespaces_without_overlap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default, ci1, ci12 = LabName(), LabName("ci1"), LabName("ci12")
    assert default.namespace("fw-external") == "es-fw-external"
    assert ci1.namespace("edge") == "esci1-edge" and ci1.cli_args() == " --name ci1"
    names = [default, ci1, ci12, LabName("c"), LabName("1")]
    for lab in names:
        for other in names:
            for node in ("edge", "sw", "fw-external", "ci1-edge"):
                assert other.owns(lab.namespace(node)) == (other == lab), (lab, other, node)
    for bad in ("", "CI", "ci-1", "toolongname", "a b"):
        with pytest.raises(UsageError, match="1-8 lower-case letters or digits"):
            LabName(bad)
    monkeypatch.setenv("EDGESIM_STATE_DIR", str(tmp_path))
    assert ci1.state_dir() == tmp_path / "ci1"
    assert LabConfig(_topology(), name="ci1").state == tmp_path / "ci1"


def test_a_bad_lab_name_is_one_line_and_exit_2() -> None:
    result = CliRunner().invoke(cli, ["lab", "down", "--name", "Bad-Name"])
    assert result.exit_code == 2
    assert "lab name 'Bad-Name'" in result.output and "Traceback" not in result.output


def test_cli_compares_no_runner_names() -> None:
    """Capabilities decide in cli/, never ``runner == "netns"``."""
    names = set(runner_names())
    offenders = []
    for path in sorted(CLI_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                consts = [
                    c.value
                    for c in ast.walk(node)
                    if isinstance(c, ast.Constant) and isinstance(c.value, str)
                ]
                if names & set(consts):
                    offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


# ------------------------------------------------------------------ a fifth runner


def _topology() -> Topology:
    from simulator.lab.topology import load_topology

    return load_topology()


class FakeRunner:
    """A runner of the tests: records what the command line asks of it."""

    name = "fake"
    summary = "a runner only the tests register"
    order = 99
    has_firewalls = True
    persistent = True
    in_process = False
    shares_pki = True
    addressing = "lab"
    node_kind = "sandbox"
    calls: ClassVar[list[str]] = []

    def __init__(self, config: LabConfig) -> None:
        self.config = config
        self.start_hint = "`fake up`"

    @property
    def python(self) -> str:
        return sys.executable

    @property
    def node_certs(self) -> str:
        return str(self.config.certs_dir)

    def problem(self) -> str | None:
        return None

    def notices(self) -> list[str]:
        return []

    async def up(self) -> None:
        self.calls.append(f"up {self.config.name}")

    async def down(self) -> list[str]:
        self.calls.append(f"down {self.config.name}")
        return ["box-edge"]

    def require_up(self) -> None:
        self.calls.append("require_up")

    async def status(self) -> LabStatus:
        services = [ServiceState("edge", "dns", "running", "", [LISTENER])]
        node = NodeStatus("edge", "host", "box-edge", "running", ["198.51.100.10"], services)
        return LabStatus(self.name, self.config.name, self.node_kind, [node])

    async def check(self) -> list[ListenerCheck]:
        self.calls.append("check")
        return [ListenerCheck("edge", "dns", LISTENER, False, "the fake says no")]

    def exec_argv(self, node: str) -> list[str]:
        return []

    def exec_env(self) -> dict[str, str] | None:
        return None

    def edgesim_argv(self, node: str) -> list[str]:
        self.calls.append(f"edgesim in {node}")
        return [sys.executable, "-m", "simulator"]

    def rules_path(self, firewall: str) -> Path:
        return Path(f"/fake/{firewall}.nft")

    def load_rules(self, firewall: str, path: Path | None = None) -> LoadResult:
        self.calls.append(f"load {firewall} {path}")
        return LoadResult(firewall, path or self.rules_path(firewall))

    def our_firewalls(self) -> tuple[str, ...]:
        return tuple(fw.id for fw in self.config.topology.lab_firewalls)

    def firewall_node(self, firewall: str) -> FirewallNode:
        raise LabError(f"the fake's {firewall} cannot be traced")

    async def vantage(self) -> Vantage:
        self.calls.append("vantage")
        return Vantage(self.name, LabPki(self.config.certs_dir), {})

    def prepare_host(self, host: Host) -> None:
        return None


LISTENER = ListenerInfo("198.51.100.10:53/udp", "access", "dns", 53, "udp", "198.51.100.10", 53)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeRunner]]:
    runner_names()  # the shipped runners are registered first
    monkeypatch.setitem(runners_pkg._REGISTRY, "fake", FakeRunner)
    FakeRunner.calls.clear()
    yield FakeRunner


def test_the_fake_runner_satisfies_the_interface(fake: type[FakeRunner]) -> None:
    runner: Runner = get_runner("fake", LabConfig(_topology()))
    assert isinstance(runner, FakeRunner) and runner_names(persistent=True)[-1] == "fake"


def test_the_cli_lists_and_uses_a_new_runner(fake: type[FakeRunner], lab_pki: LabPki) -> None:
    run = CliRunner().invoke
    env = {"COLUMNS": "200"}
    assert "fake     a runner only the tests register" in run(cli, ["lab", "--help"]).output
    assert "[netns|compose|swarm|fake]" in run(cli, ["lab", "down", "--help"], env=env).output

    up = run(cli, ["lab", "up", "--runner", "fake", "--check", "--name", "t1"], env=env)
    assert up.exit_code == 1, up.output  # the fake's listener does not answer
    assert "Lab t1 (fake runner)" in up.output and "sandbox" in up.output
    assert "198.51.100.10:53/udp (dns) the fake says no" in up.output
    assert "1 of 1 listeners did not answer" in up.output and "lab stopped" in up.output
    assert fake.calls == ["up t1", "check", "down t1"]

    fake.calls.clear()
    down = run(cli, ["lab", "down", "--runner", "fake"], env=env)
    assert down.exit_code == 0 and "removed 1 sandbox(s)" in down.output
    reload = run(cli, ["lab", "reload-firewall", "--runner", "fake"], env=env)
    assert reload.exit_code == 0 and "fw-external: loaded /fake/fw-external.nft" in reload.output
    assert fake.calls == ["down edgesim", "load fw-external None", "load fw-internal None"]

    # Probes run inside the source host through the runner's command line (here: this
    # namespace, where the lab's addresses are missing, so the probe says so).
    fake.calls.clear()
    certs = str(lab_pki.directory)
    probe = run(cli, ["probe", "--runner", "fake", "--row", "neg-inet-sip-5060",
                      "--format", "json", "--certs", certs, "--timeout", "1"])  # fmt: skip
    data = json.loads(probe.output)
    (result,) = data["results"]
    assert result["runner"] == "fake" and "cannot bind the source address" in result["reason"]
    # A firewall that cannot be traced is said, not hidden.
    assert data["notes"] == [
        "fw-external not traced: the fake's fw-external cannot be traced",
        "fw-internal not traced: the fake's fw-internal cannot be traced",
    ]
    assert fake.calls == ["require_up", "edgesim in fabrikam"]

    # Scenarios get their vantage from the runner.
    fake.calls.clear()
    scenario = run(cli, ["scenario", "run", "partner-discovery", "--runner", "fake",
                         "--format", "json", "--certs", certs])  # fmt: skip
    assert json.loads(scenario.output)["runner"] == "fake"
    assert fake.calls == ["require_up", "vantage"]
