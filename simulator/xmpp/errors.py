"""The two error families of the XMPP package (as h11 and wsproto have them).

:class:`RemoteProtocolError` means the peer sent something wrong; it carries the stream error
condition (RFC 6120 section 4.9.3) the core has already queued for the peer, so the adapter only
flushes and closes. :class:`LocalProtocolError` means our own code misused the API.
"""

from __future__ import annotations

from enum import StrEnum


class StreamErrorCondition(StrEnum):
    """Defined stream error conditions (:rfc:`6120#section-4.9.3`) that edgesim sends."""

    BAD_FORMAT = "bad-format"
    CONNECTION_TIMEOUT = "connection-timeout"
    HOST_UNKNOWN = "host-unknown"
    IMPROPER_ADDRESSING = "improper-addressing"
    INTERNAL_SERVER_ERROR = "internal-server-error"
    INVALID_FROM = "invalid-from"
    INVALID_NAMESPACE = "invalid-namespace"
    NOT_AUTHORIZED = "not-authorized"
    NOT_WELL_FORMED = "not-well-formed"
    POLICY_VIOLATION = "policy-violation"
    REMOTE_CONNECTION_FAILED = "remote-connection-failed"
    RESTRICTED_XML = "restricted-xml"
    UNDEFINED_CONDITION = "undefined-condition"
    UNSUPPORTED_ENCODING = "unsupported-encoding"
    UNSUPPORTED_STANZA_TYPE = "unsupported-stanza-type"
    UNSUPPORTED_VERSION = "unsupported-version"


class XmppError(Exception):
    """Base of the XMPP package's errors."""


class LocalProtocolError(XmppError):
    """Our side misused the API (sent before opening, sent after closing ...)."""


class RemoteProtocolError(XmppError):
    """The peer broke the protocol; the stream error has been queued for it already."""

    def __init__(self, condition: StreamErrorCondition, text: str) -> None:
        self.condition = condition
        self.text = text
        super().__init__(f"<{condition.value}/>: {text}")
