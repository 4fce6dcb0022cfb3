"""The lab PKI: certificates verify with openssl, carry their host's names, bad ones fail as named."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from simulator.lab.topology import Topology
from simulator.pki import BAD_KINDS, LabPki, ensure_pki
from simulator.pki.build import host_certificates

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def openssl_verify(ca: Path, cert: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "verify", *extra, "-CAfile", str(ca), str(cert)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_every_host_certificate_verifies_against_its_ca_and_carries_its_names(
    topology: Topology, lab_pki: LabPki
) -> None:
    groups = host_certificates(topology)
    assert ("edge", "public") in groups and ("edge", "internal") in groups
    for (host, ca), names in groups.items():
        paths = lab_pki.host_cert(host, ca)
        result = openssl_verify(lab_pki.ca_cert(ca), paths.cert)
        assert result.returncode == 0, result.stdout + result.stderr
        cert = load(paths.cert)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert tuple(san.get_values_for_type(x509.DNSName)) == names
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku
        # MTLS: the certificate is good for both ends of a TLS connection.
        for purpose in ("sslserver", "sslclient"):
            assert (
                openssl_verify(lab_pki.ca_cert(ca), paths.cert, "-purpose", purpose).returncode == 0
            )


def test_the_edge_external_certificate_covers_access_and_av_names(lab_pki: LabPki) -> None:
    names = (
        load(lab_pki.host_cert("edge", "public").cert)
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value.get_values_for_type(x509.DNSName)
    )
    assert {"sip.contoso.lab", "av.contoso.lab"} <= set(names)
    assert "edge-int.contoso.lab" not in names  # internal names never go on the public cert


def test_a_certificate_from_one_ca_does_not_verify_against_another(lab_pki: LabPki) -> None:
    result = openssl_verify(
        lab_pki.ca_cert("public"), lab_pki.host_cert("fabrikam", "fabrikam").cert
    )
    assert result.returncode != 0


@pytest.mark.parametrize(
    ("host", "ca", "fqdn"),
    [("fabrikam", "fabrikam", "sip.fabrikam.lab"), ("edge", "internal", "edge-int.contoso.lab")],
)
def test_bad_certificates_fail_the_way_their_name_says(
    lab_pki: LabPki, host: str, ca: str, fqdn: str
) -> None:
    ca_file = lab_pki.ca_cert(ca)
    expired = openssl_verify(ca_file, lab_pki.bad_cert("expired", host, ca).cert)
    assert expired.returncode != 0 and "certificate has expired" in expired.stdout + expired.stderr

    unknown = openssl_verify(ca_file, lab_pki.bad_cert("unknown-ca", host, ca).cert)
    assert (
        unknown.returncode != 0
        and "unable to get local issuer certificate" in unknown.stdout + unknown.stderr
    )

    wrong = lab_pki.bad_cert("wrong-name", host, ca).cert
    assert openssl_verify(ca_file, wrong).returncode == 0  # a good chain ...
    mismatch = openssl_verify(ca_file, wrong, "-verify_hostname", fqdn)  # ... for another name
    assert mismatch.returncode != 0 and "hostname mismatch" in mismatch.stdout + mismatch.stderr

    server_only = lab_pki.bad_cert("server-only", host, ca).cert
    assert openssl_verify(ca_file, server_only, "-purpose", "sslserver").returncode == 0
    as_client = openssl_verify(ca_file, server_only, "-purpose", "sslclient")
    assert (
        as_client.returncode != 0
        and "unsuitable certificate purpose" in as_client.stdout + as_client.stderr
    )
    assert set(BAD_KINDS) == {"expired", "unknown-ca", "wrong-name", "server-only"}


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_rerunning_keeps_valid_certificates_and_force_reissues(
    topology: Topology, tmp_path: Path
) -> None:
    first = ensure_pki(topology, tmp_path)
    assert first.kept == [] and len(first.written) > 10
    before = _snapshot(tmp_path)
    second = ensure_pki(topology, tmp_path)
    assert second.written == []
    assert _snapshot(tmp_path) == before

    forced = ensure_pki(topology, tmp_path, force=True)
    assert sorted(forced.written) == sorted(first.written)
    assert _snapshot(tmp_path)["ca/public.crt"] != before["ca/public.crt"]


def test_a_damaged_or_missing_certificate_is_reissued_and_the_rest_kept(
    topology: Topology, tmp_path: Path
) -> None:
    ensure_pki(topology, tmp_path)
    pki = LabPki(tmp_path)
    pki.host_cert("pic", "public").cert.write_text("garbage")
    pki.host_cert("fe", "internal").key.unlink()
    report = ensure_pki(topology, tmp_path)
    assert sorted(report.written) == ["hosts/fe-internal.crt", "hosts/pic-public.crt"]
    assert (
        openssl_verify(pki.ca_cert("public"), pki.host_cert("pic", "public").cert).returncode == 0
    )


def test_a_new_ca_reissues_everything_it_signed(topology: Topology, tmp_path: Path) -> None:
    ensure_pki(topology, tmp_path)
    pki = LabPki(tmp_path)
    pki.ca_cert("fabrikam").unlink()
    report = ensure_pki(topology, tmp_path)
    assert "hosts/fabrikam-fabrikam.crt" in report.written
    assert "hosts/edge-public.crt" not in report.written
    assert (
        openssl_verify(
            pki.ca_cert("fabrikam"), pki.host_cert("fabrikam", "fabrikam").cert
        ).returncode
        == 0
    )


def test_private_keys_are_not_world_readable(lab_pki: LabPki) -> None:
    mode = lab_pki.host_cert("edge", "public").key.stat().st_mode & 0o777
    assert mode == 0o600


def test_leaves_have_an_ordinary_validity_as_real_cas_issue_them(
    topology: Topology, lab_pki: LabPki
) -> None:
    """Real peers choke on trustme's default (valid until the year 3000): ejabberd's expiry
    timer crashes and it then serves no certificate. Leaves get about a year; CAs may live long."""
    now = dt.datetime.now(dt.UTC)
    leaves = [*sorted((lab_pki.directory / "hosts").glob("*.crt"))]
    leaves += [p for p in (lab_pki.directory / "bad").glob("*.crt") if "expired" not in p.name]
    assert leaves
    for path in leaves:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert dt.timedelta(days=30) < lifetime <= dt.timedelta(days=400), path.name
        assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc, path.name
