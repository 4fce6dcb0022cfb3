"""MRAS end to end: a Lync user asks the Front End for media relay credentials over SIP, the
Front End passes the request to the Edge's A/V Authentication service over SIP/MTLS 5062 (the
secret stays in the Edge), and the A/V Edge accepts the credentials for a real allocation. An
unreachable 5062 gives the user 504 with ms-diagnostics 1046 naming the hop; 5062 answers the
Front End's servers only."""

from __future__ import annotations

import pytest
from sipmessage import Response

from simulator.lab.topology import Topology
from simulator.media.aio import AsyncTurnClient
from simulator.media.auth import LongTermCredentials
from simulator.media.avauth import AvAuthServer
from simulator.media.errors import RequestRefused
from simulator.media.mras import credentials_request_body, parse_credentials_response
from simulator.media.service import AvEdgeService
from simulator.pki import LabPki
from simulator.sip.emulators.mras import CONTENT_TYPE
from simulator.sip.emulators.ua import UserAgent
from simulator.tls import client_context
from tests.siplab import Lab, lab_up
from tests.siplab import sip_topology as build_topology


@pytest.fixture(scope="module")
def sip_topology(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    return build_topology(tmp_path_factory.mktemp("mras"), octet=215)


def _auth(lab: Lab) -> AvAuthServer:
    """The Edge's A/V Authentication service of this lab."""
    for status in lab.lab.statuses:
        if status.service == "av-edge":
            assert isinstance(status.instance, AvEdgeService)
            (auth,) = status.instance.auth
            return auth
    raise AssertionError("no av-edge")


async def _ask(ua: UserAgent, identity: str) -> Response:
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
        assert _auth(lab).answered == 1  # the Edge answered it, over 5062
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
        assert intranet.udp_port is not None
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


async def test_an_unreachable_a_v_authentication_service_gives_504_1046_naming_the_hop(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    async with lab_up(sip_topology, lab_pki) as lab, lab.ua("bob@contoso.lab", "internal") as bob:
        assert (await bob.register()).code == 200
        await _auth(lab).stop()  # nothing listens on 5062 any more: connection refused
        response = await _ask(bob, "bob@contoso.lab")
        assert (response.code, response.phrase) == (504, "Server Time-out")
        diagnostics = response.headers.get("ms-diagnostics") or ""
        assert diagnostics.startswith('1046;source="fe.contoso.lab";reason="Failed to connect')
        assert 'PeerServer="edge-int.contoso.lab:5062"' in diagnostics
        assert "the A/V Authentication service edge-int.contoso.lab:5062 is unreachable" in (
            response.headers.get("Warning") or ""
        )


async def test_5062_gives_credentials_to_front_end_servers_only(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    """The Edge's own internal certificate chains to the trusted CA, but names no Front End."""
    async with lab_up(sip_topology, lab_pki) as lab:
        context = client_context([lab_pki.trust_bundle], cert=lab_pki.host_cert("edge", "internal"))
        ua = UserAgent(
            "sip:bob@contoso.lab",
            host=lab.addr("edge:internal"),
            port=5062,
            context=context,
            server_name="edge-int.contoso.lab",
        )
        async with ua:
            assert (await ua.options("sip:edge-int.contoso.lab:5062")).code == 200
            response = await _ask(ua, "bob@contoso.lab")
        assert response.code == 403
        warning = response.headers.get("Warning") or ""
        assert "edge-int.contoso.lab is not a trusted server of this topology" in warning
        assert _auth(lab).answered == 0


@pytest.mark.parametrize(
    "cert", [None, ("fabrikam", "fabrikam")], ids=["no certificate", "a partner's certificate"]
)
async def test_5062_needs_a_certificate_of_the_internal_ca(
    sip_topology: Topology, lab_pki: LabPki, cert: tuple[str, str] | None
) -> None:
    async with lab_up(sip_topology, lab_pki) as lab:
        paths = lab_pki.host_cert(*cert) if cert else None
        ua = UserAgent(
            "sip:bob@contoso.lab",
            host=lab.addr("edge:internal"),
            port=5062,
            context=client_context([lab_pki.trust_bundle], cert=paths),
            server_name="edge-int.contoso.lab",
        )
        with pytest.raises((OSError, ConnectionError)):
            async with ua:
                await ua.options("sip:edge-int.contoso.lab:5062", timeout=3)
