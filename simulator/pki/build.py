"""Issue the lab PKI idempotently. See the package docstring for the layout."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from simulator.certificate import (
    CertPaths,
    key_usage,
    server_leaf_extensions,
    sign_certificate,
)
from simulator.errors import EdgesimError
from simulator.lab.topology import Interface, Topology
from simulator.pki.secrets import lab_credentials

#: Deliberately bad certificates, each issued for every target in :data:`BAD_TARGETS`.
BAD_KINDS: dict[str, str] = {
    "expired": "valid names and CA, but notAfter is in the past",
    "wrong-name": "issued by the right CA for a name that is not the host's",
    "unknown-ca": "the host's names, issued by a CA nobody trusts",
    "server-only": "the host's names and CA, but extended key usage serverAuth only (no clientAuth)",
}

#: (host, ca) pairs that get a set of bad certificates: a federated partner and the Edge's
#: internal side, the two places where MTLS failures matter most.
BAD_TARGETS: tuple[tuple[str, str], ...] = (("fabrikam", "fabrikam"), ("edge", "internal"))

UNKNOWN_CA = "unknown"
MANIFEST_VERSION = 2
"""2: leaves of ordinary validity (version 1 had trustme's years 2000-3000); older ones are
reissued."""
RENEW_BEFORE = dt.timedelta(days=30)
LEAF_VALIDITY = dt.timedelta(days=365)
"""Validity of the lab's (good) leaves, as a real CA issues them. A leaf valid for a thousand
years breaks real peers (ejabberd's expiry timer crashes on trustme's default, year 3000, and it
then serves no certificate at all); ``ensure_pki`` renews a leaf within 30 days of expiry."""


@dataclass
class PkiReport:
    directory: Path
    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


class LabPki:
    """Paths of a PKI written by :func:`ensure_pki` (nothing is checked or created here)."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def ca_cert(self, ca_id: str) -> Path:
        return self.directory / "ca" / f"{ca_id}.crt"

    def ca_key(self, ca_id: str) -> Path:
        return self.directory / "ca" / f"{ca_id}.key"

    @property
    def trust_bundle(self) -> Path:
        return self.directory / "ca" / "lab-trust.pem"

    def all_cas(self) -> tuple[Path, ...]:
        """Every CA certificate the lab made, trusted or not (``ca/*.crt``): a server
        certificate none of them signed did not come from the lab."""
        return tuple(sorted((self.directory / "ca").glob("*.crt")))

    def _paths(self, folder: str, stem: str) -> CertPaths:
        base = self.directory / folder / stem
        return CertPaths(
            base.with_suffix(".crt"), base.with_suffix(".key"), base.with_suffix(".pem")
        )

    def host_cert(self, host_id: str, ca_id: str) -> CertPaths:
        return self._paths("hosts", f"{host_id}-{ca_id}")

    def interface_cert(self, iface: Interface) -> CertPaths:
        if iface.ca is None:
            raise EdgesimError(
                f"interface {iface.ref} has no certificate (no 'ca' in the topology)"
            )
        return self.host_cert(iface.host, iface.ca)

    def bad_cert(self, kind: str, host_id: str, ca_id: str) -> CertPaths:
        if kind not in BAD_KINDS:
            raise KeyError(kind)
        return self._paths("bad", f"{kind}-{host_id}-{ca_id}")

    def require(self, paths: CertPaths) -> CertPaths:
        """Return ``paths`` if the files exist, else raise a one-line error naming the file."""
        for path in (paths.cert, paths.key):
            if not path.is_file():
                raise EdgesimError(f"certificate file {path} is missing: run `edgesim certs`")
        return paths


# -------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _LeafSpec:
    stem: str
    """Path below the PKI directory without suffix: ``hosts/edge-public``."""
    ca: str
    names: tuple[str, ...]
    kind: str = "good"
    """``good`` or a key of :data:`BAD_KINDS`."""

    @property
    def fingerprint(self) -> str:
        text = json.dumps([self.ca, self.names, self.kind], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def host_certificates(topology: Topology) -> dict[tuple[str, str], tuple[str, ...]]:
    """(host, ca) -> the FQDNs that certificate carries, first one as subject CN."""
    groups: dict[tuple[str, str], list[str]] = {}
    for iface in topology.interfaces():
        if iface.ca is None:
            continue
        names = groups.setdefault((iface.host, iface.ca), [])
        names.extend(n for n in (*iface.fqdns, *iface.cert_names) if n not in names)
    return {key: tuple(names) for key, names in groups.items() if names}


def _plan(topology: Topology) -> list[_LeafSpec]:
    specs = [
        _LeafSpec(f"hosts/{host}-{ca}", ca, names)
        for (host, ca), names in host_certificates(topology).items()
    ]
    groups = host_certificates(topology)
    for host, ca in BAD_TARGETS:
        names = groups.get((host, ca))
        if names is None:
            continue  # a user topology without that host: no bad certificates for it
        for kind in BAD_KINDS:
            bad_names = (f"wrong-name.{ca}.lab",) if kind == "wrong-name" else names
            issuer = UNKNOWN_CA if kind == "unknown-ca" else ca
            specs.append(_LeafSpec(f"bad/{kind}-{host}-{ca}", issuer, bad_names, kind))
    return specs


# -------------------------------------------------------------------- issuing


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own per writer: two processes completing the PKI at once must not share it.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    tmp.write_bytes(data)
    if private:
        os.chmod(tmp, 0o600)
    tmp.replace(path)


def _ca_usable(cert: x509.Certificate | None, key_path: Path) -> bool:
    return (
        cert is not None and key_path.is_file() and cert.not_valid_after_utc - RENEW_BEFORE > _now()
    )


def _server_only_leaf(ca: trustme.CA, names: tuple[str, ...]) -> tuple[bytes, bytes]:
    """A leaf like trustme's but with EKU serverAuth only (trustme always adds clientAuth)."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = sign_certificate(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]),
        key.public_key(),
        ca_cert.subject,
        ca_key,  # type: ignore[arg-type]
        now - dt.timedelta(hours=1),
        now + LEAF_VALIDITY,
        server_leaf_extensions(
            [x509.DNSName(n) for n in names],
            ca_cert.public_key(),  # type: ignore[arg-type]
            key_usage("digital_signature", "key_encipherment"),
        ),
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _issue(ca: trustme.CA, spec: _LeafSpec) -> tuple[bytes, bytes]:
    if spec.kind == "server-only":
        return _server_only_leaf(ca, spec.names)
    not_before = _now() - dt.timedelta(hours=1)
    not_after = not_before + LEAF_VALIDITY
    if spec.kind == "expired":
        not_before = _now() - dt.timedelta(days=60)
        not_after = _now() - dt.timedelta(days=30)
    leaf = ca.issue_cert(
        *spec.names,
        common_name=spec.names[0],
        organization_name="edgesim lab",
        organization_unit_name=spec.stem,
        not_before=not_before,
        not_after=not_after,
    )
    return leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes()


def _leaf_valid(spec: _LeafSpec, cert: x509.Certificate | None, ca_cert: x509.Certificate) -> bool:
    if cert is None or cert.issuer != ca_cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, Exception):
        return False
    if spec.kind == "expired":
        return True
    return cert.not_valid_after_utc - RENEW_BEFORE > _now()


def ensure_pki(
    topology: Topology,
    directory: Path | str,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> PkiReport:
    """Write the lab PKI for ``topology`` under ``directory``; keep what is still valid.

    A certificate is kept when the manifest says it was made from the same names, CA and kind,
    it verifies against its CA's current certificate and it is not within 30 days of expiry.
    ``force`` reissues everything, CAs included.
    """
    pki = LabPki(directory)
    report = PkiReport(pki.directory)
    say = progress or (lambda _msg: None)
    try:
        pki.directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgesimError(f"cannot create {pki.directory}: {exc.strerror}") from None
    manifest_path = pki.directory / "manifest.json"
    manifest: dict[str, str] = {}
    if not force and manifest_path.is_file():
        try:
            loaded = json.loads(manifest_path.read_text())
            if loaded.get("version") == MANIFEST_VERSION:
                manifest = dict(loaded.get("files", {}))
        except (OSError, ValueError):
            manifest = {}

    cas: dict[str, trustme.CA] = {}
    ca_names = {ca.id: ca.name for ca in topology.cas}
    ca_names[UNKNOWN_CA] = "Unknown Lab CA (trusted by nobody)"
    renewed_cas: set[str] = set()
    for ca_id, ca_name in ca_names.items():
        cert_path, key_path = pki.ca_cert(ca_id), pki.ca_key(ca_id)
        existing = _load_cert(cert_path)
        if not force and _ca_usable(existing, key_path) and manifest.get(f"ca/{ca_id}") == ca_name:
            cas[ca_id] = trustme.CA.from_pem(cert_path.read_bytes(), key_path.read_bytes())
            report.kept.append(f"ca/{ca_id}.crt")
            continue
        say(f"issuing CA {ca_id} ({ca_name})")
        ca = trustme.CA(organization_name=ca_name, organization_unit_name=f"edgesim lab CA {ca_id}")
        _write(cert_path, ca.cert_pem.bytes())
        _write(key_path, ca.private_key_pem.bytes(), private=True)
        cas[ca_id] = ca
        renewed_cas.add(ca_id)
        manifest[f"ca/{ca_id}"] = ca_name
        report.written.append(f"ca/{ca_id}.crt")

    bundle = b"".join(pki.ca_cert(ca.id).read_bytes() for ca in topology.cas)
    if not pki.trust_bundle.is_file() or pki.trust_bundle.read_bytes() != bundle:
        _write(pki.trust_bundle, bundle)

    for spec in _plan(topology):
        base = pki.directory / spec.stem
        cert_path, key_path = base.with_suffix(".crt"), base.with_suffix(".key")
        ca_cert = x509.load_pem_x509_certificate(cas[spec.ca].cert_pem.bytes())
        if (
            not force
            and spec.ca not in renewed_cas
            and manifest.get(spec.stem) == spec.fingerprint
            and key_path.is_file()
            and base.with_suffix(".pem").is_file()
            and _leaf_valid(spec, _load_cert(cert_path), ca_cert)
        ):
            report.kept.append(f"{spec.stem}.crt")
            continue
        say(f"issuing {spec.stem} for {', '.join(spec.names)}")
        cert_pem, key_pem = _issue(cas[spec.ca], spec)
        _write(cert_path, cert_pem)
        _write(key_path, key_pem, private=True)
        _write(base.with_suffix(".pem"), cert_pem + key_pem, private=True)
        manifest[spec.stem] = spec.fingerprint
        report.written.append(f"{spec.stem}.crt")

    _write(
        manifest_path,
        json.dumps(
            {"version": MANIFEST_VERSION, "files": manifest}, indent=2, sort_keys=True
        ).encode(),
    )
    # Every secret the lab's services share, generated now: processes that copy or mount this
    # directory (the compose image) must all see the same values.
    lab_credentials(topology, pki.directory)
    return report
