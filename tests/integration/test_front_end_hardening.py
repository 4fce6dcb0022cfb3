"""Issue 12: the Front End emulator trusts only what the Edge vouches for.

It follows no Route entries that came from the internet (through the Edge), never tells a caller
why it could not reach a next hop (an internal port-scan oracle), and gives relay credentials
(MRAS) only to the sender the Edge verified or who registered on that very connection.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from simulator.lab.topology import Topology
from simulator.media.mras import credentials_request_body
from simulator.pki import LabPki
from simulator.sip.emulators.mras import CONTENT_TYPE
from tests.siplab import lab_up
from tests.siplab import sip_topology as build_topology


@pytest.fixture(scope="module")
def sip_topology(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    return build_topology(tmp_path_factory.mktemp("fe-hardening"), octet=219)


async def _listener(address: str) -> tuple[asyncio.Server, list[bool], int]:
    """A TCP listener inside the corporate zone that records whether anyone connected."""
    seen: list[bool] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(True)
        writer.close()

    server = await asyncio.start_server(on_connect, address, 0)
    return server, seen, server.sockets[0].getsockname()[1]


async def test_route_entries_from_the_internet_are_not_followed(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    async with lab_up(sip_topology, lab_pki) as lab, lab.ua("alice@contoso.lab", "remote") as alice:
        assert (await alice.register()).code == 200
        server, seen, port = await _listener(lab.addr("internal-user:lan"))
        async with server:
            inside = f"<sip:pc1.contoso.lab:{port};transport=tls;lr>"
            response = await alice.request(
                "MESSAGE", "sip:bob@contoso.lab", body=b"x", route=[inside]
            )
        assert response.code == 403
        assert "Route entries from outside" in (response.headers.get("Warning") or "")
        assert seen == []  # the Front End never dialled the address the internet named


async def test_an_unreachable_next_hop_gets_no_error_text(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    async with lab_up(sip_topology, lab_pki) as lab, lab.ua("bob@contoso.lab", "internal") as bob:
        assert (await bob.register()).code == 200
        with socket.socket() as probe:  # a port nobody listens on
            probe.bind((lab.addr("internal-user:lan"), 0))
            closed = probe.getsockname()[1]
        target = f"<sip:pc1.contoso.lab:{closed};transport=tls;lr>"
        response = await bob.request("MESSAGE", "sip:x@contoso.lab", body=b"x", route=[target])
        assert response.code == 504
        warning = response.headers.get("Warning") or ""
        assert warning.endswith('"Next hop unreachable"'), warning
        assert "refused" not in str(response.phrase).lower()


async def _ask_mras(ua, as_user: str):  # type: ignore[no-untyped-def]
    return await ua.request(
        "SERVICE",
        f"sip:{as_user}",
        body=credentials_request_body(as_user),
        content_type=CONTENT_TYPE,
        from_value=f"<sip:{as_user}>;tag=mras1",
    )


async def test_mras_gives_credentials_only_to_the_authenticated_sender(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    async with (
        lab_up(sip_topology, lab_pki) as lab,
        lab.ua("alice@contoso.lab", "remote") as alice,
        lab.ua("bob@contoso.lab", "internal") as bob,
        lab.ua("alice@contoso.lab", "internal") as stranger,
    ):
        assert (await alice.register()).code == 200
        assert (await bob.register()).code == 200
        await stranger.connect()
        # through the Edge: alice may ask for herself, not in bob's name
        assert (await _ask_mras(alice, "alice@contoso.lab")).code == 200
        assert (await _ask_mras(alice, "bob@contoso.lab")).code == 403
        # inside: bob registered on his connection; another connection may not ask as bob
        assert (await _ask_mras(bob, "bob@contoso.lab")).code == 200
        refused = await _ask_mras(stranger, "bob@contoso.lab")
        assert refused.code == 403
        assert "authenticated" in (refused.headers.get("Warning") or "")
