"""SSLContext builders for TLS and MTLS, and the facts of a peer certificate.

Name checks for MTLS peers are not left to OpenSSL's hostname check (a server does not know
the client's name in advance): :func:`peer_certificate` extracts a :class:`PeerCertificate`
and the protocol cores decide whether its names match the partner they expect.
"""

from __future__ import annotations

import asyncio.sslproto
import logging
import os
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from simulator.errors import EdgesimError
from simulator.pki import CertPaths

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


@dataclass(frozen=True)
class PeerCertificate:
    """What the protocol cores need to know of a verified peer certificate."""

    subject_cn: str | None
    dns_names: tuple[str, ...]
    """subjectAltName DNS entries, lower case."""
    issuer_cn: str | None
    client_auth: bool
    """True when the certificate may be used as a TLS client certificate (EKU clientAuth)."""
    server_auth: bool

    @classmethod
    def from_der(cls, der: bytes) -> PeerCertificate:
        cert = x509.load_der_x509_certificate(der)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = tuple(n.lower() for n in san.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            names = ()
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            client_auth = ExtendedKeyUsageOID.CLIENT_AUTH in eku
            server_auth = ExtendedKeyUsageOID.SERVER_AUTH in eku
        except x509.ExtensionNotFound:
            client_auth = server_auth = True  # no EKU: any purpose
        return cls(_cn(cert.subject), names, _cn(cert.issuer), client_auth, server_auth)

    def names(self) -> tuple[str, ...]:
        """SAN DNS names, or the subject CN when there are none (RFC 6125 fallback)."""
        if self.dns_names:
            return self.dns_names
        return (self.subject_cn.lower(),) if self.subject_cn else ()

    def matches(self, fqdn: str) -> bool:
        """RFC 6125 matching of ``fqdn`` (one left-most ``*`` label allowed)."""
        fqdn = fqdn.lower().rstrip(".")
        for name in self.names():
            if name == fqdn:
                return True
            if name.startswith("*.") and "." in fqdn and fqdn.split(".", 1)[1] == name[2:]:
                return True
        return False


def _cn(name: x509.Name) -> str | None:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else None


def peer_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> PeerCertificate | None:
    """The verified peer certificate of a TLS connection, or None when there is none."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return PeerCertificate.from_der(der) if der else None
