"""RFC 6121 presence in the jabber.lab emulator's core: subscriptions, broadcasts, probes."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from simulator.xmpp.presence import PresenceServer
from simulator.xmpp.stream import NS_SERVER, element, qname


def presence(frm: str, to: str | None = None, kind: str | None = None) -> ET.Element:
    attrs = {"from": frm}
    if to is not None:
        attrs["to"] = to
    if kind is not None:
        attrs["type"] = kind
    return element(qname(NS_SERVER, "presence"), attrs)


def summary(stanzas: list[ET.Element]) -> list[tuple[str, str, str]]:
    return [(s.get("from") or "", s.get("to") or "", s.get("type") or "available") for s in stanzas]


ROMEO = "romeo@jabber.lab/pc"
ALICE = "alice@contoso.lab"


def test_a_subscription_approved_both_ways_then_presence_broadcast_and_probes() -> None:
    server = PresenceServer(frozenset({"jabber.lab"}))
    server.connected(ROMEO)
    # romeo's initial presence: nobody subscribed yet, nothing to send
    assert server.from_user(ROMEO, presence(ROMEO)) == []
    # romeo asks alice; stamped with his bare JID (RFC 6121 3.1.2)
    out = server.from_user(ROMEO, presence(ROMEO, ALICE, "subscribe"))
    assert summary(out) == [("romeo@jabber.lab", ALICE, "subscribe")]
    assert server.item("romeo@jabber.lab", ALICE).ask
    # alice approves: delivered to romeo, and romeo now has "to"
    deliver, elsewhere = server.for_user(presence(ALICE, "romeo@jabber.lab", "subscribed"))
    assert summary(deliver) == [(ALICE, "romeo@jabber.lab", "subscribed")] and elsewhere == []
    assert server.item("romeo@jabber.lab", ALICE).subscription == "to"
    # alice asks romeo; romeo approves: his current presence follows (3.1.5)
    deliver, _ = server.for_user(presence(ALICE, "romeo@jabber.lab", "subscribe"))
    assert summary(deliver) == [(ALICE, "romeo@jabber.lab", "subscribe")]
    out = server.from_user(ROMEO, presence(ROMEO, ALICE, "subscribed"))
    assert summary(out) == [("romeo@jabber.lab", ALICE, "subscribed"), (ROMEO, ALICE, "available")]
    assert server.item("romeo@jabber.lab", ALICE).subscription == "both"
    # a probe from alice is answered with romeo's presence; a stranger's is ignored (4.3)
    assert summary(server.for_user(presence(ALICE, "romeo@jabber.lab", "probe"))[1]) == [
        (ROMEO, ALICE, "available")
    ]
    assert server.for_user(presence("eve@evil.lab", "romeo@jabber.lab", "probe")) == ([], [])
    # romeo goes away without a word: alice gets unavailable (4.5)
    assert summary(server.disconnected(ROMEO)) == [(ROMEO, ALICE, "unavailable")]
    # a repeated subscribe from an approved contact is answered by the server (3.1.3)
    _, elsewhere = server.for_user(presence(ALICE, "romeo@jabber.lab", "subscribe"))
    assert summary(elsewhere) == [
        ("romeo@jabber.lab", ALICE, "subscribed"),
        ("romeo@jabber.lab", ALICE, "unavailable"),
    ]


def test_initial_presence_probes_contacts_and_delivers_waiting_requests() -> None:
    server = PresenceServer(frozenset({"jabber.lab"}))
    server.item("romeo@jabber.lab", ALICE).to = True
    # a request while romeo is offline waits for him (nothing delivered, nothing bounced)
    assert server.for_user(presence("bob@contoso.lab", "romeo@jabber.lab", "subscribe")) == (
        [],
        [],
    )
    server.connected(ROMEO)
    out = server.from_user(ROMEO, presence(ROMEO))
    assert summary(out) == [
        ("romeo@jabber.lab", ALICE, "probe"),
        ("bob@contoso.lab", ROMEO, "subscribe"),
    ]
    # unsubscribed: alice's view of romeo ends with unavailable
    server.item("romeo@jabber.lab", ALICE).from_ = True
    out = server.from_user(ROMEO, presence(ROMEO, ALICE, "unsubscribed"))
    assert summary(out) == [
        ("romeo@jabber.lab", ALICE, "unsubscribed"),
        (ROMEO, ALICE, "unavailable"),
    ]
    assert server.item("romeo@jabber.lab", ALICE).subscription == "to"
