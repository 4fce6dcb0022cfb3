"""Stream framing and the connection core: whole, byte by byte, random splits; limits; invariant."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.sip.connection import SipConnection
from simulator.sip.errors import RemoteProtocolError
from simulator.sip.events import (
    ConnectionClosed,
    KeepAliveReceived,
    RequestReceived,
    ResponseReceived,
)
from simulator.sip.framing import PING, Frame, Framer
from tests.sip.sip_helpers import lf2crlf, message

RESPONSE = lf2crlf(
    "SIP/2.0 200 OK\n"
    "Via: SIP/2.0/TLS 203.0.113.10:5061;branch=z9hG4bK-peer-1\n"
    "From: <sip:carol@fabrikam.lab>;tag=f1\n"
    "To: <sip:bob@contoso.lab>;tag=t1\n"
    "Call-ID: call-1\n"
    "CSeq: 1 MESSAGE\n"
    "Content-Length: 0\n"
    "\n"
)
STREAM = b"\r\n\r\n" + message(body="héllo wörld") + RESPONSE + message(body="", call_id="c2")


def events_of(chunks: list[bytes]) -> tuple[list[object], bytes]:
    conn = SipConnection()
    events: list[object] = []
    for chunk in chunks:
        conn.receive_data(chunk, 0.0)
        while (event := conn.next_event()) is not None:
            events.append(event)
    return events, conn.data_to_send()


def summary(events: Sequence[object]) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for e in events:
        if isinstance(e, RequestReceived):
            out.append(("request", e.request.body))
        elif isinstance(e, ResponseReceived):
            out.append(("response", e.response.code))
        else:
            out.append((type(e).__name__, None))
    return out


EXPECTED = [
    ("KeepAliveReceived", None),
    ("request", "héllo wörld".encode()),
    ("response", 200),
    ("request", b""),
]


def test_whole_stream() -> None:
    events, out = events_of([STREAM])
    assert summary(events) == EXPECTED
    assert out == b"\r\n"  # the pong


def test_byte_at_a_time() -> None:
    events, out = events_of([STREAM[i : i + 1] for i in range(len(STREAM))])
    assert summary(events) == EXPECTED
    assert out == b"\r\n"


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
@settings(max_examples=150, deadline=None)
def test_random_splits(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in itertools.pairwise(points) if b > a]
    events, _ = events_of(chunks)
    assert summary(events) == EXPECTED


def test_lone_crlf_is_a_pong_and_skipped() -> None:
    framer = Framer()
    framer.receive_data(b"\r\n" + RESPONSE)
    frame = framer.next_frame()
    assert isinstance(frame, Frame) and frame.head.startswith(b"SIP/2.0 200 OK")


def test_half_a_ping_waits() -> None:
    framer = Framer()
    framer.receive_data(b"\r\n\r")
    assert framer.next_frame() is None
    framer.receive_data(b"\n")
    assert framer.next_frame() is PING


def test_eof_closes() -> None:
    conn = SipConnection()
    conn.receive_data(b"", 1.0)
    assert conn.next_event() == ConnectionClosed("peer closed the connection")
    assert conn.must_close


def test_oversized_body_gets_513_and_closes() -> None:
    conn = SipConnection(max_message_bytes=1024)
    conn.receive_data(message(body="x" * 2000), 0.0)
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert (info.value.status, info.value.reason, info.value.fatal) == (
        513,
        "Message Too Large",
        True,
    )
    reply = conn.data_to_send()
    assert reply.startswith(b"SIP/2.0 513 Message Too Large\r\n")
    assert b"Call-ID: call-1\r\n" in reply
    assert conn.must_close
    assert isinstance(conn.next_event(), ConnectionClosed)


def test_endless_header_section_is_cut_off() -> None:
    conn = SipConnection(max_header_bytes=512)
    conn.receive_data(b"MESSAGE sip:a@b SIP/2.0\r\nX: " + b"y" * 600, 0.0)
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.status == 513 and info.value.fatal
    assert conn.data_to_send() == b""  # nothing to address an answer to: closing is the answer


def test_bad_content_length_gets_400_and_closes() -> None:
    data = message().replace(b"Content-Length: 5", b"Content-Length: five")
    conn = SipConnection()
    conn.receive_data(data, 0.0)
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert (info.value.status, info.value.reason, info.value.fatal) == (
        400,
        "Malformed Content-Length header",
        True,
    )
    assert conn.data_to_send().startswith(b"SIP/2.0 400 Malformed Content-Length header\r\n")


def test_missing_content_length_gets_400_and_keeps_the_connection() -> None:
    data = message(body="").replace(b"Content-Length: 0\r\n", b"")
    conn = SipConnection()
    conn.receive_data(data + message(call_id="next"), 0.0)
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert (info.value.status, info.value.reason, info.value.fatal) == (
        400,
        "Missing Content-Length header",
        False,
    )
    event = conn.next_event()
    assert isinstance(event, RequestReceived)
    assert event.request.call_id == "next"


def test_keepalive_event() -> None:
    conn = SipConnection()
    conn.receive_data(b"\r\n\r\n\r\n\r\n", 0.0)
    assert conn.next_event() == KeepAliveReceived()
    assert conn.next_event() == KeepAliveReceived()
    assert conn.data_to_send() == b"\r\n\r\n"


@given(st.binary(max_size=600))
@settings(max_examples=400, deadline=None)
def test_any_bytes_give_events_or_our_error(data: bytes) -> None:
    """The h11 fuzz invariant: nothing but events or RemoteProtocolError ever comes out."""
    conn = SipConnection(max_header_bytes=256, max_message_bytes=512)
    conn.receive_data(data, 0.0)
    conn.receive_data(b"", 0.0)
    for _ in range(1000):
        try:
            event = conn.next_event()
        except RemoteProtocolError as exc:
            assert 400 <= exc.status < 600
            continue
        if event is None or isinstance(event, ConnectionClosed):
            break


@given(st.binary(max_size=200), st.sampled_from(["From", "To", "Via", "CSeq", "Call-ID"]))
@settings(max_examples=200, deadline=None)
def test_garbage_in_a_mandatory_header(garbage: bytes, name: str) -> None:
    data = message()
    start = data.index(f"\r\n{name}: ".encode()) + len(name) + 4
    end = data.index(b"\r\n", start)
    data = data[:start] + garbage.replace(b"\r", b"").replace(b"\n", b"") + data[end:]
    conn = SipConnection()
    conn.receive_data(data, 0.0)
    try:
        event = conn.next_event()
    except RemoteProtocolError as exc:
        assert exc.status in (400, 416, 505)
    else:
        assert event is None or isinstance(event, RequestReceived)
