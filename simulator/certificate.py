"""Certificate facts as values with no I/O: a peer certificate as the protocol cores need it,
and where a certificate and its key are (:class:`CertPaths`).

:mod:`simulator.tls` extracts a :class:`PeerCertificate` from a TLS connection; the cores (SIP
proxy, XMPP S2S) decide whether its names and key usages fit the partner they expect. Name
checks for MTLS peers are not left to OpenSSL's hostname check, since a server does not know the
client's name in advance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


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


@dataclass(frozen=True)
class CertPaths:
    """Where a certificate and its key are, as the lab PKI writes them."""

    cert: Path
    key: Path
    pem: Path
    """Certificate followed by key, in one file."""
