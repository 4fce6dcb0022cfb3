"""The error families of the media package (as h11's Local/RemoteProtocolError).

:class:`RemoteProtocolError` means the peer sent something wrong; it carries the STUN error code
and reason to answer with (RFC 8489 section 14.8) when the message could be answered at all.
:class:`Rejection` is the server's refusal of a well-formed request: handlers raise it with the
error code, and the core answers it in one place. :class:`LocalProtocolError` means our own code
misused an API. On the client side, :class:`RequestRefused` is a server's error response and
:class:`NotStunError` an answer that is not STUN at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from simulator.media.codes import reason_phrase


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
        dialect: str = "rfc",
    ) -> None:
        super().__init__(message)
        self.code, self.reason = code, reason
        # what the header said, when it could be decoded
        self.transaction_id, self.method, self.message_class = transaction_id, method, message_class
        self.dialect = dialect
        """``ms-turn`` when the header was [MS-TURN]'s: the answer must be one too."""


class FramingError(RemoteProtocolError):
    """A stream (TCP/TLS) carried bytes that are neither STUN nor ChannelData: close it."""


class Rejection(RemoteProtocolError):
    """A request the server refuses: answered with an error response carrying ``code``.

    Request handlers raise it; the core answers it in one place
    (:func:`simulator.media.context.TurnState.reject`), signed when the request authenticated.
    ``str(exc)`` says why, for the log and the events; it is never sent to the peer (the reason
    phrase comes from :data:`simulator.media.codes.ERROR_CODES`). ``attributes`` go into the
    error response after ERROR-CODE (REALM and NONCE of a 401, UNKNOWN-ATTRIBUTES of a 420).
    """

    def __init__(self, code: int, why: str, *, attributes: Iterable[tuple[str, Any]] = ()) -> None:
        super().__init__(why, code=code, reason=reason_phrase(code))
        self.attributes: tuple[tuple[str, Any], ...] = tuple(attributes)

    @classmethod
    def unknown_attributes(cls, types: tuple[int, ...]) -> Rejection:
        """420 listing the comprehension-required attribute types not understood (RFC 8489
        section 6.3.1; [MS-TURN] section 2.2.2 answers them with Unknown Attribute too)."""
        return cls(
            420,
            "unknown comprehension-required attribute",
            attributes=[("UNKNOWN-ATTRIBUTES", types)],
        )


class RequestRefused(MediaError):
    """A TURN/STUN server answered one of our requests with an error response."""

    def __init__(
        self,
        method: str,
        code: int,
        reason: str,
        *,
        authenticated: bool = False,
        realm: str | None = None,
    ) -> None:
        super().__init__(f"{method} answered {code} {reason}".rstrip())
        self.method = method
        """The request's method name (``Allocate`` ...)."""
        self.code = code
        self.reason = reason
        self.authenticated = authenticated
        """True when the refused request carried our credentials (a 401 then means they are
        wrong); False when we had none to send."""
        self.realm = realm
        """REALM of a 401/438 challenge, if it carried one."""


class NotStunError(RemoteProtocolError):
    """The server answered with bytes that are neither STUN nor ChannelData."""

    def __init__(self, message: str, data: bytes) -> None:
        super().__init__(message)
        self.data = data
        """The first bytes received (at most 200), for a diagnosis."""
