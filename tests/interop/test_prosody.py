"""Prosody as jabber.lab federating with the Edge's XMPP proxy (real peer, run by the fixture).

A slixmpp client logged into Prosody chats with alice@contoso.lab through the Edge (5269 in,
23456 to the Front End gateway emulator, and back). Two Prosody configurations:
- ``certificate``: ``s2s_secure_auth = true`` and dialback disabled, the Edge presents a
  certificate that names contoso.lab: Prosody can only accept SASL EXTERNAL (XEP-0178);
- ``dialback``: the Edge's lab certificate names xmpp.contoso.lab only, so Prosody authenticates
  the Edge by dialback (XEP-0220), with its back-connection to the Edge's 5269.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from simulator.lab.topology import Topology, load_topology
from simulator.pki import LabPki
from simulator.xmpp.harness import (
    PORT_MAP,
    ChatClient,
    XmppLab,
    shifted_topology,
    start_xmpp_lab,
)
from simulator.xmpp.prosody import ProsodySetup, render

PROSODY = shutil.which("prosody")
PROSODYCTL = shutil.which("prosodyctl")
RUNUSER = shutil.which("runuser")
pytestmark = [
    pytest.mark.skipif(
        not (PROSODY and PROSODYCTL and RUNUSER),
        reason="Prosody is not installed (Debian package 'prosody')",
    ),
    pytest.mark.skipif(
        os.geteuid() != 0, reason="needs root to run Prosody as its own user (runuser)"
    ),
]

JABBER = "127.0.113.30"
DNS_EXT = ("127.0.113.53", PORT_MAP[53])
S2S, C2S = PORT_MAP[5269], PORT_MAP[5222]


def issue_domain_cert(pki: LabPki, directory: Path, names: list[str]) -> tuple[Path, Path]:
    """A leaf from the lab public CA naming the domain itself (what XEP-0178 needs)."""
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert("public").read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key("public").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    cert_path, key_path = directory / "edge-domain.crt", directory / "edge-domain.key"
    chain = cert.public_bytes(serialization.Encoding.PEM)
    cert_path.write_bytes(chain)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def wait_for_port(host: str, port: int, proc: asyncio.subprocess.Process, log: Path) -> None:
    """Wait (at most 20 s) until Prosody accepts connections."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while loop.time() < deadline:
        if proc.returncode is not None:
            break
        try:
            _r, writer = await asyncio.open_connection(host, port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    text = log.read_text() if log.exists() else "(no log)"
    pytest.fail(f"Prosody did not start listening on {host}:{port}:\n{text[-3000:]}")


@contextlib.asynccontextmanager
async def prosody(setup: ProsodySetup, pki: LabPki) -> AsyncIterator[Path]:
    config = render(setup, pki.host_cert("jabber", "public"), pki.trust_bundle)
    subprocess.run(
        [
            RUNUSER,
            "-u",
            "prosody",
            "--",
            PROSODYCTL,
            "--config",
            str(config),
            "register",
            "romeo",
            "jabber.lab",
            "romeo-pass",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    proc = await asyncio.create_subprocess_exec(
        RUNUSER,
        "-u",
        "prosody",
        "--",
        PROSODY,
        "-F",
        "--config",
        str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_for_port(setup.address, setup.c2s_port, proc, setup.directory / "prosody.log")
        yield setup.directory / "prosody.log"
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@pytest.fixture
def shifted(tmp_path: Path) -> Topology:
    return load_topology(shifted_topology(tmp_path))


@pytest.fixture
def prosody_dir() -> AsyncIterator[Path]:  # type: ignore[misc]
    directory = Path(tempfile.mkdtemp(prefix="edgesim-prosody-"))
    directory.chmod(0o755)  # the prosody user reads its configuration below
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


async def chat_through_edge(lab: XmppLab, log: Path) -> None:
    client = ChatClient("romeo@jabber.lab/pc", "romeo-pass", lab.lab.pki.trust_bundle)
    await client.login(JABBER, C2S, timeout=15)
    try:
        client.send_message(mto="alice@contoso.lab", mbody="hello from prosody", mtype="chat")
        try:
            frm, to, body = await asyncio.wait_for(lab.bridge.arrived.get(), 20)
        except TimeoutError:
            pytest.fail("no message reached the gateway; Prosody log:\n" + log.read_text()[-4000:])
        assert (frm.split("/", 1)[0], to, body) == (
            "romeo@jabber.lab",
            "sip:alice@contoso.lab",
            "hello from prosody",
        )
        await lab.gateway.send_from_sip("sip:alice@contoso.lab", "romeo@jabber.lab", "hi romeo")
        try:
            got = await asyncio.wait_for(client.received.get(), 20)
        except TimeoutError:
            pytest.fail(
                "no reply reached the Prosody user; Prosody log:\n" + log.read_text()[-4000:]
            )
        assert got == ("alice@contoso.lab", "chat", "hi romeo")
    finally:
        client.disconnect()


async def test_prosody_authenticates_the_edge_by_certificate(
    shifted: Topology, lab_pki: LabPki, prosody_dir: Path
) -> None:
    cert, key = issue_domain_cert(lab_pki, prosody_dir, ["xmpp.contoso.lab", "contoso.lab"])
    setup = ProsodySetup(
        prosody_dir / "prosody",
        JABBER,
        C2S,
        S2S,
        DNS_EXT,
        secure_auth=True,
        dialback=False,
        log_level="debug",
    )
    lab = await start_xmpp_lab(
        shifted,
        lab_pki,
        {"xmpp-proxy": {"access_cert": str(cert), "access_key": str(key)}},
        hosts=["edge", "dns-ext", "dns-int"],
    )
    try:
        async with prosody(setup, lab_pki) as log:
            await chat_through_edge(lab, log)
        assert lab.proxy.outbound_auth["jabber.lab"] == "sasl-external"
        assert lab.proxy.inbound_auth["jabber.lab"] == "sasl-external"
    finally:
        await lab.stop()


async def test_prosody_authenticates_the_edge_by_dialback(
    shifted: Topology, lab_pki: LabPki, prosody_dir: Path
) -> None:
    setup = ProsodySetup(
        prosody_dir / "prosody",
        JABBER,
        C2S,
        S2S,
        DNS_EXT,
        secure_auth=False,
        dialback=True,
        log_level="debug",
    )
    # the lab certificate names contoso.lab (SASL EXTERNAL by default): an Edge that does
    # not use EXTERNAL is authenticated by dialback
    lab = await start_xmpp_lab(
        shifted,
        lab_pki,
        {"xmpp-proxy": {"allow_external": False}},
        hosts=["edge", "dns-ext", "dns-int"],
    )
    try:
        async with prosody(setup, lab_pki) as log:
            await chat_through_edge(lab, log)
            assert "contoso.lab" in log.read_text()
        assert lab.proxy.outbound_auth["jabber.lab"] == "dialback"
    finally:
        await lab.stop()


async def test_edge_verifies_prosody_by_dialback_back_connection(
    shifted: Topology, lab_pki: LabPki, prosody_dir: Path
) -> None:
    """With SASL EXTERNAL switched off on the Edge, Prosody must use dialback towards the Edge:
    the Edge then opens the back-connection to Prosody's 5269 and sends <db:verify> (the
    reason the seed's 5269 rule goes both ways)."""
    setup = ProsodySetup(prosody_dir / "prosody", JABBER, C2S, S2S, DNS_EXT, log_level="debug")
    lab = await start_xmpp_lab(
        shifted,
        lab_pki,
        {"xmpp-proxy": {"allow_external": False}},
        hosts=["edge", "dns-ext", "dns-int"],
    )
    try:
        async with prosody(setup, lab_pki) as log:
            await chat_through_edge(lab, log)
            assert "db:verify" in log.read_text()  # Prosody answered the Edge's verify request
        assert lab.proxy.inbound_auth["jabber.lab"] == "dialback"
        assert lab.proxy.outbound_auth["jabber.lab"] == "dialback"
    finally:
        await lab.stop()
