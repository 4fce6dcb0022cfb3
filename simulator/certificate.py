"""Certificate facts as values with no I/O: a peer certificate as the protocol cores need it,
where a certificate and its key are (:class:`CertPaths`), and the one certificate builder that
signs what ``trustme`` cannot express (the lab PKI's serverAuth-only leaf, the SSL-inspection
middlebox's CA and leaves; :func:`sign_certificate`).

:mod:`simulator.tls` extracts a :class:`PeerCertificate` from a TLS connection; the cores (SIP
proxy, XMPP S2S) decide whether its names and key usages fit the partner they expect. Name
checks for MTLS peers are not left to OpenSSL's hostname check, since a server does not know the
client's name in advance.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
    CertificatePublicKeyTypes,
)
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


# ------------------------------------------------------------------ building certificates

_KEY_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


def key_usage(*usages: str) -> x509.KeyUsage:
    """The keyUsage extension with exactly ``usages`` set (``"digital_signature"``,
    ``"key_cert_sign"``, ... as :class:`x509.KeyUsage` names them)."""
    unknown = sorted(set(usages) - set(_KEY_USAGES))
    if unknown:
        raise ValueError(f"unknown key usage {unknown[0]!r}")
    return x509.KeyUsage(**{name: name in usages for name in _KEY_USAGES})


def server_leaf_extensions(
    names: Sequence[x509.GeneralName],
    issuer_key: CertificateIssuerPublicKeyTypes,
    usage: x509.KeyUsage | None = None,
) -> list[x509.ExtensionType]:
    """A TLS server leaf's extensions: no CA, ``names`` as its subjectAltName, ``usage`` if
    given, extended key usage serverAuth only, and the issuer's key identifier."""
    return [
        x509.BasicConstraints(ca=False, path_length=None),
        x509.SubjectAlternativeName(names),
        *([usage] if usage is not None else []),
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
        x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key),
    ]


def sign_certificate(
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    issuer: x509.Name,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    extensions: Sequence[x509.ExtensionType],
) -> x509.Certificate:
    """A certificate for ``public_key`` signed by ``issuer_key`` (SHA-256, a random serial),
    with ``extensions`` in that order: basicConstraints and keyUsage critical (RFC 5280
    4.2.1.9, 4.2.1.3), the others not."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for extension in extensions:
        critical = isinstance(extension, x509.BasicConstraints | x509.KeyUsage)
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())
