"""Sans-IO client and server transactions of RFC 3261 section 17, for reliable transports.

Over TCP/TLS there are no retransmissions, so of the section 17 timers only these remain:
Timer B (INVITE client) and Timer F (non-INVITE client), both 64*T1, after which the request has
timed out (the proxy answers 408); Timer H (INVITE server, 64*T1) waiting for the ACK of a
non-2xx final response. Timers D, I, J and K are zero on reliable transports. Time is always an
argument; :meth:`get_timer` says when to call :meth:`handle_timer`.

States and transitions are one table each (``{(state, input): next_state}``); a pair missing
from the table is an input the state ignores (e.g. a second final response).
"""

from __future__ import annotations

from enum import Enum
from typing import Final

T1: Final = 0.5
TIMEOUT: Final = 64 * T1


class State(Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class Input(Enum):
    PROVISIONAL = "1xx"
    SUCCESS = "2xx"
    FAILURE = "300-699"
    TIMER = "timer"
    ACK = "ack"
    SEND_PROVISIONAL = "send 1xx"
    SEND_SUCCESS = "send 2xx"
    SEND_FAILURE = "send 300-699"


S = State
I = Input  # noqa: E741

#: INVITE client transaction (figure 5), reliable transport: Timer D = 0.
INVITE_CLIENT: Final[dict[tuple[State, Input], State]] = {
    (S.CALLING, I.PROVISIONAL): S.PROCEEDING,
    (S.CALLING, I.SUCCESS): S.TERMINATED,
    (S.CALLING, I.FAILURE): S.TERMINATED,
    (S.CALLING, I.TIMER): S.TERMINATED,
    (S.PROCEEDING, I.PROVISIONAL): S.PROCEEDING,
    (S.PROCEEDING, I.SUCCESS): S.TERMINATED,
    (S.PROCEEDING, I.FAILURE): S.TERMINATED,
}

#: non-INVITE client transaction (figure 6), reliable transport: Timer K = 0.
NON_INVITE_CLIENT: Final[dict[tuple[State, Input], State]] = {
    (S.TRYING, I.PROVISIONAL): S.PROCEEDING,
    (S.TRYING, I.SUCCESS): S.TERMINATED,
    (S.TRYING, I.FAILURE): S.TERMINATED,
    (S.TRYING, I.TIMER): S.TERMINATED,
    (S.PROCEEDING, I.PROVISIONAL): S.PROCEEDING,
    (S.PROCEEDING, I.SUCCESS): S.TERMINATED,
    (S.PROCEEDING, I.FAILURE): S.TERMINATED,
    (S.PROCEEDING, I.TIMER): S.TERMINATED,
}

#: INVITE server transaction (figure 7), reliable transport: Timer I = 0.
INVITE_SERVER: Final[dict[tuple[State, Input], State]] = {
    (S.PROCEEDING, I.SEND_PROVISIONAL): S.PROCEEDING,
    (S.PROCEEDING, I.SEND_SUCCESS): S.TERMINATED,
    (S.PROCEEDING, I.SEND_FAILURE): S.COMPLETED,
    (S.COMPLETED, I.ACK): S.TERMINATED,
    (S.COMPLETED, I.TIMER): S.TERMINATED,
}

#: non-INVITE server transaction (figure 8), reliable transport: Timer J = 0.
NON_INVITE_SERVER: Final[dict[tuple[State, Input], State]] = {
    (S.TRYING, I.SEND_PROVISIONAL): S.PROCEEDING,
    (S.TRYING, I.SEND_SUCCESS): S.TERMINATED,
    (S.TRYING, I.SEND_FAILURE): S.TERMINATED,
    (S.PROCEEDING, I.SEND_PROVISIONAL): S.PROCEEDING,
    (S.PROCEEDING, I.SEND_SUCCESS): S.TERMINATED,
    (S.PROCEEDING, I.SEND_FAILURE): S.TERMINATED,
}


def _response_input(code: int, sending: bool) -> Input:
    if code < 200:
        return I.SEND_PROVISIONAL if sending else I.PROVISIONAL
    if code < 300:
        return I.SEND_SUCCESS if sending else I.SUCCESS
    return I.SEND_FAILURE if sending else I.FAILURE


class _Transaction:
    """What both kinds share: the state table, the one timer, the step that stops it."""

    table: dict[tuple[State, Input], State]
    state: State
    _deadline: float | None

    def _step(self, value: Input) -> bool:
        nxt = self.table.get((self.state, value))
        if nxt is None:
            return False
        self.state = nxt
        if nxt is S.TERMINATED:
            self._deadline = None
        return True

    def get_timer(self) -> float | None:
        return self._deadline

    def _timer_fired(self, now: float) -> bool:
        """True when the timer was due and its transition applies (it is stopped either way)."""
        if self._deadline is None or now < self._deadline:
            return False
        self._deadline = None
        return self._step(I.TIMER)

    @property
    def terminated(self) -> bool:
        return self.state is S.TERMINATED


class ClientTransaction(_Transaction):
    """A request we sent; tells whether each response is to be passed up and when it timed out."""

    def __init__(self, method: str, now: float, *, timeout: float = TIMEOUT) -> None:
        self.method = method
        self.invite = method == "INVITE"
        self.table = INVITE_CLIENT if self.invite else NON_INVITE_CLIENT
        self.state = S.CALLING if self.invite else S.TRYING
        self._deadline = now + timeout
        self.timed_out = False

    def _step(self, value: Input) -> bool:
        if not super()._step(value):
            return False
        if self.state is not S.CALLING and self.state is not S.TRYING and self.invite:
            self._deadline = None  # Timer B stops on any response (INVITE)
        return True

    def receive_response(self, code: int) -> bool:
        """Feed a response; True when it belongs to the transaction user (pass it up)."""
        return self._step(_response_input(code, sending=False))

    def handle_timer(self, now: float) -> bool:
        """True when the transaction timed out now (Timer B or F fired)."""
        if self._timer_fired(now):
            self.timed_out = True
            return True
        return False


class ServerTransaction(_Transaction):
    """A request we received; tracks our answers (and, for INVITE, the ACK of a failure)."""

    def __init__(self, method: str, now: float, *, timeout: float = TIMEOUT) -> None:
        self.invite = method == "INVITE"
        self.table = INVITE_SERVER if self.invite else NON_INVITE_SERVER
        self.state = S.PROCEEDING if self.invite else S.TRYING
        self._timeout = timeout
        self._deadline = None
        self.final_sent = False

    def send_response(self, code: int, now: float) -> bool:
        """Record that we answer ``code``; False when the state does not allow it."""
        if not self._step(_response_input(code, sending=True)):
            return False
        if code >= 200:
            self.final_sent = True
        if self.state is S.COMPLETED:
            self._deadline = now + self._timeout  # Timer H
        return True

    def receive_ack(self) -> bool:
        return self._step(I.ACK)

    def handle_timer(self, now: float) -> bool:
        """True when Timer H fired (no ACK came for our failure response)."""
        return self._timer_fired(now)
