"""SIP OPTIONS over TLS (``sip-tls``) and MTLS (``sip-mtls``), :rfc:`3261#section-11`.

Any SIP response proves the port is a SIP server behind a working TLS (and, for MTLS, that the
server accepted the certificate we presented); the response code is reported. A 1xx is followed
by waiting for the final response until the deadline.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import ssl

import sipmessage

from simulator.errors import EdgesimError
from simulator.probes.base import Outcome, Phase, Verdict, describe_bytes
from simulator.probes.net import (
    Steps,
    close,
    intercepted,
    open_tcp,
    start_tls,
    stream_failure,
    tls_context,
    tls_facts,
)
from simulator.probes.spec import ProbeSpec
from simulator.sip.build import new_request, new_tag
from simulator.tls import TlsProblem

MAX_RESPONSE = 65536


def build_options(spec: ProbeSpec, local: tuple[str, int]) -> bytes:
    """The OPTIONS request the probe sends, built as the SIP user agent builds its requests."""
    host = spec.fqdn or spec.address
    source = spec.source_domain or local[0]
    request = new_request(
        "OPTIONS",
        f"sip:{host}:{spec.port};transport=tls",
        via=f"{local[0]}:{local[1]}",
        from_value=f"<sip:probe@{source}>;tag={new_tag()}",
        contact=f"<sip:probe@{local[0]}:{local[1]};transport=tls>",
        call_id=f"{secrets.token_hex(8)}@{local[0]}",
        cseq=1,
        user_agent="edgesim-probe",
        to=f"<sip:{spec.domain or host}>",
        headers=[("Accept", "application/sdp")],
    )
    return bytes(request)


class SipFramingError(Exception):
    pass


async def read_message(reader: asyncio.StreamReader) -> bytes:
    """Read one SIP message framed by Content-Length (:rfc:`3261#section-18.3`)."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = await reader.read(4096)
        if not chunk:
            if buffer.strip():
                raise SipFramingError(f"the peer closed after {describe_bytes(buffer)}")
            raise EOFError
        buffer += chunk
        start = buffer.lstrip(b"\r\n")
        if not b"SIP/2.0 ".startswith(start[:8]):
            raise SipFramingError(f"answered {describe_bytes(start)} instead of SIP")
        if len(buffer) > MAX_RESPONSE:
            raise SipFramingError("response header larger than 64 KiB")
    buffer = buffer.lstrip(b"\r\n")
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            try:
                length = int(value.strip())
            except ValueError:
                raise SipFramingError("bad Content-Length in the response") from None
    if length > MAX_RESPONSE:
        raise SipFramingError("response body larger than 64 KiB")
    while len(rest) < length:
        chunk = await reader.read(length - len(rest))
        if not chunk:
            raise SipFramingError("the peer closed in the middle of the response body")
        rest += chunk
    return head + b"\r\n\r\n" + rest[:length]


async def probe_sip(spec: ProbeSpec, *, mtls: bool) -> Outcome:
    steps = Steps(spec.timeout)
    details: dict[str, object] = {
        "presented": str(spec.client_cert.cert.name) if mtls and spec.client_cert else None
    }
    writer = None
    try:
        ctx = tls_context(spec, mtls=mtls)
        reader, writer = await open_tcp(steps, spec)
        await start_tls(steps, writer, ctx, spec)
        details.update(tls_facts(writer))
        local = writer.get_extra_info("sockname")[:2]
        writer.write(build_options(spec, local))
        codes: list[int] = []
        while True:
            try:
                raw = await steps.run("response", Phase.PROTOCOL, read_message(reader))
            except TimeoutError:
                if codes:
                    break
                raise
            try:
                message = sipmessage.Message.parse(raw)
            except (ValueError, UnicodeDecodeError):
                return Outcome(
                    Verdict.PROTOCOL_FAILED,
                    f"answered {describe_bytes(raw)}: not a SIP message",
                    details,
                    steps.timings,
                )
            if not isinstance(message, sipmessage.Response):
                return Outcome(
                    Verdict.PROTOCOL_FAILED,
                    f"answered with a SIP {message.method} request, not a response",
                    details,
                    steps.timings,
                )
            codes.append(message.code)
            details["response"] = f"{message.code} {message.phrase}"
            diag = message.headers.get("ms-diagnostics")
            if diag:
                details["ms-diagnostics"] = diag
            server = message.headers.get("Server") or message.headers.get("User-Agent")
            if server:
                details["server"] = server
            if message.code >= 200:
                break
        details["codes"] = codes
        last = details["response"]
        return Outcome(Verdict.PASSED, f"SIP {last}", details, steps.timings)
    except SipFramingError as exc:
        return Outcome(Verdict.PROTOCOL_FAILED, str(exc), details, steps.timings)
    except EdgesimError as exc:
        return Outcome(Verdict.ERROR, str(exc), details, steps.timings)
    except (OSError, TimeoutError, EOFError, ssl.SSLError) as exc:
        outcome = stream_failure(exc, steps, spec.timeout, mtls=mtls, details=details)
        if outcome.tls_problem is TlsProblem.UNKNOWN_CA:
            return await intercepted(outcome, spec, steps)
        return outcome
    finally:
        if writer is not None:
            await close(writer)


probe_sip_tls = functools.partial(probe_sip, mtls=False)
probe_sip_mtls = functools.partial(probe_sip, mtls=True)
