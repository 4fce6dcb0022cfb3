"""What the SIP and XMPP probes send, and how they read odd answers (scripted loopback servers)."""

from __future__ import annotations

import asyncio

import sipmessage

from simulator.probes.base import Verdict
from simulator.probes.sip import build_options
from simulator.probes.spec import ProbeSpec
from simulator.probes.xmpp import probe_xmpp_s2s, stream_header
from tests.probes.servers import SERVER_ADDRESS, serve

SPEC = ProbeSpec(
    "sip-mtls",
    "127.0.113.10",
    5061,
    fqdn="sip.fabrikam.lab",
    domain="fabrikam.lab",
    source_domain="contoso.lab",
    timeout=1,
)


def test_options_request_is_valid_sip() -> None:
    raw = build_options(SPEC, ("127.51.100.10", 40000))
    message = sipmessage.Message.parse(raw)
    assert isinstance(message, sipmessage.Request)
    assert message.method == "OPTIONS"
    assert str(message.uri) == "sip:sip.fabrikam.lab:5061;transport=tls"
    assert message.headers["Via"].startswith("SIP/2.0/TLS 127.51.100.10:40000;branch=z9hG4bK")
    assert message.headers["From"].startswith("<sip:probe@contoso.lab>;tag=")
    assert message.headers["To"] == "<sip:fabrikam.lab>"
    assert message.headers["CSeq"] == "1 OPTIONS"
    assert message.headers["Max-Forwards"] == "70"
    assert raw.endswith(b"Content-Length: 0\r\n\r\n")


def test_stream_header_names_both_domains() -> None:
    header = stream_header(SPEC).decode()
    assert "from='contoso.lab' to='fabrikam.lab' version='1.0'" in header
    assert "xmlns='jabber:server'" in header


async def _xmpp_against(answer: bytes) -> tuple[Verdict, str]:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.write(answer)
        await writer.drain()
        await reader.read(4096)

    async with serve(None, handler) as server:
        spec = ProbeSpec("xmpp-s2s", SERVER_ADDRESS, server.port, domain="fabrikam.lab", timeout=1)
        outcome = await probe_xmpp_s2s(spec)
    return outcome.verdict, outcome.reason


STREAM = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
    b"xmlns:stream='http://etherx.jabber.org/streams' id='x' from='fabrikam.lab' version='1.0'>"
)


async def test_stream_error_is_protocol_failed_with_its_condition() -> None:
    error = (
        b"<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        b"</stream:error></stream:stream>"
    )
    assert await _xmpp_against(STREAM + error) == (
        Verdict.PROTOCOL_FAILED,
        "stream error <host-unknown/>",
    )


async def test_features_without_starttls_is_protocol_failed() -> None:
    features = b"<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>"
    assert await _xmpp_against(STREAM + features) == (
        Verdict.PROTOCOL_FAILED,
        "XMPP stream without STARTTLS (features: dialback)",
    )


async def test_a_sip_server_on_the_xmpp_port_is_protocol_failed() -> None:
    verdict, reason = await _xmpp_against(b"SIP/2.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    assert verdict is Verdict.PROTOCOL_FAILED
    assert reason == "answered 'SIP/2.0 400 Bad Request.'... (46 bytes): not XML"
