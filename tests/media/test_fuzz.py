"""Bounded fuzzing of every STUN/TURN receive path (issue #12): whatever bytes arrive, the cores
return actions and events, and only the package's own error types could escape (h11's
``fuzz/afl-server.py`` invariant). 1,000 examples per path, a few seconds in all; for a long
run, raise :data:`FUZZ`'s ``max_examples``.

Besides raw bytes, messages are built from a real header and attributes of every type this
package knows, with values of random lengths, and signed with a valid key, so that they pass
authentication and reach the request handlers on an allocation that exists.
"""

from __future__ import annotations

import hmac
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media_helpers import CLIENT, PEER, T0, TCP, UDP, Client, config

from simulator.media import stun
from simulator.media.actions import Action, ListenerId, SendTo
from simulator.media.client import ClientConfig, TurnClient
from simulator.media.errors import MediaError
from simulator.media.framing import StreamFramer
from simulator.media.stun import ATTRIBUTES, MAGIC_COOKIE, Method
from simulator.media.turn import TurnServer

FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KNOWN_TYPES = sorted(ATTRIBUTES)
METHODS = [int(m) for m in Method] + [0x0FF]


def tlv(attr_type: int, value: bytes) -> bytes:
    return struct.pack("!HH", attr_type, len(value)) + value + bytes(-len(value) % 4)


def raw_message(method: int, cls: int, tid: bytes, body: bytes, key: bytes | None) -> bytes:
    """A message with any attributes, MESSAGE-INTEGRITY over them when ``key`` is given."""
    mtype = (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | cls
    if key is None:
        return struct.pack("!HHI12s", mtype, len(body), MAGIC_COOKIE, tid) + body
    header = struct.pack("!HHI12s", mtype, len(body) + 24, MAGIC_COOKIE, tid)
    mac = hmac.new(key, header + body, "sha1").digest()
    return header + body + tlv(0x0008, mac)


attributes = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(KNOWN_TYPES), st.integers(0, 0xFFFF)),
        st.binary(max_size=24),
    ),
    max_size=8,
)


def check(actions: list[Action]) -> None:
    for action in actions:
        if isinstance(action, SendTo) and action.data[:1] < b"\x40":
            stun.parse(action.data)  # every answer we send parses


def fresh_server(listener: ListenerId) -> tuple[TurnServer, Client]:
    server = TurnServer(config(max_permissions=4, max_channels=4, max_connections=4))
    client = Client(server, listener=listener)
    transport = 6 if listener is TCP else 17
    client.allocate(T0, ("REQUESTED-TRANSPORT", transport))
    client.permit()
    if listener is UDP:
        client.bind(0x4000)
    return server, client


@FUZZ
@given(st.binary(max_size=200), st.sampled_from([UDP, TCP]))
def test_raw_bytes_to_the_server(data: bytes, listener: ListenerId) -> None:
    server, _client = fresh_server(listener)
    try:
        check(server.receive(data, CLIENT, listener, T0))
        check(server.relay_received(1, data, PEER, T0))
    except MediaError:
        pass


@FUZZ
@given(
    st.sampled_from(METHODS),
    st.sampled_from([0x000, 0x010, 0x100, 0x110]),
    attributes,
    st.booleans(),
    st.sampled_from([UDP, TCP]),
)
def test_signed_messages_with_any_attributes_reach_the_handlers(
    method: int, cls: int, attrs: list[tuple[int, bytes]], sign: bool, listener: ListenerId
) -> None:
    server, client = fresh_server(listener)
    auth = b"".join(tlv(t, v) for t, v in ((0x0006, b"alice"), (0x0014, b"contoso.lab")))
    nonce = client.nonce or b""
    body = b"".join(tlv(t, v) for t, v in attrs) + auth + tlv(0x0015, nonce)
    data = raw_message(method, cls, b"F" * 12, body, client.key if sign else None)
    try:
        actions = server.receive(data, CLIENT, listener, T0 + 1)
        check(actions)
        check(server.handle_timer(T0 + 400))
        check(server.connection_lost(listener, CLIENT, T0 + 401))
    except MediaError:
        pass


addresses = st.tuples(
    st.sampled_from(["127.0.113.50", "127.0.0.1", "127.51.100.11", "0.0.0.0", "10.1.2.3"]),
    st.integers(0, 0xFFFF),
)
values = st.one_of(
    st.tuples(st.just("LIFETIME"), st.integers(0, 0xFFFFFFFF)),
    st.tuples(st.just("CHANNEL-NUMBER"), st.integers(0, 0xFFFF)),
    st.tuples(st.just("XOR-PEER-ADDRESS"), addresses),
    st.tuples(st.just("REQUESTED-TRANSPORT"), st.integers(0, 255)),
    st.tuples(st.just("REQUESTED-ADDRESS-FAMILY"), st.integers(0, 255)),
    st.tuples(st.just("EVEN-PORT"), st.booleans()),
    st.tuples(st.just("RESERVATION-TOKEN"), st.binary(min_size=8, max_size=8)),
    st.tuples(st.just("CONNECTION-ID"), st.integers(0, 0xFFFFFFFF)),
    st.tuples(st.just("DONT-FRAGMENT"), st.none()),
    st.tuples(st.just("DATA"), st.binary(max_size=40)),
)


@FUZZ
@given(st.sampled_from(METHODS), st.lists(values, max_size=6), st.sampled_from([UDP, TCP]))
def test_well_formed_signed_requests_with_hostile_values(
    method: int, attrs: list[tuple[str, object]], listener: ListenerId
) -> None:
    """Attributes that decode, with values no client should send: the handlers' own checks."""
    server, client = fresh_server(listener)
    message = stun.Message(method, stun.MessageClass.REQUEST, b"H" * 12, list(attrs))
    try:
        check(server.receive(client.signed(message), CLIENT, listener, T0 + 1))
        check(server.handle_timer(T0 + 700))
    except MediaError:
        pass


@FUZZ
@given(st.lists(st.binary(max_size=80), max_size=6), st.booleans())
def test_any_answer_to_the_client(chunks: list[bytes], stream: bool) -> None:
    core = TurnClient(ClientConfig(stream=stream), transaction_ids=lambda: b"T" * 12)
    core.allocate(T0)
    core.channel_bind(T0, 0x4000, PEER)
    try:
        for chunk in chunks:
            if stream:
                core.receive_data(chunk, T0)
            else:
                core.receive_datagram(chunk, T0)
        core.handle_timer(T0 + 100)
        while core.next_event() is not None:
            pass
    except MediaError:
        pass


@FUZZ
@given(st.sampled_from([0x100, 0x110, 0x010]), attributes)
def test_well_framed_answers_with_any_attributes_to_the_client(
    cls: int, attrs: list[tuple[int, bytes]]
) -> None:
    for method in (Method.ALLOCATE, Method.CHANNEL_BIND, Method.DATA, Method.CONNECTION_BIND):
        core = TurnClient(ClientConfig(stream=True), transaction_ids=lambda: b"T" * 12)
        core.request(method, [], T0)
        body = b"".join(tlv(t, v) for t, v in attrs)
        try:
            core.receive_data(raw_message(method, cls, b"T" * 12, body, None), T0)
            while core.next_event() is not None:
                pass
        except MediaError:
            pass


@FUZZ
@given(st.lists(st.binary(max_size=100), max_size=8))
def test_stream_framing_of_any_bytes(chunks: list[bytes]) -> None:
    framer = StreamFramer()
    try:
        for chunk in chunks:
            for frame in framer.frames(chunk):
                assert frame[:1] < b"\x80"
    except MediaError:
        pass
