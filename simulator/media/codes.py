"""The STUN/TURN error codes this package sends and understands, as data.

One row per code: the reason phrase (the name the defining RFC gives it, which is what goes into
ERROR-CODE, RFC 8489 section 14.8) and where it is defined. The server answers every rejection
with the phrase from this table (:class:`~simulator.media.errors.Rejection`), and the trace and
the clients name codes from it, so a code has one name everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorCode:
    code: int
    """300-699 (RFC 8489 section 14.8: class * 100 + number)."""
    reason: str
    """The reason phrase sent in ERROR-CODE."""
    source: str
    """The section that defines it."""


ERROR_CODES: dict[int, ErrorCode] = {
    row.code: row
    for row in (
        ErrorCode(300, "Try Alternate", "RFC 8489 section 14.8"),
        ErrorCode(400, "Bad Request", "RFC 8489 section 14.8"),
        ErrorCode(401, "Unauthorized", "RFC 8489 section 14.8"),
        ErrorCode(403, "Forbidden", "RFC 8656 section 19"),
        ErrorCode(420, "Unknown Attribute", "RFC 8489 section 14.8"),
        ErrorCode(437, "Allocation Mismatch", "RFC 8656 section 19"),
        ErrorCode(438, "Stale Nonce", "RFC 8489 section 14.8"),
        ErrorCode(440, "Address Family not Supported", "RFC 8656 section 19"),
        ErrorCode(441, "Wrong Credentials", "RFC 8656 section 19"),
        ErrorCode(442, "Unsupported Transport Protocol", "RFC 8656 section 19"),
        ErrorCode(443, "Peer Address Family Mismatch", "RFC 8656 section 19"),
        ErrorCode(446, "Connection Already Exists", "RFC 6062 section 6.3"),
        ErrorCode(447, "Connection Timeout or Failure", "RFC 6062 section 6.3"),
        ErrorCode(486, "Allocation Quota Reached", "RFC 8656 section 19"),
        ErrorCode(500, "Server Error", "RFC 8489 section 14.8"),
        ErrorCode(508, "Insufficient Capacity", "RFC 8656 section 19"),
    )
}


def reason_phrase(code: int) -> str:
    """The reason phrase of ``code`` (``Error`` for a code this table does not know)."""
    row = ERROR_CODES.get(code)
    return row.reason if row is not None else "Error"
