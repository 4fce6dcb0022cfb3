"""Routing policy of the XMPP proxy and stanza errors (no event loop)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.xmpp.errors import RemoteProtocolError
from simulator.xmpp.routing import (
    Reject,
    RoutingPolicy,
    ToGateway,
    ToPartner,
    route_from_gateway,
    route_from_partner,
    stanza_error,
)
from simulator.xmpp.s2s import Role, Session, SessionConfig, domain_of
from simulator.xmpp.stream import NS_SERVER, element, qname, serialize

POLICY = RoutingPolicy(frozenset({"contoso.lab"}), frozenset({"jabber.lab"}))


def msg(frm: str | None, to: str | None, **extra: str) -> ET.Element:
    return element(qname(NS_SERVER, "message"), {"from": frm, "to": to, **extra})


@pytest.mark.parametrize(
    ("frm", "to", "route"),
    [
        ("alice@contoso.lab/pc", "romeo@jabber.lab", ToPartner("jabber.lab")),
        ("alice@contoso.lab", "bob@contoso.lab", ToGateway()),
        (
            "alice@contoso.lab",
            "bob@fabrikam.lab",
            Reject("not-allowed", "cancel", "federation with that XMPP domain is not allowed"),
        ),
        (
            "mallory@jabber.lab",
            "romeo@jabber.lab",
            Reject(
                "not-allowed", "cancel", "'from' must be an address of a domain this Edge serves"
            ),
        ),
        (
            None,
            "romeo@jabber.lab",
            Reject("bad-request", "modify", "stanzas need both 'from' and 'to'"),
        ),
    ],
)
def test_route_from_gateway(frm: str | None, to: str | None, route: object) -> None:
    assert route_from_gateway(POLICY, msg(frm, to)) == route


def test_route_from_partner() -> None:
    assert (
        route_from_partner(POLICY, msg("r@jabber.lab", "a@contoso.lab"), "jabber.lab")
        == ToGateway()
    )
    assert isinstance(route_from_partner(POLICY, msg("r@x.lab", "a@contoso.lab"), "x.lab"), Reject)


def test_stanza_error_swaps_addresses_and_never_answers_an_error() -> None:
    original = msg("alice@contoso.lab", "bob@fabrikam.lab", id="7", type="chat")
    reply = stanza_error(original, "not-allowed", "cancel", "no", by="contoso.lab")
    assert reply is not None
    assert serialize(reply) == (
        "<message from='bob@fabrikam.lab' to='alice@contoso.lab' id='7' type='error'>"
        "<error type='cancel' by='contoso.lab'>"
        "<not-allowed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
        "<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>no</text></error></message>"
    )
    assert stanza_error(reply, "not-allowed", "cancel", "no") is None


@pytest.mark.parametrize(
    ("jid", "domain"),
    [("a@B.lab/r", "b.lab"), ("b.lab", "b.lab"), ("b.lab/r@x", "b.lab"), ("", None), (None, None)],
)
def test_domain_of(jid: str | None, domain: str | None) -> None:
    assert domain_of(jid) == domain


HEADER = (
    b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'"
    b" to='contoso.lab' from='jabber.lab' version='1.0'>"
)


@pytest.mark.parametrize("role", [Role.RECEIVING, Role.INITIATING, Role.C2S])
@given(data=st.binary(max_size=300))
@settings(max_examples=150, deadline=None)
def test_sessions_turn_any_bytes_into_events_or_remote_protocol_error(
    role: Role, data: bytes
) -> None:
    config = SessionConfig(local_domains=frozenset({"contoso.lab"}), users={"u": "p"})
    session = Session(
        role, config, now=0.0, stream_id="s", local_domain="contoso.lab", remote_domain="jabber.lab"
    )
    session.start(0.0)
    header = HEADER.replace(b"jabber:server", b"jabber:client") if role is Role.C2S else HEADER
    try:
        session.receive_data(header, 0.0)
        session.receive_data(data, 0.0)
    except RemoteProtocolError:
        assert session.closed
    while session.next_event() is not None:
        pass


FRAGMENTS = [
    b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
    b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
    b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>",
    b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AHUAcA==</auth>",
    b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!</auth>",
    b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
    b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
    b"<db:result xmlns:db='jabber:server:dialback' from='jabber.lab' to='contoso.lab'>k"
    b"</db:result>",
    b"<db:result xmlns:db='jabber:server:dialback' type='valid'/>",
    b"<db:verify xmlns:db='jabber:server:dialback' from='jabber.lab' to='contoso.lab' id='1'>k"
    b"</db:verify>",
    b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>",
    b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>EXTERNAL"
    b"</mechanism></mechanisms></stream:features>",
    b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
    b"<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>",
    b"<message from='r@jabber.lab' to='a@contoso.lab'><body>x</body></message>",
    b"<presence/>",
    b"<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
    b"</stream:stream>",
    HEADER,
]


@pytest.mark.parametrize("role", [Role.RECEIVING, Role.INITIATING, Role.VERIFYING, Role.C2S])
@given(parts=st.lists(st.sampled_from(FRAGMENTS), max_size=12))
@settings(max_examples=200, deadline=None)
def test_sessions_survive_any_sequence_of_protocol_elements(role: Role, parts: list[bytes]) -> None:
    from simulator.xmpp.events import TlsRequested

    from .helpers import cert

    config = SessionConfig(local_domains=frozenset({"contoso.lab"}), users={"u": "p"})
    session = Session(
        role,
        config,
        now=0.0,
        stream_id="s",
        local_domain="contoso.lab",
        remote_domain="jabber.lab",
        verify_request=("1", "k"),
        can_external=True,
    )
    session.start(0.0)
    header = HEADER.replace(b"jabber:server", b"jabber:client") if role is Role.C2S else HEADER
    try:
        session.receive_data(header, 0.0)
        for part in parts:
            session.receive_data(part, 0.0)
            while (event := session.next_event()) is not None:
                if isinstance(event, TlsRequested):
                    session.tls_established(cert("jabber.lab"), 0.0)
    except RemoteProtocolError:
        assert session.closed
    session.data_to_send()
