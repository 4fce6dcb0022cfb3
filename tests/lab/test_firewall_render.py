"""The shipped nftables files are the renderer's output, valid for nft, and say what they must."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click import Group
from click.testing import CliRunner

from simulator.cli._common import Obj
from simulator.cli.firewall import firewall
from simulator.firewall.render import plan_firewall, render_all, render_broken_external
from simulator.lab.topology import Topology
from simulator.matrix import Expectation, load_matrix, resolve

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [ROOT / "lab/firewall/external.nft", ROOT / "lab/firewall/internal.nft"]
BROKEN = ROOT / "lab/firewall/broken/external.nft"
RENDER_HINT = "run `edgesim firewall render --broken-example` and commit lab/firewall/"


def test_shipped_rules_are_the_rendered_rules(topology: Topology) -> None:
    rendered = render_all(topology)
    assert sorted(rendered) == sorted(Path(p).relative_to(ROOT) for p in SHIPPED)
    for path, text in rendered.items():
        assert (ROOT / path).read_text() == text, f"{path} drifted from the matrix: {RENDER_HINT}"


def test_shipped_broken_example_is_rendered(topology: Topology) -> None:
    assert BROKEN.read_text() == render_broken_external(topology), RENDER_HINT


def test_every_open_row_crossing_a_firewall_has_a_rule_and_no_negative_row_does(
    topology: Topology,
) -> None:
    matrix = load_matrix()
    accepted = {
        (r.row.id, r.source, r.destination)
        for fw in topology.firewalls
        for r in plan_firewall(fw, topology, matrix).accepted
    }
    crossing = set()
    for row in matrix.rows:
        res = resolve(row, topology)
        for s in res.sources:
            for d in res.destinations:
                if s.zone != d.zone and topology.firewall_between(s.zone, d.zone):
                    crossing.add((row.id, s.address, d.address, row.expect))
    assert {(i, s, d) for i, s, d, e in crossing if e is Expectation.OPEN} == accepted
    assert any(e is Expectation.BLOCKED for *_, e in crossing)
    negative = {r.id for r in matrix.rows if r.expect is Expectation.BLOCKED}
    assert not {i for i, *_ in accepted} & negative


def test_rule_text_matches_ports_and_side(topology: Topology) -> None:
    text = render_all(topology)[Path("lab/firewall/external.nft")]
    assert "policy drop;" in text
    assert "ct state established,related accept" in text
    # The relay range is the *source* port of egress media rows.
    assert "ip saddr 198.51.100.11 ip daddr 203.0.113.50 udp sport 50000-59999 accept" in text
    assert "ip saddr 203.0.113.50 ip daddr 198.51.100.11 udp dport 3478 accept" in text
    assert "# msn-stun-in-3478:" in text
    assert "23456" not in text.split("Must stay blocked")[0]


def test_cli_render_writes_into_out_dir(tmp_path: Path, topology: Topology) -> None:
    group = Group(commands={"firewall": firewall})
    result = CliRunner().invoke(
        group,
        ["firewall", "render", "--out", str(tmp_path), "--broken-example"],
        obj=Obj(topology_path=None, _topology=topology),
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "external.nft").read_text() == SHIPPED[0].read_text()
    assert (tmp_path / "internal.nft").read_text() == SHIPPED[1].read_text()
    assert (tmp_path / "broken/external.nft").read_text() == BROKEN.read_text()


@pytest.mark.root
@pytest.mark.parametrize("path", [*SHIPPED, BROKEN], ids=lambda p: str(Path(p).relative_to(ROOT)))
def test_nft_accepts_the_files(path: Path) -> None:
    if shutil.which("nft") is None:
        pytest.skip("nft (Debian nftables) is not installed")
    if os.geteuid() != 0:
        pytest.skip("nft -c needs root (CAP_NET_ADMIN)")
    # Check in a throw-away network namespace, so nothing of this host's ruleset is touched.
    if shutil.which("unshare") is not None:
        cmd = ["unshare", "--net", "nft", "-c", "-f", str(path)]
    else:
        cmd = ["nft", "-c", "-f", str(path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
