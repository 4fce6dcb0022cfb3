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
from simulator.records import Record, record
from simulator.tls import TlsProblem, tls_failure


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
class ProbeResult(Record):
    """One row's probe (JSON: :mod:`simulator.records`; ``--format json`` prints it, the runners
    that probe inside a node read it back)."""

    row_id: str = field(metadata=record(key="row"))
    probe: str
    """The probe kind (a key of ``PROBE_KINDS``)."""
    expect: str
    """``open`` or ``blocked``."""
    verdict: Verdict = field(metadata=record(then=("met",)))
    reason: str = field(metadata=record(then=("tls_problem",)))
    source: str = ""
    """``host:interface address`` (or the address alone for a target)."""
    destination: str = ""
    """``host:interface address:port``."""
    details: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict, metadata=record(digits=4))
    tls_problem: TlsProblem | None = None
    runner: str = "local"
    firewall: tuple[Decision, ...] = field(default=(), metadata=record(then=("reached",)))
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
    if isinstance(exc, ssl.SSLError):
        failure = tls_failure(exc)
        if failure.verification:
            return _tls(failure.problem, f"server certificate: {failure.detail}")
        if mtls and failure.problem is TlsProblem.HANDSHAKE_RESET and failure.alert:
            return _tls(
                TlsProblem.CLIENT_CERT_REJECTED,
                "the peer sent alert 'handshake failure' when it got our certificate",
            )
        if failure.problem is TlsProblem.NOT_TLS:
            return Classified(
                Verdict.PROTOCOL_FAILED, f"the peer does not speak TLS (OpenSSL: {failure.detail})"
            )
        if failure.alert:
            return _tls(failure.problem, f"the peer sent alert '{failure.detail}'")
        if failure.problem is TlsProblem.HANDSHAKE_RESET:
            return _tls(
                TlsProblem.HANDSHAKE_RESET, "the peer closed the connection in the handshake"
            )
        return _tls(failure.problem, failure.detail)
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


def describe_bytes(data: bytes, limit: int = 60) -> str:
    """A short printable rendering of what came back instead of the expected protocol."""
    if not data:
        return "nothing"
    first = data.split(b"\n", 1)[0][:limit]
    text = "".join(chr(b) if 32 <= b < 127 else "." for b in first)
    more = "..." if len(data) > len(first) else ""
    return f"{text!r}{more} ({len(data)} bytes)"
