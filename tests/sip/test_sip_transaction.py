"""RFC 3261 section 17 transactions on reliable transports: tables and timers."""

from __future__ import annotations

import itertools

import pytest

from simulator.sip.transaction import (
    INVITE_CLIENT,
    INVITE_SERVER,
    NON_INVITE_CLIENT,
    NON_INVITE_SERVER,
    TIMEOUT,
    ClientTransaction,
    Input,
    ServerTransaction,
    State,
)


@pytest.mark.parametrize(
    "table", [INVITE_CLIENT, NON_INVITE_CLIENT, INVITE_SERVER, NON_INVITE_SERVER]
)
def test_every_pair_is_defined_or_ignored(table: dict[tuple[State, Input], State]) -> None:
    """Terminated accepts nothing; every transition lands on a state."""
    for state, value in itertools.product(State, Input):
        nxt = table.get((state, value))
        if state is State.TERMINATED:
            assert nxt is None
        if nxt is not None:
            assert isinstance(nxt, State)


def test_non_invite_client_times_out_at_timer_f() -> None:
    tx = ClientTransaction("MESSAGE", now=100.0)
    assert tx.get_timer() == 100.0 + TIMEOUT
    assert tx.receive_response(100)
    assert tx.state is State.PROCEEDING
    assert not tx.handle_timer(100.0 + TIMEOUT - 0.01)
    assert tx.handle_timer(100.0 + TIMEOUT)
    assert tx.timed_out and tx.terminated
    assert not tx.receive_response(200)  # too late: not passed up


def test_non_invite_client_final_response_terminates() -> None:
    tx = ClientTransaction("OPTIONS", now=0.0)
    assert tx.receive_response(200)
    assert tx.terminated and tx.get_timer() is None
    assert not tx.receive_response(200)  # a retransmission is absorbed


def test_invite_client_timer_b_stops_on_provisional() -> None:
    tx = ClientTransaction("INVITE", now=0.0)
    assert tx.get_timer() == TIMEOUT
    assert tx.receive_response(180)
    assert tx.get_timer() is None
    assert tx.receive_response(486)
    assert tx.terminated


def test_invite_client_timer_b_fires_without_answer() -> None:
    tx = ClientTransaction("INVITE", now=0.0, timeout=5.0)
    assert tx.handle_timer(5.0) and tx.timed_out


def test_invite_server_waits_for_ack_with_timer_h() -> None:
    tx = ServerTransaction("INVITE", now=0.0)
    assert tx.send_response(180, 0.0)
    assert tx.send_response(486, 1.0)
    assert tx.state is State.COMPLETED
    assert tx.get_timer() == 1.0 + TIMEOUT
    assert tx.receive_ack()
    assert tx.terminated and tx.get_timer() is None


def test_invite_server_timer_h_fires() -> None:
    tx = ServerTransaction("INVITE", now=0.0, timeout=4.0)
    tx.send_response(404, 0.0)
    assert tx.handle_timer(4.0)
    assert tx.terminated


def test_non_invite_server_answers_once() -> None:
    tx = ServerTransaction("MESSAGE", now=0.0)
    assert tx.send_response(200, 0.0)
    assert not tx.send_response(500, 0.0)
    assert tx.terminated
