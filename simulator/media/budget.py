"""A per-source budget for answers to requests that did not authenticate, over UDP.

Over UDP anyone can send a request with a victim's source address; every answer the server
sends to a request it cannot authenticate (a Binding success, a 401 challenge, a 400) goes to
the victim, and it is larger than the request (a 20-byte Allocate gets a 76-byte 401). coturn
added the same defence (``--unauthorized-ratelimit``, PR 1957): a token bucket per source IP
address, the port left out so rotating ports buys nothing. Here it is on by default, because the
lab stands where a real Edge faces the internet. Authenticated requests never spend it.

The table is bounded (:data:`MAX_SOURCES`, the least recently seen source goes first), so a
flood from many spoofed sources costs a fixed amount of memory; a source evicted that way starts
again with a full bucket, which still bounds what any one victim receives.
"""

from __future__ import annotations

import collections

MAX_SOURCES = 4096


class SourceBudget:
    """Token buckets per source IP: ``rate`` answers per second, at most ``burst`` at once."""

    def __init__(self, rate: float, burst: int, max_sources: int = MAX_SOURCES) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_sources = max_sources
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def take(self, source: str, now: float) -> bool:
        """True if an answer to ``source`` fits its budget now (and spend it)."""
        tokens, last = self._buckets.pop(source, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[source] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)
