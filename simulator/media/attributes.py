"""STUN attributes on the wire: one bounded walker and one encoder for both dialects.

Both wire formats of :mod:`simulator.media` carry their attributes as type-length-value after
the 20-byte header, and differ only in a few rules, which a :class:`Syntax` names:

- RFC 5389 section 15 (kept by RFC 8489 section 14): a 16-bit type, a 16-bit length of the value
  before padding, the value, then 0-3 padding bytes so that each attribute ends on a 32-bit
  boundary (the padding is ignored). Types 0x0000-0x7FFF are comprehension-required: one not
  understood is answered with 420 and listed in UNKNOWN-ATTRIBUTES. After MESSAGE-INTEGRITY
  only FINGERPRINT counts (section 15.4). :data:`simulator.media.stun.SYNTAX`.
- [MS-TURN] section 2.2.2: the attributes are TLV encoded as [IETFDRAFT-STUN-02] section 10.2
  has it, the Magic Cookie attribute first; any other attribute from the mandatory range the
  extension does not support generates an Unknown Attribute (420) error response. The values
  are not padded (the draft's layout, and libnice's OC2007 compatibility), and nothing after
  MESSAGE-INTEGRITY counts. :data:`simulator.media.msturn.SYNTAX`.

Every byte is hostile: :func:`walk` checks each length against the end of the message before it
slices, and every decoding error becomes the caller's protocol error (``bad``), never an
exception of the codec. The caps on values (USERNAME, REALM, NONCE) are in the dialects'
tables, built from the value codecs at the end of this module.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

Pack = Callable[..., bytes]
Unpack = Callable[..., Any]
Table = Mapping[int, tuple[str, Pack, Unpack]]
"""Attribute type -> (name, pack, unpack)."""

DECODE_ERRORS: tuple[type[Exception], ...] = (ValueError, struct.error, IndexError, OSError)
"""What a value codec raises on a bad value (``UnicodeDecodeError`` is a ``ValueError``)."""

COMPREHENSION_OPTIONAL = 0x8000
"""Types from here up may be ignored when not understood (RFC 5389 section 15)."""


@dataclass(frozen=True)
class Syntax:
    """How one dialect lays out and reads its attributes."""

    table: Table
    padded: bool
    """Values padded to a multiple of 4 bytes (RFC 5389) or not ([MS-TURN])."""
    integrity_input: Callable[[bytes, int], bytes]
    """(message, offset of MESSAGE-INTEGRITY) -> the bytes its HMAC covers."""
    counted_after_integrity: frozenset[int] = frozenset()
    """Types still decoded after MESSAGE-INTEGRITY (RFC 5389: FINGERPRINT)."""
    unpack_value: Callable[[int, Unpack, bytes, bytes], Any] = (
        lambda attr_type, unpack, value, tid: unpack(value)
    )
    """(type, unpack, value, transaction id) -> value: where the XOR addresses need the id."""
    pack_value: Callable[[int, Pack, Any, bytes], bytes] = lambda attr_type, pack, value, tid: pack(
        value
    )
    types: dict[str, int] = field(init=False)
    """Name -> type, the reverse of :attr:`table`."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "types", {name: t for t, (name, _, _) in self.table.items()})


@dataclass
class Decoded:
    """The attributes of one message, as :func:`decode` read them."""

    attributes: list[tuple[str, Any]]
    """(name, value) in wire order."""
    unknown_required: tuple[int, ...]
    """Comprehension-required types the dialect does not understand."""
    integrity_data: bytes | None
    """The bytes MESSAGE-INTEGRITY covers, None without it."""


def walk(
    data: bytes, start: int, *, padded: bool, bad: Callable[[str], Exception]
) -> Iterator[tuple[int, int, bytes]]:
    """(offset, type, value) of each attribute from ``start`` to the end of ``data``.

    Raises ``bad(text)`` for a truncated attribute header, a value running past the end, or
    padding running past the end."""
    pos, end = start, len(data)
    while pos < end:
        if end - pos < 4:
            raise bad("truncated attribute header")
        attr_type, attr_len = struct.unpack_from("!HH", data, pos)
        value_end = pos + 4 + attr_len
        if value_end > end:
            raise bad(f"attribute 0x{attr_type:04x} runs past the end of the message")
        yield pos, attr_type, data[pos + 4 : value_end]
        pos = value_end + (-attr_len % 4 if padded else 0)
    if pos != end:
        raise bad("attribute padding runs past the end of the message")


def decode(
    syntax: Syntax,
    data: bytes,
    start: int,
    transaction_id: bytes,
    bad: Callable[[str], Exception],
    check: Callable[[str, Any, int, int], None] | None = None,
) -> Decoded:
    """Decode the attributes of the message ``data`` from ``start``.

    ``check(name, value, offset, value_end)`` sees each decoded attribute before it is kept (the
    RFC dialect's FINGERPRINT rules); a bad value raises ``bad("bad NAME attribute: why")``."""
    attributes: list[tuple[str, Any]] = []
    unknown: list[int] = []
    integrity_data: bytes | None = None
    for pos, attr_type, value in walk(data, start, padded=syntax.padded, bad=bad):
        known = syntax.table.get(attr_type)
        if integrity_data is not None and attr_type not in syntax.counted_after_integrity:
            continue
        if known is None:
            if attr_type < COMPREHENSION_OPTIONAL:
                unknown.append(attr_type)
            continue
        name, _pack, unpack = known
        try:
            decoded = syntax.unpack_value(attr_type, unpack, value, transaction_id)
        except DECODE_ERRORS as exc:
            raise bad(f"bad {name} attribute: {exc}") from None
        if check is not None:
            check(name, decoded, pos, pos + 4 + len(value))
        if name == "MESSAGE-INTEGRITY":
            integrity_data = syntax.integrity_input(data, pos)
        attributes.append((name, decoded))
    return Decoded(attributes, tuple(unknown), integrity_data)


def tlv(attr_type: int, value: bytes, *, padded: bool) -> bytes:
    """One attribute: type, length, value (and with ``padded`` zero padding to 4 bytes)."""
    pad = bytes(-len(value) % 4) if padded else b""
    return struct.pack("!HH", attr_type, len(value)) + value + pad


def encode(
    syntax: Syntax,
    attributes: Iterable[tuple[str, Any]],
    transaction_id: bytes,
    *,
    skip: Collection[str] = (),
) -> bytes:
    """The attributes (name, value) in order, but those named in ``skip``."""
    body = bytearray()
    for name, value in attributes:
        if name in skip:
            continue
        attr_type = syntax.types[name]
        packed = syntax.pack_value(attr_type, syntax.table[attr_type][1], value, transaction_id)
        body += tlv(attr_type, packed, padded=syntax.padded)
    return bytes(body)


# ------------------------------------------------------------------ value codecs both share


def unpack_utf8(limit: int) -> Callable[[bytes], str]:
    """A UTF-8 string of at most ``limit`` bytes."""

    def unpack(data: bytes) -> str:
        if len(data) > limit:
            raise ValueError(f"value longer than {limit} bytes")
        return data.decode("utf8")

    return unpack


def unpack_bytes(limit: int, what: str = "value") -> Callable[[bytes], bytes]:
    """Opaque bytes, at most ``limit`` of them."""

    def unpack(data: bytes) -> bytes:
        if len(data) > limit:
            raise ValueError(f"{what} longer than {limit} bytes")
        return bytes(data)

    return unpack


def pack_types(value: tuple[int, ...]) -> bytes:
    """UNKNOWN-ATTRIBUTES: 16-bit types one after another."""
    return b"".join(struct.pack("!H", t) for t in value)


def unpack_types(data: bytes) -> tuple[int, ...]:
    if len(data) % 2:
        raise ValueError("UNKNOWN-ATTRIBUTES length must be even")
    return tuple(struct.unpack(f"!{len(data) // 2}H", data))
