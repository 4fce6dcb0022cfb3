"""The lab DNS core: split-brain views, SRV discovery, refusals, and no crash on any input."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.dns.zone import DnsZone, build_records
from simulator.lab.services import address_of


def zone(topology, public_only, runner="netns"):
    return DnsZone(
        build_records(topology, public_only=public_only, address=lambda i: address_of(i, runner))
    )


def ask(z, name, rdtype):
    wire = z.answer(dns.message.make_query(name, rdtype).to_wire())
    return dns.message.from_wire(wire)


def test_federation_srv_record_points_at_the_partner_edge_with_its_address(topology):
    reply = ask(zone(topology, public_only=True), "_sipfederationtls._tcp.fabrikam.lab", "SRV")
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
    (srv,) = list(reply.answer[0])
    assert (srv.port, srv.target.to_text()) == (5061, "sip.fabrikam.lab.")
    assert [rd.address for rrset in reply.additional for rd in rrset] == ["203.0.113.10"]


def test_public_view_hides_internal_names_and_internal_view_has_them(topology):
    public, internal = zone(topology, True), zone(topology, False)
    assert ask(public, "edge-int.contoso.lab", "A").rcode() == dns.rcode.NXDOMAIN
    assert ask(public, "fe.contoso.lab", "A").rcode() == dns.rcode.NXDOMAIN
    reply = ask(internal, "edge-int.contoso.lab", "A")
    assert [rd.address for rd in reply.answer[0]] == ["198.51.100.130"]
    assert [rd.address for rd in ask(public, "sip.contoso.lab", "A").answer[0]] == ["198.51.100.10"]


def test_local_runner_answers_loopback_addresses(topology):
    reply = ask(zone(topology, True, runner="local"), "sip.contoso.lab", "A")
    assert [rd.address for rd in reply.answer[0]] == ["127.51.100.10"]


def test_names_outside_the_lab_are_refused_never_recursed(topology):
    reply = ask(zone(topology, True), "www.example.com", "A")
    assert reply.rcode() == dns.rcode.REFUSED


def test_every_srv_kind_the_services_use_is_served(topology):
    z = zone(topology, True)
    for name in ("_sipfederationtls._tcp.contoso.lab", "_sip._tls.contoso.lab",
                 "_xmpp-server._tcp.contoso.lab", "_xmpp-server._tcp.jabber.lab"):  # fmt: skip
        assert ask(z, name, "SRV").rcode() == dns.rcode.NOERROR, name


def test_garbage_with_an_id_gets_formerr_and_short_garbage_is_dropped(topology):
    z = zone(topology, True)
    reply = z.answer(b"\x12\x34\x7f" + b"\xff" * 19)  # QR clear: a broken query
    assert reply is not None and reply[:2] == b"\x12\x34"
    assert reply[3] & 0x0F == dns.rcode.FORMERR
    assert z.answer(b"\x00") is None
    assert z.malformed == 2


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_give_an_answer_or_nothing_never_an_exception(topology, data):
    result = zone(topology, True).answer(data)
    assert result is None or isinstance(result, bytes)
