"""Sans-IO framing of STUN and ChannelData over TCP and TLS (RFC 8656 section 12.5), and RFC 4571.

On a stream the messages are self-delimiting, like RFC 4571's length-prefixed RTP: the top two
bits of the first byte say which one comes next.

- ``00``: a STUN message; 20-byte header, the length field counts the attributes.
- ``01``: ChannelData; 4-byte header (channel number, length), then the data, which over a
  stream is padded to a multiple of 4 bytes (RFC 8656 section 12.5). The frame handed to the
  core includes that padding.
- A STUN header without the magic cookie, or ``10``/``11``: not TURN. A stream cannot
  resynchronise after that, so it is closed (:class:`~simulator.media.errors.FramingError`).

:class:`Rfc4571Framer` frames RTP/RTCP over TCP with a 16-bit length prefix (RFC 4571 section 2),
as the media endpoint of a client uses on TCP.
"""

from __future__ import annotations

import struct

from simulator.media.errors import FramingError

MAX_BUFFER = 4 + 0xFFFF + 3
"""No frame is longer than this (a padded ChannelData with a 65535-byte payload)."""


class BufferedFramer:
    """A stream's bytes in a buffer, whole frames cut off its front by :meth:`next_frame`.

    The methods every framer of :mod:`simulator.media` shares (the
    :class:`~simulator.media.dialect.Framer` protocol); a subclass says where a frame ends."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        """Append bytes received on the stream."""
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next whole frame, None if more bytes are needed."""
        raise NotImplementedError

    def frames(self, data: bytes = b"") -> list[bytes]:
        """Feed ``data`` and return every whole frame now available."""
        if data:
            self.feed(data)
        out: list[bytes] = []
        while (frame := self.next_frame()) is not None:
            out.append(frame)
        return out

    def peek(self, size: int) -> bytes:
        """The first ``size`` buffered bytes (fewer if not there yet), left in the buffer."""
        return bytes(self._buffer[:size])

    def take_buffer(self) -> bytes:
        """Bytes received after the last frame (raw data after a ConnectionBind, RFC 6062)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def _fail(self, why: str) -> FramingError:
        """The stream cannot be read on: drop what is buffered, the error to raise."""
        self._buffer.clear()
        return FramingError(why)


class StreamFramer(BufferedFramer):
    """Bytes in, whole STUN messages and ChannelData frames out."""

    def next_frame(self) -> bytes | None:
        """The next whole frame, None if more bytes are needed; FramingError if not TURN."""
        buf = self._buffer
        if len(buf) < 4:
            return None
        top = buf[0] & 0xC0
        length = (buf[2] << 8) | buf[3]
        if top == 0x00:
            size = 20 + length
            if len(buf) >= 8 and buf[4:8] != b"\x21\x12\xa4\x42":
                raise self._fail("STUN message without the magic cookie on a stream")
            if len(buf) < 20:
                return None
        elif top == 0x40:
            size = 4 + length + (-length % 4)
        else:
            raise self._fail("stream carries neither STUN nor ChannelData")
        if len(buf) < size:
            return None
        frame = bytes(buf[:size])
        del buf[:size]
        return frame


class Rfc4571Framer(BufferedFramer):
    """RFC 4571 section 2: each packet preceded by its 16-bit length."""

    def next_frame(self) -> bytes | None:
        buf = self._buffer
        if len(buf) < 2:
            return None
        (length,) = struct.unpack_from("!H", buf)
        if len(buf) < 2 + length:
            return None
        packet = bytes(buf[2 : 2 + length])
        del buf[: 2 + length]
        return packet

    @staticmethod
    def frame(packet: bytes) -> bytes:
        if len(packet) > 0xFFFF:
            raise ValueError("an RFC 4571 frame carries at most 65535 bytes")
        return struct.pack("!H", len(packet)) + packet
