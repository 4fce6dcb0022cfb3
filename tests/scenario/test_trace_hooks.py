"""The SIP and XMPP adapters record every message for ladders: a recorder sees a real exchange
(both ends, with the socket addresses and the Call-ID), a refused TLS handshake with its reason,
and a connection that never answers as ``dropped``."""

from __future__ import annotations

import asyncio
import ssl
import xml.etree.ElementTree as ET

import pytest
from sipmessage import Request, Response

from simulator import trace
from simulator.pki import LabPki
from simulator.sip.aio import ListenerSpec, SipListener, SipProtocol, open_sip
from simulator.sip.build import response_for
from simulator.sip.emulators.ua import UserAgent
from simulator.tls import client_context, server_context
from simulator.trace import TraceRecorder
from simulator.xmpp.aio import describe_stanza

SERVER = "127.217.9.1"
CLIENT = "127.217.9.2"


class Answering:
    """A SIP server owner that answers every request 200."""

    def on_request(self, proto: SipProtocol, request: Request) -> None:
        proto.send(response_for(request, 200))

    def on_response(self, proto: SipProtocol, response: Response) -> None:
        pass

    def on_close(self, proto: SipProtocol) -> None:
        pass


async def listener(context: ssl.SSLContext) -> tuple[SipListener, int]:
    owner = Answering()
    server = SipListener(ListenerSpec(SERVER, 0, context, "test/5061", lambda p: None, owner))
    _, port = await server.start()
    return server, port


async def test_a_sip_exchange_is_recorded_on_both_ends(lab_pki: LabPki) -> None:
    server, port = await listener(server_context(lab_pki.host_cert("edge", "public")))
    ua = UserAgent(
        "sip:alice@contoso.lab",
        host=SERVER,
        port=port,
        context=client_context([lab_pki.trust_bundle]),
        server_name="sip.contoso.lab",
        local_address=CLIENT,
    )
    try:
        with TraceRecorder() as rec:
            async with ua:
                answer = await ua.message("sip:bob@contoso.lab", "hi bob")
        assert answer.code == 200
    finally:
        await server.stop()
    sip = [e for e in rec.events if e.protocol == "sip"]
    client_end = next(e.src for e in sip if e.event == "sent" and e.summary.startswith("MESSAGE"))
    assert client_end.startswith(f"{CLIENT}:")
    seen = [(e.event, e.src, e.dst, e.summary) for e in sip]
    assert seen == [
        ("sent", client_end, f"{SERVER}:{port}", "MESSAGE sip:bob@contoso.lab"),
        ("received", client_end, f"{SERVER}:{port}", "MESSAGE sip:bob@contoso.lab"),
        ("sent", f"{SERVER}:{port}", client_end, "200 OK"),
        ("received", f"{SERVER}:{port}", client_end, "200 OK"),
    ]
    call_ids = {e.flow for e in sip}
    assert len(call_ids) == 1 and None not in call_ids  # one flow: the Call-ID
    assert "hi bob" in sip[0].detail and sip[0].detail.startswith("MESSAGE sip:bob@contoso.lab")


async def test_without_a_recorder_the_adapters_build_no_trace_events(
    lab_pki: LabPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hot path (benchmarks) does not even call ``trace.record``."""
    calls: list[str] = []
    monkeypatch.setattr(trace, "record", lambda *a, **k: calls.append(str(a)))
    monkeypatch.delenv("EDGESIM_TRACE_FILE", raising=False)
    assert not trace.active()
    server, port = await listener(server_context(lab_pki.host_cert("edge", "public")))
    try:
        async with UserAgent(
            "sip:alice@contoso.lab",
            host=SERVER,
            port=port,
            context=client_context([lab_pki.trust_bundle]),
            server_name="sip.contoso.lab",
        ) as ua:
            assert (await ua.options("sip:sip.contoso.lab")).code == 200
    finally:
        await server.stop()
    assert calls == []


async def test_refused_handshakes_record_why(lab_pki: LabPki) -> None:
    # the server wants a client certificate from a trusted CA; the client's is from an unknown CA
    mtls = server_context(
        lab_pki.host_cert("edge", "public"),
        client_trust=[lab_pki.ca_cert("public")],
        require_client_cert=True,
    )
    server, port = await listener(mtls)
    bad = lab_pki.bad_cert("unknown-ca", "fabrikam", "fabrikam")
    try:
        with TraceRecorder() as rec:
            with pytest.raises((ConnectionError, ssl.SSLError, TimeoutError)):
                proto = await open_sip(
                    Answering(),
                    SERVER,
                    port,
                    client_context([lab_pki.trust_bundle], cert=bad),
                    "sip.contoso.lab",
                    local_address=CLIENT,
                )
                await asyncio.wait_for(proto.closed, 5)
                raise ConnectionError("closed by the server")
            # the client does not trust the server: it refuses, and records where it stopped
            with pytest.raises(ssl.SSLError):
                await open_sip(
                    Answering(),
                    SERVER,
                    port,
                    client_context([lab_pki.ca_cert("fabrikam")]),
                    "sip.contoso.lab",
                    local_address=CLIENT,
                )
    finally:
        await server.stop()
    refusals = [(e.event, e.dst, e.summary) for e in rec.events if "refused" in e.summary]
    assert (
        "received",
        f"{SERVER}:{port}",
        "TLS handshake refused: the certificate does not chain to a trusted CA "
        "(unable to get local issuer certificate)",
    ) in refusals
    client_side = [r for r in refusals if r[0] == "refused"]
    assert client_side and client_side[-1][1] == f"{SERVER}:{port}"
    assert "does not chain to a trusted CA" in client_side[-1][2]
    assert next(e for e in rec.events if e.event == "refused").src == CLIENT


async def test_a_connection_that_never_answers_is_recorded_as_dropped() -> None:
    # a TCP listener that never starts TLS: the client's handshake times out
    silent = await asyncio.start_server(lambda r, w: None, SERVER, 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        with TraceRecorder() as rec, pytest.raises(TimeoutError):
            await open_sip(
                Answering(),
                SERVER,
                port,
                ssl.create_default_context(),
                "sip.contoso.lab",
                timeout=0.3,
                local_address=CLIENT,
            )
    finally:
        silent.close()
    (event,) = rec.events
    assert (event.event, event.src, event.dst) == ("dropped", CLIENT, f"{SERVER}:{port}")
    assert event.summary == "no TCP/TLS answer within 0.3 s"


def test_stanza_labels_name_the_kind_and_both_ends() -> None:
    message = ET.fromstring(
        "<message xmlns='jabber:server' from='romeo@jabber.lab/pc' to='alice@contoso.lab'"
        " type='chat'><body>hi</body></message>"
    )
    assert describe_stanza(message) == "<message> romeo@jabber.lab/pc -> alice@contoso.lab"
    error = ET.fromstring("<presence type='error' to='romeo@jabber.lab'/>")
    assert describe_stanza(error) == "<presence error> ? -> romeo@jabber.lab"


async def test_xmpp_connects_that_fail_are_recorded_where_they_stopped(lab_pki: LabPki) -> None:
    from simulator.xmpp.aio import new_stream_id, open_session
    from simulator.xmpp.s2s import Role, Session, SessionConfig

    def session() -> Session:
        return Session(
            Role.GATEWAY_CLIENT,
            SessionConfig(local_domains=frozenset({"contoso.lab"})),
            now=asyncio.get_running_loop().time(),
            stream_id=new_stream_id(),
            local_domain="contoso.lab",
            remote_domain="contoso.lab",
        )

    silent = await asyncio.start_server(lambda r, w: None, SERVER, 0)
    quiet_port = silent.sockets[0].getsockname()[1]
    closed = await asyncio.start_server(lambda r, w: None, SERVER, 0)
    closed_port = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()
    tls = client_context([lab_pki.trust_bundle])
    try:
        with TraceRecorder() as rec:
            for port in (quiet_port, closed_port):
                with pytest.raises(OSError):
                    await open_session(
                        session(),
                        [(SERVER, port)],
                        on_event=lambda c, e: None,
                        tls_client=tls,
                        ssl_now=tls,
                        server_hostname="edge-int.contoso.lab",
                        connect_timeout=0.3,
                        local_address=CLIENT,
                    )
    finally:
        silent.close()
    seen = [(e.protocol, e.event, e.src, e.dst, e.summary) for e in rec.events]
    assert seen[0] == (
        "xmpp", "dropped", CLIENT, f"{SERVER}:{quiet_port}", "no TCP/TLS answer within 0.3 s"
    )  # fmt: skip
    assert seen[1][:4] == ("xmpp", "refused", CLIENT, f"{SERVER}:{closed_port}")
    assert seen[1][4].startswith("connect failed: ")
