"""The [MS-TURN] wire format: messages, TCP framing and the pseudo-TLS exchange on TCP 443.

Lync clients and Lync's A/V Edge speak TURN as Microsoft's [MS-TURN] ("Traversal Using Relay NAT
(TURN) Extensions") has it, an extension of the 2005-era TURN and STUN drafts, not RFC 8656.
What differs on the wire, and what this module does about it:

- Header ([MS-TURN] section 2.2.1): message type, length and a **16-byte** transaction id; no
  RFC 5389 magic cookie in the header. The message types the extension supports: Allocate
  request/response/error (0x0003/0x0103/0x0113), Send request (0x0004), Data Indication (0x0115),
  Set Active Destination request/response/error (0x0006/0x0106/0x0116). The server never sends
  Send responses (0x0104/0x0114).
- Attributes ([MS-TURN] section 2.2.2): the **Magic Cookie attribute** (type 0x000F, value
  0x72C64BC6, section 2.2.2.8) first in every message; a message without it is improperly
  formed and ignored (section 3.1.10). NONCE is 0x0014 and REALM 0x0015 (the reverse of RFC
  5389's numbers); MAPPED-ADDRESS (0x0001) carries the relayed address, DESTINATION-ADDRESS
  (0x0011) and REMOTE-ADDRESS (0x0012) the peer's, all un-XORed; XOR-MAPPED-ADDRESS is 0x8020
  and XORed with the first four bytes of the transaction id; MS-VERSION (0x8008, section
  2.2.2.17) and MS-SEQUENCE-NUMBER (0x8050, section 2.2.2.21: a 20-byte connection id and a
  32-bit sequence number). Any other comprehension-required attribute gets Unknown Attribute
  (420); other optional ones are ignored (section 2.2.2).
- Attribute values are not padded to four bytes: the next attribute starts right after the
  value, as the IETF STUN draft the extension builds on had it and as libnice's OC2007
  compatibility (``STUN_AGENT_USAGE_NO_ALIGNED_ATTRIBUTES``) sends and expects. Both dialects
  walk and encode their attributes with :mod:`simulator.media.attributes` (:data:`SYNTAX` here).
- MESSAGE-INTEGRITY is HMAC-SHA1 over the message up to the attribute before it, with the length
  field counting up to the end of MESSAGE-INTEGRITY, **zero-padded to a multiple of 64 bytes**
  (RFC 3489 section 11.2.8's rule); the long-term key is MD5(username ":" realm ":" password).
  No FINGERPRINT.
- Over TCP ([MS-TURN] section 2.1.4) every message and every piece of data carries a 4-byte
  framing header: a type (0x02 a TURN control message, 0x03 end-to-end data), a zero byte and
  a 16-bit length. The framing header is not used for the pseudo-TLS messages.
- Pseudo-TLS ([MS-TURN] section 2.1.1): on TCP 443 a client may open with a TLS-looking
  ClientHello record; the server answers with one TLS record holding a ServerHello and a
  ServerHelloDone, and from then on both sides speak framed MS-TURN in the clear. A middlebox
  that inspects TLS sees a handshake it cannot complete (:func:`is_pseudo_tls`).

:data:`MS_TURN` is the dialect of this format; :data:`EDGE` recognises either dialect from each
message (the [MS-TURN] Magic Cookie attribute right after a header without RFC 5389's cookie)
and frames a stream by its first byte (:class:`EdgeStreamFramer`), which is how the A/V Edge
serves Lync clients and RFC clients on the same ports.

Not implemented: Multiplexed TURN (section 2.2.3, MS-Version 5 and 6), HMAC-SHA256 integrity
(MS-Version 3), IPv6 (MS-Version 4), MS-Service Quality, the alternate host name and App ID
attributes (recognised and ignored).
"""

from __future__ import annotations

import hmac
import ipaddress
import struct
from collections.abc import Callable
from typing import Any

from simulator.media import attributes as wire
from simulator.media import stun
from simulator.media.dialect import Dialect
from simulator.media.errors import RemoteProtocolError
from simulator.media.framing import BufferedFramer, StreamFramer
from simulator.media.stun import HEADER_LENGTH, Message, MessageClass

DIALECT = "ms-turn"
MAGIC_COOKIE = 0x72C64BC6
"""The value of the Magic Cookie attribute ([MS-TURN] section 2.2.2.8)."""
MAGIC_COOKIE_ATTRIBUTE = struct.pack("!HHI", 0x000F, 4, MAGIC_COOKIE)
TRANSACTION_ID_LENGTH = 16
MS_VERSION = 1
"""The MS-Version this Edge answers with: 1, [MS-ICE] clients (section 2.2.2.17)."""

CONTROL = 0x02
"""TCP framing type of a TURN control message ([MS-TURN] section 2.1.4)."""
END_TO_END = 0x03
"""TCP framing type of end-to-end data ([MS-TURN] section 2.1.4)."""

# Method numbers as the message type spells them ([MS-TURN] section 2.2.1).
ALLOCATE = 0x003
SEND = 0x004
DATA_INDICATION = 0x007
"""The Data Indication's method as :class:`~simulator.media.stun.Message` holds it (RFC 8656's
Data, indication class); on the wire its type is 0x0115, which RFC 5389's bit layout would
read as an error response (libnice special-cases it the same way)."""
DATA_INDICATION_TYPE = 0x0115
SET_ACTIVE_DESTINATION = 0x006


# ------------------------------------------------------------------ attribute codecs


def _pack_address(value: tuple[str, int]) -> bytes:
    packed = ipaddress.IPv4Address(value[0]).packed
    return struct.pack("!BBH4s", 0, 1, value[1], packed)


def _unpack_address(data: bytes) -> tuple[str, int]:
    if len(data) != 8 or data[1] != 1:
        raise ValueError("an IPv4 address attribute is 8 bytes, family 1")
    port = struct.unpack_from("!H", data, 2)[0]
    return str(ipaddress.IPv4Address(bytes(data[4:8]))), port


def _xor_address(data: bytes, tid: bytes) -> bytes:
    """XOR port and address with the first four transaction id bytes (libnice's OC2007 reading
    of the XOR Mapped Address, section 2.2.2.16: the 16-byte id's first word as the cookie)."""
    port = struct.unpack_from("!H", data, 2)[0] ^ struct.unpack_from("!H", tid)[0]
    address = bytes(a ^ b for a, b in zip(data[4:8], tid[:4], strict=True))
    return data[:2] + struct.pack("!H", port) + address


def _pack_u32(value: int) -> bytes:
    return struct.pack("!I", value)


def _unpack_u32(data: bytes) -> int:
    if len(data) != 4:
        raise ValueError("value must be 4 bytes")
    value: int = struct.unpack("!I", data)[0]
    return value


def _pack_string(value: str) -> bytes:
    return value.encode()


def _pack_error(value: tuple[int, str]) -> bytes:
    code, reason = value
    return struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode()


def _unpack_error(data: bytes) -> tuple[int, str]:
    if len(data) < 4:
        raise ValueError("ERROR-CODE shorter than 4 bytes")
    return data[2] * 100 + data[3], data[4:].decode("utf8", "replace")


def _pack_sequence(value: tuple[bytes, int]) -> bytes:
    return value[0] + struct.pack("!I", value[1])


def _unpack_sequence(data: bytes) -> tuple[bytes, int]:
    if len(data) != 24:
        raise ValueError("MS-SEQUENCE-NUMBER is 24 bytes")
    return bytes(data[:20]), struct.unpack_from("!I", data, 20)[0]


def _unpack_cookie(data: bytes) -> int:
    value = _unpack_u32(data)
    if value != MAGIC_COOKIE:
        raise ValueError("wrong Magic Cookie value")
    return value


_XOR_TYPE = 0x8020

#: type -> (name, pack, unpack): the attributes of [MS-TURN] section 2.2.2.
ATTRIBUTES: dict[int, tuple[str, Callable[..., bytes], Callable[..., Any]]] = {
    0x0001: ("MAPPED-ADDRESS", _pack_address, _unpack_address),
    0x0006: ("USERNAME", _pack_string, wire.unpack_utf8(512)),
    0x0008: ("MESSAGE-INTEGRITY", bytes, lambda d: bytes(d) if len(d) == 20 else _bad_mi()),
    0x0009: ("ERROR-CODE", _pack_error, _unpack_error),
    0x000A: ("UNKNOWN-ATTRIBUTES", wire.pack_types, wire.unpack_types),
    0x000D: ("LIFETIME", _pack_u32, _unpack_u32),
    0x000E: ("ALTERNATE-SERVER", _pack_address, _unpack_address),
    0x000F: ("MAGIC-COOKIE", _pack_u32, _unpack_cookie),
    0x0010: ("BANDWIDTH", _pack_u32, _unpack_u32),
    0x0011: ("DESTINATION-ADDRESS", _pack_address, _unpack_address),
    0x0012: ("REMOTE-ADDRESS", _pack_address, _unpack_address),
    0x0013: ("DATA", bytes, wire.unpack_bytes(0xFFFF)),
    0x0014: ("NONCE", bytes, wire.unpack_bytes(763)),
    0x0015: ("REALM", _pack_string, wire.unpack_utf8(763)),
    0x0017: ("REQUESTED-ADDRESS-FAMILY", _pack_u32, lambda d: _unpack_u32(d) >> 24),
    0x8008: ("MS-VERSION", _pack_u32, _unpack_u32),
    _XOR_TYPE: ("XOR-MAPPED-ADDRESS", _pack_address, _unpack_address),
    0x8050: ("MS-SEQUENCE-NUMBER", _pack_sequence, _unpack_sequence),
}


def _bad_mi() -> bytes:
    raise ValueError("MESSAGE-INTEGRITY must be 20 bytes")


def _unpack_value(attr_type: int, unpack: wire.Unpack, value: bytes, tid: bytes) -> Any:
    if attr_type == _XOR_TYPE:
        if len(value) != 8:
            raise ValueError("an IPv4 address attribute is 8 bytes")
        value = _xor_address(value, tid)
    return unpack(value)


def _pack_value(attr_type: int, pack: wire.Pack, value: Any, tid: bytes) -> bytes:
    packed = pack(value)
    return _xor_address(packed, tid) if attr_type == _XOR_TYPE else packed


def integrity_input(data: bytes, end: int) -> bytes:
    """The bytes MESSAGE-INTEGRITY covers when it starts at ``end``: the header with its length
    counting up to the end of MESSAGE-INTEGRITY, the attributes before it, zero-padded to a
    multiple of 64 bytes (RFC 3489 section 11.2.8, which [MS-TURN] inherits)."""
    covered = data[:2] + struct.pack("!H", end - HEADER_LENGTH + 24) + data[4:end]
    return covered + bytes(-len(covered) % 64)


SYNTAX = wire.Syntax(
    ATTRIBUTES,
    padded=False,
    integrity_input=integrity_input,
    unpack_value=_unpack_value,
    pack_value=_pack_value,
)
"""[MS-TURN] section 2.2.2 attributes: unpadded, nothing counted after MESSAGE-INTEGRITY."""
ATTRIBUTE_TYPES: dict[str, int] = SYNTAX.types


# ------------------------------------------------------------------ messages


def looks_like(data: bytes) -> bool:
    """An [MS-TURN] message: top bits 0, no RFC 5389 cookie in the header, and the Magic Cookie
    attribute right after it (sections 2.2.1 and 2.2.2)."""
    return (
        len(data) >= HEADER_LENGTH + 8
        and not data[0] & 0xC0
        and data[20:28] == MAGIC_COOKIE_ATTRIBUTE
        and data[4:8] != b"\x21\x12\xa4\x42"
    )


def parse(data: bytes) -> Message:
    """Parse one whole [MS-TURN] message.

    A message without the Magic Cookie attribute first raises with code 0 (ignore it, section
    3.1.10); anything else malformed after the header raises 400 carrying the 16-byte
    transaction id, so the answer is an [MS-TURN] error response.
    """
    if len(data) < HEADER_LENGTH or data[0] & 0xC0:
        raise RemoteProtocolError("not an MS-TURN message (short, or top bits set)", code=0)
    mtype, length = struct.unpack_from("!HH", data)
    tid = bytes(data[4:20])
    if mtype == DATA_INDICATION_TYPE:
        method, cls = DATA_INDICATION, MessageClass.INDICATION
    else:
        method = (mtype & 0x000F) | ((mtype & 0x00E0) >> 1) | ((mtype & 0x3E00) >> 2)
        cls = MessageClass(mtype & 0x0110)

    def bad(text: str, code: int = 400) -> RemoteProtocolError:
        return RemoteProtocolError(
            text,
            code=code,
            transaction_id=tid,
            method=method,
            message_class=cls,
            dialect=DIALECT,
        )

    if data[20:28] != MAGIC_COOKIE_ATTRIBUTE:
        raise bad("no Magic Cookie attribute first (MS-TURN section 3.1.10)", code=0)
    if len(data) != HEADER_LENGTH + length:
        raise bad(f"length field says {length} bytes, message has {len(data) - 20}")
    decoded = wire.decode(SYNTAX, data, HEADER_LENGTH, tid, bad)
    return Message(
        method,
        cls,
        tid,
        decoded.attributes,
        decoded.integrity_data,
        decoded.unknown_required,
        dialect=DIALECT,
    )


def encode(
    message: Message, *, integrity_key: bytes | None = None, fingerprint: bool = True
) -> bytes:
    """Encode ``message``: the Magic Cookie attribute first, attributes unpadded, and with
    ``integrity_key`` MESSAGE-INTEGRITY last. ``fingerprint`` is ignored ([MS-TURN] has none)."""
    tid = message.transaction_id
    if len(tid) != TRANSACTION_ID_LENGTH:
        raise ValueError("an MS-TURN transaction id is 16 bytes")
    body = MAGIC_COOKIE_ATTRIBUTE + wire.encode(
        SYNTAX, message.attributes, tid, skip=("MAGIC-COOKIE", "MESSAGE-INTEGRITY", "FINGERPRINT")
    )
    if message.method == DATA_INDICATION and message.message_class == MessageClass.INDICATION:
        mtype = DATA_INDICATION_TYPE
    else:
        mtype = stun._type_of(message.method, message.message_class)
    data = struct.pack("!HH", mtype, len(body)) + tid + body
    if integrity_key is not None:
        mac = hmac.new(integrity_key, integrity_input(data, len(data)), "sha1").digest()
        data = (
            data[:2]
            + struct.pack("!H", len(body) + 24)
            + data[4:]
            + struct.pack("!HH", 0x0008, 20)
            + mac
        )
    return data


# ------------------------------------------------------------------ TCP framing, pseudo-TLS

PSEUDO_TLS_CLIENT_LENGTH = 50
"""A pseudo-TLS ClientHello record: 5-byte record header and a 45-byte ClientHello."""
PSEUDO_TLS_PREFIX = b"\x16\x03\x01\x00\x2d"
"""Its record header: handshake, TLS 1.0, 45 bytes."""
PSEUDO_TLS_CIPHER = 0x0018
"""The one cipher suite the pseudo-TLS hellos name (TLS_DH_anon_WITH_RC4_128_MD5)."""


def is_pseudo_tls(record: bytes) -> bool:
    """Whether ``record`` is the pseudo-TLS ClientHello of [MS-TURN] section 2.1.1: a TLS 1.0
    handshake record holding one ClientHello with an empty session id, the one cipher suite
    and the null compression method, nothing else. A real TLS client's hello is longer (it
    names many suites and extensions), so the first 50 bytes tell the two apart."""
    if len(record) != PSEUDO_TLS_CLIENT_LENGTH or record[:5] != PSEUDO_TLS_PREFIX:
        return False
    # handshake type 1, length 0x29, version 3.1, 32 random bytes, session id length 0,
    # cipher suites length 2, the suite, one compression method (null)
    return (
        record[5:11] == b"\x01\x00\x00\x29\x03\x01"
        and record[43:46] == b"\x00\x00\x02"
        and struct.unpack_from("!H", record, 46)[0] == PSEUDO_TLS_CIPHER
        and record[48:50] == b"\x01\x00"
    )


def pseudo_tls_server_hello(random: bytes) -> bytes:
    """The pseudo-TLS answer: one TLS record with a ServerHello (version 3.1, ``random``'s first
    32 bytes, a 32-byte session id from the next 32, the cipher suite, null compression) and a
    ServerHelloDone ([MS-TURN] section 2.1.1: both in the same record)."""
    if len(random) < 64:
        raise ValueError("the pseudo-TLS ServerHello needs 64 random bytes")
    hello = (
        b"\x03\x01"
        + random[:32]
        + b"\x20"
        + random[32:64]
        + struct.pack("!HB", PSEUDO_TLS_CIPHER, 0)
    )
    handshake = b"\x02" + struct.pack("!I", len(hello))[1:] + hello + b"\x0e\x00\x00\x00"
    return b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake


def pseudo_tls_client_hello(random: bytes) -> bytes:
    """The pseudo-TLS ClientHello a client opens TCP 443 with ([MS-TURN] section 2.1.1)."""
    if len(random) < 32:
        raise ValueError("the pseudo-TLS ClientHello needs 32 random bytes")
    hello = b"\x03\x01" + random[:32] + b"\x00" + struct.pack("!HHBB", 2, PSEUDO_TLS_CIPHER, 1, 0)
    handshake = b"\x01" + struct.pack("!I", len(hello))[1:] + hello
    return b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake


def is_server_hello(record: bytes) -> bool:
    """Whether ``record`` is a pseudo-TLS ServerHello + ServerHelloDone (random bytes aside)."""
    return (
        len(record) == 83
        and record[:11] == b"\x16\x03\x01\x00\x4e\x02\x00\x00\x46\x03\x01"
        and record[43] == 0x20
        and record[76:83] == b"\x00\x18\x00\x0e\x00\x00\x00"
    )


#: TLS alert descriptions (RFC 8446 section 6, RFC 5246 section 7.2).
ALERTS: dict[int, str] = {
    0: "close notify",
    10: "unexpected message",
    20: "bad record mac",
    22: "record overflow",
    40: "handshake failure",
    42: "bad certificate",
    43: "unsupported certificate",
    44: "certificate revoked",
    45: "certificate expired",
    46: "certificate unknown",
    47: "illegal parameter",
    48: "unknown ca",
    49: "access denied",
    50: "decode error",
    51: "decrypt error",
    70: "protocol version",
    71: "insufficient security",
    80: "internal error",
    86: "inappropriate fallback",
    90: "user canceled",
    109: "missing extension",
    110: "unsupported extension",
    112: "unrecognized name",
    116: "certificate required",
    120: "no application protocol",
}


def tls_alert(data: bytes) -> str | None:
    """The description of the TLS alert ``data`` starts with, or None when it is not one (a
    plaintext alert record: type 21, version 3.x, length 2). A TLS stack, an inspecting
    middlebox's say, answers the pseudo-TLS ClientHello with one instead of a ServerHello."""
    if len(data) < 7 or data[0] != 0x15 or data[1] != 3 or data[3:5] != b"\x00\x02":
        return None
    return ALERTS.get(data[6], f"alert {data[6]}")


def frame(kind: int, payload: bytes) -> bytes:
    """Prefix ``payload`` with the [MS-TURN] section 2.1.4 TCP framing header."""
    if len(payload) > 0xFFFF:
        raise ValueError("an MS-TURN TCP frame carries at most 65535 bytes")
    return struct.pack("!BBH", kind, 0, len(payload)) + payload


class MsStreamFramer(BufferedFramer):
    """Bytes of an [MS-TURN] TCP connection in, frames out: the pseudo-TLS ClientHello record
    (if the client opens with one), then frames with their 4-byte header (section 2.1.4)."""

    def __init__(self) -> None:
        super().__init__()
        self._started = False

    def next_frame(self) -> bytes | None:
        buf = self._buffer
        if not buf:
            return None
        if not self._started and buf[0] == 0x16:
            if len(buf) < PSEUDO_TLS_CLIENT_LENGTH:
                if not PSEUDO_TLS_PREFIX.startswith(bytes(buf[:5])):
                    raise self._fail("a TLS record that is not the pseudo-TLS ClientHello")
                return None
            self._started = True
            record = bytes(buf[:PSEUDO_TLS_CLIENT_LENGTH])
            del buf[:PSEUDO_TLS_CLIENT_LENGTH]
            return record
        self._started = True
        if buf[0] not in (CONTROL, END_TO_END) or (len(buf) > 1 and buf[1] != 0):
            raise self._fail("not an MS-TURN TCP frame (type 2 or 3, reserved 0)")
        if len(buf) < 4:
            return None
        size = 4 + ((buf[2] << 8) | buf[3])
        if len(buf) >= 30 and buf[22:30] == MAGIC_COOKIE_ATTRIBUTE:
            # libnice's OC2007 mode sends the messages of its candidate discovery (Allocate
            # and its refreshes) with the type byte and the zero byte but no length: the
            # message follows at once, and its own length delimits it
            size = 22 + ((buf[4] << 8) | buf[5])
            if len(buf) < size:
                return None
            message = bytes(buf[2:size])
            del buf[:size]
            return frame(CONTROL, message)
        if len(buf) < size or (len(buf) < 30 and size > len(buf)):
            return None
        out = bytes(buf[:size])
        del buf[:size]
        return out


class EdgeStreamFramer(BufferedFramer):
    """The A/V Edge's stream framer: the first byte of a connection picks the dialect.

    0x00-0x01 (STUN) or 0x40-0x7F (ChannelData): RFC 8656 framing (:class:`StreamFramer`);
    0x02/0x03 (an [MS-TURN] framing header) or 0x16 (the pseudo-TLS ClientHello, once the
    adapter has told it from real TLS): [MS-TURN] (:class:`MsStreamFramer`). Until the first
    byte is there, the bytes wait in this framer's own buffer."""

    def __init__(self) -> None:
        super().__init__()
        self._inner: StreamFramer | MsStreamFramer | None = None

    def _pick(self) -> StreamFramer | MsStreamFramer | None:
        if self._inner is None and self._buffer:
            first = self._buffer[0]
            inner: StreamFramer | MsStreamFramer
            inner = MsStreamFramer() if first in (CONTROL, END_TO_END, 0x16) else StreamFramer()
            inner.feed(bytes(self._buffer))
            self._buffer.clear()
            self._inner = inner
        return self._inner

    def feed(self, data: bytes) -> None:
        if self._inner is None:
            super().feed(data)
        else:
            self._inner.feed(data)

    def next_frame(self) -> bytes | None:
        inner = self._pick()
        return inner.next_frame() if inner is not None else None

    def peek(self, size: int) -> bytes:
        inner = self._pick()
        return inner.peek(size) if inner is not None else b""

    def take_buffer(self) -> bytes:
        inner = self._pick()
        return inner.take_buffer() if inner is not None else b""

    @property
    def buffered(self) -> int:
        return self._inner.buffered if self._inner is not None else len(self._buffer)


# ------------------------------------------------------------------ the dialects


def parse_either(data: bytes) -> Message:
    """Either dialect, told apart by the message itself (:func:`looks_like`)."""
    return parse(data) if looks_like(data) else stun.parse(data)


def encode_either(
    message: Message, *, integrity_key: bytes | None = None, fingerprint: bool = True
) -> bytes:
    """Each message in its own dialect (:attr:`Message.dialect`)."""
    if message.dialect == DIALECT:
        return encode(message, integrity_key=integrity_key)
    return stun.encode(message, integrity_key=integrity_key, fingerprint=fingerprint)


MS_TURN = Dialect(DIALECT, parse, encode, MsStreamFramer)
"""[MS-TURN] alone (a Lync client's view)."""
EDGE = Dialect("rfc+ms-turn", parse_either, encode_either, EdgeStreamFramer)
"""Both dialects, recognised per message and per connection: what the A/V Edge serves."""
