"""The shipped SIP and XMPP scenarios pass on an embedded lab, and their ladders show the hops.

Each test starts the hosts a scenario needs with :class:`LocalLab` on an isolated copy of the
topology (addresses 10.217.x.y, loopback 127.217.x.y) and runs the scenario as
``edgesim scenario run`` does (:func:`run_one`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from simulator.lab.runners.local import LocalLab
from simulator.lab.topology import Topology
from simulator.pki import LabPki
from simulator.scenario.ladder import Ladder, render_text
from simulator.scenario.run import ScenarioResult, discover, run_one, select
from tests.siplab import sip_topology

ROOT = Path(__file__).resolve().parents[2]
SIP_HOSTS = ["dns-int", "dns-ext", "edge", "fe", "fabrikam", "pic"]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the lab binds ports 443, 5061 and 53 on loopback (needs root)"
)


@pytest.fixture(scope="module")
def topology217(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    return sip_topology(tmp_path_factory.mktemp("scen-im"), octet=217)


async def run_shipped(
    name: str, topology: Topology, pki: LabPki, hosts: list[str] | None = None
) -> tuple[ScenarioResult, Ladder]:
    scenarios, broken = discover(ROOT / "scenarios")
    assert broken == []
    (item,) = select(scenarios, (name,))
    async with LocalLab(topology, pki.directory, hosts=hosts or SIP_HOSTS):
        result = await run_one(item, topology, "local", pki)
    ladder = result.ladder(topology, "local")
    assert result.status == "passed", (result.step, result.reason, render_text(ladder))
    return result, ladder


def arrows(ladder: Ladder) -> list[tuple[str, str, str, str]]:
    """(from column, to column, label, event) of every message arrow."""
    return [
        (ladder.columns[a.src].id, ladder.columns[a.dst].id, a.label, a.event)
        for a in ladder.arrows
        if a.event != "note"
    ]


async def test_remote_user_im(topology217: Topology, lab_pki: LabPki) -> None:
    _result, ladder = await run_shipped("remote-user-im", topology217, lab_pki)
    print(render_text(ladder))
    assert 0


async def test_xmpp(topology217: Topology, lab_pki: LabPki) -> None:
    _result, ladder = await run_shipped("xmpp-chat", topology217, lab_pki, SIP_HOSTS + ["jabber"])
    print(render_text(ladder))
    assert 0


async def test_refused(topology217: Topology, lab_pki: LabPki) -> None:
    _result, ladder = await run_shipped("refused-partners", topology217, lab_pki)
    print(render_text(ladder))
    assert 0


async def test_presence(topology217: Topology, lab_pki: LabPki) -> None:
    _result, ladder = await run_shipped("presence", topology217, lab_pki)
    print(render_text(ladder))
    assert 0

async def test_fed(topology217: Topology, lab_pki: LabPki) -> None:
    _result, ladder = await run_shipped("federation-im", topology217, lab_pki)
    print(render_text(ladder))
    assert 0

async def test_pic(topology217: Topology, lab_pki: LabPki) -> None:
    _result, ladder = await run_shipped("pic-im", topology217, lab_pki)
    print(render_text(ladder))
    assert 0
