"""SSLContext builders for TLS and MTLS, the peer certificate of a connection, and why a TLS
handshake failed.

Name checks for MTLS peers are not left to OpenSSL's hostname check (a server does not know
the client's name in advance): :func:`peer_certificate` extracts a
:class:`~simulator.certificate.PeerCertificate` and the protocol cores decide whether its names
match the partner they expect. :func:`tls_failure` is the one classifier of TLS errors: probes,
the adapters' refusals and the clients all read it.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import enum
import logging
import os
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from simulator.certificate import CertPaths, PeerCertificate
from simulator.errors import EdgesimError

log = logging.getLogger(__name__)

#: asyncio's TLS transport gives every connection a 256 KiB receive buffer, zeroed up front
#: (``SSLProtocol.max_size``): 2.5 GB for 10,000 idle clients. 32 KiB holds two full TLS records;
#: bulk transfers take a few more reads. Issue 12's soak (bench/soak_bench.py) measures it.
TLS_READ_BUFFER = 32 * 1024
if getattr(asyncio.sslproto.SSLProtocol, "max_size", 0) > TLS_READ_BUFFER:
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


def _load_chain(ctx: ssl.SSLContext, cert: CertPaths) -> None:
    try:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    except FileNotFoundError:
        missing = cert.cert if not cert.cert.exists() else cert.key
        raise EdgesimError(f"certificate file {missing} is missing: run `edgesim certs`") from None
    except (ssl.SSLError, OSError) as exc:
        raise EdgesimError(
            f"cannot load certificate {cert.cert} with key {cert.key}: {exc}"
        ) from None


def _load_trust(ctx: ssl.SSLContext, trust: Iterable[Path]) -> None:
    for path in trust:
        try:
            ctx.load_verify_locations(cafile=str(path))
        except FileNotFoundError:
            raise EdgesimError(f"CA file {path} is missing: run `edgesim certs`") from None
        except (ssl.SSLError, OSError) as exc:
            raise EdgesimError(f"cannot load CA file {path}: {exc}") from None


def _log_secrets(ctx: ssl.SSLContext) -> None:
    """Log the TLS session secrets to ``$SSLKEYLOGFILE`` when it is set, as Python's default
    context does: lab captures embed them so that Wireshark decrypts SIP and XMPP."""
    path = os.environ.get("SSLKEYLOGFILE")
    if path:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            ctx.keylog_filename = path
        except OSError as exc:
            log.warning("cannot log TLS secrets to %s: %s", path, exc.strerror or exc)


def server_context(
    cert: CertPaths, *, client_trust: Iterable[Path] = (), require_client_cert: bool = False
) -> ssl.SSLContext:
    """A server context; with ``require_client_cert`` it is MTLS (peer must chain to a CA)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _log_secrets(ctx)
    _load_chain(ctx, cert)
    trust = list(client_trust)
    if trust:
        _load_trust(ctx, trust)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    elif require_client_cert:
        raise EdgesimError("MTLS needs at least one trusted CA for client certificates")
    return ctx


def client_context(
    trust: Iterable[Path], *, cert: CertPaths | None = None, check_hostname: bool = True
) -> ssl.SSLContext:
    """A client context that verifies the server against ``trust``; ``cert`` makes it MTLS."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _log_secrets(ctx)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    _load_trust(ctx, trust)
    if cert is not None:
        _load_chain(ctx, cert)
    return ctx


def peer_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> PeerCertificate | None:
    """The verified peer certificate of a TLS connection, or None when there is none."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return PeerCertificate.from_der(der) if der else None


# -------------------------------------------------------------------- why a handshake failed


class TlsProblem(enum.Enum):
    """Why a TLS handshake failed, as a user would say it."""

    UNKNOWN_CA = "unknown CA"
    NAME_MISMATCH = "name mismatch"
    CLIENT_CERT_REJECTED = "no client certificate accepted"
    EXPIRED = "certificate expired"
    WRONG_PURPOSE = "certificate not valid for this use"
    HANDSHAKE_RESET = "handshake reset"
    NOT_TLS = "the peer does not speak TLS"
    INTERCEPTED = "intercepted by a TLS-inspecting middlebox"
    OTHER = "other"


@dataclass(frozen=True)
class TlsFailure:
    """A TLS error, classified."""

    problem: TlsProblem
    detail: str
    """OpenSSL's words: the verification message, or the alert or reason, in lower case."""
    verification: bool = False
    """True when our side refused the peer's certificate (rather than the peer refusing us,
    or the connection breaking)."""
    alert: bool = False
    """True when the peer sent a TLS alert."""
    no_client_certificate: bool = False
    """True when an MTLS server got no client certificate at all."""


#: OpenSSL X509_V_ERR_* codes (``SSLCertVerificationError.verify_code``) -> problem.
VERIFY_CODES: dict[int, TlsProblem] = {
    2: TlsProblem.UNKNOWN_CA,  # unable to get issuer certificate
    18: TlsProblem.UNKNOWN_CA,  # self-signed certificate
    19: TlsProblem.UNKNOWN_CA,  # self-signed certificate in chain
    20: TlsProblem.UNKNOWN_CA,  # unable to get local issuer certificate
    21: TlsProblem.UNKNOWN_CA,  # unable to verify the first certificate
    9: TlsProblem.EXPIRED,  # certificate is not yet valid
    10: TlsProblem.EXPIRED,  # certificate has expired
    26: TlsProblem.WRONG_PURPOSE,  # unsupported certificate purpose (no clientAuth/serverAuth)
    62: TlsProblem.NAME_MISMATCH,  # hostname mismatch
    64: TlsProblem.NAME_MISMATCH,  # IP address mismatch
}

#: OpenSSL reason strings (``SSLError.reason``) -> problem. The alerts are the peer's verdict on
#: *our* certificate; ``PEER_DID_NOT_RETURN_A_CERTIFICATE`` is an MTLS server's own.
REASONS: dict[str, TlsProblem] = {
    "TLSV1_ALERT_UNKNOWN_CA": TlsProblem.UNKNOWN_CA,
    "CERTIFICATE_VERIFY_FAILED": TlsProblem.UNKNOWN_CA,
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": TlsProblem.EXPIRED,
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": TlsProblem.CLIENT_CERT_REJECTED,
    "SSLV3_ALERT_BAD_CERTIFICATE": TlsProblem.CLIENT_CERT_REJECTED,
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": TlsProblem.CLIENT_CERT_REJECTED,
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": TlsProblem.CLIENT_CERT_REJECTED,
    "SSLV3_ALERT_CERTIFICATE_REVOKED": TlsProblem.CLIENT_CERT_REJECTED,
    "TLSV1_ALERT_ACCESS_DENIED": TlsProblem.CLIENT_CERT_REJECTED,
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": TlsProblem.CLIENT_CERT_REJECTED,
    "SSLV3_ALERT_HANDSHAKE_FAILURE": TlsProblem.HANDSHAKE_RESET,
    "WRONG_VERSION_NUMBER": TlsProblem.NOT_TLS,
    "UNKNOWN_PROTOCOL": TlsProblem.NOT_TLS,
    "HTTP_REQUEST": TlsProblem.NOT_TLS,
    "RECORD_LAYER_FAILURE": TlsProblem.NOT_TLS,
    "PACKET_LENGTH_TOO_LONG": TlsProblem.NOT_TLS,
    "UNEXPECTED_EOF_WHILE_READING": TlsProblem.HANDSHAKE_RESET,
    "EOF": TlsProblem.HANDSHAKE_RESET,
}

_ALERT_PREFIXES = ("SSLV3_ALERT_", "TLSV13_ALERT_", "TLSV1_ALERT_")


def tls_failure(exc: ssl.SSLError) -> TlsFailure:
    """Classify an OpenSSL error of a handshake: by verification code for a certificate we
    refused, by OpenSSL's reason for an alert the peer sent or a broken handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = exc.verify_message or getattr(exc, "reason", None) or str(exc)
        return TlsFailure(
            VERIFY_CODES.get(exc.verify_code, TlsProblem.OTHER), message, verification=True
        )
    reason = getattr(exc, "reason", None) or ""
    if isinstance(exc, ssl.SSLEOFError) and reason not in REASONS:
        reason = "EOF"
    alert = reason.startswith(_ALERT_PREFIXES)
    detail = reason
    for prefix in _ALERT_PREFIXES:
        detail = detail.removeprefix(prefix)
    return TlsFailure(
        REASONS.get(reason, TlsProblem.OTHER),
        detail.lower().replace("_", " ") or str(exc),
        alert=alert,
        no_client_certificate=reason
        in ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED"),
    )


#: How the listeners and clients word a refused handshake (:func:`tls_failure_reason`).
_REFUSALS = {
    TlsProblem.UNKNOWN_CA: "the certificate does not chain to a trusted CA",
    TlsProblem.EXPIRED: "the certificate is out of its validity period",
    TlsProblem.NAME_MISMATCH: "the certificate does not match the server name",
    TlsProblem.WRONG_PURPOSE: "the certificate is not valid for this use, e.g. no clientAuth",
}


def tls_failure_reason(exc: BaseException) -> str:
    """One line saying why a TLS handshake (or the connection under it) failed, as the
    listeners' refusals, the traces and the clients say it."""
    if isinstance(exc, ssl.SSLError):
        failure = tls_failure(exc)
        if failure.no_client_certificate:
            return "the peer presented no client certificate"
        wording = _REFUSALS.get(failure.problem)
        if failure.verification:
            return f"{wording or 'the certificate was refused'} ({failure.detail})"
        if wording is not None:
            return wording
        return f"TLS error ({exc.reason or exc})"
    if isinstance(exc, TimeoutError):
        return "handshake timed out"
    return f"connection error ({exc})"


def connect_failure(exc: BaseException, timeout: float) -> tuple[str, str]:
    """How a client's connection that did not come up is traced: (``dropped`` or ``refused``,
    one line saying where and why)."""
    if isinstance(exc, TimeoutError):
        return "dropped", f"no TCP/TLS answer within {timeout:g} s"
    if isinstance(exc, ssl.SSLError):
        return "refused", f"TLS refused: {tls_failure_reason(exc)}"
    return "refused", f"connect failed: {getattr(exc, 'strerror', None) or exc}"


# -------------------------------------------------------------------- TLS inspection


@dataclass(frozen=True)
class Interception:
    """A server certificate on a lab destination that no CA of the lab issued: something in the
    path re-signed the connection (SSL inspection)."""

    issuer: str
    """The issuing CA's name (its CN, else the whole distinguished name)."""
    names: tuple[str, ...]
    """What the certificate was made for (subjectAltName entries, else the CN)."""
    where: str
    """``address:port`` it was presented on."""

    def describe(self) -> str:
        names = ", ".join(self.names) or "?"
        return (
            f"{TlsProblem.INTERCEPTED.value}: the certificate presented on {self.where} for "
            f"{names} is issued by '{self.issuer}', a CA the lab did not issue"
        )


def _name_of(name: x509.Name) -> str:
    cns = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else name.rfc4514_string()


def foreign_certificate(der: bytes, lab_cas: Iterable[Path], where: str) -> Interception | None:
    """An :class:`Interception` when no certificate in ``lab_cas`` (the lab's CA files, every
    one the lab made, trusted or not) signed the certificate ``der``; None when one did."""
    leaf = x509.load_der_x509_certificate(der)
    for path in lab_cas:
        try:
            cas = x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError):
            continue
        for ca in cas:
            if ca.subject != leaf.issuer:
                continue
            try:
                leaf.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return None
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(str(v) for v in san.get_values_for_type(x509.DNSName)) + tuple(
            str(v) for v in san.get_values_for_type(x509.IPAddress)
        )
    except x509.ExtensionNotFound:
        names = ()
    return Interception(_name_of(leaf.issuer), names or (_name_of(leaf.subject),), where)


async def presented_certificate(
    address: str,
    port: int,
    *,
    server_hostname: str | None,
    local_addr: tuple[str, int] | None = None,
    sock: socket.socket | None = None,
    timeout: float = 2.0,
) -> bytes | None:
    """The certificate a TLS server on ``address:port`` presents (unverified, DER), as
    ``openssl s_client`` shows it; None when no handshake completes in ``timeout``. ``sock``: a
    connected socket to use (a lab host's), else a connection from ``local_addr``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    writer = None
    try:
        async with asyncio.timeout(timeout):
            if sock is not None:
                _, writer = await asyncio.open_connection(
                    sock=sock, ssl=ctx, server_hostname=server_hostname or ""
                )
            else:
                _, writer = await asyncio.open_connection(
                    address, port, ssl=ctx, server_hostname=server_hostname or "",
                    local_addr=local_addr,
                )  # fmt: skip
            obj = writer.get_extra_info("ssl_object")
            der = obj.getpeercert(binary_form=True) if obj is not None else None
    except (OSError, TimeoutError, EOFError, ssl.SSLError):
        if sock is not None and writer is None:
            sock.close()
        return None
    finally:
        if writer is not None:
            writer.close()
    return der or None


async def interception(
    address: str,
    port: int,
    lab_cas: Iterable[Path],
    *,
    server_hostname: str | None,
    local_addr: tuple[str, int] | None = None,
    sock: socket.socket | None = None,
    timeout: float = 2.0,
) -> Interception | None:
    """Whether the TLS server a client meets on ``address:port`` (a lab destination) presents a
    certificate no lab CA issued: fetch it (:func:`presented_certificate`) and check its issuer
    (:func:`foreign_certificate`). None when the lab's own certificate comes back, or none."""
    cas = list(lab_cas)
    if not cas:
        return None
    der = await presented_certificate(
        address, port, server_hostname=server_hostname, local_addr=local_addr, sock=sock,
        timeout=timeout,
    )  # fmt: skip
    return foreign_certificate(der, cas, f"{address}:{port}") if der else None
