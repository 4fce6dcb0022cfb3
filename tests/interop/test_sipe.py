"""SIPE, a real Lync-dialect client, signs in through the Edge with [MS-SIPAE] NTLM.

The shipped ``sipe-sign-in`` scenario on an embedded lab (the netns lab runs it too, in
``tests/scenario/test_av_scenarios.py``): SIPE through BitlBee, DNS SRV discovery, TLS 443,
NTLM; the contact list, the batch presence subscription and the contacts' presence (office,
fabrikam, public IM, jabber.lab), alice's presence seen by them, and IM both ways with each.
The ladder must show the three-REGISTER NTLM exchange and the signed messages.
"""

from __future__ import annotations

import pytest

from simulator.lab.topology import Topology
from simulator.pki import LabPki
from simulator.scenario import sipe
from tests.scenario.test_shipped_scenarios_im import run_shipped
from tests.siplab import SIP_HOSTS, sip_topology

pytestmark = [
    pytest.mark.interop,
    pytest.mark.root,
    pytest.mark.skipif(sipe.missing() is not None, reason=str(sipe.missing())),
]


@pytest.fixture(scope="module")
def topology218(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    return sip_topology(tmp_path_factory.mktemp("sipe"), octet=218)


async def test_sipe_signs_in_with_ntlm_and_chats(topology218: Topology, lab_pki: LabPki) -> None:
    result, _ = await run_shipped("sipe-sign-in", topology218, lab_pki, [*SIP_HOSTS, "jabber"])
    sip = [e for e in result.events if e.protocol == "sip" and e.event == "received"]
    edge_in = [e for e in sip if e.dst.endswith(":443")]
    registers = [e for e in edge_in if e.summary.startswith("REGISTER")]
    assert len(registers) >= 3, [e.summary for e in edge_in]
    first, second, third = (e.detail for e in registers[:3])
    assert "Authorization" not in first
    assert 'NTLM qop="auth"' in second and 'gssapi-data=""' in second
    assert 'gssapi-data="TlRMTVNTUAAD' in third  # the AUTHENTICATE_MESSAGE
    answers = [  # what the Edge sent SIPE
        e
        for e in result.events
        if e.protocol == "sip" and e.event == "sent" and e.src.endswith(":443")
    ]
    challenges = [e.detail for e in answers if e.summary.startswith("401")]
    assert any('WWW-Authenticate: NTLM realm="SIP Communications Service"' in c for c in challenges)
    assert any('gssapi-data="TlRMTVNTUAAC' in c for c in challenges)  # the CHALLENGE_MESSAGE
    # from then on both sides sign: SIPE's requests and the Front End's messages to SIPE
    signed_out = [e for e in edge_in if 'response="01000000' in e.detail]
    signed_in = [e for e in answers if 'Authentication-Info: NTLM rspauth="01000000' in e.detail]
    assert any(e.summary.startswith("MESSAGE") for e in signed_out)
    assert any(e.summary.startswith("MESSAGE") for e in signed_in)
    # [MS-PRES] enhanced presence: the batch subscription went in, the contacts' state came back
    assert any("msrtc-adrl-categorylist+xml" in e.detail for e in edge_in)
    assert any("application/msrtc-event-categories+xml" in e.detail for e in answers)
