"""STUN messages (RFC 8489) with the TURN (RFC 8656) and TCP-relay (RFC 6062) additions.

What this module takes from :mod:`aioice.stun`: the attribute value codecs (``pack_*`` /
``unpack_*`` for addresses, XOR addresses, strings, integers, error codes), the integrity and
fingerprint computations (:func:`aioice.stun.message_integrity`,
:func:`aioice.stun.message_fingerprint`), and its attribute table, which this module extends.

Where aioice falls short for a server, and why this module has its own message loop (the
attribute walk of :mod:`simulator.media.attributes`, which the [MS-TURN] dialect shares):

- ``aioice.stun.parse_message`` raises ``ValueError`` for an unknown method (``Method(...)``), so
  RFC 6062's Connect (0x000A), ConnectionBind (0x000B) and ConnectionAttempt (0x000C) cannot be
  parsed at all, and its ``Method`` enum cannot be extended.
- It skips unknown attributes silently; a server must answer an unknown comprehension-required
  attribute (type < 0x8000) with 420 and list it in UNKNOWN-ATTRIBUTES (RFC 8489 section 6.3.1).
- It does not know UNKNOWN-ATTRIBUTES, REQUESTED-ADDRESS-FAMILY, EVEN-PORT, DONT-FRAGMENT,
  RESERVATION-TOKEN, CONNECTION-ID, ADDITIONAL-ADDRESS-FAMILY and the RFC 8489 security
  attributes, and it cannot encode them (its encoder looks attributes up by name).
- An attribute whose length runs past the end of the message is silently truncated instead of
  rejected, and a short fixed-size value raises ``struct.error`` rather than ``ValueError``.
- It keeps one value per attribute type, but CreatePermission carries several XOR-PEER-ADDRESS.
- A bad message loses its transaction id: the exception carries nothing. Here the 20-byte header
  is decoded first and every :class:`~simulator.media.errors.RemoteProtocolError` raised after
  that carries the transaction id, method and class, so the error can be answered.

Not implemented: MESSAGE-INTEGRITY-SHA256, USERHASH and PASSWORD-ALGORITHMS (RFC 8489 section
9.2) are recognised (no 420) but not used; the MS-TURN dialect's attributes are unknown.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from aioice import stun as _aioice

from simulator.media import attributes as wire
from simulator.media.errors import RemoteProtocolError

HEADER_LENGTH = 20
MAGIC_COOKIE = 0x2112A442
MAX_MESSAGE = HEADER_LENGTH + 0xFFFF
"""The largest a STUN message can be (the length field is 16 bits)."""


class Method(IntEnum):
    """STUN methods this server knows (RFC 8489, RFC 8656 section 17, RFC 6062 section 6.1)."""

    BINDING = 0x001
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009
    CONNECT = 0x00A
    CONNECTION_BIND = 0x00B
    CONNECTION_ATTEMPT = 0x00C


class MessageClass(IntEnum):
    """The class bits of the message type (RFC 8489 section 5)."""

    REQUEST = 0x000
    INDICATION = 0x010
    SUCCESS = 0x100
    ERROR = 0x110


def _pack_u8_family(value: int) -> bytes:
    return struct.pack("!B3x", value)


def _unpack_u8_family(data: bytes) -> int:
    value: int = struct.unpack("!B3x", data)[0]
    return value


def _pack_even_port(value: bool) -> bytes:
    return b"\x80" if value else b"\x00"


def _unpack_even_port(data: bytes) -> bool:
    if len(data) != 1:
        raise ValueError("EVEN-PORT must be 1 byte")
    return bool(data[0] & 0x80)


def _unpack_fixed(size: int, inner: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def unpack(data: bytes) -> Any:
        if len(data) != size:
            raise ValueError(f"value must be {size} bytes, not {len(data)}")
        return inner(data)

    return unpack


Codec = tuple[Callable[..., bytes], Callable[..., Any]]

#: type -> (name, pack, unpack). aioice's table, with fixed sizes checked, plus what it lacks.
ATTRIBUTES: dict[int, tuple[str, Callable[..., bytes], Callable[..., Any]]] = {
    t: (name, pack, unpack) for t, name, pack, unpack in _aioice.ATTRIBUTES
}
ATTRIBUTES.update(
    {
        0x0006: ("USERNAME", _aioice.pack_string, wire.unpack_utf8(512)),
        0x0008: ("MESSAGE-INTEGRITY", _aioice.pack_bytes, _unpack_fixed(20, bytes)),
        0x000A: ("UNKNOWN-ATTRIBUTES", wire.pack_types, wire.unpack_types),
        0x000C: (
            "CHANNEL-NUMBER",
            _aioice.pack_unsigned_short,
            _unpack_fixed(4, _aioice.unpack_unsigned_short),
        ),
        0x000D: ("LIFETIME", _aioice.pack_unsigned, _unpack_fixed(4, _aioice.unpack_unsigned)),
        0x0014: ("REALM", _aioice.pack_string, wire.unpack_utf8(763)),
        0x0017: ("REQUESTED-ADDRESS-FAMILY", _pack_u8_family, _unpack_fixed(4, _unpack_u8_family)),
        0x0018: ("EVEN-PORT", _pack_even_port, _unpack_even_port),
        0x0019: (
            "REQUESTED-TRANSPORT",
            _pack_u8_family,
            _unpack_fixed(4, _unpack_u8_family),
        ),
        0x001A: ("DONT-FRAGMENT", _aioice.pack_none, _unpack_fixed(0, lambda d: None)),
        0x001C: ("MESSAGE-INTEGRITY-SHA256", _aioice.pack_bytes, _aioice.unpack_bytes),
        0x001D: ("PASSWORD-ALGORITHM", _aioice.pack_bytes, _aioice.unpack_bytes),
        0x001E: ("USERHASH", _aioice.pack_bytes, _unpack_fixed(32, bytes)),
        0x0022: ("RESERVATION-TOKEN", _aioice.pack_bytes, _unpack_fixed(8, bytes)),
        0x0024: ("PRIORITY", _aioice.pack_unsigned, _unpack_fixed(4, _aioice.unpack_unsigned)),
        0x0025: ("USE-CANDIDATE", _aioice.pack_none, _unpack_fixed(0, lambda d: None)),
        0x002A: (
            "CONNECTION-ID",
            _aioice.pack_unsigned,
            _unpack_fixed(4, _aioice.unpack_unsigned),
        ),
        0x8000: ("ADDITIONAL-ADDRESS-FAMILY", _pack_u8_family, _unpack_fixed(4, _unpack_u8_family)),
        0x8001: ("ADDRESS-ERROR-CODE", _aioice.pack_bytes, _aioice.unpack_bytes),
        0x8002: ("PASSWORD-ALGORITHMS", _aioice.pack_bytes, _aioice.unpack_bytes),
        0x8003: ("ALTERNATE-DOMAIN", _aioice.pack_string, _aioice.unpack_string),
        0x8004: ("ICMP", _aioice.pack_bytes, _aioice.unpack_bytes),
        0x8022: ("SOFTWARE", _aioice.pack_string, wire.unpack_utf8(763)),
        0x8023: ("ALTERNATE-SERVER", _aioice.pack_address, _aioice.unpack_address),
        0x8028: (
            "FINGERPRINT",
            _aioice.pack_unsigned,
            _unpack_fixed(4, _aioice.unpack_unsigned),
        ),
        0x8029: (
            "ICE-CONTROLLED",
            _aioice.pack_unsigned_64,
            _unpack_fixed(8, _aioice.unpack_unsigned_64),
        ),
        0x802A: (
            "ICE-CONTROLLING",
            _aioice.pack_unsigned_64,
            _unpack_fixed(8, _aioice.unpack_unsigned_64),
        ),
    }
)


ATTRIBUTES[0x0015] = ("NONCE", _aioice.pack_bytes, wire.unpack_bytes(763, "NONCE"))


def _unpack_value(attr_type: int, unpack: wire.Unpack, value: bytes, tid: bytes) -> Any:
    if unpack is _aioice.unpack_xor_address:
        return unpack(value, transaction_id=tid)
    return unpack(value)


def _pack_value(attr_type: int, pack: wire.Pack, value: Any, tid: bytes) -> bytes:
    return pack(value, tid) if pack is _aioice.pack_xor_address else pack(value)


SYNTAX = wire.Syntax(
    ATTRIBUTES,
    padded=True,
    integrity_input=lambda data, pos: _aioice.set_body_length(data[:pos], pos - HEADER_LENGTH + 24),
    counted_after_integrity=frozenset({0x8028}),
    unpack_value=_unpack_value,
    pack_value=_pack_value,
)
"""RFC 5389 / RFC 8489 attributes: padded to 4 bytes, FINGERPRINT counted after
MESSAGE-INTEGRITY (section 14.5)."""
ATTRIBUTE_TYPES: dict[str, int] = SYNTAX.types


@dataclass(frozen=True)
class Header:
    """The fixed 20-byte header (RFC 8489 section 5)."""

    method: int
    """The 12-bit method number (possibly one this server does not know)."""
    message_class: MessageClass
    length: int
    """The message length field: bytes after the header."""
    cookie: int
    transaction_id: bytes
    dialect: str = "rfc"
    """``rfc``, or ``ms-turn`` for an [MS-TURN] header (16-byte transaction id, no cookie)."""

    @property
    def known_method(self) -> Method | None:
        try:
            return Method(self.method)
        except ValueError:
            return None


def decode_header(data: bytes) -> Header | None:
    """Decode the header, or None if ``data`` cannot be a STUN message (short, or top bits set)."""
    if len(data) < HEADER_LENGTH or data[0] & 0xC0:
        return None
    mtype, length, cookie, tid = struct.unpack_from("!HHI12s", data)
    method = (mtype & 0x000F) | ((mtype & 0x00E0) >> 1) | ((mtype & 0x3E00) >> 2)
    cls = MessageClass(mtype & 0x0110)
    return Header(method, cls, length, cookie, tid)


def _type_of(method: int, cls: int) -> int:
    return (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | cls


@dataclass
class Message:
    """A parsed (or to be encoded) STUN message. Attribute values as aioice decodes them."""

    method: int
    message_class: MessageClass
    transaction_id: bytes
    attributes: list[tuple[str, Any]] = field(default_factory=list)
    """(name, value) in wire order; names from :data:`ATTRIBUTES`."""
    integrity_data: bytes | None = None
    """The message bytes MESSAGE-INTEGRITY covers (header length already adjusted)."""
    unknown_required: tuple[int, ...] = ()
    """Comprehension-required attribute types (< 0x8000) this server does not understand."""
    dialect: str = "rfc"
    """``rfc`` (RFC 8489, 12-byte transaction id) or ``ms-turn`` ([MS-TURN] section 2.2.1:
    16-byte transaction id, the MAGIC-COOKIE attribute first): which codec encodes it."""

    def get(self, name: str, default: Any = None) -> Any:
        for attr_name, value in self.attributes:
            if attr_name == name:
                return value
        return default

    def get_all(self, name: str) -> list[Any]:
        return [value for attr_name, value in self.attributes if attr_name == name]

    def __contains__(self, name: str) -> bool:
        return any(attr_name == name for attr_name, _ in self.attributes)

    def check_integrity(self, key: bytes) -> bool:
        """Check MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 section 14.5); False if absent."""
        if self.integrity_data is None:
            return False
        expected = hmac.new(key, self.integrity_data, "sha1").digest()
        return hmac.compare_digest(expected, self.get("MESSAGE-INTEGRITY"))


def parse(data: bytes) -> Message:
    """Parse one whole STUN message.

    Raises :class:`RemoteProtocolError` (400) for anything malformed; when the header decoded,
    the error carries its transaction id, method and class. A FINGERPRINT mismatch is an error
    with code 0 (drop, don't answer: RFC 8489 section 7.3).
    """
    header = decode_header(data)
    if header is None:
        raise RemoteProtocolError("not a STUN message (shorter than 20 bytes or top bits set)")

    def bad(text: str, code: int = 400, reason: str = "Bad Request") -> RemoteProtocolError:
        return RemoteProtocolError(
            text,
            code=code,
            reason=reason,
            transaction_id=header.transaction_id,
            method=header.method,
            message_class=header.message_class,
        )

    if header.cookie != MAGIC_COOKIE:
        # RFC 3489 clients are not supported; their messages cannot carry XOR addresses.
        raise bad("no magic cookie (RFC 3489 message)")
    if len(data) != HEADER_LENGTH + header.length:
        raise bad(f"length field says {header.length} bytes, message has {len(data) - 20}")
    if header.length % 4:
        raise bad("message length is not a multiple of 4")
    tid = header.transaction_id

    def check(name: str, value: Any, pos: int, value_end: int) -> None:
        if name == "FINGERPRINT":
            if value_end != len(data):
                raise bad("FINGERPRINT is not the last attribute")
            if value != _aioice.message_fingerprint(data[:pos]):
                raise bad("FINGERPRINT does not match", code=0, reason="")

    decoded = wire.decode(SYNTAX, data, HEADER_LENGTH, tid, bad, check)
    return Message(
        header.method,
        header.message_class,
        tid,
        decoded.attributes,
        decoded.integrity_data,
        decoded.unknown_required,
    )


def encode(
    message: Message,
    *,
    integrity_key: bytes | None = None,
    fingerprint: bool = True,
) -> bytes:
    """Encode ``message``; with ``integrity_key`` append MESSAGE-INTEGRITY, then FINGERPRINT."""
    body = wire.encode(
        SYNTAX,
        message.attributes,
        message.transaction_id,
        skip=("MESSAGE-INTEGRITY", "FINGERPRINT"),
    )
    mtype = _type_of(message.method, message.message_class)
    data = bytes(
        struct.pack("!HHI12s", mtype, len(body), MAGIC_COOKIE, message.transaction_id) + body
    )
    if integrity_key is not None:
        mac = _aioice.message_integrity(data, integrity_key)
        data = _aioice.set_body_length(data, len(body) + 24) + struct.pack("!HH", 0x0008, 20) + mac
    if fingerprint:
        crc = _aioice.message_fingerprint(data)
        data = _aioice.set_body_length(data, len(data) - HEADER_LENGTH + 8) + struct.pack(
            "!HHI", 0x8028, 4, crc
        )
    return data


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """MD5(username ":" realm ":" password): the long-term key (RFC 8489 section 9.2.2)."""
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).digest()


def response(
    request: Message | Header,
    attributes: Iterable[tuple[str, Any]] = (),
    *,
    error: tuple[int, str] | None = None,
) -> Message:
    """A success (or, with ``error``, error) response to ``request``, same transaction id."""
    method = request.method
    attrs = list(attributes)
    if error is not None:
        attrs.insert(0, ("ERROR-CODE", error))
    return Message(
        method,
        MessageClass.ERROR if error is not None else MessageClass.SUCCESS,
        request.transaction_id,
        attrs,
        dialect=request.dialect,
    )


def is_stun(data: bytes) -> bool:
    """A quick test that ``data`` looks like STUN: top two bits 0 and the magic cookie."""
    return len(data) >= HEADER_LENGTH and not data[0] & 0xC0 and data[4:8] == b"\x21\x12\xa4\x42"
