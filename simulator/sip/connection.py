"""Sans-IO SIP connection: framing, validation, keep-alive pongs and queued error replies.

Usage (as h11/h2)::

    conn.receive_data(data, now)          # b"" = EOF
    while True:
        try:
            event = conn.next_event()
        except RemoteProtocolError as exc: # the reply is queued already
            ...                            # log; close after flushing if exc.fatal
            continue
        if event is None: break
    transport.write(conn.data_to_send())

A malformed request whose framing is intact gets 400 (or 416/505) naming the problem and the
connection stays usable; a malformed response is dropped (RFC 3261 section 18.1.2). Broken
framing or an oversized message gets 400/513 and :attr:`SipConnection.must_close` becomes true.

Timers (one deadline, :meth:`SipConnection.get_timer`, as aioquic): a message must arrive whole
within :attr:`SipLimits.message_timeout` of its first byte, however slowly the peer trickles it
(a slowloris holds nothing for long), and a connection that receives nothing for
:attr:`SipLimits.idle_timeout` closes (RFC 5626 keep-alives count as traffic).
"""

from __future__ import annotations

from dataclasses import dataclass

from sipmessage import Request, Response

from simulator.limits import ConnectionLimits, limit
from simulator.sip.build import response_for_head
from simulator.sip.errors import LocalProtocolError, RemoteProtocolError
from simulator.sip.events import (
    ConnectionClosed,
    KeepAliveReceived,
    RequestReceived,
    ResponseReceived,
    SipEvent,
)
from simulator.sip.framing import (
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    Frame,
    Framer,
)
from simulator.sip.validate import validate

_T = "tests/integration/test_listener_limits.py::"


@dataclass(frozen=True)
class SipLimits(ConnectionLimits):
    """What one SIP listener (and each connection on it) accepts: sizes, timeouts, caps."""

    max_connections: int = limit(
        10_000, "connections, total", _T + "test_sip_listener_caps_connections"
    )
    max_per_source: int = limit(
        256, "connections per source address", _T + "test_sip_listener_caps_connections"
    )
    handshake_timeout: float = limit(
        10.0, "TLS handshake, s", _T + "test_sip_tls_handshake_times_out"
    )
    """Seconds for the TLS handshake after TCP accepts."""
    max_header_bytes: int = limit(
        DEFAULT_MAX_HEADER_BYTES,
        "header section, bytes (513, close)",
        "tests/sip/test_sip_framing.py::test_endless_header_section_is_cut_off",
    )
    """Longest header section; longer gets 513 and the connection closes."""
    max_message_bytes: int = limit(
        DEFAULT_MAX_MESSAGE_BYTES,
        "message, bytes (513, close)",
        "tests/sip/test_sip_framing.py::test_oversized_body_gets_513_and_closes",
    )
    """Longest message (header section and body)."""
    message_timeout: float = limit(
        30.0,
        "one message, from its first byte, s (slowloris)",
        "tests/sip/test_sip_hardening.py::test_a_half_sent_message_times_out",
    )
    """Seconds a message may take to arrive whole, however slowly its bytes trickle in."""
    idle_timeout: float = limit(
        1200.0,
        "idle: nothing received, s",
        "tests/sip/test_sip_hardening.py::test_an_idle_connection_times_out",
    )
    """Seconds without a byte (keep-alives count) before the connection closes; 0: never."""
    max_write_buffer_bytes: int = limit(
        4 * 1024 * 1024,
        "bytes queued for a peer that does not read (reading pauses first; then close)",
        _T + "test_a_peer_that_never_reads_is_paused_then_dropped",
    )
    """Bytes queued for a peer; reading from it pauses well before, the connection closes
    beyond."""


class SipConnection:
    """One stream connection carrying SIP in both directions."""

    def __init__(
        self,
        *,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        message_timeout: float = 0.0,
        idle_timeout: float = 0.0,
        now: float = 0.0,
    ) -> None:
        """Timeouts of 0 are off (the adapter passes :class:`SipLimits`' values)."""
        self._framer = Framer(
            max_header_bytes=max_header_bytes, max_message_bytes=max_message_bytes
        )
        self.message_timeout = message_timeout
        self.idle_timeout = idle_timeout
        self._partial_since: float | None = None
        """``now`` when the bytes of the message still incomplete began to arrive."""
        self.timed_out: str | None = None
        """Why a timer closed the connection."""
        self._out: list[bytes] = []
        self._eof = False
        self._closed_reported = False
        self.must_close = False
        """True once the connection has to close after flushing (framing lost, or EOF)."""
        self.last_activity = now
        """``now`` of the last received bytes."""
        self.bad_messages = 0
        """Malformed messages received so far."""

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes from the peer; ``b""`` means the peer closed."""
        self.last_activity = now
        if not data:
            self._eof = True
            return
        if self._partial_since is None:
            self._partial_since = now
        self._framer.receive_data(data)

    def next_event(self) -> SipEvent | None:
        """The next event, None when more bytes are needed.

        Raises :class:`RemoteProtocolError` for bad input, after queuing the answer.
        """
        if self.must_close:
            if not self._closed_reported:
                self._closed_reported = True
                return ConnectionClosed("framing lost" if self._framer.broken else "closed")
            return None
        try:
            frame = self._framer.next_frame()
        except RemoteProtocolError as exc:
            self.must_close = True
            self.bad_messages += 1
            head = self._framer.partial_head
            if head is not None:
                reply = response_for_head(head, exc.status, exc.reason)
                if reply:
                    self._out.append(reply)
            elif exc.status == 513:
                # No header section to address an answer to: closing is the answer.
                pass
            raise
        if not self._framer.incomplete:
            self._partial_since = None
        elif frame is not None:
            self._partial_since = self.last_activity  # what is left began with the last read
        if frame is None:
            if self._eof:
                self.must_close = True
                self._closed_reported = True
                return ConnectionClosed("peer closed the connection")
            return None
        if not isinstance(frame, Frame):
            self._out.append(b"\r\n")
            return KeepAliveReceived()
        try:
            message = validate(frame)
        except RemoteProtocolError as exc:
            self.bad_messages += 1
            reply = response_for_head(frame.head, exc.status, exc.reason)
            if reply:
                self._out.append(reply)
            raise
        if isinstance(message, Request):
            return RequestReceived(message, frame.size)
        return ResponseReceived(message, frame.size)

    def get_timer(self) -> float | None:
        """The next deadline (message or idle timeout), None when there is none."""
        if self.must_close:
            return None
        deadlines = []
        if self.idle_timeout > 0:
            deadlines.append(self.last_activity + self.idle_timeout)
        if self.message_timeout > 0 and self._partial_since is not None:
            deadlines.append(self._partial_since + self.message_timeout)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Close (:attr:`must_close`) when a deadline has passed; nothing is sent: a message
        that never arrived whole has no header section to address an answer to."""
        if self.must_close:
            return
        if (
            self.message_timeout > 0
            and self._partial_since is not None
            and now >= self._partial_since + self.message_timeout
        ):
            self.timed_out = f"a message took longer than {self.message_timeout:g} s to arrive"
        elif self.idle_timeout > 0 and now >= self.last_activity + self.idle_timeout:
            self.timed_out = f"nothing received for {self.idle_timeout:g} s"
        else:
            return
        self.must_close = True
        self._closed_reported = True

    def send(self, message: Request | Response) -> None:
        """Queue a message (serialised by sipmessage; header values as they stand)."""
        self.send_bytes(bytes(message))

    def send_bytes(self, data: bytes) -> None:
        if self.must_close and self._framer.broken is None and self._eof:
            raise LocalProtocolError("cannot send on a closed connection")
        self._out.append(data)

    def data_to_send(self) -> bytes:
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        return data
