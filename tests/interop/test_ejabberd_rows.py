"""ejabberd in the emulator's place: every XMPP row of the matrix and every scenario that talks
to jabber.lab gives the same verdict with either (the issue's "Done when").

Two runs of the same embedded lab: jabber.lab played by the emulator, then by Debian's ejabberd
on the jabber host's address and ports (the lab's users registered with the lab's passwords).
Each run probes the XMPP rows and plays the xmpp-chat and sipe-sign-in scenarios (SIPE where
it can run: its chats and presence with romeo cross 23456 and 5269).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.lab.runners.local import LocalLab
from simulator.lab.topology import Topology
from simulator.matrix import load_matrix
from simulator.pki import LabPki, user_password
from simulator.probes.run import JobBuilder, LocalExecutor, probe_matrix
from simulator.scenario import sipe
from simulator.scenario.run import discover, run_one, select
from simulator.xmpp import ejabberd as ejabberd_setup
from simulator.xmpp.ejabberd import EjabberdSetup
from tests.interop.ejabberd_helpers import ejabberd, free_port, lab_hosts
from tests.siplab import SIP_HOSTS, sip_topology

pytestmark = [
    pytest.mark.interop,
    pytest.mark.root,
    pytest.mark.skipif(ejabberd_setup.missing() is not None, reason=str(ejabberd_setup.missing())),
]

ROOT = Path(__file__).resolve().parents[2]
XMPP_ROWS = [row.id for row in load_matrix().rows if "xmpp" in row.id]
SCENARIOS = ["xmpp-chat"] + (["sipe-sign-in"] if sipe.missing() is None else [])


@pytest.fixture(scope="module")
def topology220(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    return sip_topology(tmp_path_factory.mktemp("ejabberd-rows"), octet=220)


@pytest.fixture
def work() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="edgesim-ejabberd-rows-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


async def verdicts(topology: Topology, pki: LabPki) -> tuple[dict[str, str], dict[str, str]]:
    """(row -> verdict, scenario -> status and why) on the lab that is up."""
    run = await probe_matrix(
        topology, LocalExecutor(), JobBuilder(topology, pki, timeout=5.0), rows=XMPP_ROWS
    )
    rows = {r.row_id: f"{r.verdict.value}" for r in run.results}
    scenarios, broken = discover(ROOT / "scenarios")
    assert broken == []
    played = {}
    for item in select(scenarios, tuple(SCENARIOS)):
        result = await run_one(item, topology, "local", pki)
        played[item.name] = f"{result.status} {result.step or ''} {result.reason or ''}".strip()
    return rows, played


async def test_ejabberd_gives_the_emulators_verdicts(
    topology220: Topology, lab_pki: LabPki, work: Path
) -> None:
    async with LocalLab(topology220, lab_pki.directory, hosts=[*SIP_HOSTS, "jabber"]):
        emulator_rows, emulator_scenarios = await verdicts(topology220, lab_pki)

    jabber = topology220.interface("jabber:wan")
    dns_address = str(topology220.host("dns-ext").interfaces[0].loopback())
    setup = EjabberdSetup(
        work / "ejabberd",
        str(jabber.loopback()),
        5222,
        5269,
        (dns_address, 53),
        free_port(),
        lab_hosts(topology220),
        dialback=True,
    )
    users = {
        name: user_password(topology220, f"{name}@jabber.lab", lab_pki.directory) or ""
        for name in ("romeo", "juliet")
    }
    async with (
        LocalLab(topology220, lab_pki.directory, hosts=SIP_HOSTS),
        ejabberd(setup, lab_pki, users),
    ):
        ejabberd_rows, ejabberd_scenarios = await verdicts(topology220, lab_pki)

    assert ejabberd_rows == emulator_rows
    assert ejabberd_scenarios == emulator_scenarios
    assert all(v == "passed" for v in emulator_scenarios.values()), emulator_scenarios
    for row in ("xmpp-in-5269", "xmpp-out-5269", "xmpp-gw-23456"):
        assert emulator_rows[row] == "passed", emulator_rows
