"""How STUN/TURN messages look on the wire: the seam between the RFC dialect and [MS-TURN].

Both cores (the server, :mod:`simulator.media.turn`, and the client, :mod:`simulator.media.client`)
handle :class:`~simulator.media.stun.Message` values with attribute names; a :class:`Dialect`
turns bytes into those values and back, and frames them on streams. :data:`RFC` is RFC 8489 /
RFC 8656 / RFC 6062 (the codec of :mod:`simulator.media.stun`, the framing of
:mod:`simulator.media.framing`). A second dialect ([MS-TURN]: the MAGIC-COOKIE attribute first,
16-byte transaction ids, its own framing on TCP 443) plugs in here without touching the request
handlers; authentication has its own seam in :mod:`simulator.media.auth`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from simulator.media import stun
from simulator.media.framing import StreamFramer
from simulator.media.stun import Message


class Encoder(Protocol):
    def __call__(
        self, message: Message, *, integrity_key: bytes | None = None, fingerprint: bool = True
    ) -> bytes: ...


class Framer(Protocol):
    """Bytes of a stream in, whole messages (STUN or ChannelData) out."""

    def feed(self, data: bytes) -> None: ...
    def next_frame(self) -> bytes | None: ...
    def peek(self, size: int) -> bytes: ...
    def frames(self, data: bytes = b"") -> list[bytes]: ...
    def take_buffer(self) -> bytes: ...
    @property
    def buffered(self) -> int: ...


@dataclass(frozen=True)
class Dialect:
    """A wire format: parse and encode messages, frame them on streams."""

    name: str
    parse: Callable[[bytes], Message]
    """Bytes of one whole message to a Message; RemoteProtocolError if malformed."""
    encode: Encoder
    """A Message to bytes, with MESSAGE-INTEGRITY (``integrity_key``) and FINGERPRINT."""
    framer: Callable[[], Framer]
    """A new stream framer (TCP/TLS)."""


RFC = Dialect("rfc", stun.parse, stun.encode, StreamFramer)
"""RFC 8489 STUN with RFC 8656 TURN and RFC 6062 TCP relays."""
