"""The SIP probes against a real asyncio TLS server with the lab PKI's good and bad certificates."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from simulator.pki import LabPki
from simulator.probes.base import Verdict
from simulator.probes.sip import probe_sip_mtls, probe_sip_tls
from simulator.probes.spec import ProbeSpec
from simulator.tls import TlsProblem
from tests.probes.servers import CLIENT_ADDRESS, fabrikam_server_ctx, serve, sip_responder

SpecFor = Callable[..., ProbeSpec]


async def test_mtls_passes_with_the_response_code(lab_pki: LabPki, spec_for: SpecFor) -> None:
    async with serve(fabrikam_server_ctx(lab_pki, mtls=True), sip_responder) as server:
        outcome = await probe_sip_mtls(spec_for(server))
        peer = await asyncio.wait_for(server.accepted.get(), 1)
    assert outcome.verdict is Verdict.PASSED, outcome.reason
    assert outcome.reason == "SIP 200 OK"
    assert outcome.details["server"] == "test-responder"
    assert outcome.details["server_cert"] == "sip.fabrikam.lab"
    # The server saw the Edge's internal certificate, from the Edge's internal address.
    assert peer is not None
    assert "edge-int.contoso.lab" in str(peer.getpeercert())
    assert {"connect", "tls", "response"} <= set(outcome.timings)


async def test_tls_passes_without_a_client_certificate(lab_pki: LabPki, spec_for: SpecFor) -> None:
    async with serve(fabrikam_server_ctx(lab_pki), sip_responder) as server:
        outcome = await probe_sip_tls(spec_for(server, kind="sip-tls"))
        peer = await asyncio.wait_for(server.accepted.get(), 1)
    assert outcome.verdict is Verdict.PASSED, outcome.reason
    assert peer is not None and peer.getpeercert() is None


async def test_the_request_leaves_from_the_source_address(
    lab_pki: LabPki, spec_for: SpecFor
) -> None:
    seen: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer.get_extra_info("peername")[0])
        await sip_responder(reader, writer)

    async with serve(fabrikam_server_ctx(lab_pki), handler) as server:
        outcome = await probe_sip_tls(spec_for(server, kind="sip-tls"))
    assert outcome.verdict is Verdict.PASSED
    assert seen == [CLIENT_ADDRESS]


@pytest.mark.parametrize(
    ("bad", "problem", "words"),
    [
        ("unknown-ca", TlsProblem.UNKNOWN_CA, "unable to get local issuer certificate"),
        ("wrong-name", TlsProblem.NAME_MISMATCH, "Hostname mismatch"),
        ("expired", TlsProblem.EXPIRED, "certificate has expired"),
    ],
)
async def test_bad_server_certificate(
    lab_pki: LabPki, spec_for: SpecFor, bad: str, problem: TlsProblem, words: str
) -> None:
    ctx = fabrikam_server_ctx(lab_pki, lab_pki.bad_cert(bad, "fabrikam", "fabrikam"))
    async with serve(ctx, sip_responder) as server:
        outcome = await probe_sip_tls(spec_for(server, kind="sip-tls"))
    assert outcome.verdict is Verdict.TLS_FAILED
    assert outcome.tls_problem is problem
    assert outcome.reason.startswith(f"TLS failed: {problem.value} (server certificate: ")
    assert words in outcome.reason


@pytest.mark.parametrize("max_tls12", [False, True], ids=["tls1.3", "tls1.2"])
@pytest.mark.parametrize(
    ("client", "problem"),
    [
        ("server-only", TlsProblem.CLIENT_CERT_REJECTED),
        ("unknown-ca", TlsProblem.UNKNOWN_CA),
        ("expired", TlsProblem.EXPIRED),
        (None, TlsProblem.CLIENT_CERT_REJECTED),
    ],
)
async def test_client_certificate_refused_by_the_server(
    lab_pki: LabPki, spec_for: SpecFor, client: str | None, problem: TlsProblem, max_tls12: bool
) -> None:
    cert = lab_pki.bad_cert(client, "edge", "internal") if client else None
    ctx = fabrikam_server_ctx(lab_pki, mtls=True, max_tls12=max_tls12)
    async with serve(ctx, sip_responder) as server:
        outcome = await probe_sip_mtls(spec_for(server, client_cert=cert))
    assert outcome.verdict is Verdict.TLS_FAILED, outcome.reason
    assert outcome.tls_problem is problem, outcome.reason
    assert "the peer sent alert" in outcome.reason


async def test_server_closing_in_the_handshake_is_a_handshake_reset(spec_for: SpecFor) -> None:
    async def accept_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(10)  # the ClientHello arrives, then we hang up

    async with serve(None, accept_and_close) as server:
        outcome = await probe_sip_tls(spec_for(server, kind="sip-tls"))
    assert outcome.verdict is Verdict.TLS_FAILED
    assert outcome.tls_problem is TlsProblem.HANDSHAKE_RESET


async def test_plaintext_server_is_protocol_failed(spec_for: SpecFor) -> None:
    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(10)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    async with serve(None, http) as server:
        outcome = await probe_sip_tls(spec_for(server, kind="sip-tls"))
    assert outcome.verdict is Verdict.PROTOCOL_FAILED
    assert "does not speak TLS" in outcome.reason


async def test_tls_server_answering_http_is_protocol_failed(
    lab_pki: LabPki, spec_for: SpecFor
) -> None:
    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    async with serve(fabrikam_server_ctx(lab_pki), http) as server:
        outcome = await probe_sip_tls(spec_for(server, kind="sip-tls"))
    assert outcome.verdict is Verdict.PROTOCOL_FAILED
    assert outcome.reason == "answered 'HTTP/1.1 400 Bad Request.'... (47 bytes) instead of SIP"


async def test_silent_server_is_protocol_failed_after_the_timeout(
    lab_pki: LabPki, spec_for: SpecFor
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await asyncio.sleep(3)  # holds the connection open past the probe's deadline

    async with serve(fabrikam_server_ctx(lab_pki), silent) as server:
        outcome = await probe_sip_tls(spec_for(server, kind="sip-tls", timeout=0.5))
    assert outcome.verdict is Verdict.PROTOCOL_FAILED
    assert outcome.reason == "connected, but no response within 0.5 s"


async def test_closed_port_is_refused(spec_for: SpecFor) -> None:
    async with serve(None, sip_responder) as server:
        port = server.port
    outcome = await probe_sip_mtls(spec_for(server, port=port))
    assert outcome.verdict is Verdict.REFUSED
    assert outcome.reason == "connection refused (TCP reset or ICMP port unreachable)"


async def test_missing_client_certificate_file_is_a_probe_error(
    lab_pki: LabPki, spec_for: SpecFor
) -> None:
    async with serve(fabrikam_server_ctx(lab_pki, mtls=True), sip_responder) as server:
        outcome = await probe_sip_mtls(
            spec_for(server, client_cert=lab_pki.host_cert("nobody", "x"))
        )
    assert outcome.verdict is Verdict.ERROR
    assert "nobody-x.crt is missing" in outcome.reason


async def test_asyncio_server_refusing_the_client_certificate_without_alert(
    lab_pki: LabPki, spec_for: SpecFor
) -> None:
    """Quirk: asyncio's TLS server closes without sending the alert; in TLS 1.3 we still say why."""
    ctx = fabrikam_server_ctx(lab_pki, mtls=True)
    server = await asyncio.start_server(lambda r, w: None, "127.0.113.10", 0, ssl=ctx)
    try:
        port = server.sockets[0].getsockname()[1]
        spec = spec_for(
            server=None,
            address="127.0.113.10",
            port=port,
            client_cert=lab_pki.bad_cert("server-only", "edge", "internal"),
        )
        outcome = await probe_sip_mtls(spec)
    finally:
        server.close()
        await server.wait_closed()
    assert outcome.verdict is Verdict.TLS_FAILED
    assert outcome.tls_problem is TlsProblem.CLIENT_CERT_REJECTED
    assert "right after the TLS 1.3 handshake" in outcome.reason
