"""[MS-TURN] byte by byte: every message kind the A/V Edge accepts and sends, against the field
layouts of [MS-TURN] sections 2.1.1 (pseudo-TLS), 2.1.4 (TCP framing), 2.2.1 (header and message
types) and 2.2.2 (attributes), and against messages a real client (libnice in OC2007R2 mode)
sent to the Edge (tests/vectors/msturn_libnice.json)."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest

from simulator.media import msturn
from simulator.media.actions import CloseRelay, ListenerId, OpenRelay, RelayTo, SendTo
from simulator.media.auth import ms_long_term_key
from simulator.media.config import TurnConfig
from simulator.media.errors import FramingError, RemoteProtocolError
from simulator.media.policy import PeerPolicy
from simulator.media.stun import Message, MessageClass, Method
from simulator.media.turn import TurnServer

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "msturn_libnice.json").read_text())
UDP = ListenerId("udp", "192.0.2.10", 3478)
TCP = ListenerId("tls", "192.0.2.10", 443)
CLIENT = ("198.51.100.7", 40000)
PEER = ("203.0.113.9", 5000)
REALM = "contoso.lab"
KEY = ms_long_term_key(b"alice", REALM, b"pw")
NOW = 1_700_000_000.0
COOKIE_ATTR = bytes.fromhex("000f000472c64bc6")


def server() -> TurnServer:
    config = TurnConfig(
        relay_address="192.0.2.10",
        realm=REALM,
        users={"alice": "pw"},
        policy=PeerPolicy(deny_reserved=False),
    )
    return TurnServer(config, dialect=msturn.EDGE)


def ms_request(method: int, attrs: list[tuple[str, object]], tid: bytes) -> Message:
    return Message(method, MessageClass.REQUEST, tid, list(attrs), dialect=msturn.DIALECT)


def only_send(actions: list[object]) -> bytes:
    sends = [a for a in actions if isinstance(a, SendTo)]
    assert len(sends) == 1, actions
    return sends[0].data


def allocate(core: TurnServer, listener: ListenerId = UDP, tid: bytes = b"A" * 16) -> bytes:
    """Challenge, authenticated Allocate, relay opened: the Allocate response's bytes."""
    hello = msturn.encode(ms_request(3, [], tid))
    if listener.stream:
        hello = msturn.frame(msturn.CONTROL, hello)
    first = only_send(core.receive(hello, CLIENT, listener, NOW))
    if listener.stream:
        first = first[4:]
    challenge = msturn.parse(first)
    nonce = challenge.get("NONCE")
    attrs = [("MS-VERSION", 1), ("USERNAME", "alice"), ("REALM", REALM), ("NONCE", nonce)]
    request = msturn.encode(ms_request(3, attrs, tid[::-1]), integrity_key=KEY)
    if listener.stream:
        request = msturn.frame(msturn.CONTROL, request)
    actions = core.receive(request, CLIENT, listener, NOW)
    (opening,) = actions
    assert isinstance(opening, OpenRelay) and opening.transport == "udp"
    return only_send(core.relay_opened(opening.relay, NOW))


# ------------------------------------------------------------------ codec


def test_libnice_allocate_parses_as_ms_turn_section_2_2_1():
    data = bytes.fromhex(VECTORS["allocate_unauthenticated"])
    # header: type 0x0003, length, a 16-byte transaction id; no RFC 5389 cookie at bytes 4-8
    assert data[:2] == b"\x00\x03" and struct.unpack_from("!H", data, 2)[0] == len(data) - 20
    assert data[20:28] == COOKIE_ATTR  # the Magic Cookie attribute first (2.2.2.8)
    assert msturn.looks_like(data)
    message = msturn.parse(data)
    assert message.method == msturn.ALLOCATE and message.message_class == MessageClass.REQUEST
    assert message.transaction_id == data[4:20] and message.dialect == "ms-turn"
    assert message.get("MS-VERSION") == 1


def test_libnice_messages_verify_with_the_raw_credentials_key():
    """MESSAGE-INTEGRITY over the zero-padded message, key MD5(username:realm:password)."""
    assert hashlib.md5(b"alice:contoso.lab:pw").digest() == KEY
    for name in ("allocate", "send", "set_active_destination"):
        message = msturn.parse(bytes.fromhex(VECTORS[name]))
        assert message.check_integrity(KEY), name
        assert not message.check_integrity(ms_long_term_key(b"alice", REALM, b"pX")), name
        assert message.get("USERNAME") == "alice" and message.get("REALM") == REALM


def test_libnice_send_request_fields():
    message = msturn.parse(bytes.fromhex(VECTORS["send"]))
    assert message.method == msturn.SEND and message.message_class == MessageClass.REQUEST
    assert message.get("DESTINATION-ADDRESS")[0] == "127.0.0.1"
    assert len(message.get("DATA")) > 0
    connection_id, sequence = message.get("MS-SEQUENCE-NUMBER")
    assert len(connection_id) == 20 and sequence >= 1


def test_realm_is_0x0015_and_nonce_0x0014_the_reverse_of_rfc_5389():
    data = msturn.encode(
        Message(
            3,
            MessageClass.ERROR,
            b"T" * 16,
            [("ERROR-CODE", (401, "Unauthorized")), ("REALM", "r"), ("NONCE", b"n")],
            dialect=msturn.DIALECT,
        )
    )
    assert data[:2] == b"\x01\x13"  # Allocate error response
    assert data[20:28] == COOKIE_ATTR
    assert bytes.fromhex("0009001000000401") + b"Unauthorized" in data
    # unpadded attributes: REALM "r" (1 byte) is followed at once by NONCE
    assert bytes.fromhex("0015000172") + bytes.fromhex("001400016e") in data


def test_xor_mapped_address_uses_the_first_transaction_id_word():
    tid = bytes.fromhex("0102030405060708090a0b0c0d0e0f10")
    message = Message(
        3,
        MessageClass.SUCCESS,
        tid,
        [("XOR-MAPPED-ADDRESS", ("198.51.100.7", 40000))],
        dialect=msturn.DIALECT,
    )
    data = msturn.encode(message)
    value = data[32:40]  # after the header and the Magic Cookie attribute's 8 bytes
    assert data[28:32] == bytes.fromhex("80200008")
    assert struct.unpack_from("!H", value, 2)[0] == 40000 ^ 0x0102
    assert value[4:8] == bytes(
        a ^ b for a, b in zip(bytes([198, 51, 100, 7]), tid[:4], strict=True)
    )
    assert msturn.parse(data).get("XOR-MAPPED-ADDRESS") == ("198.51.100.7", 40000)


def test_data_indication_type_0x0115():
    data = msturn.encode(
        Message(
            Method.DATA,
            MessageClass.INDICATION,
            b"D" * 16,
            [("REMOTE-ADDRESS", PEER), ("DATA", b"abc")],
            dialect=msturn.DIALECT,
        )
    )
    assert data[:2] == b"\x01\x15"
    assert data[28:40] == bytes.fromhex("0012000800011388cb007109")  # REMOTE-ADDRESS, un-XORed
    assert data[40:47] == bytes.fromhex("00130003") + b"abc"
    parsed = msturn.parse(data)
    assert parsed.message_class == MessageClass.INDICATION and parsed.method == Method.DATA


def test_message_without_the_magic_cookie_attribute_is_ignored_section_3_1_10():
    data = bytes.fromhex(VECTORS["allocate_unauthenticated"])
    broken = data[:20] + b"\x80\x08\x00\x04\x00\x00\x00\x01" + data[28:]
    assert not msturn.looks_like(broken)
    with pytest.raises(RemoteProtocolError) as caught:
        msturn.parse(broken)
    assert caught.value.code == 0  # ignore: no answer


def test_bad_attribute_carries_the_16_byte_transaction_id():
    data = bytes.fromhex(VECTORS["allocate_unauthenticated"])
    truncated = data[:2] + struct.pack("!H", len(data) - 20 + 4) + data[4:] + b"\x00\x0d\x00\x08"
    with pytest.raises(RemoteProtocolError) as caught:
        msturn.parse(truncated)
    assert caught.value.transaction_id == data[4:20] and caught.value.dialect == "ms-turn"


# ------------------------------------------------------------------ pseudo-TLS and framing


def test_pseudo_tls_hellos_section_2_1_1():
    hello = msturn.pseudo_tls_client_hello(bytes(range(32)))
    assert len(hello) == 50 and msturn.is_pseudo_tls(hello)
    # libnice's MSOC ClientHello (socket/pseudossl.c) is one
    libnice = bytes.fromhex(
        "160301002d0100002903 01c1fcd5a36d93dd7e0b45673fec7985fbbc3fd660c2ce8485081b8121bcaa10fb"
        "00000200180100".replace(" ", "")
    )
    assert msturn.is_pseudo_tls(libnice)
    answer = msturn.pseudo_tls_server_hello(bytes(64))
    # one record (handshake, TLS 1.0) with ServerHello (type 2, 70 bytes) and ServerHelloDone
    assert answer[:5] == bytes.fromhex("160301004e") and len(answer) == 83
    assert answer[5:9] == bytes.fromhex("02000046") and answer[79:83] == bytes.fromhex("0e000000")
    assert answer[43] == 0x20 and answer[76:79] == bytes.fromhex("001800")
    assert msturn.is_server_hello(answer)
    real_tls = bytes.fromhex("16030100f8010000f40303") + bytes(39)
    assert not msturn.is_pseudo_tls(real_tls[:50])


def test_tcp_framing_header_section_2_1_4():
    assert msturn.frame(msturn.CONTROL, b"abc") == b"\x02\x00\x00\x03abc"
    framer = msturn.EdgeStreamFramer()
    hello = msturn.pseudo_tls_client_hello(bytes(32))
    stream = hello + msturn.frame(2, b"x" * 30) + msturn.frame(3, b"rtp")
    assert framer.frames(stream[:7]) == []
    assert framer.frames(stream[7:]) == [hello, msturn.frame(2, b"x" * 30), msturn.frame(3, b"rtp")]
    with pytest.raises(FramingError):
        msturn.EdgeStreamFramer().frames(b"\x02\x01\x00\x01x")  # reserved byte not zero


def test_libnice_discovery_frame_without_length_is_taken():
    message = bytes.fromhex(VECTORS["allocate_unauthenticated"])
    framer = msturn.MsStreamFramer()
    assert framer.frames(b"\x03\x00" + message) == [msturn.frame(msturn.CONTROL, message)]


def test_rfc_stream_keeps_rfc_framing():
    framer = msturn.EdgeStreamFramer()
    channel_data = b"\x40\x00\x00\x04abcd"
    assert framer.frames(channel_data) == [channel_data]


# ------------------------------------------------------------------ the server


def test_unauthenticated_allocate_gets_ms_401_echoing_the_16_byte_id():
    core = server()
    data = bytes.fromhex(VECTORS["allocate_unauthenticated"])
    answer = only_send(core.receive(data, CLIENT, UDP, NOW))
    assert answer[:2] == b"\x01\x13" and answer[4:20] == data[4:20]
    assert answer[4:8] != bytes.fromhex("2112a442")
    assert answer[20:28] == COOKIE_ATTR
    parsed = msturn.parse(answer)
    assert parsed.get("ERROR-CODE")[0] == 401
    assert parsed.get("REALM") == REALM and parsed.get("NONCE")


def test_allocate_response_section_3_2_5_1():
    core = server()
    answer = allocate(core)
    assert answer[:2] == b"\x01\x03" and answer[20:28] == COOKIE_ATTR
    parsed = msturn.parse(answer)
    relayed = parsed.get("MAPPED-ADDRESS")
    assert relayed[0] == "192.0.2.10" and 50000 <= relayed[1] <= 59999
    assert parsed.get("XOR-MAPPED-ADDRESS") == CLIENT
    assert parsed.get("MS-VERSION") == 1 and parsed.get("LIFETIME") == 600
    connection_id, sequence = parsed.get("MS-SEQUENCE-NUMBER")
    assert len(connection_id) == 20 and sequence == 0
    assert parsed.check_integrity(KEY)
    assert "FINGERPRINT" not in parsed


def test_wrong_password_gets_401():
    core = server()
    tid = b"W" * 16
    challenge = msturn.parse(
        only_send(core.receive(msturn.encode(ms_request(3, [], tid)), CLIENT, UDP, NOW))
    )
    attrs = [("USERNAME", "alice"), ("REALM", REALM), ("NONCE", challenge.get("NONCE"))]
    bad_key = ms_long_term_key(b"alice", REALM, b"wrong")
    request = msturn.encode(ms_request(3, attrs, b"X" * 16), integrity_key=bad_key)
    parsed = msturn.parse(only_send(core.receive(request, CLIENT, UDP, NOW)))
    assert parsed.get("ERROR-CODE")[0] == 401 and parsed.transaction_id == b"X" * 16


def signed(method: int, attrs: list[tuple[str, object]], tid: bytes) -> bytes:
    base = [("USERNAME", "alice"), ("REALM", REALM)]
    return msturn.encode(ms_request(method, base + attrs, tid), integrity_key=KEY)


def test_send_request_relays_and_is_never_answered():
    core = server()
    allocate(core)
    send = signed(msturn.SEND, [("DESTINATION-ADDRESS", PEER), ("DATA", b"hello")], b"S" * 16)
    assert core.receive(send, CLIENT, UDP, NOW) == [RelayTo(1, PEER, b"hello")]
    # the Send installed the permission: the peer's answer comes back in a Data Indication
    (back,) = core.relay_received(1, b"world", PEER, NOW)
    assert isinstance(back, SendTo) and back.data[:2] == b"\x01\x15"
    indication = msturn.parse(back.data)
    assert indication.get("REMOTE-ADDRESS") == PEER and indication.get("DATA") == b"world"
    # a peer the client never sent to is dropped
    assert core.relay_received(1, b"spam", ("203.0.113.66", 1), NOW) == []


def test_send_with_wrong_credentials_is_dropped():
    core = server()
    allocate(core)
    attrs = [("USERNAME", "alice"), ("REALM", REALM), ("DESTINATION-ADDRESS", PEER), ("DATA", b"x")]
    bad = msturn.encode(ms_request(msturn.SEND, attrs, b"S" * 16), integrity_key=b"k" * 16)
    assert core.receive(bad, CLIENT, UDP, NOW) == []


def test_set_active_destination_then_raw_data_both_ways():
    core = server()
    allocate(core)
    request = signed(msturn.SET_ACTIVE_DESTINATION, [("DESTINATION-ADDRESS", PEER)], b"D" * 16)
    answer = only_send(core.receive(request, CLIENT, UDP, NOW))
    assert answer[:2] == b"\x01\x06" and answer[4:20] == b"D" * 16
    assert msturn.parse(answer).check_integrity(KEY)
    assert core.receive(b"\x80raw rtp", CLIENT, UDP, NOW) == [RelayTo(1, PEER, b"\x80raw rtp")]
    assert core.relay_received(1, b"\x80back", PEER, NOW) == [SendTo(UDP, CLIENT, b"\x80back")]


def test_set_active_destination_without_allocation_is_437():
    core = server()
    request = signed(msturn.SET_ACTIVE_DESTINATION, [("DESTINATION-ADDRESS", PEER)], b"D" * 16)
    parsed = msturn.parse(only_send(core.receive(request, CLIENT, UDP, NOW)))
    assert parsed.message_class == MessageClass.ERROR and parsed.get("ERROR-CODE")[0] == 437
    assert parsed.transaction_id == b"D" * 16


def test_allocate_on_the_same_5_tuple_refreshes_and_lifetime_0_deletes():
    core = server()
    allocate(core)
    challenge_nonce = core.authenticator.challenge(NOW)[1][1]  # type: ignore[attr-defined]
    attrs = [("LIFETIME", 0), ("USERNAME", "alice"), ("REALM", REALM), ("NONCE", challenge_nonce)]
    request = msturn.encode(ms_request(3, attrs, b"R" * 16), integrity_key=KEY)
    actions = core.receive(request, CLIENT, UDP, NOW)
    assert msturn.parse(only_send(actions)).get("LIFETIME") == 0
    assert any(isinstance(a, CloseRelay) for a in actions) and core.allocation_count == 0


def test_peer_policy_applies_to_send_and_set_active_destination():
    core = server()
    allocate(core)
    internal = ("127.0.0.1", 22)
    request = signed(msturn.SET_ACTIVE_DESTINATION, [("DESTINATION-ADDRESS", internal)], b"P" * 16)
    parsed = msturn.parse(only_send(core.receive(request, CLIENT, UDP, NOW)))
    assert parsed.get("ERROR-CODE")[0] == 403


def test_rfc_clients_are_untouched_beside_ms_ones():
    from simulator.media import stun

    core = server()
    allocate(core)
    binding = stun.encode(Message(Method.BINDING, MessageClass.REQUEST, b"B" * 12))
    answer = stun.parse(only_send(core.receive(binding, ("198.51.100.8", 1), UDP, NOW)))
    assert answer.get("XOR-MAPPED-ADDRESS") == ("198.51.100.8", 1)


def test_over_tcp_pseudo_tls_then_framed_messages_and_end_to_end_data():
    core = server()
    hello = msturn.pseudo_tls_client_hello(bytes(32))
    assert msturn.is_server_hello(only_send(core.receive(hello, CLIENT, TCP, NOW)))
    # a second hello on the same connection is not answered
    assert core.receive(hello, CLIENT, TCP, NOW) == []
    answer = allocate(core, TCP)
    assert answer[:4] == b"\x02\x00" + struct.pack("!H", len(answer) - 4)
    assert msturn.parse(answer[4:]).get("MAPPED-ADDRESS")[0] == "192.0.2.10"
    request = signed(msturn.SET_ACTIVE_DESTINATION, [("DESTINATION-ADDRESS", PEER)], b"D" * 16)
    reply = only_send(core.receive(msturn.frame(2, request), CLIENT, TCP, NOW))
    assert reply[:1] == b"\x02" and reply[4:6] == b"\x01\x06"
    data = msturn.frame(msturn.END_TO_END, b"media")
    assert core.receive(data, CLIENT, TCP, NOW) == [RelayTo(1, PEER, b"media")]
    assert core.relay_received(1, b"back", PEER, NOW) == [
        SendTo(TCP, CLIENT, msturn.frame(msturn.END_TO_END, b"back"))
    ]
