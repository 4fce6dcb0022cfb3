"""The XMPP proxy in the local lab: jabber.lab users <-> contoso users through 5269 and 23456.

The lab runs on its usual loopback addresses with the ports of :data:`PORT_MAP` (SRV records
follow), the Front End's XMPP gateway emulator is started beside it with a recording SIP bridge.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from simulator.lab.services import ServiceContext
from simulator.lab.topology import Topology, load_topology
from simulator.pki import LabPki, user_password
from simulator.xmpp.harness import (
    PORT_MAP,
    STREAM_HEADER,
    ChatClient,
    XmppLab,
    shifted_topology,
    start_xmpp_lab,
)
from simulator.xmpp.service import XmppGatewayService
from simulator.xmpp.stream import NS_SERVER, NS_STANZA_ERRORS, element, qname

from .xmpp_helpers import raw_stream

EDGE_ACCESS = "127.51.100.10"
EDGE_INTERNAL = "127.51.100.130"
JABBER = "127.0.113.30"
S2S, MTLS, C2S = PORT_MAP[5269], PORT_MAP[23456], PORT_MAP[5222]


@pytest.fixture
def shifted(tmp_path: Path) -> Topology:
    return load_topology(shifted_topology(tmp_path))


@pytest.fixture
async def xmpp_lab(shifted: Topology, lab_pki: LabPki) -> AsyncIterator[XmppLab]:
    lab = await start_xmpp_lab(shifted, lab_pki)
    try:
        yield lab
    finally:
        await lab.stop()


async def login(lab: XmppLab, user: str = "romeo") -> ChatClient:
    password = user_password(lab.topology, f"{user}@jabber.lab", lab.lab.pki.directory)
    client = ChatClient(f"{user}@jabber.lab/pc", password or "", lab.lab.pki.trust_bundle)
    await client.login(JABBER, C2S)
    return client


async def roundtrip(lab: XmppLab, client: ChatClient, text: str) -> None:
    """romeo -> alice (SIP bridge) and alice -> romeo, both through the Edge."""
    client.send_message(mto="alice@contoso.lab", mbody=text, mtype="chat")
    frm, to, body = await asyncio.wait_for(lab.bridge.arrived.get(), 10)
    assert (bare(frm), to, body) == ("romeo@jabber.lab", "sip:alice@contoso.lab", text)
    await lab.gateway.send_from_sip("sip:alice@contoso.lab", "romeo@jabber.lab", "re: " + text)
    got = await asyncio.wait_for(client.received.get(), 10)
    assert got == ("alice@contoso.lab", "chat", "re: " + text)


def bare(jid: str) -> str:
    return jid.split("/", 1)[0]


async def test_messages_flow_both_ways_through_5269_and_23456(xmpp_lab: XmppLab) -> None:
    from simulator.trace import TraceRecorder

    client = await login(xmpp_lab)
    try:
        with TraceRecorder() as rec:
            await roundtrip(xmpp_lab, client, "hello alice")
            await roundtrip(xmpp_lab, client, "second message, same streams")
    finally:
        client.disconnect()
    assert xmpp_lab.proxy.stats["from_partner"] == 2
    # both ways by certificate (SASL EXTERNAL, XEP-0178): the Edge's certificate names
    # contoso.lab (cert_names), and jabber.lab checks it (verify_server_names, the default)
    auth = sorted({e.summary for e in rec.events if e.summary.startswith("authenticated ")})
    assert auth == [
        "authenticated contoso.lab (sasl-external)",
        "authenticated jabber.lab (sasl-external)",
    ]


BILLION_LAUGHS = (
    "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
    + "".join(f"<!ENTITY lol{i} '{('&lol' + str(i - 1) + ';') * 10}'>" for i in range(1, 10))
    + "]>"
)


def header(to: str = "contoso.lab", frm: str = "jabber.lab") -> str:
    return STREAM_HEADER.format(to=to, frm=frm)


BAD_INPUTS = {
    "doctype": ("<!DOCTYPE stream:stream>" + header(), "restricted-xml"),
    "entity-declaration": ("<!DOCTYPE s [<!ENTITY x 'y'>]>" + header(), "restricted-xml"),
    "billion-laughs": (BILLION_LAUGHS + header() + "<message>&lol9;</message>", "restricted-xml"),
    "oversize-stanza": (
        header() + "<message><body>" + "x" * 300_000 + "</body></message>",
        "policy-violation",
    ),
    "unclosed-tags": (header() + "<message>" + "<b>x</b>" * 40_000, "policy-violation"),
    "deep-nesting": (header() + "<message>" + "<a>" * 100, "policy-violation"),
    "unknown-domain": (header(to="other.lab"), "host-unknown"),
    "partner-not-allowed": (header(frm="evil.lab"), "policy-violation"),
    "stanza-before-tls": (
        header() + "<message from='a@jabber.lab' to='alice@contoso.lab'/>",
        "policy-violation",
    ),
    "wrong-namespace": (
        header().replace("'jabber:server'", "'jabber:client'"),
        "invalid-namespace",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
async def test_bad_input_closes_that_stream_and_a_healthy_one_keeps_working(
    xmpp_lab: XmppLab, case: str
) -> None:
    client = await login(xmpp_lab)
    try:
        await roundtrip(xmpp_lab, client, "before")
        payload, condition = BAD_INPUTS[case]
        reply = await raw_stream(EDGE_ACCESS, S2S, payload.encode())
        assert reply.startswith(b"<?xml version='1.0'?><stream:stream ")
        error = reply[reply.index(b"<stream:error>") :]
        assert error.startswith(
            f"<stream:error><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>".encode()
        )
        assert error.endswith(b"</stream:error></stream:stream>")  # then the Edge closed
        assert b"lol" not in reply and b"evil" not in reply and b"other.lab" not in reply
        await roundtrip(xmpp_lab, client, "after")
    finally:
        client.disconnect()


async def test_gateway_gets_a_stanza_error_for_a_domain_not_allowed(xmpp_lab: XmppLab) -> None:
    msg = element(
        qname(NS_SERVER, "message"),
        {"from": "alice@contoso.lab", "to": "bob@fabrikam.lab", "id": "m1", "type": "chat"},
        children=[element(qname(NS_SERVER, "body"), text="hi")],
    )
    assert xmpp_lab.gateway.conn is not None
    xmpp_lab.gateway.conn.send_stanza(msg)
    error = await asyncio.wait_for(xmpp_lab.gateway.errors.get(), 5)
    assert (error.get("type"), error.get("id"), error.get("to")) == (
        "error",
        "m1",
        "alice@contoso.lab",
    )
    assert (
        error.find(f"{qname(NS_SERVER, 'error')}/{qname(NS_STANZA_ERRORS, 'not-allowed')}")
        is not None
    )


async def test_partner_user_gets_service_unavailable_for_an_unknown_sip_user(
    xmpp_lab: XmppLab,
) -> None:
    xmpp_lab.bridge.unknown.add("sip:nobody@contoso.lab")
    client = await login(xmpp_lab)
    errors: asyncio.Queue[str] = asyncio.Queue()
    client.add_event_handler(
        "message_error", lambda msg: errors.put_nowait(str(msg["error"]["condition"]))
    )
    try:
        client.send_message(mto="nobody@contoso.lab", mbody="anyone?", mtype="chat")
        assert await asyncio.wait_for(errors.get(), 10) == "service-unavailable"
    finally:
        client.disconnect()


async def test_gateway_link_needs_a_front_end_certificate(xmpp_lab: XmppLab) -> None:
    pki = xmpp_lab.lab.pki
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert("internal")))
    ctx.check_hostname = False
    edge_int = pki.host_cert("edge", "internal")  # right CA, but not a Front End's name
    ctx.load_cert_chain(str(edge_int.cert), str(edge_int.key))
    reader, writer = await asyncio.open_connection(EDGE_INTERNAL, MTLS, ssl=ctx)
    try:
        data = b""
        async with asyncio.timeout(5):
            while chunk := await reader.read(4096):
                data += chunk
        assert b"<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in data
    finally:
        writer.close()


async def test_idle_stream_gets_connection_timeout(shifted: Topology, lab_pki: LabPki) -> None:
    lab = await start_xmpp_lab(shifted, lab_pki, {"xmpp-proxy": {"idle_timeout": 0.5}})
    try:
        reply = await raw_stream(EDGE_ACCESS, S2S, header().encode(), timeout=5)
        assert b"<connection-timeout xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in reply
        assert reply.endswith(b"</stream:stream>")
    finally:
        await lab.gateway.stop()
        await lab.lab.stop()


async def test_gateway_service_registers(shifted: Topology, lab_pki: LabPki) -> None:
    """``xmpp-gateway`` as a lab service on the Front End host connects to the Edge."""
    lab = await start_xmpp_lab(shifted, lab_pki)
    ctx = ServiceContext(shifted, shifted.host("fe"), "xmpp-gateway", lab.lab.pki, "local", {})
    service = XmppGatewayService(ctx)
    try:
        assert await service.start() == []
        assert service.connected.is_set() and service.gateway.connected
    finally:
        await service.stop()
        await lab.gateway.stop()
        await lab.lab.stop()


async def test_lab_check_answers_at_protocol_level(xmpp_lab: XmppLab) -> None:
    checks = await xmpp_lab.lab.check()
    xmpp = {c.listener.proto: (c.ok, c.detail) for c in checks if c.service == "xmpp-proxy"}
    assert xmpp == {"xmpp-s2s": (True, "answers"), "xmpp-mtls": (True, "answers")}


async def test_partner_gets_service_unavailable_when_the_gateway_is_down(
    xmpp_lab: XmppLab,
) -> None:
    edge_side = xmpp_lab.proxy.gateways[0]
    await xmpp_lab.gateway.stop()
    await asyncio.wait_for(edge_side.closed.wait(), 5)  # the Edge saw the link go down
    client = await login(xmpp_lab)
    errors: asyncio.Queue[str] = asyncio.Queue()
    client.add_event_handler(
        "message_error", lambda msg: errors.put_nowait(str(msg["error"]["condition"]))
    )
    try:
        client.send_message(mto="alice@contoso.lab", mbody="anyone?", mtype="chat")
        assert await asyncio.wait_for(errors.get(), 10) == "service-unavailable"
    finally:
        client.disconnect()


async def test_bad_xml_on_the_gateway_link_gets_a_stream_error(xmpp_lab: XmppLab) -> None:
    """23456 gets the same hard limits: a Front End that sends a DOCTYPE is cut off."""
    pki = xmpp_lab.lab.pki
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert("internal")))
    ctx.check_hostname = False
    fe = pki.host_cert("fe", "internal")
    ctx.load_cert_chain(str(fe.cert), str(fe.key))
    reader, writer = await asyncio.open_connection(EDGE_INTERNAL, MTLS, ssl=ctx)
    try:
        writer.write(b"<!DOCTYPE x [<!ENTITY a 'b'>]>" + header(frm="contoso.lab").encode())
        data = b""
        async with asyncio.timeout(5):
            while chunk := await reader.read(4096):
                data += chunk
        assert data.endswith(
            b"<stream:error><restricted-xml xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
            b"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>DOCTYPE declarations are not"
            b" allowed</text></stream:error></stream:stream>"
        )
    finally:
        writer.close()
    assert xmpp_lab.gateway.connected  # the real gateway link is untouched


async def test_partner_users_chat_locally_on_the_emulator(xmpp_lab: XmppLab) -> None:
    romeo = await login(xmpp_lab, "romeo")
    juliet = await login(xmpp_lab, "juliet")
    try:
        romeo.send_message(mto="juliet@jabber.lab", mbody="wherefore", mtype="chat")
        frm, _type, body = await asyncio.wait_for(juliet.received.get(), 10)
        assert (bare(frm), body) == ("romeo@jabber.lab", "wherefore")
    finally:
        romeo.disconnect()
        juliet.disconnect()
