"""The TURN client core (no event loop, explicit ``now``): wired to the server core in memory,
retransmissions, credentials, padding on streams, RFC 6062 raw data, answers that are not STUN."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from media_helpers import CLIENT, PEER, REALM, T0, TCP, UDP, Client, config, tid

from simulator.media import events as ev
from simulator.media import stun
from simulator.media.actions import ConnectPeer, RelayTo, SendTo
from simulator.media.auth import LongTermCredentials
from simulator.media.client import ClientConfig, TurnClient
from simulator.media.errors import LocalProtocolError
from simulator.media.stun import Message, MessageClass, Method
from simulator.media.turn import TurnServer


def events(core: TurnClient) -> list[object]:
    out = []
    while (event := core.next_event()) is not None:
        out.append(event)
    return out


@pytest.mark.parametrize("listener", [UDP, TCP], ids=["udp", "tcp"])
def test_allocate_channel_and_media_both_ways(listener: object) -> None:
    server = TurnServer(config())
    client = Client(server, listener=listener)  # type: ignore[arg-type]
    assert client.allocate().message_class == MessageClass.SUCCESS
    core = client.core
    assert core.relayed is not None and 50000 <= core.relayed[1] <= 59999
    assert core.mapped == CLIENT and core.lifetime == 600
    assert client.bind(0x4000).message_class == MessageClass.SUCCESS
    assert core.channels == {0x4000: PEER}
    # client -> peer: ChannelData, padded to four bytes on a stream only
    core.send_channel_data(0x4000, b"abcde")
    (frame,) = core.data_to_send()
    assert len(frame) == (12 if listener is TCP else 9)
    (out,) = client.send(frame)
    assert out == RelayTo(client.relay, PEER, b"abcde")
    # peer -> client: ChannelData (padding stripped) and, unbound, a Data indication
    assert client.relay is not None
    client.deliver(server.relay_received(client.relay, b"xyz", PEER, T0))
    client.deliver(server.relay_received(client.relay, b"other", ("127.0.113.50", 7), T0))
    assert client.received == [
        ev.PeerDataReceived(PEER, 0x4000, b"xyz"),
        ev.PeerDataReceived(("127.0.113.50", 7), None, b"other"),
    ]


def test_udp_retransmits_with_doubling_intervals_then_times_out() -> None:
    core = TurnClient(ClientConfig(stream=False, rto=0.5, transmissions=4, timeout=10.0))
    handle = core.binding(T0)
    assert len(core.data_to_send()) == 1
    sends = []
    now = T0
    while (at := core.get_timer()) is not None:
        now = at
        core.handle_timer(now)
        if core.data_to_send():
            sends.append(round(now - T0, 3))
    assert sends == [0.5, 1.5, 3.5]  # four transmissions: 0, 0.5, 1.5, 3.5
    (timeout,) = events(core)
    assert isinstance(timeout, ev.TransactionTimedOut) and timeout.request == handle
    assert now == T0 + 10.0


def test_stream_requests_are_sent_once() -> None:
    core = TurnClient(ClientConfig(stream=True, timeout=5.0))
    core.binding(T0)
    assert len(core.data_to_send()) == 1
    assert core.get_timer() == T0 + 5.0
    core.handle_timer(T0 + 4.9)
    assert core.data_to_send() == [] and events(core) == []


def test_a_401_to_signed_credentials_is_final_and_says_so() -> None:
    server = TurnServer(config())
    client = Client(server, "alice", "wrong")
    assert client.allocate().get("ERROR-CODE")[0] == 401
    challenge, refused = client.answers
    assert not challenge.final and not challenge.signed
    assert refused.final and refused.signed


def test_without_credentials_the_401_is_final() -> None:
    server = TurnServer(config())
    core = TurnClient(ClientConfig(stream=False), None, transaction_ids=tid)
    handle = core.allocate(T0)
    (data,) = core.data_to_send()
    for action in server.receive(data, CLIENT, UDP, T0):
        assert isinstance(action, SendTo)
        core.receive_datagram(action.data, T0)
    (answered,) = events(core)
    assert isinstance(answered, ev.TransactionAnswered) and answered.request == handle
    assert answered.final and not answered.signed
    assert answered.answer.get("REALM") == REALM
    assert core.data_to_send() == []


def test_rfc6062_connection_bind_switches_the_stream_to_raw_bytes() -> None:
    server = TurnServer(config())
    control = Client(server, listener=TCP)
    control.allocate(T0, ("REQUESTED-TRANSPORT", 6))
    control.permit()
    (connect,) = control.ask(
        Message(Method.CONNECT, MessageClass.REQUEST, tid(), [("XOR-PEER-ADDRESS", PEER)])
    )
    assert isinstance(connect, ConnectPeer)
    control.deliver(server.peer_connected(connect.connection, T0))
    assert control.answers[-1].answer.get("CONNECTION-ID") == connect.connection
    data = Client(server, listener=TCP, address=("127.0.113.40", 40100), credentials=control.creds)
    data.core.connection_bind(T0, connect.connection)
    (request,) = data.core.data_to_send()
    (reply, _join) = data.send(request)
    assert isinstance(reply, SendTo)
    # the peer's first bytes arrive in the same segment as the success answer
    data.core.receive_data(reply.data + b"early bytes", T0)
    answered, raw = events(data.core)
    assert isinstance(answered, ev.TransactionAnswered) and answered.final
    assert raw == ev.RawDataReceived(b"early bytes") and data.core.raw
    data.core.receive_data(b"more", T0)
    data.core.send_raw(b"to the peer")
    assert events(data.core) == [ev.RawDataReceived(b"more")]
    assert data.core.data_to_send() == [b"to the peer"]
    with pytest.raises(LocalProtocolError):
        data.core.binding(T0)


def test_connection_attempt_indication_is_an_event() -> None:
    server = TurnServer(config())
    control = Client(server, listener=TCP)
    control.allocate(T0, ("REQUESTED-TRANSPORT", 6))
    control.permit()
    cid, actions = server.peer_connection_arrived(control.relay, PEER, T0)  # type: ignore[arg-type]
    for action in actions:
        assert isinstance(action, SendTo)
        control.core.receive_data(action.data, T0)
    assert events(control.core) == [ev.ConnectionAttemptReceived(cid, PEER)]  # type: ignore[arg-type]


def test_an_http_answer_on_a_stream_is_unexpected_at_once() -> None:
    core = TurnClient(ClientConfig(stream=True))
    core.binding(T0)
    core.receive_data(b"HTTP/1.1 400 Bad Request\r\n", T0)
    (event,) = events(core)
    assert isinstance(event, ev.UnexpectedDataReceived)
    assert event.data.startswith(b"HTTP/1.1") and "did not bind" in event.reason
    core.receive_data(b"more", T0)  # the framing is lost: nothing more is read
    core.receive_data(b"", T0)
    assert events(core) == [ev.ConnectionEnded()]


def test_a_stray_datagram_is_unexpected() -> None:
    core = TurnClient(ClientConfig(stream=False))
    core.binding(T0)
    core.receive_datagram(b"\x00\x01 not a STUN message at all", T0)
    core.receive_datagram(struct.pack("!HH", 0x4000, 2) + b"hi", T0)
    reasons = [e.reason for e in events(core) if isinstance(e, ev.UnexpectedDataReceived)]
    assert len(reasons) == 2 and reasons[1] == "ChannelData on a channel we did not bind"


def _answers(server_bytes: bytes, chunks: list[bytes]) -> list[object]:
    core = TurnClient(ClientConfig(stream=True), transaction_ids=lambda: b"T" * 12)
    core.binding(T0)
    for chunk in chunks:
        core.receive_data(chunk, T0)
    return events(core)


def _binding_answer() -> bytes:
    answer = stun.response(
        Message(Method.BINDING, MessageClass.REQUEST, b"T" * 12), [("XOR-MAPPED-ADDRESS", CLIENT)]
    )
    return stun.encode(answer)


def test_a_stream_answer_whole_and_byte_by_byte_gives_the_same_events() -> None:
    data = _binding_answer()
    whole = _answers(data, [data])
    assert len(whole) == 1 and isinstance(whole[0], ev.TransactionAnswered)
    assert _answers(data, [data[i : i + 1] for i in range(len(data))]) == whole


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=60), max_size=8))
def test_a_stream_answer_at_any_splits_gives_the_same_events(cuts: list[int]) -> None:
    data = _binding_answer()
    chunks, pos = [], 0
    for size in cuts:
        chunks.append(data[pos : pos + size])
        pos += size
    chunks.append(data[pos:])
    assert _answers(data, [c for c in chunks if c]) == _answers(data, [data])


def test_credentials_are_shared_by_the_data_connection() -> None:
    creds = LongTermCredentials("alice", "alice-pw")
    assert creds.attributes() == [] and creds.key is None
    challenge = Message(
        Method.ALLOCATE, MessageClass.ERROR, tid(), [("REALM", REALM), ("NONCE", b"n")]
    )
    assert creds.learn(challenge)
    assert creds.attributes() == [("USERNAME", "alice"), ("REALM", REALM), ("NONCE", b"n")]
    assert creds.key == stun.long_term_key("alice", REALM, "alice-pw")
    assert not creds.learn(Message(Method.ALLOCATE, MessageClass.ERROR, tid()))


def test_an_answer_of_another_method_does_not_end_the_transaction() -> None:
    core = TurnClient(ClientConfig(stream=False), transaction_ids=lambda: b"T" * 12)
    core.binding(T0)
    request = Message(Method.BINDING, MessageClass.REQUEST, b"T" * 12)
    wrong = stun.response(Message(Method.REFRESH, MessageClass.REQUEST, b"T" * 12))
    core.receive_datagram(stun.encode(wrong), T0)
    assert events(core) == []
    core.receive_datagram(stun.encode(stun.response(request, [("XOR-MAPPED-ADDRESS", CLIENT)])), T0)
    (answered,) = events(core)
    assert isinstance(answered, ev.TransactionAnswered) and core.mapped == CLIENT
