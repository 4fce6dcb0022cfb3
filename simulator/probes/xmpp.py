"""XMPP probes: ``xmpp-s2s`` (stream open, STARTTLS, stream features after TLS,
:rfc:`6120#section-5`) and ``xmpp-mtls`` (TLS with our certificate first, then the stream).

Both present the source's certificate when the spec has one (``client_cert``), so a server
can offer SASL EXTERNAL; ``xmpp-mtls`` without one is a plain TLS probe.

The stream is read with ``xml.etree.ElementTree.XMLPullParser``; a new parser starts after TLS.
Passed means a stream header and features came back over TLS; the features are reported
(``starttls``, ``mechanisms: EXTERNAL``, ``dialback`` ...). A stream error is reported as
protocol-failed with its condition.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import xml.etree.ElementTree as ET
from typing import Any

from simulator.errors import EdgesimError
from simulator.probes.base import Outcome, Phase, Verdict, describe_bytes
from simulator.probes.net import Steps, close, open_tcp, stream_failure, tls_context, tls_facts
from simulator.probes.spec import ProbeSpec
from simulator.tls import TlsProblem, peer_certificate

STREAMS = "http://etherx.jabber.org/streams"
TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-streams"
MAX_BYTES = 256 * 1024


class XmppError(Exception):
    pass


def stream_header(spec: ProbeSpec) -> bytes:
    to = spec.domain or spec.fqdn or spec.address
    sender = f" from='{spec.source_domain}'" if spec.source_domain else ""
    return (
        f"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='{STREAMS}'"
        f" xmlns:db='jabber:server:dialback'{sender} to='{to}' version='1.0'>"
    ).encode()


class StreamReader:
    """Depth-1 elements of an XMPP stream, from a pull parser."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.root: ET.Element | None = None
        self.received = b""
        self.pending: list[ET.Element] = []
        self.closed = False

    async def _feed(self) -> list[tuple[str, ET.Element]]:
        data = await self.reader.read(4096)
        if not data:
            raise EOFError
        self.received += data
        if len(self.received) > MAX_BYTES:
            raise XmppError("more than 256 KiB without the expected element")
        try:
            self.parser.feed(data)
            return list(self.parser.read_events())  # type: ignore[arg-type]
        except ET.ParseError:
            raise XmppError(f"answered {describe_bytes(self.received)}: not XML") from None

    async def next(self) -> ET.Element:
        """The stream root on the first call, then each top-level child."""
        for _ in range(1000):
            if self.pending:
                return self.pending.pop(0)
            if self.closed:
                raise XmppError("the peer closed the stream (</stream:stream>)")
            for event, elem in await self._feed():
                self._queue(event, elem)
        raise XmppError("too many reads without a complete element")

    def _queue(self, event: str, elem: ET.Element) -> None:
        if event == "start":
            self.depth += 1
            if self.depth == 1:
                if elem.tag != f"{{{STREAMS}}}stream":
                    raise XmppError(f"answered <{_local(elem.tag)}> instead of <stream:stream>")
                self.root = elem
                self.pending.append(elem)
        else:
            self.depth -= 1
            if self.depth == 1:
                self.pending.append(elem)
                if self.root is not None and elem in list(self.root):
                    self.root.remove(elem)
            elif self.depth == 0:
                self.closed = True


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def describe_features(features: ET.Element) -> list[str]:
    found: list[str] = []
    for child in features:
        name = _local(child.tag)
        if child.tag == f"{{{SASL_NS}}}mechanisms":
            mechs = [m.text or "" for m in child if _local(m.tag) == "mechanism"]
            found.append(f"mechanisms: {' '.join(mechs)}")
        elif child.tag == f"{{{TLS_NS}}}starttls":
            required = any(_local(c.tag) == "required" for c in child)
            found.append("starttls (required)" if required else "starttls")
        else:
            found.append(name)
    return found


def _check_names(writer: object, spec: ProbeSpec) -> None:
    """RFC 6125 for XMPP: the certificate must name the domain (or the host we dialled)."""
    cert = peer_certificate(writer.get_extra_info("ssl_object"))  # type: ignore[attr-defined]
    wanted = [n for n in (spec.domain, spec.fqdn) if n]
    if cert is None or not wanted or any(cert.matches(n) for n in wanted):
        return
    raise NameMismatch(
        f"TLS failed: {TlsProblem.NAME_MISMATCH.value} (server certificate names "
        f"{', '.join(cert.names()) or 'nothing'}, not {' or '.join(wanted)})"
    )


class NameMismatch(Exception):
    pass


async def _tls(steps: Steps, writer: asyncio.StreamWriter, spec: ProbeSpec, presents: bool) -> None:
    ctx = tls_context(spec, mtls=presents)
    ctx.check_hostname = False  # checked against the domain *or* the dialled name below
    server_name = spec.domain or spec.fqdn or spec.address
    await steps.run("tls", Phase.TLS, writer.start_tls(ctx, server_hostname=server_name))
    _check_names(writer, spec)


async def _open_stream(steps: Steps, reader: StreamReader, details: dict[str, Any]) -> list[str]:
    root = await steps.run("stream", Phase.PROTOCOL, reader.next())
    if root.get("id"):
        details["stream_id"] = root.get("id")
    if root.get("from"):
        details["stream_from"] = root.get("from")
    if root.get("version") != "1.0":
        raise XmppError(
            f"stream version {root.get('version')!r}: no stream features (pre-RFC 6120 server)"
        )
    element = await steps.run("features", Phase.PROTOCOL, reader.next())
    if element.tag == f"{{{STREAMS}}}error":
        conditions = [_local(c.tag) for c in element if c.tag.startswith(f"{{{STANZAS_NS}}}")]
        raise XmppError(f"stream error <{conditions[0] if conditions else 'undefined-condition'}/>")
    if element.tag != f"{{{STREAMS}}}features":
        raise XmppError(f"answered <{_local(element.tag)}> instead of <stream:features>")
    return describe_features(element)


async def probe_xmpp(spec: ProbeSpec, *, mtls: bool) -> Outcome:
    steps = Steps(spec.timeout)
    details: dict[str, Any] = {}
    writer = None
    presents = False
    try:
        presents = spec.client_cert is not None
        tls_context(spec, mtls=presents)  # fails early on a missing certificate file
        details["presented"] = spec.client_cert.cert.name if spec.client_cert else None
        raw_reader, writer = await open_tcp(steps, spec)
        if mtls:
            await _tls(steps, writer, spec, presents)
            details.update(tls_facts(writer))
        else:
            writer.write(stream_header(spec))
            plain = StreamReader(raw_reader)
            before = await _open_stream(steps, plain, details)
            details["features_before_tls"] = before
            if not any(f.startswith("starttls") for f in before):
                return Outcome(
                    Verdict.PROTOCOL_FAILED,
                    f"XMPP stream without STARTTLS (features: {', '.join(before) or 'none'})",
                    details,
                    steps.timings,
                )
            writer.write(f"<starttls xmlns='{TLS_NS}'/>".encode())
            answer = await steps.run("starttls", Phase.PROTOCOL, plain.next())
            if answer.tag != f"{{{TLS_NS}}}proceed":
                return Outcome(
                    Verdict.PROTOCOL_FAILED,
                    f"STARTTLS answered <{_local(answer.tag)}/> instead of <proceed/>",
                    details,
                    steps.timings,
                )
            await _tls(steps, writer, spec, presents)
            details.update(tls_facts(writer))
        writer.write(stream_header(spec))
        features = await _open_stream(steps, StreamReader(raw_reader), details)
        details["features"] = features
        how = "MTLS" if mtls else "STARTTLS"
        return Outcome(
            Verdict.PASSED,
            f"XMPP stream over {how}, features: {', '.join(features) or 'none'}",
            details,
            steps.timings,
        )
    except NameMismatch as exc:
        return Outcome(
            Verdict.TLS_FAILED, str(exc), details, steps.timings, TlsProblem.NAME_MISMATCH
        )
    except XmppError as exc:
        return Outcome(Verdict.PROTOCOL_FAILED, str(exc), details, steps.timings)
    except EdgesimError as exc:
        return Outcome(Verdict.ERROR, str(exc), details, steps.timings)
    except (OSError, TimeoutError, EOFError, ssl.SSLError) as exc:
        return stream_failure(exc, steps, spec.timeout, mtls=presents, details=details)
    finally:
        if writer is not None:
            await close(writer)


probe_xmpp_s2s = functools.partial(probe_xmpp, mtls=False)
probe_xmpp_mtls = functools.partial(probe_xmpp, mtls=True)
