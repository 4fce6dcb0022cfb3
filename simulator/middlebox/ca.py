"""The inspection CA: generated per lab run, it signs a certificate for every name a client
asks for (the TLS SNI, or the destination address when the client sends none), as SSL
inspection does with the CA its owner distributes to managed clients.

Nothing of it ships or touches the lab PKI: the key lives in the middlebox's memory, the leaves
in its private work directory; only the CA certificate is written where a user (or a test that
plays a managed client) can trust it. Time is an argument, so the core stays free of clocks.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from simulator.certificate import key_usage, server_leaf_extensions, sign_certificate

CA_NAME = "edgesim TLS Inspection CA"
"""The subject CN of the CA (a report names it as the issuer of what a client received)."""
LEAF_DAYS = 7
CA_DAYS = 30
BACKDATE = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class Leaf:
    """A minted certificate and its key, PEM."""

    name: str
    cert_pem: bytes
    key_pem: bytes


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class InspectionCa:
    """A CA of its own (EC P-256) that signs leaves for whatever name is asked."""

    def __init__(self, now: datetime.datetime, *, name: str = CA_NAME) -> None:
        self.name = name
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgesim lab middlebox"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ])  # fmt: skip
        self._subject = subject
        self.cert = sign_certificate(
            subject,
            self._key.public_key(),
            subject,
            self._key,
            now - BACKDATE,
            now + datetime.timedelta(days=CA_DAYS),
            [
                x509.BasicConstraints(ca=True, path_length=0),
                key_usage("digital_signature", "key_cert_sign", "crl_sign"),
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()),
            ],
        )

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, name: str, now: datetime.datetime) -> Leaf:
        """A server certificate for ``name`` (a DNS name or an IP address), signed by this CA,
        valid for :data:`LEAF_DAYS`."""
        name = name.strip().rstrip(".").lower()
        if not name or len(name) > 253:
            raise ValueError("a certificate name must be 1 to 253 characters")
        key = ec.generate_private_key(ec.SECP256R1())
        san: x509.GeneralName = (
            x509.IPAddress(ipaddress.ip_address(name)) if _is_address(name) else x509.DNSName(name)
        )
        cert = sign_certificate(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])]),
            key.public_key(),
            self._subject,
            self._key,
            now - BACKDATE,
            now + datetime.timedelta(days=LEAF_DAYS),
            server_leaf_extensions([san], self._key.public_key()),
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return Leaf(name, cert.public_bytes(serialization.Encoding.PEM), key_pem)
