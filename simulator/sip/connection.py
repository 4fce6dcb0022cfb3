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
"""

from __future__ import annotations

from sipmessage import Request, Response

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


class SipConnection:
    """One stream connection carrying SIP in both directions."""

    def __init__(
        self,
        *,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self._framer = Framer(
            max_header_bytes=max_header_bytes, max_message_bytes=max_message_bytes
        )
        self._out: list[bytes] = []
        self._eof = False
        self._closed_reported = False
        self.must_close = False
        """True once the connection has to close after flushing (framing lost, or EOF)."""
        self.last_activity = 0.0
        """``now`` of the last received bytes."""
        self.bad_messages = 0
        """Malformed messages received so far."""

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes from the peer; ``b""`` means the peer closed."""
        self.last_activity = now
        if not data:
            self._eof = True
            return
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
