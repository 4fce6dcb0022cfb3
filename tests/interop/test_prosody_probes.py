"""The XMPP probes against Prosody (Debian prosody 0.12), with the lab certificates."""

from __future__ import annotations

import dataclasses
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.pki import LabPki
from simulator.probes.base import Verdict
from simulator.probes.spec import ProbeSpec
from simulator.probes.xmpp import probe_xmpp_mtls, probe_xmpp_s2s
from simulator.tls import TlsProblem

pytestmark = [
    pytest.mark.interop,
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("prosody") is None, reason="prosody is not installed"),
    pytest.mark.skipif(
        os.geteuid() != 0, reason="runs prosody as its own user (needs root for runuser)"
    ),
]

SERVER = "127.78.0.1"
CLIENT = "127.51.100.10"  # the Edge's access interface in the local runner


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((SERVER, 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def prosody(lab_pki: LabPki) -> Iterator[tuple[int, int]]:
    try:
        user = pwd.getpwnam("prosody")
    except KeyError:
        pytest.skip("no 'prosody' user on this machine")
    work = Path(tempfile.mkdtemp(prefix="edgesim-probe-prosody-"))
    try:
        cert = lab_pki.host_cert("jabber", "public")
        shutil.copy(cert.cert, work / "jabber.crt")
        shutil.copy(cert.key, work / "jabber.key")
        shutil.copy(lab_pki.trust_bundle, work / "lab-trust.pem")
        (work / "data").mkdir()
        s2s, s2s_tls, c2s = _free_port(), _free_port(), _free_port()
        (work / "prosody.cfg.lua").write_text(f"""
pidfile = "{work}/prosody.pid"
data_path = "{work}/data"
certificates = "{work}"
interfaces = {{ "{SERVER}" }}
c2s_ports = {{ {c2s} }}
s2s_interfaces = {{ "{SERVER}" }}
s2s_ports = {{ {s2s} }}
s2s_direct_tls_ports = {{ {s2s_tls} }}
http_ports = {{}}
https_ports = {{}}
daemonize = false
log = {{ {{ levels = {{ min = "info" }}, to = "console" }} }}
modules_enabled = {{ "tls", "dialback", "saslauth", "disco", "ping" }}
s2s_require_encryption = true
s2s_secure_auth = false
ssl = {{ cafile = "{work}/lab-trust.pem" }}
admin_socket = "{work}/prosody.sock"
VirtualHost "jabber.lab"
  ssl = {{ certificate = "{work}/jabber.crt"; key = "{work}/jabber.key" }}
VirtualHost "wrong.lab"
  ssl = {{ certificate = "{work}/jabber.crt"; key = "{work}/jabber.key" }}
""")
        for path in [work, *work.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)
        proc = subprocess.Popen(
            [
                "runuser",
                "-u",
                "prosody",
                "--",
                "prosody",
                "-F",
                "--config",
                str(work / "prosody.cfg.lua"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert proc.stdout is not None
            seen: list[str] = []
            for _ in range(200):  # start-up logs ~10 lines; the last service we need is direct TLS
                line = proc.stdout.readline()
                if not line:
                    break
                seen.append(line)
                if "Activated service 's2s_direct_tls' on [" in line:
                    break
            assert any("s2s_direct_tls' on [" in ln for ln in seen), "".join(seen)
            yield s2s, s2s_tls
        finally:
            proc.terminate()
            proc.wait(10)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def spec(lab_pki: LabPki, port: int, kind: str = "xmpp-s2s", **kw: Any) -> ProbeSpec:
    base = ProbeSpec(
        kind=kind,
        address=SERVER,
        port=port,
        bind=CLIENT,
        fqdn="xmpp.jabber.lab",
        domain="jabber.lab",
        source_domain="contoso.lab",
        trust=(lab_pki.trust_bundle,),
        timeout=3.0,
    )
    return dataclasses.replace(base, **kw)


async def test_s2s_starttls_up_to_features(prosody: tuple[int, int], lab_pki: LabPki) -> None:
    outcome = await probe_xmpp_s2s(spec(lab_pki, prosody[0]))
    assert outcome.verdict is Verdict.PASSED, outcome.reason
    assert any(f.startswith("starttls") for f in outcome.details["features_before_tls"])
    assert outcome.details["server_cert"] == "xmpp.jabber.lab"
    assert "dialback" in outcome.details["features"]
    assert outcome.reason.startswith("XMPP stream over STARTTLS, features: ")


async def test_s2s_with_the_edge_certificate_offers_sasl_external(
    prosody: tuple[int, int], lab_pki: LabPki
) -> None:
    outcome = await probe_xmpp_s2s(
        spec(
            lab_pki,
            prosody[0],
            client_cert=lab_pki.host_cert("edge", "public"),
            source_domain="xmpp.contoso.lab",
        )
    )
    assert outcome.verdict is Verdict.PASSED, outcome.reason
    assert "mechanisms: EXTERNAL" in outcome.details["features"]


async def test_s2s_with_the_wrong_ca_is_tls_failed(
    prosody: tuple[int, int], lab_pki: LabPki
) -> None:
    outcome = await probe_xmpp_s2s(spec(lab_pki, prosody[0], trust=(lab_pki.ca_cert("internal"),)))
    assert outcome.verdict is Verdict.TLS_FAILED
    assert outcome.tls_problem is TlsProblem.UNKNOWN_CA
    assert outcome.reason.startswith("TLS failed: unknown CA (server certificate: ")


async def test_s2s_name_mismatch(prosody: tuple[int, int], lab_pki: LabPki) -> None:
    """wrong.lab is served with jabber.lab's certificate."""
    outcome = await probe_xmpp_s2s(
        spec(lab_pki, prosody[0], fqdn="xmpp.wrong.lab", domain="wrong.lab")
    )
    assert outcome.verdict is Verdict.TLS_FAILED
    assert outcome.tls_problem is TlsProblem.NAME_MISMATCH
    assert outcome.reason == (
        "TLS failed: name mismatch (server certificate names xmpp.jabber.lab, jabber.lab,"
        " not wrong.lab or xmpp.wrong.lab)"
    )


async def test_mtls_stream_on_direct_tls(prosody: tuple[int, int], lab_pki: LabPki) -> None:
    outcome = await probe_xmpp_mtls(
        spec(
            lab_pki,
            prosody[1],
            kind="xmpp-mtls",
            client_cert=lab_pki.host_cert("edge", "public"),
            source_domain="xmpp.contoso.lab",
        )
    )
    assert outcome.verdict is Verdict.PASSED, outcome.reason
    assert outcome.reason.startswith("XMPP stream over MTLS, features: ")
    assert "mechanisms: EXTERNAL" in outcome.details["features"]


async def test_mtls_probe_against_the_plaintext_port_is_protocol_failed(
    prosody: tuple[int, int], lab_pki: LabPki
) -> None:
    outcome = await probe_xmpp_mtls(spec(lab_pki, prosody[0], kind="xmpp-mtls"))
    assert outcome.verdict in (Verdict.PROTOCOL_FAILED, Verdict.TLS_FAILED)
