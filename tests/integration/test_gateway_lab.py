"""The Front End's XMPP gateway end to end: a jabber.lab user and a SIP user on the Front End
chat both ways through the Edge's 5269 and 23456, as in Lync XMPP federation."""

from __future__ import annotations

import asyncio

import pytest

from simulator.lab.topology import Topology
from simulator.pki import LabPki
from simulator.xmpp.harness import ChatClient
from tests.siplab import lab_up, next_incoming
from tests.siplab import sip_topology as build_topology

HOSTS = ["dns-int", "dns-ext", "edge", "fe", "jabber"]


@pytest.fixture(scope="module")
def topology216(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    return build_topology(tmp_path_factory.mktemp("gateway"), octet=216)


async def test_jabber_user_and_sip_user_chat_both_ways(
    topology216: Topology, lab_pki: LabPki
) -> None:
    jabber = str(topology216.interface("jabber:wan").loopback())
    async with (
        lab_up(topology216, lab_pki, hosts=HOSTS) as lab,
        lab.ua("alice@contoso.lab", "internal") as alice,
    ):
        gateway = next(s.instance for s in lab.lab.statuses if s.service == "xmpp-gateway")
        await asyncio.wait_for(gateway.connected.wait(), 10)  # the MTLS link to 23456
        assert (await alice.register()).code == 200
        romeo = ChatClient(
            "romeo@jabber.lab/pc", lab.password("romeo@jabber.lab") or "", lab_pki.trust_bundle
        )
        await romeo.login(jabber, 5222)
        try:
            romeo.send_message(mto="alice@contoso.lab", mbody="hi alice, from XMPP", mtype="chat")
            got = await next_incoming(alice)
            assert got.body == b"hi alice, from XMPP"  # type: ignore[attr-defined]
            assert "sip:romeo@jabber.lab" in got.headers["From"]  # type: ignore[attr-defined]

            answer = await alice.message("sip:romeo@jabber.lab", "hi romeo, from SIP")
            assert answer.code == 200
            frm, kind, body = await asyncio.wait_for(romeo.received.get(), 10)
            assert (frm.split("/")[0], kind, body) == (
                "alice@contoso.lab",
                "chat",
                "hi romeo, from SIP",
            )
        finally:
            romeo.disconnect()


async def test_xmpp_message_to_an_unregistered_sip_user_gets_a_stanza_error(
    topology216: Topology, lab_pki: LabPki
) -> None:
    jabber = str(topology216.interface("jabber:wan").loopback())
    async with lab_up(topology216, lab_pki, hosts=HOSTS) as lab:
        gateway = next(s.instance for s in lab.lab.statuses if s.service == "xmpp-gateway")
        await asyncio.wait_for(gateway.connected.wait(), 10)
        romeo = ChatClient(
            "romeo@jabber.lab/pc", lab.password("romeo@jabber.lab") or "", lab_pki.trust_bundle
        )
        errors: asyncio.Queue[object] = asyncio.Queue()
        romeo.add_event_handler("message_error", errors.put_nowait)
        await romeo.login(jabber, 5222)
        try:
            romeo.send_message(mto="bob@contoso.lab", mbody="anyone there?", mtype="chat")
            error = await asyncio.wait_for(errors.get(), 10)  # bob never signed in
            assert str(error["from"]) == "bob@contoso.lab"  # type: ignore[index]
            assert error["error"]["condition"] == "service-unavailable"  # type: ignore[index]
        finally:
            romeo.disconnect()
