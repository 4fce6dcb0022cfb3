"""``dns``: an SRV query over UDP (dnspython), from the source address.

Any DNS answer proves the port is a DNS server; the records (or the rcode) are reported.
"""

from __future__ import annotations

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

from simulator.probes.base import Outcome, Phase, Verdict, classify
from simulator.probes.net import Steps
from simulator.probes.spec import ProbeSpec

DEFAULT_NAME = "_sipfederationtls._tcp.contoso.lab"


async def probe_dns(spec: ProbeSpec) -> Outcome:
    steps = Steps(spec.timeout)
    name = spec.dns_name or DEFAULT_NAME
    query = dns.message.make_query(name, dns.rdatatype.SRV)
    try:
        response = await steps.run(
            "response",
            Phase.CONNECT,
            dns.asyncquery.udp(
                query,
                spec.address,
                port=spec.port,
                timeout=spec.timeout,
                source=spec.bind,
                ignore_unexpected=True,
            ),
        )
    except dns.exception.Timeout:
        return Outcome(
            Verdict.BLOCKED,
            f"no answer within {spec.timeout:g} s: dropped",
            {"query": f"SRV {name}"},
            steps.timings,
        )
    except (OSError, TimeoutError) as exc:
        c = classify(exc, Phase.CONNECT, spec.timeout)
        return Outcome(c.verdict, c.reason, {"query": f"SRV {name}"}, steps.timings)
    except dns.exception.DNSException as exc:
        return Outcome(
            Verdict.PROTOCOL_FAILED,
            f"bad DNS answer: {exc}",
            {"query": f"SRV {name}"},
            steps.timings,
        )
    rcode = dns.rcode.to_text(response.rcode())
    records = [
        f"{r.priority} {r.weight} {r.port} {str(r.target).rstrip('.')}"
        for rrset in response.answer
        if rrset.rdtype == dns.rdatatype.SRV
        for r in rrset
    ]
    details = {"query": f"SRV {name}", "rcode": rcode, "answers": records}
    if records:
        return Outcome(
            Verdict.PASSED, f"DNS answered SRV {name}: {records[0]}", details, steps.timings
        )
    return Outcome(Verdict.PASSED, f"DNS answered {rcode} for SRV {name}", details, steps.timings)
