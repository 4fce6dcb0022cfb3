"""`edgesim lab up/status/down --runner netns`: the lab's services in namespaces, and teardown."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from simulator.cli import cli
from simulator.lab.runners.base import LabConfig, LabName
from simulator.lab.runners.netns import NetnsRunner, lab_namespaces, run
from simulator.lab.topology import Topology
from simulator.matrix import load_matrix, resolve
from tests.lab.lab_helpers import skip_unless_netns

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]

DNS_QUERY = """
import asyncio, json, sys
from simulator.dns.resolver import LabResolver, ResolutionError
async def main():
    resolver = LabResolver((sys.argv[1], 53), timeout=float(sys.argv[3]))
    try:
        targets = await resolver.srv(sys.argv[2])
        print(json.dumps({"ok": True, "targets": [[t.target, t.port] for t in targets]}))
    except ResolutionError as exc:
        print(json.dumps({"ok": False, "reason": str(exc)}))
asyncio.run(main())
"""


def ns_name(node: str) -> str:
    return LabName().namespace(node)


def dns_query_from(host: str, server: str, name: str, timeout: float = 2.0) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            ns_name(host),
            sys.executable,
            "-c",
            DNS_QUERY,
            server,
            name,
            str(timeout),
        ],
        capture_output=True,
        text=True,
        timeout=timeout + 20,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def root_links() -> set[str]:
    """Links of the root namespace, less Docker's own (a compose lab may come and go meanwhile)."""
    links = json.loads(run(["ip", "-j", "link", "show"]))
    docker = {item["ifname"] for item in links if item["ifname"].startswith(("docker", "br-"))}
    return {
        item["ifname"]
        for item in links
        if item["ifname"] not in docker and item.get("master") not in docker
    }


def test_up_serves_dns_across_the_firewall_and_down_leaves_nothing(
    topology: Topology, tmp_path: Path
) -> None:
    skip_unless_netns()
    links_before = root_links()
    args = ["lab"]
    opts = ["--runner", "netns", "--certs", str(tmp_path / "certs"), "--state-dir", str(tmp_path)]
    runner = CliRunner()
    try:
        result = runner.invoke(cli, [*args, "up", *opts], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert set(lab_namespaces()) >= {ns_name(h.id) for h in topology.hosts}

        # The matrix row: the Edge's access interface asks the public lab DNS, across fw-external.
        row = resolve(load_matrix().row("dns-edge-ext"), topology)
        src, dst = row.sources[0], row.destinations[0]
        assert src.zone != dst.zone and topology.firewall_between(src.zone, dst.zone)
        answer = dns_query_from(src.host, dst.address, "_sipfederationtls._tcp.fabrikam.lab")
        assert answer == {"ok": True, "targets": [["sip.fabrikam.lab", 5061]]}

        # No row lets the internet ask the internal DNS: the firewall drops the query.
        internal_dns = topology.hosts_with_role("dns-internal")[0].interfaces[0]
        answer = dns_query_from("fabrikam", str(internal_dns.address), "_sip._tls.contoso.lab", 1.0)
        assert answer["ok"] is False and "timed out" in str(answer["reason"])

        status = runner.invoke(cli, [*args, "status", *opts], catch_exceptions=False)
        assert status.exit_code == 0, status.output
        assert "answers" in status.output and "routing" in status.output

        # The user's loop: load other rules, see which rows change, load the shipped ones again.
        stun_rows = ["--row", "msn-stun-in-3478", "--row", "client-in-443"]
        flows = runner.invoke(cli, [*args, "flows", "--json", *stun_rows])
        assert flows.exit_code == 0, flows.output
        broken = f"fw-external={ROOT / 'lab/firewall/broken/external.nft'}"
        reload = runner.invoke(cli, [*args, "reload-firewall", "--rules", broken, *opts[2:]])
        assert reload.exit_code == 0, reload.output
        flows = runner.invoke(cli, [*args, "flows", "--json", *stun_rows])
        assert flows.exit_code == 1
        verdicts = {r["row"]: r["got"] for r in json.loads(flows.output)["rows"]}
        assert verdicts == {"msn-stun-in-3478": "blocked", "client-in-443": "open"}
        reload = runner.invoke(cli, [*args, "reload-firewall", *opts[2:]])
        assert reload.exit_code == 0 and "lab/firewall/external.nft" in reload.output
        flows = runner.invoke(cli, [*args, "flows", *stun_rows])
        assert flows.exit_code == 0, flows.output
    finally:
        down = runner.invoke(cli, [*args, "down", *opts], catch_exceptions=False)
    assert down.exit_code == 0, down.output
    assert lab_namespaces() == []
    assert root_links() <= links_before
    assert not list(tmp_path.glob("*.pid"))
    again = runner.invoke(cli, [*args, "down", *opts], catch_exceptions=False)
    assert again.exit_code == 0 and "nothing to remove" in again.output


def test_down_after_a_crash_finds_leftovers_by_name(topology: Topology, tmp_path: Path) -> None:
    skip_unless_netns()
    config = LabConfig(topology, certs_dir=tmp_path / "certs", state_dir=tmp_path / "first")
    procs = NetnsRunner(config).bring_up()
    assert procs, "the dns service runs in its namespaces"
    # The controller "crashes": its state is lost, the services and namespaces stay behind.
    for path in (tmp_path / "first").iterdir():
        path.unlink()
    assert all(_alive(p.pid) for p in procs)

    fresh = NetnsRunner(LabConfig(topology, state_dir=tmp_path / "second"))
    deleted = fresh.teardown()
    assert ns_name("edge") in deleted and lab_namespaces() == []
    assert not any(_alive(p.pid) for p in procs)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_up_refuses_to_build_over_an_existing_lab(topology: Topology, tmp_path: Path) -> None:
    skip_unless_netns()
    lab = NetnsRunner(LabConfig(topology, certs_dir=tmp_path / "certs", state_dir=tmp_path))
    lab.build_network()
    try:
        with pytest.raises(Exception, match="already exist"):
            NetnsRunner(LabConfig(topology, state_dir=tmp_path)).build_network()
        assert set(lab_namespaces()) >= {ns_name(h.id) for h in topology.hosts}
    finally:
        lab.teardown()


def test_only_the_firewalls_forward(topology: Topology, tmp_path: Path) -> None:
    """A host never routes between its interfaces (the Edge sits in both perimeter zones: a
    forwarding Edge would pass packets around the firewalls). A new namespace copies
    ``ip_forward`` from the machine's, which Docker sets to 1."""
    skip_unless_netns()
    lab = NetnsRunner(LabConfig(topology, certs_dir=tmp_path / "certs", state_dir=tmp_path))
    lab.build_network()
    try:
        forwarding = {
            node: run([*lab.exec_argv(node), "sysctl", "-n", "net.ipv4.ip_forward"]).strip()
            for node in [*(h.id for h in topology.hosts), *(f.id for f in topology.lab_firewalls)]
        }
    finally:
        lab.teardown()
    assert {node for node, value in forwarding.items() if value == "1"} == {
        f.id for f in topology.lab_firewalls
    }
    assert set(forwarding.values()) == {"0", "1"}
