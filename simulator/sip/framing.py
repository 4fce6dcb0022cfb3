"""Sans-IO stream framing of SIP messages (RFC 3261 section 18.3) with RFC 5626 keep-alives.

Bytes go in with :meth:`Framer.receive_data`; :meth:`Framer.next_frame` hands out whole messages
as :class:`Frame` (header section and body, split by ``Content-Length``), or :data:`PING` for a
double-CRLF keep-alive, whose single-CRLF pong the caller sends. A lone CRLF (a pong) is skipped.

Limits (as h11's ``max_incomplete_event_size``): a header section longer than
``max_header_bytes`` or a message longer than ``max_message_bytes`` raises
:class:`RemoteProtocolError` 513 (fatal: the rest of the stream cannot be framed); a bad
``Content-Length`` raises 400 (fatal). A missing ``Content-Length`` frames the message with an
empty body and flags it, so validation can answer 400 and keep the connection.

Not implemented: UDP datagram framing, chunking of bodies before they are complete.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from simulator.sip.errors import RemoteProtocolError

DEFAULT_MAX_HEADER_BYTES: Final = 16 * 1024
DEFAULT_MAX_MESSAGE_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class Frame:
    """One whole message off the stream."""

    head: bytes
    """Start line and header lines, without the blank line that ends them."""
    body: bytes
    """Exactly ``Content-Length`` bytes."""
    content_length_missing: bool = False
    """True when there was no ``Content-Length`` header (the body was taken as empty)."""

    @property
    def size(self) -> int:
        return len(self.head) + 4 + len(self.body)


class _Ping:
    """The double-CRLF keep-alive (a singleton: :data:`PING`)."""

    def __repr__(self) -> str:
        return "PING"


PING: Final = _Ping()

_CRLF2: Final = b"\r\n\r\n"


#: A header line (never a continuation line, which starts with white space) named
#: ``Content-Length`` or ``l``, with its value unfolded (RFC 3261 section 7.3.1).
_LENGTH_RE: Final = re.compile(
    rb"\r\n(?:content-length|l)[ \t]*:((?:[^\r\n]|\r\n[ \t])*)", re.IGNORECASE
)


def _content_length(head: bytes) -> int | None:
    """The value of ``Content-Length`` (or compact ``l``), None when absent.

    Raises 400 (fatal) when the value is not a number or appears twice with different values.
    """
    found: int | None = None
    for value in _LENGTH_RE.findall(head):
        text = value.replace(b"\r\n", b"").strip()
        if not text.isdigit() or len(text) > 9:
            raise RemoteProtocolError(400, "Malformed Content-Length header", fatal=True)
        number = int(text)
        if found is not None and found != number:
            raise RemoteProtocolError(400, "Conflicting Content-Length headers", fatal=True)
        found = number
    return found


class Framer:
    """Splits a byte stream into SIP messages and keep-alives."""

    def __init__(
        self,
        *,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_message_bytes = max_message_bytes
        self._buffer = bytearray()
        self._head: bytes | None = None
        self._body_length = 0
        self._length_missing = False
        self.broken: RemoteProtocolError | None = None
        """Set once the framing is lost; every later call raises it again."""
        self.partial_head: bytes | None = None
        """The header section of a message that broke the framing (to address the answer)."""

    @property
    def buffered(self) -> int:
        """Bytes received but not handed out yet."""
        return len(self._buffer)

    @property
    def incomplete(self) -> bool:
        """True while part of a message (or of a ping) has arrived."""
        return bool(self._buffer) or self._head is not None

    def receive_data(self, data: bytes) -> None:
        if self.broken is not None:
            return
        self._buffer += data

    def _fail(self, error: RemoteProtocolError, head: bytes | None) -> RemoteProtocolError:
        self.broken = error
        self.partial_head = head
        self._buffer.clear()
        return error

    def next_frame(self) -> Frame | _Ping | None:
        """The next whole message, :data:`PING`, or None when more bytes are needed."""
        if self.broken is not None:
            raise self.broken
        buf = self._buffer
        if self._head is None:
            # Keep-alives and stray CRLFs between messages (RFC 5626 section 3.5.1).
            while buf[:2] == b"\r\n":
                if buf[:4] == _CRLF2:
                    del buf[:4]
                    return PING
                if len(buf) < 4 and _CRLF2.startswith(bytes(buf)):
                    return None  # maybe the first half of a ping
                del buf[:2]  # a pong
            end = buf.find(_CRLF2)
            if end < 0:
                if len(buf) > self.max_header_bytes:
                    raise self._fail(
                        RemoteProtocolError(513, "Message Too Large", fatal=True), None
                    )
                return None
            if end > self.max_header_bytes:
                head = bytes(buf[:end])
                raise self._fail(RemoteProtocolError(513, "Message Too Large", fatal=True), head)
            head = bytes(buf[:end])
            try:
                length = _content_length(head)
            except RemoteProtocolError as exc:
                raise self._fail(exc, head) from None
            self._length_missing = length is None
            length = length or 0
            if end + 4 + length > self.max_message_bytes:
                raise self._fail(RemoteProtocolError(513, "Message Too Large", fatal=True), head)
            del buf[: end + 4]
            self._head = head
            self._body_length = length
        if len(buf) < self._body_length:
            return None
        body = bytes(buf[: self._body_length])
        del buf[: self._body_length]
        frame = Frame(self._head, body, self._length_missing)
        self._head = None
        return frame
