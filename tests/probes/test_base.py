"""Verdicts, expectations, and how socket/TLS errors are classified (real sockets if possible)."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl

import pytest

from simulator.matrix import load_matrix
from simulator.probes.base import (
    Outcome,
    Phase,
    ProbeResult,
    Verdict,
    apply_expectation,
    classify,
    describe_bytes,
    meets_expectation,
)
from simulator.probes.spec import ProbeSpec
from simulator.probes.stun import probe_stun_udp
from simulator.probes.tcp import probe_tcp_connect, sample_ports
from simulator.tls import TlsProblem
from tests.udp_peer import udp_peer

ADDRESS = "127.0.113.77"


def _closed_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((ADDRESS, 0))
        return int(s.getsockname()[1])


def _verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    exc.verify_code = code
    exc.verify_message = message
    return exc


def _alert(reason: str) -> ssl.SSLError:
    exc = ssl.SSLError(1, f"[SSL: {reason}] alert")
    exc.reason = reason
    return exc


# ------------------------------------------------------------------ expectations


def test_meets_expectation() -> None:
    matrix = load_matrix()
    open_row = matrix.row("pic-in-5061")
    blocked_row = matrix.row("neg-inet-sip-5060")
    for verdict in Verdict:
        outcome = Outcome(verdict, "r")
        assert meets_expectation(open_row, outcome) is (verdict is Verdict.PASSED)
        assert meets_expectation(blocked_row, outcome) is (
            verdict in (Verdict.BLOCKED, Verdict.REFUSED)
        )


def test_a_blocked_row_that_answers_is_open_unexpected() -> None:
    row = load_matrix().row("neg-inet-sip-int-5061")
    for verdict in (Verdict.PASSED, Verdict.TLS_FAILED, Verdict.PROTOCOL_FAILED):
        applied = apply_expectation(row, Outcome(verdict, "SIP 200 OK"))
        assert applied.verdict is Verdict.OPEN_UNEXPECTED
        assert applied.reason == "open where it must not be: SIP 200 OK"
    for verdict in (Verdict.BLOCKED, Verdict.REFUSED, Verdict.ERROR):
        assert apply_expectation(row, Outcome(verdict, "x")).verdict is verdict
    open_row = load_matrix().row("pic-in-5061")
    assert apply_expectation(open_row, Outcome(Verdict.PASSED, "x")).verdict is Verdict.PASSED


def test_probe_result_round_trips_through_json_dicts() -> None:
    result = ProbeResult(
        "pic-in-5061",
        "sip-mtls",
        "open",
        Verdict.TLS_FAILED,
        "TLS failed: unknown CA (x)",
        "pic:wan 127.0.113.20",
        "edge:access 127.51.100.10:5061",
        {"k": [1]},
        {"tls": 0.5},
        TlsProblem.UNKNOWN_CA,
        "netns",
    )
    data = result.to_dict()
    assert (
        data["met"] is False
        and data["verdict"] == "tls-failed"
        and data["tls_problem"] == "unknown CA"
    )
    assert ProbeResult.from_dict(data) == result
    with pytest.raises(ValueError, match="not a probe result"):
        ProbeResult.from_dict({"row": "x", "verdict": "sideways"})


# ------------------------------------------------------------------ classification table


@pytest.mark.parametrize(
    ("exc", "phase", "verdict", "problem", "reason"),
    [
        (TimeoutError(), Phase.CONNECT, Verdict.BLOCKED, None, "no answer within 2 s: dropped"),
        (
            TimeoutError(),
            Phase.TLS,
            Verdict.TLS_FAILED,
            TlsProblem.HANDSHAKE_RESET,
            "TLS failed: handshake reset (no TLS handshake answer within 2 s)",
        ),
        (
            TimeoutError(),
            Phase.PROTOCOL,
            Verdict.PROTOCOL_FAILED,
            None,
            "connected, but no response within 2 s",
        ),
        (
            ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
            Phase.CONNECT,
            Verdict.REFUSED,
            None,
            "connection refused (TCP reset or ICMP port unreachable)",
        ),
        (
            ConnectionResetError(),
            Phase.CONNECT,
            Verdict.REFUSED,
            None,
            "connection reset while connecting",
        ),
        (
            ConnectionResetError(),
            Phase.TLS,
            Verdict.TLS_FAILED,
            TlsProblem.HANDSHAKE_RESET,
            "TLS failed: handshake reset (the peer reset the connection in the handshake)",
        ),
        (
            ConnectionResetError(),
            Phase.PROTOCOL,
            Verdict.PROTOCOL_FAILED,
            None,
            "the peer closed the connection without a response",
        ),
        (
            OSError(errno.EHOSTUNREACH, "No route to host"),
            Phase.CONNECT,
            Verdict.REFUSED,
            None,
            "ICMP host unreachable",
        ),
        (
            OSError(errno.ENETUNREACH, "Network is unreachable"),
            Phase.CONNECT,
            Verdict.REFUSED,
            None,
            "ICMP network unreachable",
        ),
        (
            OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address"),
            Phase.CONNECT,
            Verdict.ERROR,
            None,
            "cannot bind the source address: Cannot assign requested address",
        ),
        (
            _verify_error(20, "unable to get local issuer certificate"),
            Phase.TLS,
            Verdict.TLS_FAILED,
            TlsProblem.UNKNOWN_CA,
            "TLS failed: unknown CA (server certificate: unable to get local issuer certificate)",
        ),
        (
            _verify_error(19, "self-signed certificate in certificate chain"),
            Phase.TLS,
            Verdict.TLS_FAILED,
            TlsProblem.UNKNOWN_CA,
            "TLS failed: unknown CA (server certificate: "
            "self-signed certificate in certificate chain)",
        ),
        (
            _verify_error(62, "Hostname mismatch, certificate is not valid for 'x'."),
            Phase.TLS,
            Verdict.TLS_FAILED,
            TlsProblem.NAME_MISMATCH,
            "TLS failed: name mismatch (server certificate: "
            "Hostname mismatch, certificate is not valid for 'x'.)",
        ),
        (
            _verify_error(10, "certificate has expired"),
            Phase.TLS,
            Verdict.TLS_FAILED,
            TlsProblem.EXPIRED,
            "TLS failed: certificate expired (server certificate: certificate has expired)",
        ),
        (
            _alert("TLSV1_ALERT_UNKNOWN_CA"),
            Phase.TLS,
            Verdict.TLS_FAILED,
            TlsProblem.UNKNOWN_CA,
            "TLS failed: unknown CA (the peer sent alert 'unknown ca')",
        ),
        (
            _alert("TLSV13_ALERT_CERTIFICATE_REQUIRED"),
            Phase.PROTOCOL,
            Verdict.TLS_FAILED,
            TlsProblem.CLIENT_CERT_REJECTED,
            "TLS failed: no client certificate accepted "
            "(the peer sent alert 'certificate required')",
        ),
        (
            _alert("SSLV3_ALERT_UNSUPPORTED_CERTIFICATE"),
            Phase.TLS,
            Verdict.TLS_FAILED,
            TlsProblem.CLIENT_CERT_REJECTED,
            "TLS failed: no client certificate accepted "
            "(the peer sent alert 'unsupported certificate')",
        ),
        (
            _alert("SSLV3_ALERT_CERTIFICATE_EXPIRED"),
            Phase.TLS,
            Verdict.TLS_FAILED,
            TlsProblem.EXPIRED,
            "TLS failed: certificate expired (the peer sent alert 'certificate expired')",
        ),
        (
            _alert("SSLV3_ALERT_HANDSHAKE_FAILURE"),
            Phase.TLS,
            Verdict.TLS_FAILED,
            TlsProblem.HANDSHAKE_RESET,
            "TLS failed: handshake reset (the peer sent alert 'handshake failure')",
        ),
        (
            _alert("WRONG_VERSION_NUMBER"),
            Phase.TLS,
            Verdict.PROTOCOL_FAILED,
            None,
            "the peer does not speak TLS (OpenSSL: wrong version number)",
        ),
        (
            ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),
            Phase.TLS,
            Verdict.TLS_FAILED,
            TlsProblem.HANDSHAKE_RESET,
            "TLS failed: handshake reset (the peer closed the connection in the handshake)",
        ),
        (
            _alert("TLSV1_ALERT_PROTOCOL_VERSION"),
            Phase.TLS,
            Verdict.TLS_FAILED,
            TlsProblem.OTHER,
            "TLS failed: other (the peer sent alert 'protocol version')",
        ),
        (RuntimeError("boom"), Phase.CONNECT, Verdict.ERROR, None, "RuntimeError: boom"),
    ],
)
def test_classify(
    exc: BaseException, phase: Phase, verdict: Verdict, problem: TlsProblem | None, reason: str
) -> None:
    c = classify(exc, phase, 2.0)
    assert (c.verdict, c.tls_problem, c.reason) == (verdict, problem, reason)


def test_handshake_failure_after_presenting_a_certificate_is_client_cert_rejected() -> None:
    c = classify(_alert("SSLV3_ALERT_HANDSHAKE_FAILURE"), Phase.TLS, mtls=True)
    assert c.tls_problem is TlsProblem.CLIENT_CERT_REJECTED


def test_describe_bytes_is_printable_and_short() -> None:
    assert describe_bytes(b"") == "nothing"
    assert describe_bytes(b"\x16\x03\x01\x00hello\nmore") == "'....hello'... (14 bytes)"


# ------------------------------------------------------------------ real sockets


async def test_tcp_connect_to_a_closed_port_is_refused() -> None:
    port = _closed_port()
    outcome = await probe_tcp_connect(ProbeSpec("tcp-connect", ADDRESS, port, bind="127.0.113.78"))
    assert outcome.verdict is Verdict.REFUSED
    assert outcome.reason == "connection refused (TCP reset or ICMP port unreachable)"


async def test_tcp_connect_samples_a_range_and_names_the_open_port() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), ADDRESS, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        low = port - 4 if port > 1030 else port
        outcome = await probe_tcp_connect(
            ProbeSpec("tcp-connect", ADDRESS, low, port_high=port, timeout=1)
        )
    finally:
        server.close()
        await server.wait_closed()
    assert outcome.verdict is Verdict.PASSED
    assert outcome.reason.startswith(f"TCP handshake completed on port {port} of ")
    assert outcome.details["ports"][str(port)] == "passed"


def test_sample_ports() -> None:
    assert sample_ports(50000, 59999) == [50000, 52500, 55000, 57499, 59999]
    assert sample_ports(5061, None) == [5061]
    assert sample_ports(10, 12) == [10, 11, 12]


async def test_stun_to_a_closed_udp_port_is_refused_by_icmp() -> None:
    port = _closed_port(socket.SOCK_DGRAM)
    outcome = await probe_stun_udp(ProbeSpec("stun-udp", ADDRESS, port, transport="udp", timeout=1))
    assert outcome.verdict is Verdict.REFUSED
    assert outcome.reason == "ICMP port unreachable"


async def test_binding_a_source_address_that_is_not_here_is_a_probe_error() -> None:
    outcome = await probe_tcp_connect(ProbeSpec("tcp-connect", ADDRESS, 9, bind="192.0.2.99"))
    assert outcome.verdict is Verdict.ERROR
    assert outcome.reason.startswith("cannot bind the source address")


async def test_stun_against_a_non_stun_udp_server_is_protocol_failed() -> None:
    async with udp_peer(ADDRESS, lambda data: b"HELLO not stun") as garbage:
        port = garbage.address[1]
        outcome = await probe_stun_udp(ProbeSpec("stun-udp", ADDRESS, port, timeout=1))
    assert outcome.verdict is Verdict.PROTOCOL_FAILED
    assert outcome.reason == "answered 'HELLO not stun' (14 bytes): not STUN"
