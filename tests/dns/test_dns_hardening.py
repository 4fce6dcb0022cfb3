"""Issue 12: the lab DNS answers no responses (QR set) and truncates big UDP answers (TC)."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.rdatatype

from simulator.dns.zone import DnsZone, Records

BIG = DnsZone(
    Records(
        a={"big.lab": tuple(f"203.0.113.{i}" for i in range(1, 101))},  # 100 A records
        srv={},
        suffixes=("lab",),
    )
)


def test_a_message_with_qr_set_is_never_answered() -> None:
    query = dns.message.make_query("big.lab", "A")
    response = dns.message.make_response(query)
    assert BIG.answer(response.to_wire()) is None  # no reflection between two servers
    raw = bytearray(query.to_wire())
    raw[2] |= 0x80  # QR on a query, as one packet from the internet
    assert BIG.answer(bytes(raw)) is None


def test_a_udp_answer_larger_than_512_bytes_is_truncated() -> None:
    query = dns.message.make_query("big.lab", "A")
    wire = BIG.answer(query.to_wire(), max_size=512)
    assert wire is not None and len(wire) <= 512
    reply = dns.message.from_wire(wire)
    assert reply.flags & dns.flags.TC and not reply.answer
    full = BIG.answer(query.to_wire())  # over TCP: everything
    assert full is not None and len(dns.message.from_wire(full).answer[0]) == 100


def test_edns0_raises_the_udp_limit_to_what_the_client_offers() -> None:
    query = dns.message.make_query("big.lab", "A", use_edns=0, payload=4096)
    wire = BIG.answer(query.to_wire(), max_size=512)
    assert wire is not None and 512 < len(wire) <= 4096
    reply = dns.message.from_wire(wire)
    assert not reply.flags & dns.flags.TC and len(reply.answer[0]) == 100
    small = dns.message.make_query("big.lab", "A", use_edns=0, payload=1232)
    wire = BIG.answer(small.to_wire(), max_size=512)
    assert wire is not None and len(wire) <= 1232
    assert dns.message.from_wire(wire).flags & dns.flags.TC
