"""The DNS client services use: SRV and A look-ups against the lab DNS, nothing else.

Failures raise :class:`ResolutionError` with a one-line reason (timeout: the DNS server or the
path to it is down or filtered; NXDOMAIN: the name does not exist), which the SIP proxy turns
into ``504`` with ``ms-diagnostics: 1008`` the way a real Edge reports an SRV it cannot resolve.
"""

from __future__ import annotations

from dataclasses import dataclass

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from simulator import trace


class ResolutionError(Exception):
    """A name could not be resolved; ``str()`` says why in one line."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"cannot resolve {name}: {reason}")


@dataclass(frozen=True)
class SrvTarget:
    priority: int
    weight: int
    port: int
    target: str


class LabResolver:
    """Queries one lab DNS server over UDP (TCP when the answer is truncated)."""

    def __init__(
        self, server: tuple[str, int] | None, *, timeout: float = 2.0, source: str | None = None
    ) -> None:
        self.server = server
        self.timeout = timeout
        self.source = source
        """Local address to send from (the asking host's address in the lab)."""

    async def _exchange(
        self, query: dns.message.Message, address: str, port: int
    ) -> dns.message.Message:
        """Send ``query`` and return the answer (UDP, then TCP when truncated).

        Raises TimeoutError or dns.exception.Timeout (no answer), OSError (unreachable) or
        dns.exception.DNSException (a bad answer); subclasses change only the transport.
        """
        response = await dns.asyncquery.udp(
            query, address, port=port, timeout=self.timeout, source=self.source
        )
        if response.flags & dns.flags.TC:
            response = await dns.asyncquery.tcp(
                query, address, port=port, timeout=self.timeout, source=self.source
            )
        return response

    async def _query(self, name: str, rdtype: dns.rdatatype.RdataType) -> dns.message.Message:
        if self.server is None:
            raise ResolutionError(name, "no lab DNS server for this zone")
        address, port = self.server
        query = dns.message.make_query(name, rdtype)
        where = f"{address}:{port}"
        asked = f"query {dns.rdatatype.to_text(rdtype)} {name}"
        trace.record("dns", self.source or "", where, asked)
        try:
            response = await self._exchange(query, address, port)
        except (TimeoutError, dns.exception.Timeout):
            trace.record("dns", self.source or "", where, asked, event="dropped")
            raise ResolutionError(name, f"no answer from DNS server {where} (timed out)") from None
        except OSError as exc:
            trace.record("dns", self.source or "", where, asked, event="refused")
            raise ResolutionError(name, f"DNS server {where} unreachable: {exc.strerror}") from None
        except dns.exception.DNSException as exc:
            raise ResolutionError(name, f"bad answer from {where}: {exc}") from None
        rcode = response.rcode()
        if rcode == dns.rcode.NXDOMAIN:
            raise ResolutionError(name, "no such name (NXDOMAIN)")
        if rcode != dns.rcode.NOERROR:
            raise ResolutionError(name, f"DNS error {dns.rcode.to_text(rcode)}")
        return response

    async def srv(self, name: str) -> list[SrvTarget]:
        """SRV records of ``name``, ordered by priority then weight (RFC 2782)."""
        response = await self._query(name, dns.rdatatype.SRV)
        targets = [
            SrvTarget(
                rd.priority, rd.weight, rd.port, rd.target.to_text(omit_final_dot=True).lower()
            )
            for rrset in response.answer
            if rrset.rdtype == dns.rdatatype.SRV
            for rd in rrset
        ]
        if not targets:
            raise ResolutionError(name, "no SRV record")
        return sorted(targets, key=lambda t: (t.priority, -t.weight))

    async def a(self, name: str) -> list[str]:
        response = await self._query(name, dns.rdatatype.A)
        addresses = [
            rd.address
            for rrset in response.answer
            if rrset.rdtype == dns.rdatatype.A
            for rd in rrset
        ]
        if not addresses:
            raise ResolutionError(name, "no A record")
        return addresses
