"""What an inspecting middlebox makes of the first bytes of a flow on an inspected port.

A flow that opens with a TLS handshake record goes to the box's TLS stack, which answers it as
any TLS server would: a real ClientHello is served (with a minted certificate), anything else
in a handshake record, the [MS-TURN] pseudo-TLS ClientHello included ([MS-TURN] section 2.1.1:
TLS 1.0, the one anonymous RC4 suite, no extensions), is refused with a TLS alert. A flow that
does not open with a TLS record at all is reset. Which is what the lab models; real products
differ in what they let through uninspected (docs/firewall.md, "SSL inspection").
"""

from __future__ import annotations

import enum

from simulator.media.msturn import is_pseudo_tls, tls_alert

__all__ = ["FirstBytes", "describe", "first_bytes", "tls_alert"]

RECORD_HEADER = 5
HANDSHAKE = 0x16


class FirstBytes(enum.Enum):
    MORE = "more"
    """Not enough bytes to tell yet."""
    TLS = "tls"
    """A TLS handshake record: hand the flow to the TLS stack."""
    NOT_TLS = "not-tls"
    """Not a TLS record: reset the flow."""


def first_bytes(data: bytes) -> FirstBytes:
    """How the box treats a flow that opened with ``data``."""
    if len(data) < 3:
        return FirstBytes.MORE if (not data or data[0] == HANDSHAKE) else FirstBytes.NOT_TLS
    if data[0] == HANDSHAKE and data[1] == 3 and data[2] <= 4:
        return FirstBytes.TLS
    return FirstBytes.NOT_TLS


def describe(data: bytes) -> str:
    """What the box saw, for its log: ``a TLS ClientHello``, ``the [MS-TURN] pseudo-TLS
    ClientHello``, ``not TLS``."""
    if is_pseudo_tls(data[:50]):
        return "the [MS-TURN] pseudo-TLS ClientHello"
    kind = first_bytes(data)
    return "a TLS handshake" if kind is FirstBytes.TLS else "not TLS"
