"""The two SIP error families (as h11): our misuse of the API, and a peer's bad input."""

from __future__ import annotations


class SipError(Exception):
    """Base of the SIP package's errors."""


class LocalProtocolError(SipError):
    """Our own code used a core wrongly (e.g. sent on a closed connection)."""


class RemoteProtocolError(SipError):
    """The peer sent something wrong.

    The core has already queued the answer (if any) before raising; the adapter only flushes and,
    when :attr:`fatal` is true, closes the connection.
    """

    def __init__(self, status: int, reason: str, *, fatal: bool = False) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        """The SIP status the peer is (or would be) answered with."""
        self.reason = reason
        """Reason phrase naming the problem; never contains peer bytes."""
        self.fatal = fatal
        """True when the framing is lost and the connection must close."""
