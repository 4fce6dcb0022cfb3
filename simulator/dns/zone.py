"""Sans-IO lab DNS: build the record set of a view of the topology and answer queries.

Implemented: A, SRV (and ANY as both) for names in lab domains; NXDOMAIN for unknown names in a
lab domain; REFUSED for names outside the lab (never recursive); FORMERR for undecodable
queries that still carry an id; nothing at all for a message with QR set (a response: answering
it would let two servers reflect off each other). Over UDP an answer larger than the client's
limit (512 bytes, or its EDNS0 payload size, RFC 1035 section 4.2.1, RFC 6891 section 6.2.5)
goes out truncated with TC set, so the client retries over TCP and the server amplifies nothing.
Not implemented: AAAA (answered empty, NOERROR), zone transfers, EDNS options beyond the payload
size.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from simulator.lab.topology import Interface, Topology

TTL = 60
UDP_MIN = 512
"""RFC 1035 section 4.2.1: the UDP answer size every client takes."""
UDP_MAX = 4096
"""The largest UDP answer we send whatever a client offers (RFC 6891 section 6.2.5)."""


@dataclass(frozen=True)
class Records:
    """The names one lab DNS server answers for."""

    a: dict[str, tuple[str, ...]]
    srv: dict[str, tuple[tuple[int, int, int, str], ...]]
    """name -> (priority, weight, port, target)."""
    suffixes: tuple[str, ...]
    """Lab domains this server is authoritative for."""


def build_records(
    topology: Topology, *, public_only: bool, address: Callable[[Interface], str]
) -> Records:
    """Records of the topology; ``public_only`` keeps names in public zones only."""
    a: dict[str, list[str]] = {}
    for iface in topology.interfaces():
        if public_only and not topology.zone(iface.zone).public:
            continue
        for fqdn in iface.fqdns:
            a.setdefault(fqdn, []).append(address(iface))
    srv: dict[str, list[tuple[int, int, int, str]]] = {}
    for rec in topology.srv:
        if rec.target in a:
            srv.setdefault(rec.name, []).append((rec.priority, rec.weight, rec.port, rec.target))
    suffixes = {".".join(n.split(".")[-2:]) for n in a} | {".".join(n.split(".")[-2:]) for n in srv}
    suffixes |= set(topology.domains())
    return Records(
        {k: tuple(v) for k, v in a.items()},
        {k: tuple(v) for k, v in srv.items()},
        tuple(sorted(suffixes)),
    )


class DnsZone:
    """Answers wire-format queries from :class:`Records`."""

    def __init__(self, records: Records) -> None:
        self.records = records
        self.queries = 0
        self.malformed = 0

    def _in_lab(self, name: str) -> bool:
        return any(name == s or name.endswith("." + s) for s in self.records.suffixes)

    def answer(self, wire: bytes, *, max_size: int | None = None) -> bytes | None:
        """The response to one query, or None when the datagram is not worth answering.

        ``max_size``: the transport's limit (UDP: 512); a query's EDNS0 payload size raises it
        (up to :data:`UDP_MAX`). An answer that does not fit goes out empty with TC set.
        """
        self.queries += 1
        if len(wire) >= 3 and wire[2] & 0x80:  # QR: a response, never answered
            self.malformed += 1
            return None
        try:
            query = dns.message.from_wire(wire)
        except (dns.exception.DNSException, ValueError, struct.error):
            self.malformed += 1
            if len(wire) < 12:
                return None
            # Answer FORMERR with the query's id and flags so the client stops waiting.
            (qid,) = struct.unpack("!H", wire[:2])
            return struct.pack("!HHHHHH", qid, 0x8000 | dns.rcode.FORMERR, 0, 0, 0, 0)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        response.flags &= ~dns.flags.RA
        if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
            response.set_rcode(
                dns.rcode.NOTIMP if query.opcode() != dns.opcode.QUERY else dns.rcode.FORMERR
            )
            return response.to_wire()
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        if not self._in_lab(name):
            response.flags &= ~dns.flags.AA
            response.set_rcode(dns.rcode.REFUSED)
            return response.to_wire(max_size=65535)
        rdtype = question.rdtype
        # an empty non-terminal (contoso.lab, _tcp.contoso.lab) exists: NOERROR without data,
        # not NXDOMAIN, or resolvers with qname minimisation (unbound) give up on every name
        # below it (RFC 8020)
        suffix = "." + name
        found = (
            name in self.records.a
            or name in self.records.srv
            or any(n.endswith(suffix) for n in (*self.records.a, *self.records.srv))
        )
        if rdtype in (dns.rdatatype.A, dns.rdatatype.ANY) and name in self.records.a:
            response.answer.append(
                dns.rrset.from_text_list(question.name, TTL, "IN", "A", list(self.records.a[name]))
            )
        if rdtype in (dns.rdatatype.SRV, dns.rdatatype.ANY) and name in self.records.srv:
            entries = self.records.srv[name]
            response.answer.append(
                dns.rrset.from_text_list(
                    question.name,
                    TTL,
                    "IN",
                    "SRV",
                    [f"{p} {w} {port} {target}." for p, w, port, target in entries],
                )
            )
            for _p, _w, _port, target in entries:
                if target in self.records.a:
                    response.additional.append(
                        dns.rrset.from_text_list(
                            dns.name.from_text(target), TTL, "IN", "A", list(self.records.a[target])
                        )
                    )
        if not found:
            response.set_rcode(dns.rcode.NXDOMAIN)
        return self._fit(response, query, max_size)

    @staticmethod
    def _fit(
        response: dns.message.Message, query: dns.message.Message, max_size: int | None
    ) -> bytes:
        """``response`` on the wire, truncated (TC, no records) past the client's UDP limit."""
        full = 65535
        out: bytes = response.to_wire(max_size=full)
        if max_size is None:
            return out
        limit = max_size
        if query.edns >= 0:
            limit = min(max(query.payload, UDP_MIN), max(max_size, UDP_MAX))
        if len(out) <= limit:
            return out
        response.additional = []
        out = response.to_wire(max_size=full)
        if len(out) <= limit:
            return out
        response.answer = []
        response.authority = []
        response.flags |= dns.flags.TC
        truncated: bytes = response.to_wire(max_size=full)
        return truncated


def describe_answer(wire: bytes) -> str:
    """One line for a ladder: ``NOERROR SRV 0 0 5061 sip.fabrikam.lab.`` or ``NXDOMAIN``."""
    try:
        message = dns.message.from_wire(wire)
    except (dns.exception.DNSException, ValueError, struct.error):
        return "FORMERR"
    rcode = dns.rcode.to_text(message.rcode())
    if not message.answer:
        return rcode
    first = message.answer[0]
    items = [rd.to_text() for rd in first]
    more = f" (+{len(items) - 1})" if len(items) > 1 else ""
    return f"{rcode} {dns.rdatatype.to_text(first.rdtype)} {items[0]}{more}"
