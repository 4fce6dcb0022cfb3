"""The lab PKI: certificate authorities and host certificates, written under ``certs/``.

Built with ``trustme`` (CAs and ordinary leaves) and ``cryptography`` (what trustme cannot
express: a leaf with serverAuth only). Layout of the output directory::

    ca/<ca>.crt ca/<ca>.key      one per topology CA, plus ca/unknown.* that nobody trusts
    ca/lab-trust.pem             every topology CA, for tools that want one bundle
    hosts/<host>-<ca>.{crt,key,pem}
                                 one leaf per host and issuing CA, with the FQDNs of the host's
                                 interfaces that CA covers; EKU serverAuth and clientAuth
    bad/<kind>-<host>-<ca>.{crt,key,pem}
                                 deliberately bad leaves for negative probes: expired,
                                 wrong-name, unknown-ca, server-only
    manifest.json                what each file was made from, so re-runs keep what is valid
    secrets.json                 the lab's passwords and shared secrets (mode 0600), generated
                                 per lab, never shipped (:mod:`simulator.pki.secrets`)

``.pem`` files hold the certificate followed by its key (stunnel, Prosody, sipsak take that).
"""

from simulator.certificate import CertPaths
from simulator.pki.build import (
    BAD_KINDS,
    LabPki,
    PkiReport,
    ensure_pki,
)
from simulator.pki.secrets import LabSecrets, lab_credentials, service_settings, user_password

__all__ = [
    "BAD_KINDS",
    "CertPaths",
    "LabPki",
    "LabSecrets",
    "PkiReport",
    "ensure_pki",
    "lab_credentials",
    "service_settings",
    "user_password",
]
