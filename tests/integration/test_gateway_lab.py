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


async def next_presence(ua: object, state: str, timeout: float = 10.0) -> None:
    """Wait for a NOTIFY whose PIDF basic status is ``state`` (open/closed)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        notify = await asyncio.wait_for(next_incoming(ua, "NOTIFY"), max(0.1, end - loop.time()))  # type: ignore[arg-type]
        if f"<basic>{state}</basic>".encode() in notify.body:  # type: ignore[attr-defined]
            return


async def until(seen: asyncio.Queue[tuple[str, str]], wanted: tuple[str, str]) -> None:
    """Presence events until ``wanted`` (an XMPP client may see the same state twice)."""
    while await asyncio.wait_for(seen.get(), 10) != wanted:
        pass


async def test_a_jabber_user_and_a_sip_user_see_each_others_presence_change(
    topology216: Topology, lab_pki: LabPki
) -> None:
    """RFC 6121 presence through 5269 and 23456: alice (SIP) subscribes to romeo with SIP
    SUBSCRIBE, romeo (slixmpp) to alice with <presence type='subscribe'/>; each sees the other
    come and go."""
    jabber = str(topology216.interface("jabber:wan").loopback())
    async with lab_up(topology216, lab_pki, hosts=HOSTS) as lab:
        gateway = next(s.instance for s in lab.lab.statuses if s.service == "xmpp-gateway")
        await asyncio.wait_for(gateway.connected.wait(), 10)
        romeo = ChatClient(
            "romeo@jabber.lab/pc", lab.password("romeo@jabber.lab") or "", lab_pki.trust_bundle
        )
        seen: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        for kind in ("available", "unavailable"):
            romeo.add_event_handler(
                f"presence_{kind}",
                lambda p, kind=kind: seen.put_nowait((str(p["from"]).split("/")[0], kind)),
            )
        async with lab.ua("alice@contoso.lab", "internal") as alice:
            assert (await alice.register()).code == 200
            assert (await alice.subscribe("sip:romeo@jabber.lab")).code == 200
            await next_presence(alice, "closed")  # romeo is not signed in
            await romeo.login(jabber, 5222)
            try:
                await next_presence(alice, "open")  # romeo's initial presence reached SIP
                romeo.send_presence(pto="alice@contoso.lab", ptype="subscribe")
                await until(seen, ("alice@contoso.lab", "available"))
                assert (await alice.register(expires=0)).code == 200
                await until(seen, ("alice@contoso.lab", "unavailable"))
                assert (await alice.register()).code == 200
                await until(seen, ("alice@contoso.lab", "available"))
            finally:
                romeo.disconnect()
            await next_presence(alice, "closed")  # romeo signed out


async def test_a_message_to_a_jabber_user_is_answered_only_when_delivered(
    topology216: Topology, lab_pki: LabPki
) -> None:
    """200 only once jabber.lab's server has the stanza: an offline user's error comes back as
    480 (<service-unavailable/>), an unreachable partner as 504 (<remote-server-not-found/>)."""
    async with (
        lab_up(topology216, lab_pki, hosts=HOSTS) as lab,
        lab.ua("alice@contoso.lab", "internal") as alice,
    ):
        gateway = next(s.instance for s in lab.lab.statuses if s.service == "xmpp-gateway")
        await asyncio.wait_for(gateway.connected.wait(), 10)
        assert (await alice.register()).code == 200
        answer = await alice.message("sip:juliet@jabber.lab", "are you there?")
        assert answer.code == 480
        assert "<service-unavailable/>" in (answer.headers.get("Warning") or "")
    async with (
        lab_up(topology216, lab_pki, hosts=[h for h in HOSTS if h != "jabber"]) as lab,
        lab.ua("alice@contoso.lab", "internal") as alice,
    ):
        gateway = next(s.instance for s in lab.lab.statuses if s.service == "xmpp-gateway")
        await asyncio.wait_for(gateway.connected.wait(), 10)
        assert (await alice.register()).code == 200
        answer = await alice.message("sip:romeo@jabber.lab", "hello?", timeout=20)
        assert answer.code == 504
        assert "<remote-server-not-found/>" in (answer.headers.get("Warning") or "")


async def test_the_gateway_answers_xep_0199_ping_and_xep_0092_version(
    topology216: Topology, lab_pki: LabPki
) -> None:
    jabber = str(topology216.interface("jabber:wan").loopback())
    async with lab_up(topology216, lab_pki, hosts=HOSTS) as lab:
        gateway = next(s.instance for s in lab.lab.statuses if s.service == "xmpp-gateway")
        await asyncio.wait_for(gateway.connected.wait(), 10)
        romeo = ChatClient(
            "romeo@jabber.lab/pc", lab.password("romeo@jabber.lab") or "", lab_pki.trust_bundle
        )
        romeo.register_plugin("xep_0199")
        romeo.register_plugin("xep_0092")
        await romeo.login(jabber, 5222)
        try:
            rtt = await romeo.plugin["xep_0199"].ping(jid="contoso.lab", timeout=10)
            assert rtt >= 0
            await romeo.plugin["xep_0199"].ping(jid="alice@contoso.lab", timeout=10)  # for the user
            version = await romeo.plugin["xep_0092"].get_version("contoso.lab", timeout=10)
            assert version["software_version"]["name"].startswith("edgesim XMPP gateway")
        finally:
            romeo.disconnect()
