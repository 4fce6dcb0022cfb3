"""Connection limits every TCP listener shares: caps (total and per source) and their gate.

Sans-IO bookkeeping (no sockets, no clock): a listener asks :meth:`ConnectionGate.admit` for each
accepted connection and closes it at once when refused, and calls
:meth:`ConnectionGate.release` when it ends. Timeouts and sizes live in each protocol's own
settings; every field that is a limit carries ``metadata={"limit": ...}`` (see :func:`limit`),
from which ``docs/limits.md`` is rendered (:mod:`simulator.lab.limits`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


def limit(default: Any, what: str, test: str) -> Any:
    """A settings field that is a limit: ``what`` names it in docs/limits.md, ``test`` is the
    test that shows it is enforced (``tests/...py::test_name``)."""
    return field(default=default, metadata={"limit": what, "test": test})


@dataclass(frozen=True)
class ConnectionLimits:
    """How many connections one listener accepts at once: what :class:`ConnectionGate` enforces.

    Each protocol's listener settings subclass it (:class:`~simulator.dns.aio.DnsLimits`,
    :class:`~simulator.sip.connection.SipLimits`, :class:`~simulator.xmpp.aio.XmppListenerLimits`,
    :class:`~simulator.media.aio.TurnListenerLimits`),
    redeclaring both caps with their own default, docs/limits.md row and test (:func:`limit`), and
    adding their own timeouts and sizes after them."""

    max_connections: int = 10_000
    """Connections open at once on this listener; more are closed as they arrive."""
    max_per_source: int = 256
    """Connections open at once from one source address."""

    @property
    def connections(self) -> ConnectionLimits:
        """The caps alone (the listener settings are the caps themselves, and more)."""
        return ConnectionLimits(self.max_connections, self.max_per_source)


class ConnectionGate:
    """Counts the open connections of one listener, in total and per source address."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.open = 0
        self.per_source: Counter[str] = Counter()
        self.refused = 0
        """Connections refused so far."""

    def admit(self, source: str) -> str | None:
        """Count a new connection from ``source``; a reason (and no count) when it is over a
        cap."""
        if self.open >= self.limits.max_connections:
            self.refused += 1
            return f"more than {self.limits.max_connections} connections"
        if self.per_source[source] >= self.limits.max_per_source:
            self.refused += 1
            return f"more than {self.limits.max_per_source} connections from {source}"
        self.open += 1
        self.per_source[source] += 1
        return None

    def release(self, source: str) -> None:
        """A connection admitted from ``source`` ended."""
        if self.per_source[source] <= 0:
            return
        self.open -= 1
        self.per_source[source] -= 1
        if not self.per_source[source]:
            del self.per_source[source]
