"""A per-flow record of protocol events, rendered as ladders, JSON and HTML.

Adapters call :func:`record` for every message they send or receive (a SIP request or response,
an XMPP stanza, a STUN/TURN transaction, a media flow); a client that gets no answer records a
``dropped`` event. Nothing is kept unless a sink listens, so the hot path costs one list check:

- :class:`TraceRecorder` collects events in memory (the embedded lab: every host is in this
  process);
- with ``EDGESIM_TRACE_FILE`` set, events are appended as JSON lines to that file (the netns and
  compose runners: each host process writes its own file, the scenario runner reads them).

Addresses are recorded as the adapter sees them; :class:`~simulator.lab.hostmap.HostMap` maps them to lab hosts for
any runner.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulator.records import Record

EVENTS = ("sent", "received", "dropped", "refused", "note")


@dataclass(frozen=True)
class TraceEvent(Record):
    """One message or note of a flow (a line of a trace file: :mod:`simulator.records`)."""

    time: float
    """Wall-clock time (seconds since the epoch)."""
    protocol: str
    """``sip``, ``xmpp``, ``stun``, ``turn``, ``media``, ``dns`` or ``tcp``."""
    src: str
    """Source address, ``ip:port`` or ``ip``."""
    dst: str
    """Destination address."""
    summary: str
    """One line: ``MESSAGE sip:bob@contoso.lab``, ``200 OK``, ``<message/> to alice@contoso.lab``."""
    event: str = "sent"
    """``sent``, ``received``, ``dropped`` (no answer: filtered), ``refused``, ``note``."""
    flow: str | None = None
    """Groups events of one flow: a Call-ID, a stream id, an allocation."""
    detail: str = ""
    """The message itself (truncated), for the HTML report."""
    blocked_at: str = ""
    """For a ``dropped`` or ``refused`` message on a lab with traced firewalls: the firewall
    that stopped it."""
    blocked_by: str = ""
    """... and what decided there: ``external.nft:64`` or ``policy drop (inet edgesim forward)``."""


MAX_DETAIL = 4000
_sinks: list[TraceRecorder] = []
_file_lock = threading.Lock()


#: CPython keeps the environment in ``os.environ._data`` (encoded keys): one dict look-up, where
#: ``in os.environ`` encodes the key and walks the Mapping machinery on every message.
_ENV_DATA: Any = getattr(os.environ, "_data", None)
_ENV_KEY: Any = os.environ.encodekey("EDGESIM_TRACE_FILE") if _ENV_DATA is not None else None


def active() -> bool:
    """True when someone records: adapters may skip building summaries otherwise."""
    if _sinks:
        return True
    if _ENV_DATA is not None:
        return _ENV_KEY in _ENV_DATA
    return "EDGESIM_TRACE_FILE" in os.environ


def recorders_attached() -> bool:
    """True when a :class:`TraceRecorder` listens in this process (cheaper than :func:`active`:
    hot paths check ``EDGESIM_TRACE_FILE`` once at start and this per packet)."""
    return bool(_sinks)


def record(
    protocol: str,
    src: str,
    dst: str,
    summary: str,
    *,
    event: str = "sent",
    flow: str | None = None,
    detail: str = "",
    at: float | None = None,
) -> None:
    """Record one protocol event (a no-op unless a recorder or trace file listens).

    ``at`` (``time.time()`` by default) dates an event recorded after the fact: a client that
    learns only from the answer whether its request got through records it then, with the time
    it was sent.
    """
    path = os.environ.get("EDGESIM_TRACE_FILE")
    if not _sinks and path is None:
        return
    when = time.time() if at is None else at
    item = TraceEvent(when, protocol, src, dst, summary, event, flow, detail[:MAX_DETAIL])
    for sink in _sinks:
        sink.events.append(item)
    if path is not None:
        with _file_lock, open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(item.to_dict()) + "\n")


class TraceRecorder:
    """Collects events while attached: ``with TraceRecorder() as rec: ...``."""

    def __init__(self) -> None:
        self.events: list[TraceEvent] = []

    def __enter__(self) -> TraceRecorder:
        _sinks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self in _sinks:
            _sinks.remove(self)

    def extend_from_files(self, paths: Iterable[Path], since: float = 0.0) -> None:
        """Merge events other processes wrote (trace files), in time order."""
        for path in paths:
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError:
                continue
            for line in lines:
                try:
                    item = TraceEvent.from_dict(json.loads(line))
                except (ValueError, TypeError):
                    continue
                if item.time >= since:
                    self.events.append(item)
        self.events.sort(key=lambda e: e.time)


@contextmanager
def recording() -> Iterator[TraceRecorder]:
    with TraceRecorder() as rec:
        yield rec
