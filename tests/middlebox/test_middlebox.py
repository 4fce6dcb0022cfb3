"""The inspecting middlebox without namespaces: its CA, how it reads a flow's first bytes, and
the proxy on loopback between a TLS client and a TLS server of the test's own (no
``IP_TRANSPARENT``: the upstream is given), plus how a client tells an interception."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from simulator.media import msturn
from simulator.media.client import ClientConfig, TurnClient
from simulator.media.events import UnexpectedDataReceived
from simulator.middlebox.aio import InspectingProxy
from simulator.middlebox.ca import CA_NAME, InspectionCa
from simulator.middlebox.records import FirstBytes, describe, first_bytes
from simulator.tls import client_context, foreign_certificate, interception, presented_certificate

NOW = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)


def test_the_ca_signs_a_leaf_for_a_name_or_an_address() -> None:
    ca = InspectionCa(NOW)
    for name, kind in (("sip.contoso.lab", x509.DNSName), ("198.51.100.11", x509.IPAddress)):
        leaf = x509.load_pem_x509_certificate(ca.issue(name, NOW).cert_pem)
        leaf.verify_directly_issued_by(ca.cert)
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(v) for v in san.get_values_for_type(kind)] == [name]
        assert leaf.issuer.rfc4514_string().startswith(f"CN={CA_NAME}")
    with pytest.raises(ValueError):
        ca.issue("", NOW)


def test_first_bytes_decide_what_the_box_does() -> None:
    hello = msturn.pseudo_tls_client_hello(bytes(32))
    assert first_bytes(hello) is FirstBytes.TLS  # a TLS record: its TLS stack decides
    assert describe(hello) == "the [MS-TURN] pseudo-TLS ClientHello"
    assert first_bytes(b"\x16\x03") is FirstBytes.MORE
    assert first_bytes(b"") is FirstBytes.MORE
    assert first_bytes(b"OPTIONS sip:x SIP/2.0\r\n") is FirstBytes.NOT_TLS
    assert first_bytes(msturn.frame(msturn.CONTROL, b"\x00\x03")) is FirstBytes.NOT_TLS
    assert msturn.tls_alert(b"\x15\x03\x01\x00\x02\x02\x46") == "protocol version"
    assert msturn.tls_alert(b"\x16\x03\x01\x00\x02\x02\x46") is None


def test_the_ms_turn_client_names_a_tls_alert_instead_of_the_server_hello() -> None:
    core = TurnClient(ClientConfig(stream=True), dialect=msturn.MS_TURN)
    core.start_pseudo_tls(bytes(32))
    assert core.data_to_send()[0][:5] == msturn.PSEUDO_TLS_PREFIX
    core.receive_data(b"\x15\x03\x01\x00\x02\x02\x46", 0.0)
    event = core.next_event()
    assert isinstance(event, UnexpectedDataReceived)
    assert event.reason == "TLS alert 'protocol version' instead of the pseudo-TLS ServerHello"


def test_a_certificate_is_foreign_unless_a_lab_ca_signed_it(tmp_path: Path) -> None:
    lab_ca, rogue = trustme.CA(), InspectionCa(NOW)
    (tmp_path / "lab.crt").write_bytes(lab_ca.cert_pem.bytes())
    cas = [tmp_path / "lab.crt"]
    leaf = lab_ca.issue_cert("sip.contoso.lab").cert_chain_pems[0].bytes()
    ours = x509.load_pem_x509_certificate(leaf)
    theirs = x509.load_pem_x509_certificate(rogue.issue("sip.contoso.lab", NOW).cert_pem)
    assert foreign_certificate(ours.public_bytes(Encoding.DER), cas, "a:443") is None
    found = foreign_certificate(theirs.public_bytes(Encoding.DER), cas, "198.51.100.10:443")
    assert found is not None
    assert found.describe() == (
        "intercepted by a TLS-inspecting middlebox: the certificate presented on "
        "198.51.100.10:443 for sip.contoso.lab is issued by 'edgesim TLS Inspection CA', a CA "
        "the lab did not issue"
    )


# ------------------------------------------------------------------ the proxy on loopback


class Upstream:
    """A TLS echo server with a certificate of the test's "lab" CA."""

    def __init__(self, tmp: Path) -> None:
        self.ca = trustme.CA()
        self.trust = tmp / "lab-ca.crt"
        self.trust.write_bytes(self.ca.cert_pem.bytes())
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ca.issue_cert("sip.contoso.lab", "127.0.0.1").configure_cert(self.ctx)
        self.port = 0

    async def echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
        writer.close()


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[tuple[InspectingProxy, Upstream, int]]:
    up = Upstream(tmp_path)
    server = await asyncio.start_server(up.echo, "127.0.0.1", 0, ssl=up.ctx)
    up_port = up.port = server.sockets[0].getsockname()[1]
    proxy = InspectingProxy(
        InspectionCa(datetime.datetime.now(datetime.UTC)),
        tmp_path / "box",
        upstream_trust=[up.trust],
        transparent=False,
        upstream=lambda _dest: ("127.0.0.1", up_port),
    )
    (tmp_path / "box").mkdir()
    front = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    port = front.sockets[0].getsockname()[1]
    async with server, front:
        yield proxy, up, port


async def test_a_managed_client_gets_through_with_the_box_certificate(
    box: tuple[InspectingProxy, Upstream, int], tmp_path: Path
) -> None:
    proxy, _up, port = box
    ca_file = tmp_path / "box-ca.crt"
    ca_file.write_bytes(proxy.ca.cert_pem)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_context([ca_file]), server_hostname="sip.contoso.lab"
    )
    cert = writer.get_extra_info("ssl_object").getpeercert()
    assert dict(x[0] for x in cert["issuer"])["commonName"] == CA_NAME
    writer.write(b"OPTIONS through the box\r\n")
    assert await asyncio.wait_for(reader.readexactly(25), 5) == b"OPTIONS through the box\r\n"
    writer.close()
    assert proxy.stats["inspected"] == 1


async def test_a_lab_client_refuses_the_box_and_is_told_why(
    box: tuple[InspectingProxy, Upstream, int],
) -> None:
    _proxy, up, port = box
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context([up.trust]), server_hostname="sip.contoso.lab"
        )
    found = await interception(
        "127.0.0.1", port, [up.trust], server_hostname="sip.contoso.lab", timeout=5
    )
    assert found is not None and found.issuer == CA_NAME and found.names == ("sip.contoso.lab",)
    # without SNI the box mints for the address; straight to the server, the lab's own comes
    minted = await presented_certificate("127.0.0.1", port, server_hostname=None, timeout=5)
    assert minted is not None and foreign_certificate(minted, [up.trust], "x") is not None
    assert (
        await interception(
            "127.0.0.1", up.port, [up.trust], server_hostname="sip.contoso.lab", timeout=5
        )
        is None
    )


async def test_pseudo_tls_gets_an_alert_and_other_bytes_a_reset(
    box: tuple[InspectingProxy, Upstream, int],
) -> None:
    proxy, _, port = box
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(msturn.pseudo_tls_client_hello(bytes(32)))
    answer = await asyncio.wait_for(reader.read(), 5)  # the alert, then the close
    assert msturn.tls_alert(answer) == "protocol version", answer
    writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(msturn.frame(msturn.CONTROL, b"\x00\x03\x00\x00"))
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert proxy.stats["refused"] == 1 and proxy.stats["not-tls"] == 1
