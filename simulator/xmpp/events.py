"""Events the sans-IO XMPP cores emit (past tense, frozen dataclasses)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from simulator.tls import PeerCertificate


@dataclass(frozen=True)
class StreamOpened:
    """The peer's stream header arrived (:rfc:`6120#section-4.7`)."""

    to: str | None
    """The ``to`` attribute: the domain the peer wants to reach."""
    from_: str | None
    """The ``from`` attribute: the domain the peer claims."""
    id: str | None
    """The stream id the peer assigned (set by a receiving entity)."""
    version: str | None
    namespace: str
    """The default (content) namespace: ``jabber:server`` or ``jabber:client``."""
    dialback: bool = False
    """True when the header declares the dialback namespace (XEP-0220 section 2.4.1)."""


@dataclass(frozen=True)
class StanzaReceived:
    """A complete depth-1 element of the stream (stanza or stream-level element)."""

    element: ET.Element = field(compare=False)
    """The element, names in ElementTree ``{namespace}local`` form."""
    sequence: int = 0
    """With stream management (XEP-0198) on: this stanza's number among those received on the
    stream (1, 2, ...), the count an ``<a h=.../>`` acknowledges; 0 otherwise."""


@dataclass(frozen=True)
class StreamErrorReceived:
    """The peer sent ``<stream:error>`` (:rfc:`6120#section-4.9`)."""

    condition: str
    """The defined condition, e.g. ``host-unknown``."""
    text: str | None


@dataclass(frozen=True)
class StreamClosed:
    """The stream ended: ``</stream:stream>`` (clean), end of file, or a stream error."""

    clean: bool
    """True when the peer closed the stream with ``</stream:stream>``."""
    error: str | None = None
    """The stream error condition we sent, if the stream ended on one."""


@dataclass(frozen=True)
class TlsRequested:
    """The core asks the adapter to run the TLS handshake now (after proceed), then call
    ``tls_established``."""

    server_side: bool
    """True on the receiving side (we are the TLS server)."""
    server_name: str | None = None
    """The name to verify on the initiating side."""


@dataclass(frozen=True)
class DialbackVerifyNeeded:
    """A ``<db:result>`` arrived: ask the authoritative server of ``originating`` whether the key
    is right (XEP-0220 section 2.1.2), then call ``dialback_verified``."""

    originating: str
    """The domain the peer claims (the ``from`` of db:result)."""
    receiving: str
    """Our domain (the ``to`` of db:result)."""
    stream_id: str
    """The id of the stream on which db:result arrived (ours)."""
    key: str


@dataclass(frozen=True)
class DialbackVerifyAnswered:
    """The answer to a ``<db:verify>`` we sent on a verification stream."""

    originating: str
    receiving: str
    stream_id: str
    valid: bool


@dataclass(frozen=True)
class Authenticated:
    """The stream is ready for stanzas: the peer domain (or ours, on an outbound stream) is
    authenticated."""

    domain: str
    """The authenticated remote domain (receiving side) or the domain we reached (initiating)."""
    method: str
    """``sasl-external``, ``dialback``, ``mtls`` (23456), ``sasl-plain`` (c2s)."""
    jid: str | None = None
    """For c2s: the bound full JID."""


@dataclass(frozen=True)
class AuthenticationFailed:
    """Outbound negotiation could not authenticate us to the peer."""

    reason: str


@dataclass(frozen=True)
class StanzasAcknowledged:
    """The peer acknowledged our stanzas (XEP-0198 ``<a h=.../>``)."""

    count: int
    """How many of the stanzas we sent since ``<enable/>`` it has handled."""


@dataclass(frozen=True)
class PeerCertificateSeen:
    """The TLS peer certificate, for traces."""

    certificate: PeerCertificate | None


XmppEvent = (
    StreamOpened
    | StanzaReceived
    | StreamErrorReceived
    | StreamClosed
    | TlsRequested
    | DialbackVerifyNeeded
    | DialbackVerifyAnswered
    | Authenticated
    | AuthenticationFailed
    | PeerCertificateSeen
    | StanzasAcknowledged
)
