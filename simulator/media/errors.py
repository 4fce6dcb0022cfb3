"""The two error families of the media package (as h11's Local/RemoteProtocolError).

:class:`RemoteProtocolError` means the peer sent something wrong; it carries the STUN error code
and reason to answer with (RFC 8489 section 14.8) when the message could be answered at all.
:class:`LocalProtocolError` means our own code misused an API.
"""

from __future__ import annotations


class MediaError(Exception):
    """Base class of the media package's protocol errors."""


class LocalProtocolError(MediaError):
    """Our code called a core in a way it does not allow (a bug, not the peer's fault)."""


class RemoteProtocolError(MediaError):
    """The peer sent bytes that break the protocol.

    ``code``/``reason`` are the STUN error to answer with (400 unless said otherwise);
    ``transaction_id`` is set when the 20-byte header could be decoded, so the error can be
    answered even though the rest of the message could not be parsed.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int = 400,
        reason: str = "Bad Request",
        transaction_id: bytes | None = None,
        method: int | None = None,
        message_class: int | None = None,
        unknown_attributes: tuple[int, ...] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.transaction_id = transaction_id
        self.method = method
        self.message_class = message_class
        self.unknown_attributes = unknown_attributes


class FramingError(RemoteProtocolError):
    """A stream (TCP/TLS) carried bytes that are neither STUN nor ChannelData: close it."""
