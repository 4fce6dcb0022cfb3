"""Issue 12: the Access Edge core refuses what a real Edge refuses (trust, flows, framing).

Every test here failed before its fix: a response accepted on the wrong flow, a trust header
that survived with a space before its colon, exceptions other than our protocol error from one
message, folded header lines refused, an unknown Request-URI scheme answered 400.
"""

from __future__ import annotations

import pytest
from sipmessage import Response

from simulator.sip.build import response_for
from simulator.sip.connection import SipConnection
from simulator.sip.errors import RemoteProtocolError
from simulator.sip.events import RequestReceived, ResponseReceived
from simulator.sip.framing import Frame, Framer
from simulator.sip.proxy import Forward, Send, ToInternal
from simulator.sip.validate import validate
from tests.sip.sip_helpers import lf2crlf, message
from tests.sip.test_sip_proxy import Edge, only, parse, refusal, reparse_response
from tests.vectors import rfc4475

TRUST = "ms-edge-proxy-message-trust"


def frame_of(data: bytes) -> Frame:
    head, _, body = data.partition(b"\r\n\r\n")
    return Frame(head, body)


def register(edge: Edge, aor: str = "sip:alice@contoso.lab") -> Forward:
    data = message("REGISTER", "sip:contoso.lab", sender=aor, to=aor, body="")
    action = only(edge.proxy.receive_request(edge.client.id, parse(data), 0.0))
    assert isinstance(action, Forward) and action.target == ToInternal()
    edge.proxy.sent_on(action.branch, edge.fe.id)  # as the adapter does
    return action


def trust_of(edge: Edge, sender: str) -> str:
    data = message(uri="sip:bob@contoso.lab", sender=sender)
    action = only(edge.proxy.receive_request(edge.client.id, parse(data), 0.0))
    assert isinstance(action, Forward)
    return action.request.headers.getlist(TRUST)[0]


# ---------------------------------------------------------------------- High 1: flows


def test_a_forged_200_from_the_remote_user_does_not_make_it_the_ceo() -> None:
    edge = Edge()
    forward = register(edge, "sip:ceo@contoso.lab")
    # the remote user computes the Edge's branch and answers its own REGISTER
    forged = reparse_response(response_for(forward.request, 200))
    assert edge.proxy.receive_response(edge.client.id, forged, 0.5) == []
    # and without any transaction: a branch naming its own flow
    stale = reparse_response(
        response_for(
            parse(
                message(
                    "REGISTER",
                    "sip:contoso.lab",
                    sender="sip:ceo@contoso.lab",
                    to="sip:ceo@contoso.lab",
                    body="",
                ).replace(
                    b"branch=z9hG4bK-peer-1",
                    f"branch=z9hG4bK-es0000-{edge.client.id}-x".encode(),
                )
            ),
            200,
        )
    )
    assert edge.proxy.receive_response(edge.client.id, stale, 0.6) == []
    assert edge.proxy.flows[edge.client.id].user is None
    assert "ms-source-verified-user=unverified" in trust_of(edge, "sip:ceo@contoso.lab")
    # the Front End's own 200 on the flow the REGISTER left on does verify it
    ok = reparse_response(response_for(forward.request, 200))
    assert isinstance(only(edge.proxy.receive_response(edge.fe.id, ok, 1.0)), Send)
    assert "ms-source-verified-user=verified" in trust_of(edge, "sip:ceo@contoso.lab")


def test_a_response_from_the_internet_never_reaches_the_front_end() -> None:
    edge = Edge()
    out = message(uri="sip:dave@pic.lab", sender="sip:bob@contoso.lab")
    forward = only(edge.proxy.receive_request(edge.fe.id, parse(out), 0.0))
    assert isinstance(forward, Forward)
    pic = edge.proxy.flow_opened(edge.fabrikam.side, ("203.0.113.20", 5061), ["sip.pic.lab"])
    edge.proxy.sent_on(forward.branch, pic.id)
    answer = reparse_response(response_for(forward.request, 200))
    for intruder in (edge.client.id, edge.fabrikam.id):  # not the flow the request left on
        assert edge.proxy.receive_response(intruder, answer, 0.5) == []
    sent = only(edge.proxy.receive_response(pic.id, answer, 1.0))
    assert isinstance(sent, Send) and sent.flow_id == edge.fe.id


def test_a_response_for_a_flow_the_edge_never_sent_on_is_dropped() -> None:
    edge = Edge()
    data = message(uri="sip:bob@contoso.lab").replace(
        b"branch=z9hG4bK-peer-1", f"branch=z9hG4bK-es0000-{edge.fe.id}-x".encode()
    )
    answer = reparse_response(response_for(parse(data), 200))
    assert edge.proxy.receive_response(edge.fabrikam.id, answer, 0.0) == []


# ---------------------------------------------------------------------- High 2: trust header


@pytest.mark.parametrize(
    "line",
    [
        f"{TRUST} : ms-source-type=InternalUser",
        f"{TRUST}\t: ms-source-type=InternalUser",
        "MS-Edge-Proxy-Message-Trust: ms-source-type=InternalUser",
        f"{TRUST}:\n ms-source-type=InternalUser",
        "P-Asserted-Identity : <sip:ceo@contoso.lab>",
    ],
)
def test_the_trust_header_is_stripped_by_its_canonical_name(line: str) -> None:
    edge = Edge()
    forged = message(extra=line + "\n")
    action = only(edge.proxy.receive_request(edge.fabrikam.id, parse(forged), 0.0))
    assert isinstance(action, Forward)
    wire = bytes(action.request).lower()
    assert wire.count(TRUST.encode()) == 1
    assert b"internaluser" not in wire and b"p-asserted-identity" not in wire


def test_a_trust_header_in_a_response_from_outside_is_stripped() -> None:
    edge = Edge()
    out = message(uri="sip:carol@fabrikam.lab", sender="sip:bob@contoso.lab")
    forward = only(edge.proxy.receive_request(edge.fe.id, parse(out), 0.0))
    assert isinstance(forward, Forward)
    edge.proxy.sent_on(forward.branch, edge.fabrikam.id)
    answer = response_for(forward.request, 200, headers=[(f"{TRUST} ", "ms-source-type=X")])
    sent = only(edge.proxy.receive_response(edge.fabrikam.id, reparse_response(answer), 0.0))
    assert isinstance(sent, Send) and isinstance(sent.message, Response)
    assert TRUST.encode() not in bytes(sent.message).lower()


@pytest.mark.parametrize("header", ["Record-Route", "Path"])
def test_route_entries_naming_the_edge_from_outside_are_refused(header: str) -> None:
    edge = Edge()
    forged = f"{header}: <sip:edge-int.contoso.lab:5061;transport=tls;lr;edgeflow=7>\n"
    data = message("SUBSCRIBE", sender="sip:alice@contoso.lab", extra=forged + "Event: presence\n")
    code, reason = refusal(edge.proxy.receive_request(edge.client.id, parse(data), 0.0))
    assert (code, reason) == (403, f"{header} entry naming this Edge from outside")


@pytest.mark.parametrize("value", ["hi\rInjected: yes", "hi\nInjected: yes"])
def test_bare_cr_or_lf_in_a_header_value_gets_400(value: str) -> None:
    data = message().replace(b"Content-Type:", f"Subject: {value}\r\nContent-Type:".encode())
    with pytest.raises(RemoteProtocolError) as caught:
        validate(frame_of(data))
    assert (caught.value.status, caught.value.reason) == (400, "Bare CR or LF in a header line")


# ---------------------------------------------------------------------- Low: one packet


@pytest.mark.parametrize("digits", ["²", "٣", "\uff11", "7²"])
def test_non_ascii_digits_in_max_forwards_and_cseq_get_400(digits: str) -> None:
    for data, reason in (
        (message(max_forwards=digits), "Malformed Max-Forwards header"),
        (
            message().replace(b"CSeq: 1 MESSAGE", f"CSeq: {digits} MESSAGE".encode()),
            "Malformed CSeq header",
        ),
    ):
        with pytest.raises(RemoteProtocolError) as caught:
            validate(frame_of(data))
        assert (caught.value.status, caught.value.reason) == (400, reason)


def test_a_route_parameter_with_non_ascii_digits_is_not_a_flow() -> None:
    edge = Edge()
    data = message(
        uri="sip:alice@contoso.lab",
        sender="sip:bob@contoso.lab",
        extra="Route: <sip:edge-int.contoso.lab;lr;edgeflow=²>\n",
    )
    code, _ = refusal(edge.proxy.receive_request(edge.fe.id, parse(data), 0.0))
    assert code == 480


# ---------------------------------------------------------------------- RFC 4475


@pytest.mark.parametrize("name", sorted(rfc4475.VALID))
def test_rfc4475_valid_messages_parse(name: str) -> None:
    conn = SipConnection()
    conn.receive_data(rfc4475.VALID[name], 0.0)
    events = []
    while (event := conn.next_event()) is not None:
        events.append(event)
    expected = ResponseReceived if name == "noreason" else RequestReceived
    assert events and all(isinstance(e, expected) for e in events)
    assert len(events) == (2 if name == "dblreq" else 1)


def test_folded_lines_are_unfolded() -> None:
    (event,) = _events(rfc4475.WSINV)
    request = event.request
    assert request.headers["To"] == "sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n"
    assert request.headers["CSeq"] == "0009 INVITE"
    assert request.headers.get("NewFangledHeader") == (
        "newfangled value continued newfangled value"
    )
    assert request.headers.getlist("Via") == [  # LWS around separators dropped
        "SIP/2.0/UDP 192.0.2.2;branch=390skdjuw",
        "SIP/2.0/TCP     spindle.example.com;branch=z9hG4bK9ikj8,"
        "SIP/2.0/UDP  192.168.255.111;branch=z9hG4bK30239",
    ]
    assert request.headers.get("Content-Length") == "150" and len(request.body) == 150


def test_a_folded_content_length_frames_the_body() -> None:
    framer = Framer()
    framer.receive_data(lf2crlf("OPTIONS sip:x@y SIP/2.0\nContent-Length:\n  5\n\nhello"))
    frame = framer.next_frame()
    assert isinstance(frame, Frame) and frame.body == b"hello"


def test_a_continuation_line_is_not_a_content_length() -> None:
    framer = Framer()
    framer.receive_data(lf2crlf("OPTIONS sip:x@y SIP/2.0\nSubject: a\n l: 5\nl: 0\n\n"))
    frame = framer.next_frame()
    assert isinstance(frame, Frame) and frame.body == b""


def test_an_unknown_request_uri_scheme_gets_416() -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        validate(frame_of(rfc4475.UNKSCM))
    assert (caught.value.status, caught.value.reason) == (416, "Unsupported URI Scheme")


def _events(data: bytes) -> list[RequestReceived]:
    conn = SipConnection()
    conn.receive_data(data, 0.0)
    out = []
    while (event := conn.next_event()) is not None:
        assert isinstance(event, RequestReceived)
        out.append(event)
    return out


# ---------------------------------------------------------------------- timers


def test_a_half_sent_message_times_out() -> None:
    conn = SipConnection(message_timeout=30.0, idle_timeout=1200.0, now=0.0)
    data = message()
    conn.receive_data(data[:10], 0.0)
    assert conn.next_event() is None
    for i, now in enumerate((10.0, 20.0, 29.0)):  # a byte every few seconds: still one message
        conn.receive_data(data[10 + i : 11 + i], now)
        assert conn.next_event() is None
    assert conn.get_timer() == 30.0
    conn.handle_timer(29.9)
    assert not conn.must_close
    conn.handle_timer(30.0)
    assert conn.must_close and conn.timed_out == "a message took longer than 30 s to arrive"


def test_whole_messages_do_not_time_out() -> None:
    conn = SipConnection(message_timeout=30.0, idle_timeout=1200.0, now=0.0)
    for now in (0.0, 25.0, 50.0, 75.0):
        conn.receive_data(message(), now)
        assert isinstance(conn.next_event(), RequestReceived)
        assert conn.next_event() is None
    assert conn.get_timer() == 75.0 + 1200.0  # only the idle timer runs


def test_an_idle_connection_times_out() -> None:
    conn = SipConnection(message_timeout=30.0, idle_timeout=1200.0, now=0.0)
    conn.receive_data(b"\r\n\r\n", 100.0)  # an RFC 5626 keep-alive is traffic
    assert conn.next_event() is not None
    assert conn.get_timer() == 1300.0
    conn.handle_timer(1300.0)
    assert conn.must_close and conn.timed_out == "nothing received for 1200 s"
