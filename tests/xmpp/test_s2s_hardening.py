"""Issue 12: XMPP streams route only what their authentication covers, and survive one packet.

RFC 6120 section 13.7.1.4 and XEP-0288: a stanza on a server-to-server stream is accepted only
when its ``from`` and ``to`` are the domains authenticated on that stream; the initiating side
checks the receiving server's certificate names the domain it dialled (XEP-0178, RFC 6125).
"""

from __future__ import annotations

import pytest

from simulator.xmpp.errors import RemoteProtocolError
from simulator.xmpp.events import (
    AuthenticationFailed,
    DialbackVerifyNeeded,
    StanzaReceived,
)
from simulator.xmpp.s2s import Session, SessionConfig, State, dialback_key
from simulator.xmpp.stream import NS_DIALBACK, XmlStream

from .helpers import Pair, cert
from .test_s2s import EDGE, JABBER, inbound, message, outbound

HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
    "xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "
    "to='contoso.lab' from='jabber.lab' version='1.0'>"
)


def edge_outbound_to_jabber() -> tuple[Pair, Session, Session]:
    a = outbound(EDGE, "contoso.lab", "jabber.lab", can_external=False)
    b = inbound(JABBER)
    pair = Pair(
        a,
        b,
        initiator_cert=cert("xmpp.contoso.lab"),
        receiver_cert=cert("xmpp.jabber.lab", "jabber.lab"),
        authoritative=inbound(EDGE),
    )
    pair.run()
    assert a.ready and b.ready
    return pair, a, b


@pytest.mark.parametrize(
    ("frm", "to", "condition"),
    [
        ("ceo@contoso.lab", "alice@contoso.lab", "invalid-from"),
        ("carol@fabrikam.lab", "alice@contoso.lab", "invalid-from"),
        ("romeo@jabber.lab", "x@other.lab", "host-unknown"),
        ("", "alice@contoso.lab", "improper-addressing"),
    ],
)
def test_a_partner_cannot_send_as_another_domain_on_the_edges_outbound_stream(
    frm: str, to: str, condition: str
) -> None:
    pair, _a, b = edge_outbound_to_jabber()
    stanza = message(frm, to, "x")
    if not frm:
        del stanza.attrib["from"]  # type: ignore[attr-defined]
    b.send_stanza(stanza)  # type: ignore[arg-type]
    with pytest.raises(RemoteProtocolError) as info:
        pair.run()
    assert info.value.condition.value == condition
    assert not [e for e in pair.a_events if isinstance(e, StanzaReceived)]


def test_the_partners_own_stanza_on_the_outbound_stream_is_accepted() -> None:
    pair, _, b = edge_outbound_to_jabber()
    b.send_stanza(message("romeo@jabber.lab/x", "alice@contoso.lab", "hi"))  # type: ignore[arg-type]
    pair.run()
    assert len([e for e in pair.a_events if isinstance(e, StanzaReceived)]) == 1


def test_the_outbound_server_certificate_must_name_the_domain() -> None:
    a = outbound(EDGE, "contoso.lab", "jabber.lab", can_external=False)
    pair = Pair(
        a,
        inbound(JABBER),
        initiator_cert=cert("xmpp.contoso.lab"),
        receiver_cert=cert("evil.lab"),  # chains to a lab CA, names someone else
        authoritative=inbound(EDGE),
    )
    pair.run()
    failures = [e for e in pair.a_events if isinstance(e, AuthenticationFailed)]
    assert failures == [
        AuthenticationFailed("the server certificate does not name jabber.lab (RFC 6125)")
    ]
    assert a.state is State.CLOSED


def test_the_receiving_side_routes_only_the_authenticated_pair() -> None:
    two = SessionConfig(
        local_domains=frozenset({"contoso.lab", "other.lab"}),
        dialback_secret=b"edge-secret",
        partner_domains=frozenset({"jabber.lab"}),
    )
    a = outbound(JABBER, "jabber.lab", "contoso.lab", can_external=True)
    b = inbound(two)
    pair = Pair(a, b, initiator_cert=cert("jabber.lab"), receiver_cert=cert("xmpp.contoso.lab"))
    pair.run()
    a.send_stanza(message("romeo@jabber.lab", "bob@other.lab", "x"))  # type: ignore[arg-type]
    with pytest.raises(RemoteProtocolError) as info:
        pair.run()
    assert info.value.condition.value == "host-unknown"


def receiving_after_tls(config: SessionConfig) -> Session:
    """An inbound stream on which TLS is up and the second header has been answered."""
    session = inbound(config)
    session.receive_data(HEADER.encode(), 0.0)
    session.receive_data(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", 0.0)
    session.tls_established(cert("xmpp.jabber.lab"), 0.0)
    session.receive_data(HEADER.encode(), 0.0)
    while session.next_event() is not None:
        pass
    session.data_to_send()
    return session


def db_result(frm: str, key: str = "abc") -> bytes:
    return f"<db:result from='{frm}' to='contoso.lab'>{key}</db:result>".encode()


def test_one_stream_cannot_make_the_edge_open_endless_back_connections() -> None:
    session = receiving_after_tls(EDGE)
    for _ in range(500):  # the same claim again and again: one verification
        session.receive_data(db_result("jabber.lab"), 0.0)
    needed = []
    while (event := session.next_event()) is not None:
        needed += [event] if isinstance(event, DialbackVerifyNeeded) else []
    assert len(needed) == 1

    anyone = SessionConfig(local_domains=frozenset({"contoso.lab"}), dialback_secret=b"s")
    session = receiving_after_tls(anyone)
    with pytest.raises(RemoteProtocolError) as info:
        for i in range(500):  # 500 domains claimed on one stream
            session.receive_data(db_result(f"d{i}.lab"), 0.0)
    assert info.value.condition.value == "policy-violation"
    needed = []
    while (event := session.next_event()) is not None:
        needed += [event] if isinstance(event, DialbackVerifyNeeded) else []
    assert len(needed) == anyone.max_dialback_requests


def test_a_dialback_key_with_non_ascii_digits_is_invalid_not_an_exception() -> None:
    session = receiving_after_tls(EDGE)
    verify = "<db:verify from='jabber.lab' to='contoso.lab' id='i1'>١٢٣</db:verify>"
    session.receive_data(verify.encode(), 0.0)
    assert b"type='invalid'" in session.data_to_send()
    assert dialback_key(b"s", "a", "b", "c").isascii()


@pytest.mark.parametrize("encoding", ["bogus", "hex", "utf-7", "idna", "utf-16", "latin-1"])
def test_an_xml_declaration_with_another_encoding_is_refused(encoding: str) -> None:
    stream = XmlStream()
    declaration = f"<?xml version='1.0' encoding='{encoding}'?>"
    with pytest.raises(RemoteProtocolError) as info:
        stream.receive_data((declaration + HEADER.split("?>", 1)[1]).encode(), 0.0)
    assert info.value.condition.value == "unsupported-encoding"


def test_namespace_declarations_count_against_the_attribute_limit() -> None:
    stream = XmlStream()
    stream.receive_data(HEADER.encode(), 0.0)
    decls = " ".join(f"xmlns:p{i}='urn:x:{i}'" for i in range(40))
    with pytest.raises(RemoteProtocolError) as info:
        stream.receive_data(f"<message {decls}/>".encode(), 0.0)
    assert info.value.condition.value == "policy-violation"
    assert NS_DIALBACK  # the stream header itself (3 declarations, 4 attributes) passes
