"""Events a :class:`~simulator.sip.connection.SipConnection` emits (past tense, frozen)."""

from __future__ import annotations

from dataclasses import dataclass

from sipmessage import Request, Response


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A well-framed request whose mandatory headers passed :func:`~.validate.validate`."""

    request: Request
    """The parsed request; its raw header values may be edited before forwarding."""
    size: int
    """Bytes the message took on the wire."""


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A well-framed response whose mandatory headers passed validation."""

    response: Response
    """The parsed response."""
    size: int
    """Bytes the message took on the wire."""


@dataclass(frozen=True, slots=True)
class KeepAliveReceived:
    """A double-CRLF ping (RFC 5626 section 3.5.1); the CRLF pong is already queued."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its side (EOF), or we gave up on the framing."""

    reason: str
    """Why, in a few words."""


SipEvent = RequestReceived | ResponseReceived | KeepAliveReceived | ConnectionClosed
