"""Verdicts, probe results, and the one place where socket and TLS errors become verdicts.

A probe connects from a source endpoint to a destination at protocol level and returns an
:class:`Outcome`. The runner turns it into a :class:`ProbeResult` for a matrix row, applying the
row's expectation: a row that must stay blocked but answered is ``open-unexpected``.

Verdicts:

``passed``          the destination answered at protocol level (SIP response, XMPP features ...)
``blocked``         no answer within the timeout: the packets were dropped
``refused``         TCP reset, or ICMP port/host/network unreachable
``tls-failed``      the TLS handshake failed, with why (:class:`TlsProblem`)
``protocol-failed`` something answered, but not the protocol the row needs (says what came back)
``open-unexpected`` the row must be blocked, but the destination answered
``error``           the probe could not run (missing certificate, cannot bind the source)
``skipped``         the row could not be resolved against the topology or the target
"""

from __future__ import annotations

import enum
import errno
import ssl
from dataclasses import dataclass, field
from typing import Any

from simulator.firewall.trace import Decision, first_fates
from simulator.matrix.model import Expectation, MatrixRow


class Verdict(enum.Enum):
    PASSED = "passed"
    BLOCKED = "blocked"
    REFUSED = "refused"
    TLS_FAILED = "tls-failed"
    PROTOCOL_FAILED = "protocol-failed"
    OPEN_UNEXPECTED = "open-unexpected"
    ERROR = "error"
    SKIPPED = "skipped"

    @property
    def title(self) -> str:
        return {
            "passed": "passed",
            "blocked": "blocked",
            "refused": "refused",
            "tls-failed": "TLS failed",
            "protocol-failed": "protocol failed",
            "open-unexpected": "open where it must not be",
            "error": "probe error",
            "skipped": "skipped",
        }[self.value]

    @property
    def reached(self) -> bool:
        """True when the packets reached something that answered (the port is open)."""
        return self in (Verdict.PASSED, Verdict.TLS_FAILED, Verdict.PROTOCOL_FAILED)


class TlsProblem(enum.Enum):
    """Why a TLS handshake failed, as a user would say it."""

    UNKNOWN_CA = "unknown CA"
    NAME_MISMATCH = "name mismatch"
    CLIENT_CERT_REJECTED = "no client certificate accepted"
    EXPIRED = "certificate expired"
    HANDSHAKE_RESET = "handshake reset"
    OTHER = "other"


class Phase(enum.Enum):
    """Where in a probe an error happened; decides what a timeout or a reset means."""

    CONNECT = "connect"
    TLS = "tls"
    PROTOCOL = "protocol"


@dataclass(frozen=True)
class Classified:
    verdict: Verdict
    reason: str
    """One line, e.g. ``TLS failed: unknown CA (server certificate: self-signed certificate)``."""
    tls_problem: TlsProblem | None = None


@dataclass
class Outcome:
    """What a probe function returns (before the row's expectation is applied)."""

    verdict: Verdict
    reason: str
    details: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per step: ``connect``, ``tls``, ``response`` ..."""
    tls_problem: TlsProblem | None = None

    @classmethod
    def from_error(
        cls,
        exc: BaseException,
        phase: Phase,
        timeout: float | None = None,
        *,
        mtls: bool = False,
        **details: Any,
    ) -> Outcome:
        c = classify(exc, phase, timeout, mtls=mtls)
        return cls(c.verdict, c.reason, dict(details), tls_problem=c.tls_problem)


@dataclass(frozen=True)
class ProbeResult:
    row_id: str
    probe: str
    """The probe kind (a key of ``PROBE_KINDS``)."""
    expect: str
    """``open`` or ``blocked``."""
    verdict: Verdict
    reason: str
    source: str = ""
    """``host:interface address`` (or the address alone for a target)."""
    destination: str = ""
    """``host:interface address:port``."""
    details: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    tls_problem: TlsProblem | None = None
    runner: str = "local"
    firewall: tuple[Decision, ...] = ()
    """What each lab firewall the probe's packets crossed decided (request and reply, the rule
    or the policy), from the kernel's trace; empty without firewalls or tracing."""

    @property
    def met(self) -> bool:
        return _met(self.expect, self.verdict)

    @property
    def reached(self) -> bool | None:
        """Whether the packets reached the destination host, as the firewalls saw it: the
        request crossed every firewall that saw it and an answer came back through them; None
        when no firewall saw the flow."""
        request = first_fates(self.firewall, "request")
        if not request:
            return None
        return all(d.crossed for d in request) and bool(first_fates(self.firewall, "reply"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "row": self.row_id,
            "probe": self.probe,
            "expect": self.expect,
            "verdict": self.verdict.value,
            "met": self.met,
            "reason": self.reason,
            "tls_problem": self.tls_problem.value if self.tls_problem else None,
            "source": self.source,
            "destination": self.destination,
            "details": self.details,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "runner": self.runner,
            "firewall": [d.to_dict() for d in self.firewall],
            "reached": self.reached,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeResult:
        """Inverse of :meth:`to_dict`; raises ValueError on a malformed entry."""
        try:
            tls = data.get("tls_problem")
            return cls(
                row_id=str(data["row"]),
                probe=str(data["probe"]),
                expect=str(data["expect"]),
                verdict=Verdict(data["verdict"]),
                reason=str(data["reason"]),
                source=str(data.get("source", "")),
                destination=str(data.get("destination", "")),
                details=dict(data.get("details") or {}),
                timings={str(k): float(v) for k, v in (data.get("timings") or {}).items()},
                tls_problem=TlsProblem(tls) if tls else None,
                runner=str(data.get("runner", "local")),
                firewall=tuple(Decision.from_dict(d) for d in data.get("firewall") or ()),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a probe result: {exc}") from None


def _met(expect: str, verdict: Verdict) -> bool:
    if expect == Expectation.BLOCKED.value:
        return verdict in (Verdict.BLOCKED, Verdict.REFUSED)
    return verdict is Verdict.PASSED


def meets_expectation(row: MatrixRow, result: ProbeResult | Outcome) -> bool:
    """An open row is met by ``passed``; a blocked row by ``blocked`` or ``refused``."""
    return _met(row.expect.value, result.verdict)


def apply_expectation(row: MatrixRow, outcome: Outcome) -> Outcome:
    """For a row that must be blocked, anything that reached the port is ``open-unexpected``."""
    if row.expect is Expectation.BLOCKED and outcome.verdict.reached:
        return Outcome(
            Verdict.OPEN_UNEXPECTED,
            f"open where it must not be: {outcome.reason}",
            outcome.details,
            outcome.timings,
            outcome.tls_problem,
        )
    return outcome


# -------------------------------------------------------------------- classification

#: OpenSSL X509_V_ERR_* codes (``SSLCertVerificationError.verify_code``) -> problem.
_VERIFY_CODES: dict[int, TlsProblem] = {
    2: TlsProblem.UNKNOWN_CA,  # unable to get issuer certificate
    18: TlsProblem.UNKNOWN_CA,  # self-signed certificate
    19: TlsProblem.UNKNOWN_CA,  # self-signed certificate in chain
    20: TlsProblem.UNKNOWN_CA,  # unable to get local issuer certificate
    21: TlsProblem.UNKNOWN_CA,  # unable to verify the first certificate
    9: TlsProblem.EXPIRED,  # certificate is not yet valid
    10: TlsProblem.EXPIRED,  # certificate has expired
    62: TlsProblem.NAME_MISMATCH,  # hostname mismatch
    64: TlsProblem.NAME_MISMATCH,  # IP address mismatch
}

#: OpenSSL reason strings of alerts the peer sent (``SSLError.reason``) -> problem.
#: These are the peer's verdict on *our* certificate.
_ALERTS: dict[str, TlsProblem] = {
    "TLSV1_ALERT_UNKNOWN_CA": TlsProblem.UNKNOWN_CA,
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": TlsProblem.EXPIRED,
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": TlsProblem.CLIENT_CERT_REJECTED,
    "SSLV3_ALERT_BAD_CERTIFICATE": TlsProblem.CLIENT_CERT_REJECTED,
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": TlsProblem.CLIENT_CERT_REJECTED,
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": TlsProblem.CLIENT_CERT_REJECTED,
    "SSLV3_ALERT_CERTIFICATE_REVOKED": TlsProblem.CLIENT_CERT_REJECTED,
    "TLSV1_ALERT_ACCESS_DENIED": TlsProblem.CLIENT_CERT_REJECTED,
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": TlsProblem.CLIENT_CERT_REJECTED,
    "SSLV3_ALERT_HANDSHAKE_FAILURE": TlsProblem.HANDSHAKE_RESET,
}

_UNREACHABLE = {
    errno.EHOSTUNREACH: "ICMP host unreachable",
    errno.ENETUNREACH: "ICMP network unreachable",
    errno.EHOSTDOWN: "host is down (no ARP answer)",
}


def _tls(problem: TlsProblem, detail: str) -> Classified:
    return Classified(Verdict.TLS_FAILED, f"TLS failed: {problem.value} ({detail})", problem)


def classify(
    exc: BaseException, phase: Phase, timeout: float | None = None, *, mtls: bool = False
) -> Classified:
    """Map an exception raised by a probe to a verdict and a one-line reason.

    ``phase`` says what the probe was doing: a timeout while connecting means the packets were
    dropped (``blocked``); a timeout after the connection is up means the peer did not answer at
    protocol level (``protocol-failed``); a reset during the TLS handshake is ``tls-failed``.
    ``mtls``: we presented a client certificate, so a generic ``handshake failure`` alert is the
    server refusing it (OpenSSL's TLS 1.2 answer to a missing or unusable client certificate).
    """
    within = f" within {timeout:g} s" if timeout is not None else ""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        message = exc.verify_message or getattr(exc, "reason", None) or str(exc)
        problem = _VERIFY_CODES.get(code, TlsProblem.OTHER)
        return _tls(problem, f"server certificate: {message}")
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None) or ""
        if mtls and reason == "SSLV3_ALERT_HANDSHAKE_FAILURE":
            return _tls(
                TlsProblem.CLIENT_CERT_REJECTED,
                "the peer sent alert 'handshake failure' when it got our certificate",
            )
        if reason in _ALERTS:
            return _tls(_ALERTS[reason], f"the peer sent alert {_alert_text(reason)}")
        if reason in ("WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "HTTP_REQUEST",
                      "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):  # fmt: skip
            return Classified(
                Verdict.PROTOCOL_FAILED,
                f"the peer does not speak TLS (OpenSSL: {reason.lower().replace('_', ' ')})",
            )
        if isinstance(exc, ssl.SSLEOFError) or reason in ("UNEXPECTED_EOF_WHILE_READING", "EOF"):
            return _tls(
                TlsProblem.HANDSHAKE_RESET, "the peer closed the connection in the handshake"
            )
        if reason.startswith(("SSLV3_ALERT", "TLSV1_ALERT", "TLSV13_ALERT")):
            return _tls(TlsProblem.OTHER, f"the peer sent alert {_alert_text(reason)}")
        return _tls(TlsProblem.OTHER, reason.lower().replace("_", " ") or str(exc))
    if isinstance(exc, TimeoutError):
        if phase is Phase.CONNECT:
            return Classified(Verdict.BLOCKED, f"no answer{within}: dropped")
        if phase is Phase.TLS:
            return _tls(TlsProblem.HANDSHAKE_RESET, f"no TLS handshake answer{within}")
        return Classified(Verdict.PROTOCOL_FAILED, f"connected, but no response{within}")
    if isinstance(exc, ConnectionRefusedError):
        return Classified(
            Verdict.REFUSED, "connection refused (TCP reset or ICMP port unreachable)"
        )
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, EOFError)):
        if phase is Phase.CONNECT:
            return Classified(Verdict.REFUSED, "connection reset while connecting")
        if phase is Phase.TLS:
            return _tls(
                TlsProblem.HANDSHAKE_RESET, "the peer reset the connection in the handshake"
            )
        return Classified(
            Verdict.PROTOCOL_FAILED, "the peer closed the connection without a response"
        )
    if isinstance(exc, OSError) and exc.errno == errno.EPERM:
        # netfilter dropped the packet in this host's own output chain: sendto/connect say EPERM
        return Classified(
            Verdict.BLOCKED, "dropped by a firewall on the source host (Operation not permitted)"
        )
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE:
        return Classified(Verdict.REFUSED, _UNREACHABLE[exc.errno])
    if isinstance(exc, OSError) and exc.errno in (
        errno.EADDRNOTAVAIL,
        errno.EADDRINUSE,
        errno.EACCES,
    ):
        return Classified(Verdict.ERROR, f"cannot bind the source address: {exc.strerror}")
    if isinstance(exc, OSError):
        return Classified(Verdict.ERROR, f"{exc.strerror or exc}")
    return Classified(Verdict.ERROR, f"{type(exc).__name__}: {exc}")


def _alert_text(reason: str) -> str:
    for prefix in ("SSLV3_ALERT_", "TLSV13_ALERT_", "TLSV1_ALERT_"):
        if reason.startswith(prefix):
            return "'" + reason[len(prefix) :].lower().replace("_", " ") + "'"
    return reason.lower().replace("_", " ")


def describe_bytes(data: bytes, limit: int = 60) -> str:
    """A short printable rendering of what came back instead of the expected protocol."""
    if not data:
        return "nothing"
    first = data.split(b"\n", 1)[0][:limit]
    text = "".join(chr(b) if 32 <= b < 127 else "." for b in first)
    more = "..." if len(data) > len(first) else ""
    return f"{text!r}{more} ({len(data)} bytes)"
