"""Fuzz targets: one per sans-IO entry point that takes bytes from the internet.

Each target takes arbitrary bytes and drives a core with them; the invariant (STYLE.md 4) is that
the core yields events, answers or our own protocol error, and nothing else escapes. Used by the
bounded Hypothesis tests (``tests/test_fuzz.py``, in CI) and by the long-running fuzzer
(``scripts/fuzz.py``, with atheris).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from simulator.dns.zone import DnsZone, Records
from simulator.media import msturn
from simulator.media.actions import ListenerId
from simulator.media.client import ClientConfig, TurnClient
from simulator.media.config import TurnConfig
from simulator.media.errors import MediaError
from simulator.media.turn import TurnServer
from simulator.sip import errors as sip_errors
from simulator.sip.build import response_for
from simulator.sip.connection import SipConnection
from simulator.sip.events import RequestReceived, ResponseReceived
from simulator.sip.framing import Frame
from simulator.sip.proxy import EdgeConfig, EdgeProxy, Forward, Partner, Side
from simulator.sip.validate import validate
from simulator.tls import PeerCertificate
from simulator.xmpp import errors as xmpp_errors
from simulator.xmpp.s2s import Role, Session, SessionConfig
from simulator.xmpp.stream import XmlStream

SIP_SEED = (
    b"MESSAGE sip:bob@contoso.lab SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS 203.0.113.10:5061;branch=z9hG4bK-peer-1;rport\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:carol@fabrikam.lab>;tag=f1\r\nTo: <sip:bob@contoso.lab>\r\n"
    b"Call-ID: c1\r\nCSeq: 1 MESSAGE\r\nRoute: <sip:sip.contoso.lab;lr>\r\n"
    b"Content-Length: 5\r\n\r\nhello"
)
XMPP_HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
    b"xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "
    b"to='contoso.lab' from='jabber.lab' version='1.0'>"
)
_EDGE = EdgeConfig(
    allowed_domains=(Partner("fabrikam.lab", "sip.fabrikam.lab"),),
    public_providers=(Partner("pic.lab", "sip.pic.lab", "pic"),),
    enable_partner_discovery=True,
)
_XMPP = SessionConfig(
    local_domains=frozenset({"contoso.lab"}),
    dialback_secret=b"fuzz",
    partner_domains=frozenset({"jabber.lab"}),
)
_TURN = TurnConfig(relay_address="127.51.100.11", users={"alice": "alice-pw"})
_TURN_LISTENERS = (
    ListenerId("udp", "127.51.100.11", 3478),
    ListenerId("tcp", "127.51.100.11", 443),
)
_ZONE = DnsZone(Records({"sip.contoso.lab": ("198.51.100.10",)}, {}, ("lab",)))


def _sip_events(conn: SipConnection) -> list[object]:
    events: list[object] = []
    for _ in range(1000):  # bounded: one event per loop at least
        try:
            event = conn.next_event()
        except sip_errors.RemoteProtocolError:
            continue
        if event is None:
            break
        events.append(event)
    return events


def sip_framing(data: bytes) -> None:
    """Bytes in any chunks: events or our RemoteProtocolError."""
    conn = SipConnection(message_timeout=30.0, idle_timeout=60.0)
    cut = len(data) // 3
    for i, piece in enumerate((data[:cut], data[cut:], b"")):
        conn.receive_data(piece, float(i))
        _sip_events(conn)
    conn.handle_timer(100.0)


def sip_validate(data: bytes) -> None:
    """A header section and body as framed: a message or our RemoteProtocolError."""
    head, _, body = (SIP_SEED[:40] + data).partition(b"\r\n\r\n")
    with contextlib.suppress(sip_errors.RemoteProtocolError):
        validate(Frame(head, body))


def sip_proxy(data: bytes) -> None:
    """Whatever validates goes through the Edge core from each side, and its answers back."""
    conn = SipConnection()
    conn.receive_data(SIP_SEED.replace(b"hello", b"")[:-30] + data, 0.0)
    for event in _sip_events(conn):
        proxy = EdgeProxy(_EDGE)
        flows = [
            proxy.flow_opened(Side.FEDERATION, ("203.0.113.10", 1), ["sip.fabrikam.lab"]),
            proxy.flow_opened(Side.INTERNAL, ("192.0.2.10", 2), ["pool.contoso.lab"]),
            proxy.flow_opened(Side.CLIENT, ("203.0.113.40", 3)),
        ]
        for flow in flows:
            if isinstance(event, ResponseReceived):
                proxy.receive_response(flow.id, event.response, 0.0)
                continue
            if not isinstance(event, RequestReceived):
                continue  # a keep-alive, the end of the stream
            for action in proxy.receive_request(flow.id, event.request, 0.0):
                if isinstance(action, Forward) and action.request.method != "ACK":
                    proxy.sent_on(action.branch, flows[1].id)
                    proxy.receive_response(flows[1].id, response_for(action.request, 200), 1.0)
        proxy.handle_timer(100.0)


def xmpp_stream(data: bytes) -> None:
    """After a good header, anything: events or our RemoteProtocolError."""
    stream = XmlStream()
    try:
        stream.receive_data(XMPP_HEADER, 0.0)
        stream.receive_data(data, 1.0)
        while stream.next_event() is not None:
            pass
    except xmpp_errors.RemoteProtocolError:
        pass


def xmpp_s2s(data: bytes) -> None:
    """An inbound stream past TLS, then anything (dialback, stanzas): our error or nothing."""
    session = Session(Role.RECEIVING, _XMPP, now=0.0, stream_id="fuzz")
    try:
        session.receive_data(XMPP_HEADER, 0.0)
        session.receive_data(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", 0.0)
        session.tls_established(
            PeerCertificate("jabber.lab", ("jabber.lab",), "Lab CA", True, True), 0.0
        )
        session.receive_data(XMPP_HEADER, 0.0)
        session.receive_data(data, 1.0)
        while session.next_event() is not None:
            pass
    except xmpp_errors.RemoteProtocolError:
        pass


def dns_answer(data: bytes) -> None:
    """A datagram or a TCP message: an answer that fits, or nothing."""
    for limit in (512, None):
        reply = _ZONE.answer(data, max_size=limit)
        assert reply is None or (isinstance(reply, bytes) and len(reply) <= (limit or 65535))


def turn_server(data: bytes) -> None:
    """A datagram or stream message from a client (UDP and TCP listeners) or from a peer at a
    relay: actions, nothing else (more in ``tests/media/test_fuzz.py``)."""
    server = TurnServer(_TURN)
    with contextlib.suppress(MediaError):
        for listener in _TURN_LISTENERS:
            server.receive(data, ("203.0.113.40", 40000), listener, 0.0)
        server.relay_received(1, data, ("203.0.113.50", 5004), 0.0)
        server.handle_timer(1000.0)


def turn_client(data: bytes) -> None:
    """What a TURN server answers, as datagrams and as a stream: events, nothing else."""
    for stream in (False, True):
        client = TurnClient(ClientConfig(stream=stream), transaction_ids=lambda: data[8:20])
        client.allocate(0.0)
        with contextlib.suppress(MediaError):
            if stream:
                client.receive_data(data, 0.0)
                client.receive_data(b"", 0.0)
            else:
                client.receive_datagram(data, 0.0)
            client.handle_timer(100.0)
            while client.next_event() is not None:
                pass


def ms_turn_server(data: bytes) -> None:
    """[MS-TURN] at the Edge (the EDGE dialect): a datagram, and a TCP connection's bytes cut
    into frames by the Edge's stream framer (pseudo-TLS, section 2.1.4 framing) and handed to
    the core, after an allocation exists on the 5-tuple (raw data, Send, Set Active
    Destination reach their handlers): actions or our errors, nothing else."""
    server = TurnServer(_TURN, dialect=msturn.EDGE)
    client = ("203.0.113.40", 40000)
    with contextlib.suppress(MediaError):
        for listener in _TURN_LISTENERS:
            if listener.stream:
                framer = msturn.EdgeStreamFramer()
                for frame in framer.frames(data):
                    server.receive(frame, client, listener, 0.0)
            else:
                server.receive(data, client, listener, 0.0)
        server._state.ms_clients.add((_TURN_LISTENERS[0], client))
        server.receive(data, client, _TURN_LISTENERS[0], 0.0)
        server.relay_received(1, data, ("203.0.113.50", 5004), 0.0)
        server.handle_timer(1000.0)


def ms_turn_client(data: bytes) -> None:
    """What an [MS-TURN] server answers a Lync-dialect client (datagrams, and a stream after
    the pseudo-TLS exchange): events, nothing else."""
    for stream in (False, True):
        client = TurnClient(
            ClientConfig(stream=stream),
            dialect=msturn.MS_TURN,
            transaction_ids=lambda: (data[4:20] + bytes(16))[:16],
        )
        if stream:
            client.start_pseudo_tls(bytes(32))
        client.allocate(0.0)
        with contextlib.suppress(MediaError):
            if stream:
                client.receive_data(msturn.pseudo_tls_server_hello(bytes(64)) + data, 0.0)
                client.receive_data(b"", 0.0)
            else:
                client.receive_datagram(data, 0.0)
            client.handle_timer(100.0)
            while client.next_event() is not None:
                pass


TARGETS: dict[str, Callable[[bytes], None]] = {
    "sip-framing": sip_framing,
    "sip-validate": sip_validate,
    "sip-proxy": sip_proxy,
    "xmpp-stream": xmpp_stream,
    "xmpp-s2s": xmpp_s2s,
    "dns-answer": dns_answer,
    "turn-server": turn_server,
    "turn-client": turn_client,
    "ms-turn-server": ms_turn_server,
    "ms-turn-client": ms_turn_client,
}
