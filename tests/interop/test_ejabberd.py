"""ejabberd as jabber.lab federating with the Edge's XMPP proxy (real peer, run by the fixture).

The same checks as with Prosody (tests/interop/test_prosody.py), ejabberd in the emulator's place
on jabber.lab's address and ports: a slixmpp user on ejabberd chats with alice@contoso.lab
through the Edge's 5269 and 23456 both ways, ejabberd authenticating the Edge by certificate
(SASL EXTERNAL, dialback module left out) or by dialback; presence goes both ways; a message
to ejabberd's users is acknowledged only once ejabberd has it.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from simulator.lab.topology import Topology, load_topology
from simulator.pki import LabPki
from simulator.xmpp import ejabberd as ejabberd_setup
from simulator.xmpp.ejabberd import EjabberdSetup
from simulator.xmpp.harness import PORT_MAP, ChatClient, XmppLab, shifted_topology, start_xmpp_lab
from tests.interop.ejabberd_helpers import ejabberd, free_port, lab_hosts

pytestmark = [
    pytest.mark.interop,
    pytest.mark.root,
    pytest.mark.skipif(ejabberd_setup.missing() is not None, reason=str(ejabberd_setup.missing())),
]

JABBER = "127.0.113.30"
DNS_EXT = ("127.0.113.53", PORT_MAP[53])
S2S, C2S = PORT_MAP[5269], PORT_MAP[5222]
ROMEO = "romeo-ejabberd-pass"


@pytest.fixture
def shifted(tmp_path: Path) -> Topology:
    return load_topology(shifted_topology(tmp_path))


@pytest.fixture
def work() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="edgesim-ejabberd-"))
    directory.chmod(0o755)  # the ejabberd user reads its configuration below
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def setup_for(topology: Topology, work: Path, *, dialback: bool) -> EjabberdSetup:
    return EjabberdSetup(
        work / "ejabberd",
        JABBER,
        C2S,
        S2S,
        DNS_EXT,
        free_port(),
        lab_hosts(topology),
        dialback=dialback,
    )


@pytest.fixture
async def lab(shifted: Topology, lab_pki: LabPki) -> AsyncIterator[XmppLab]:
    lab = await start_xmpp_lab(shifted, lab_pki, hosts=["edge", "dns-ext", "dns-int"])
    try:
        yield lab
    finally:
        await lab.stop()


async def romeo(lab: XmppLab) -> ChatClient:
    client = ChatClient("romeo@jabber.lab/pc", ROMEO, lab.lab.pki.trust_bundle)
    await client.login(JABBER, C2S, timeout=20)
    return client


async def chat(lab: XmppLab, client: ChatClient, log: Path) -> None:
    client.send_message(mto="alice@contoso.lab", mbody="hello from ejabberd", mtype="chat")
    try:
        frm, to, body = await asyncio.wait_for(lab.bridge.arrived.get(), 20)
    except TimeoutError:
        pytest.fail("no message reached the gateway; ejabberd log:\n" + log.read_text()[-4000:])
    assert (frm.split("/", 1)[0], to, body) == (
        "romeo@jabber.lab",
        "sip:alice@contoso.lab",
        "hello from ejabberd",
    )
    # returns only once ejabberd confirmed it has the message (the Edge's delivery ping)
    await lab.gateway.send_from_sip("sip:alice@contoso.lab", "romeo@jabber.lab", "hi romeo")
    got = await asyncio.wait_for(client.received.get(), 20)
    assert got == ("alice@contoso.lab", "chat", "hi romeo")


async def test_ejabberd_authenticates_the_edge_by_certificate(
    shifted: Topology, lab: XmppLab, lab_pki: LabPki, work: Path
) -> None:
    async with ejabberd(setup_for(shifted, work, dialback=False), lab_pki, {"romeo": ROMEO}) as log:
        client = await romeo(lab)
        try:
            await chat(lab, client, log)
        finally:
            client.disconnect()
    assert lab.proxy.outbound_auth["jabber.lab"] == "sasl-external"
    assert lab.proxy.inbound_auth["jabber.lab"] == "sasl-external"


async def test_ejabberd_and_the_edge_by_dialback(
    shifted: Topology, lab_pki: LabPki, work: Path
) -> None:
    """The Edge's SASL EXTERNAL off: ejabberd verifies the Edge by dialback, and the Edge
    verifies ejabberd by dialback too (its back-connection to ejabberd's 5269)."""
    lab = await start_xmpp_lab(
        shifted,
        lab_pki,
        {"xmpp-proxy": {"allow_external": False}},
        hosts=["edge", "dns-ext", "dns-int"],
    )
    try:
        async with ejabberd(
            setup_for(shifted, work, dialback=True), lab_pki, {"romeo": ROMEO}
        ) as log:
            client = await romeo(lab)
            try:
                await chat(lab, client, log)
            finally:
                client.disconnect()
        assert lab.proxy.outbound_auth["jabber.lab"] == "dialback"
        assert lab.proxy.inbound_auth["jabber.lab"] == "dialback"
    finally:
        await lab.stop()


async def test_presence_both_ways_with_ejabberd(
    shifted: Topology, lab: XmppLab, lab_pki: LabPki, work: Path
) -> None:
    """RFC 6121 through ejabberd's rosters: alice (SIP side) subscribes to romeo and sees him
    come and go; romeo subscribes to alice and sees her sign in and out."""
    lab.bridge.online.add("sip:alice@contoso.lab")
    async with ejabberd(setup_for(shifted, work, dialback=False), lab_pki, {"romeo": ROMEO}):
        client = await romeo(lab)
        try:
            lab.gateway.subscribe_from_sip("sip:alice@contoso.lab", "romeo@jabber.lab")
            await until(lab.bridge.presence, ("romeo@jabber.lab", "sip:alice@contoso.lab", True))
            client.send_presence(pto="alice@contoso.lab", ptype="subscribe")
            await until(client.presences, ("alice@contoso.lab", "available"))
            lab.bridge.online.discard("sip:alice@contoso.lab")
            lab.gateway.presence_from_sip("sip:alice@contoso.lab", False)
            await until(client.presences, ("alice@contoso.lab", "unavailable"))
        finally:
            client.disconnect()
        await until(lab.bridge.presence, ("romeo@jabber.lab", "sip:alice@contoso.lab", False))


async def until(queue: asyncio.Queue[object], wanted: object, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while await asyncio.wait_for(queue.get(), max(0.1, end - loop.time())) != wanted:
        pass


async def test_a_message_ejabberd_never_accepted_is_not_acknowledged(
    shifted: Topology, lab_pki: LabPki, work: Path
) -> None:
    """ejabberd accepts certificates only and the Edge may only use dialback: the stream never
    authenticates, so the gateway's message fails with the XMPP error (no success)."""
    from simulator.xmpp.gateway import DeliveryFailed

    lab = await start_xmpp_lab(
        shifted,
        lab_pki,
        {"xmpp-proxy": {"allow_external": False}},
        hosts=["edge", "dns-ext", "dns-int"],
    )
    try:
        async with ejabberd(setup_for(shifted, work, dialback=False), lab_pki, {"romeo": ROMEO}):
            with pytest.raises(DeliveryFailed) as failed:
                await lab.gateway.send_from_sip(
                    "sip:alice@contoso.lab", "romeo@jabber.lab", "lost?", timeout=40
                )
        assert failed.value.condition in ("remote-server-timeout", "remote-server-not-found")
    finally:
        await lab.stop()
