"""The shipped SIP and XMPP scenarios pass on an embedded lab, and their ladders show the hops.

Each test starts the hosts a scenario needs with :class:`LocalLab` on an isolated copy of the
topology (relocated to loopback 127.217.x.y) and runs the scenario as
``edgesim scenario run`` does (:func:`run_one`).
"""

from __future__ import annotations

import os
import subprocess
import sys
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

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0, reason="the lab binds ports 443, 5061 and 53 on loopback (needs root)"
    ),
]


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


def hop_order(found: list[tuple[str, str, str, str]], *hops: tuple[str, str, str]) -> None:
    """Each hop (from, to, label) is in the ladder, in this order."""
    at = -1
    for hop in hops:
        matches = [
            i for i, (src, dst, label, _) in enumerate(found) if (src, dst, label) == hop and i > at
        ]
        assert matches, f"no arrow {hop} after arrow {at} in {found}"
        at = matches[0]


async def test_remote_user_im_passes_and_its_ladder_crosses_the_edge(
    topology217: Topology, lab_pki: LabPki
) -> None:
    result, ladder = await run_shipped("remote-user-im", topology217, lab_pki)
    ids = [c.id for c in ladder.columns]
    assert ids.index("remote-user") < ids.index("fw-external") < ids.index("edge")
    assert ids.index("edge") < ids.index("fw-internal") < ids.index("fe")
    found = arrows(ladder)
    hop_order(
        found,
        ("remote-user", "edge", "REGISTER sip:contoso.lab"),
        ("edge", "fe", "REGISTER sip:contoso.lab"),
        ("fe", "edge", "200 OK"),
        ("edge", "remote-user", "200 OK"),
    )
    to_bob = "MESSAGE sip:bob@contoso.lab"
    hop_order(
        found,
        ("remote-user", "edge", to_bob),
        ("edge", "fe", to_bob),
        ("fe", "internal-user", to_bob),
        ("internal-user", "fe", "200 OK"),
        ("fe", "edge", "200 OK"),
        ("edge", "remote-user", "200 OK"),
    )
    to_alice = "MESSAGE sip:alice@contoso.lab"
    hop_order(
        found,
        ("internal-user", "fe", to_alice),
        ("fe", "edge", to_alice),
        ("edge", "remote-user", to_alice),
        ("remote-user", "edge", "200 OK"),
    )
    # every SIP arrow carries its message and its Call-ID
    sip = [e for e in result.events if e.protocol == "sip"]
    assert all(e.flow for e in sip) and all(e.summary in e.detail.split("\r\n", 1)[0] for e in sip)


async def test_federation_im_goes_out_and_back_over_5061(
    topology217: Topology, lab_pki: LabPki
) -> None:
    _, ladder = await run_shipped("federation-im", topology217, lab_pki)
    found = arrows(ladder)
    to_carol, to_bob = "MESSAGE sip:carol@fabrikam.lab", "MESSAGE sip:bob@contoso.lab"
    hop_order(
        found,
        ("internal-user", "fe", to_carol),
        ("fe", "edge", to_carol),
        ("edge", "dns-ext", "query A sip.fabrikam.lab"),
        ("edge", "fabrikam", to_carol),
        ("fabrikam", "edge", "200 OK"),
        ("edge", "fe", "200 OK"),
        ("fe", "internal-user", "200 OK"),
        ("fabrikam", "edge", to_bob),
        ("edge", "fe", to_bob),
        ("fe", "internal-user", to_bob),
    )


async def test_pic_im_reaches_the_provider_and_back(topology217: Topology, lab_pki: LabPki) -> None:
    _, ladder = await run_shipped("pic-im", topology217, lab_pki)
    to_dave, to_alice = "MESSAGE sip:dave@pic.lab", "MESSAGE sip:alice@contoso.lab"
    hop_order(
        arrows(ladder),
        ("remote-user", "edge", to_dave),
        ("edge", "pic", to_dave),
        ("pic", "edge", "200 OK"),
        ("edge", "remote-user", "200 OK"),
        ("pic", "edge", to_alice),
        ("edge", "remote-user", to_alice),
    )


async def test_refused_partners_shows_each_refusal_and_why(
    topology217: Topology, lab_pki: LabPki
) -> None:
    _, ladder = await run_shipped("refused-partners", topology217, lab_pki)
    found = arrows(ladder)
    hop_order(
        found,
        ("internal-user", "fe", "MESSAGE sip:someone@blocked.lab"),
        ("fe", "edge", "MESSAGE sip:someone@blocked.lab"),
        ("edge", "fe", "403 Forbidden"),
        ("fe", "internal-user", "403 Forbidden"),
    )
    tls = [f for f in found if f[2].startswith("TLS handshake refused")]
    assert [(src, dst, label) for src, dst, label, _ in tls] == [
        (
            "fabrikam",
            "edge",
            "TLS handshake refused: the certificate does not chain to a trusted CA "
            "(unable to get local issuer certificate)",
        )
    ]
    # the untrusted partner got no further than the handshake: no SIP answer came back to it
    after = found[found.index(tls[0]) + 1 :]
    first_403 = next(i for i, f in enumerate(after) if f[:2] == ("edge", "fabrikam"))
    assert after[first_403][2] == "403 Forbidden"  # that 403 is the misnamed certificate's
    messages_in = [f for f in after[:first_403] if f[:2] == ("edge", "fe")]
    assert messages_in == []  # nothing from either impostor reached the Front End
    warning = next(
        a.detail
        for a in ladder.arrows
        if a.label == "403 Forbidden" and "fabrikam" in ladder.columns[a.dst].id
    )
    assert "does not match the Edge FQDN of fabrikam.lab" in warning


async def test_presence_notify_crosses_federation_with_the_state(
    topology217: Topology, lab_pki: LabPki
) -> None:
    _, ladder = await run_shipped("presence", topology217, lab_pki)
    found = arrows(ladder)
    hop_order(
        found,
        ("fabrikam", "edge", "SUBSCRIBE sip:bob@contoso.lab"),
        ("edge", "fe", "SUBSCRIBE sip:bob@contoso.lab"),
        ("fe", "edge", "200 OK"),
        ("edge", "fabrikam", "200 OK"),
    )
    notifies = [
        a.detail
        for a in ladder.arrows
        if a.label.startswith("NOTIFY")
        and (ladder.columns[a.src].id, ladder.columns[a.dst].id) == ("edge", "fabrikam")
    ]
    assert len(notifies) == 2
    assert "<basic>open</basic>" in notifies[0] and "<basic>closed</basic>" in notifies[1]


async def test_xmpp_chat_crosses_5269_and_23456(topology217: Topology, lab_pki: LabPki) -> None:
    _, ladder = await run_shipped("xmpp-chat", topology217, lab_pki, [*SIP_HOSTS, "jabber"])
    found = arrows(ladder)
    out = "<message> alice@contoso.lab -> romeo@jabber.lab"
    hop_order(
        found,
        ("internal-user", "fe", "MESSAGE sip:romeo@jabber.lab"),
        ("fe", "edge", out),
        ("edge", "jabber", "stream open to jabber.lab"),
        ("edge", "jabber", "STARTTLS: TLS up with jabber.lab"),
        ("edge", "jabber", out),
    )
    back = "<message> romeo@jabber.lab/scenario -> alice@contoso.lab"
    hop_order(
        found,
        ("jabber", "edge", back),
        ("edge", "fe", back),
        ("fe", "internal-user", "MESSAGE sip:alice@contoso.lab"),
        ("internal-user", "fe", "200 OK"),
    )


def test_cli_runs_remote_user_im_and_prints_its_ladder(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "simulator", "scenario", "run", "remote-user-im", "--ladder",
         "--certs", str(tmp_path / "certs")],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env, check=False,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "remote-user-im" in out and "passed" in out
    assert "== alice sends bob a message from home" in out
    header = next(line for line in out.splitlines() if "[fw-external]" in line)
    assert header.index("remote-user") < header.index("[fw-external]") < header.index("edge")
    assert "MESSAGE sip:bob@contoso.lab" in out and "200 OK" in out
