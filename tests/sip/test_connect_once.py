"""connect_once: the Access Edge and the Front End open one connection per next hop at a time,
however many messages wait for it, and a failure reaches every one of them."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from simulator.sip.aio import SipProtocol, connect_once


class Refused(Exception):
    pass


async def test_callers_that_come_while_connecting_share_the_one_attempt() -> None:
    pending: dict[str, asyncio.Future[SipProtocol]] = {}
    started, opened = asyncio.Event(), asyncio.Event()
    attempts = 0
    proto = cast(SipProtocol, object())

    async def connect() -> SipProtocol:
        nonlocal attempts
        attempts += 1
        started.set()
        await opened.wait()
        return proto

    callers = [asyncio.create_task(connect_once(pending, "hop", connect)) for _ in range(3)]
    await started.wait()
    assert set(pending) == {"hop"}
    opened.set()
    assert await asyncio.gather(*callers) == [proto, proto, proto]
    assert attempts == 1
    assert pending == {}


async def test_a_failure_reaches_every_waiting_caller_and_the_next_call_tries_again() -> None:
    pending: dict[str, asyncio.Future[SipProtocol]] = {}
    started, refuse = asyncio.Event(), asyncio.Event()
    attempts = 0

    async def connect() -> SipProtocol:
        nonlocal attempts
        attempts += 1
        started.set()
        await refuse.wait()
        raise Refused("connection refused")

    callers = [
        asyncio.create_task(connect_once(pending, "hop", connect, Refused)) for _ in range(2)
    ]
    await started.wait()
    refuse.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert [type(r) for r in results] == [Refused, Refused]
    assert attempts == 1
    assert pending == {}
    with pytest.raises(Refused):
        await connect_once(pending, "hop", connect, Refused)  # refuse is still set
    assert attempts == 2
