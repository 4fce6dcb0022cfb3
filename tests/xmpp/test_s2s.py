"""The S2S negotiation core, both sides wired together in memory (no event loop)."""

from __future__ import annotations

import pytest

from simulator.xmpp.errors import RemoteProtocolError
from simulator.xmpp.events import (
    Authenticated,
    AuthenticationFailed,
    StanzaReceived,
    StreamClosed,
)
from simulator.xmpp.s2s import Role, Session, SessionConfig, State, dialback_key
from simulator.xmpp.stream import NS_SERVER, element, qname

from .helpers import Pair, cert

EDGE = SessionConfig(
    local_domains=frozenset({"contoso.lab"}),
    dialback_secret=b"edge-secret",
    partner_domains=frozenset({"jabber.lab"}),
)
#: The partner emulator plays Prosody without s2s_secure_auth: it does not insist that the Edge's
#: certificate name contoso.lab (the lab's names xmpp.contoso.lab).
JABBER = SessionConfig(
    local_domains=frozenset({"jabber.lab"}),
    dialback_secret=b"jabber-secret",
    verify_server_names=False,
)


def outbound(config: SessionConfig, local: str, remote: str, can_external: bool) -> Session:
    session = Session(
        Role.INITIATING,
        config,
        now=0.0,
        stream_id="out-1",
        local_domain=local,
        remote_domain=remote,
        can_external=can_external,
    )
    session.start(0.0)
    return session


def inbound(config: SessionConfig) -> Session:
    return Session(Role.RECEIVING, config, now=0.0, stream_id="in-1")


def message(frm: str, to: str, text: str) -> object:
    return element(
        qname(NS_SERVER, "message"),
        {"from": frm, "to": to, "type": "chat"},
        children=[element(qname(NS_SERVER, "body"), text=text)],
    )


def test_sasl_external_when_the_certificate_names_the_domain() -> None:
    a = outbound(JABBER, "jabber.lab", "contoso.lab", can_external=True)
    b = inbound(EDGE)
    pair = Pair(
        a,
        b,
        initiator_cert=cert("xmpp.jabber.lab", "jabber.lab"),
        receiver_cert=cert("xmpp.contoso.lab"),
    )
    pair.run()
    assert Authenticated("jabber.lab", "sasl-external") in pair.b_events
    assert Authenticated("contoso.lab", "sasl-external") in pair.a_events
    a.send_stanza(message("romeo@jabber.lab/x", "alice@contoso.lab", "hi"))  # type: ignore[arg-type]
    pair.run()
    got = [e for e in pair.b_events if isinstance(e, StanzaReceived)]
    assert len(got) == 1 and got[0].element.findtext(qname(NS_SERVER, "body")) == "hi"


def test_dialback_when_the_certificate_does_not_name_the_domain() -> None:
    # the Edge's certificate names xmpp.contoso.lab, not contoso.lab: dialback
    a = outbound(EDGE, "contoso.lab", "jabber.lab", can_external=False)
    b = inbound(JABBER)
    authoritative = inbound(EDGE)
    pair = Pair(
        a,
        b,
        initiator_cert=cert("xmpp.contoso.lab"),
        receiver_cert=cert("jabber.lab"),
        authoritative=authoritative,
    )
    pair.run()
    assert Authenticated("contoso.lab", "dialback") in pair.b_events
    assert Authenticated("jabber.lab", "dialback") in pair.a_events
    assert b.state is State.READY


def test_wrong_dialback_key_is_refused() -> None:
    a = outbound(EDGE, "contoso.lab", "jabber.lab", can_external=False)
    b = inbound(JABBER)
    impostor = inbound(
        SessionConfig(local_domains=frozenset({"contoso.lab"}), dialback_secret=b"x")
    )
    pair = Pair(
        a,
        b,
        initiator_cert=cert("evil.lab"),
        receiver_cert=cert("jabber.lab"),
        authoritative=impostor,
    )
    pair.run()
    assert any(isinstance(e, AuthenticationFailed) for e in pair.a_events)
    assert StreamClosed(clean=False, error="not-authorized") in pair.b_events


def test_verify_stream_answers_with_our_key() -> None:
    """The authoritative side of a back-connection (XEP-0220 section 2.1.3)."""
    key = dialback_key(b"edge-secret", "jabber.lab", "contoso.lab", "their-id")
    verifier = Session(
        Role.VERIFYING,
        JABBER,
        now=0.0,
        stream_id="v",
        local_domain="jabber.lab",
        remote_domain="contoso.lab",
        verify_request=("their-id", key),
    )
    verifier.start(0.0)
    pair = Pair(
        verifier,
        inbound(EDGE),
        initiator_cert=cert("jabber.lab"),
        receiver_cert=cert("xmpp.contoso.lab"),
    )
    pair.run()
    answers = [e for e in pair.a_events if type(e).__name__ == "DialbackVerifyAnswered"]
    assert [(a.originating, a.valid) for a in answers] == [("contoso.lab", True)]  # type: ignore[attr-defined]


def test_stanza_before_tls_is_a_policy_violation() -> None:
    b = inbound(EDGE)
    b.receive_data(
        b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'"
        b" to='contoso.lab' from='jabber.lab' version='1.0'>",
        0.0,
    )
    with pytest.raises(RemoteProtocolError) as info:
        b.receive_data(b"<message from='a@jabber.lab' to='b@contoso.lab'/>", 0.0)
    assert info.value.condition.value == "policy-violation"
    assert b"<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in b.data_to_send()


@pytest.mark.parametrize(
    ("to", "frm", "condition"),
    [("other.lab", "jabber.lab", "host-unknown"), ("contoso.lab", "evil.lab", "policy-violation")],
)
def test_stream_header_checks(to: str, frm: str, condition: str) -> None:
    b = inbound(EDGE)
    with pytest.raises(RemoteProtocolError) as info:
        b.receive_data(
            f"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'"
            f" to='{to}' from='{frm}' version='1.0'>".encode(),
            0.0,
        )
    assert info.value.condition.value == condition
    out = b.data_to_send().decode()
    assert out.startswith("<?xml version='1.0'?><stream:stream ")
    assert f"<{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in out
    assert out.endswith("</stream:stream>")
    assert to not in out.split("<stream:error>")[1]  # never echo the peer's names back


def test_invalid_from_on_an_authenticated_stream() -> None:
    a = outbound(JABBER, "jabber.lab", "contoso.lab", can_external=True)
    b = inbound(EDGE)
    pair = Pair(a, b, initiator_cert=cert("jabber.lab"), receiver_cert=cert("xmpp.contoso.lab"))
    pair.run()
    a.send_stanza(message("mallory@fabrikam.lab", "alice@contoso.lab", "x"))  # type: ignore[arg-type]
    with pytest.raises(RemoteProtocolError) as info:
        pair.run()
    assert info.value.condition.value == "invalid-from"


def test_the_gateway_link_acknowledges_only_what_the_edge_handled() -> None:
    """XEP-0198 on 23456: the gateway enables it, numbers what it sends; the Edge acknowledges
    the run of stanzas its owner reports handled, and answers <r/> with that count."""
    from simulator.xmpp.events import StanzasAcknowledged

    gateway_config = SessionConfig(local_domains=frozenset({"contoso.lab"}))
    edge_config = SessionConfig(
        local_domains=frozenset({"contoso.lab"}), gateway_names=("fe.contoso.lab",)
    )
    client = Session(
        Role.GATEWAY_CLIENT,
        gateway_config,
        now=0.0,
        stream_id="gw",
        local_domain="contoso.lab",
        remote_domain="contoso.lab",
    )
    client.start(0.0)
    server = Session(
        Role.GATEWAY_SERVER,
        edge_config,
        now=0.0,
        stream_id="edge",
        peer_certificate=cert("fe.contoso.lab"),
    )
    pair = Pair(client, server)
    pair.run()
    assert client.ready and server.sm_enabled and client.sm_enabled
    numbers = [
        client.send_stanza(message("alice@contoso.lab", "romeo@jabber.lab", t))  # type: ignore[arg-type]
        for t in ("one", "two")
    ]
    assert numbers == [1, 2]
    pair.run()
    got = [e for e in pair.b_events if isinstance(e, StanzaReceived)]
    assert [e.sequence for e in got] == [1, 2]
    server.acknowledge(1)  # the first one is delivered, the second not yet
    pair.run()
    assert [e for e in pair.a_events if isinstance(e, StanzasAcknowledged)] == [
        StanzasAcknowledged(1)
    ]
    client.stream.send(element(qname("urn:xmpp:sm:3", "r")))  # asks: still 1
    pair.run()
    assert [e for e in pair.a_events if isinstance(e, StanzasAcknowledged)][-1].count == 1
    server.acknowledge(2)
    pair.run()
    assert [e for e in pair.a_events if isinstance(e, StanzasAcknowledged)][-1].count == 2
    # an ack for more than was sent is a protocol error
    with pytest.raises(RemoteProtocolError):
        client.receive_data(b"<a xmlns='urn:xmpp:sm:3' h='9'/>", 0.0)
