"""MRAS end to end: a Lync user asks the Front End for media relay credentials over SIP, and
the A/V Edge accepts them for a real allocation (the two share only a secret)."""

from __future__ import annotations

import pytest

from simulator.lab.topology import Topology
from simulator.media.aio import AsyncTurnClient
from simulator.media.auth import LongTermCredentials
from simulator.media.errors import RequestRefused
from simulator.media.mras import credentials_request_body, parse_credentials_response
from simulator.pki import LabPki
from simulator.sip.emulators.mras import CONTENT_TYPE
from tests.siplab import lab_up
from tests.siplab import sip_topology as build_topology


@pytest.fixture(scope="module")
def sip_topology(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    return build_topology(tmp_path_factory.mktemp("mras"), octet=215)


async def _ask(ua, identity: str):
    return await ua.request(
        "SERVICE",
        f"sip:{identity}",
        body=credentials_request_body(identity),
        content_type=CONTENT_TYPE,
    )


async def test_credentials_from_the_front_end_open_an_allocation_on_the_edge(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    async with lab_up(sip_topology, lab_pki) as lab, lab.ua("bob@contoso.lab", "internal") as bob:
        assert (await bob.register()).code == 200
        response = await _ask(bob, "bob@contoso.lab")
        assert response.code == 200, response.phrase
        assert response.headers.get("Content-Type") == CONTENT_TYPE
        username, password, minutes, relays = parse_credentials_response(response.body)
        assert username.split(":", 1)[1] == "bob@contoso.lab" and minutes > 0
        by_location = {r.location: r for r in relays}
        assert by_location["internet"].host == "av.contoso.lab"
        assert by_location["internet"].udp_port == 3478
        intranet = by_location["intranet"]
        assert intranet.host == "edge-int.contoso.lab"

        relay = sip_topology.interface_by_fqdn(intranet.host)
        assert relay is not None
        server = (str(relay.loopback()), intranet.udp_port)
        creds = LongTermCredentials(username, password)
        async with await AsyncTurnClient.open(server, "udp", credentials=creds) as client:
            relayed = await client.allocate()
            assert 50000 <= relayed[1] <= 59999
            await client.release()
        # the same username with a password of our own is refused by the Edge
        guessed = LongTermCredentials(username, "guessed")
        async with await AsyncTurnClient.open(server, "udp", credentials=guessed) as client:
            with pytest.raises(RequestRefused) as refused:
                await client.allocate()
        assert refused.value.code == 401 and refused.value.authenticated


async def test_a_malformed_credentials_request_gets_400_with_the_reason(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    async with lab_up(sip_topology, lab_pki) as lab, lab.ua("bob@contoso.lab", "internal") as bob:
        await bob.register()
        response = await bob.request(
            "SERVICE", "sip:bob@contoso.lab", body=b"<not-mras/>", content_type=CONTENT_TYPE
        )
        assert response.code == 400
        assert response.phrase.startswith("Bad credentialsRequest: ")
