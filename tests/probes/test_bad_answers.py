"""Whatever a peer sends, the probes' readers give a message or one of the errors the probes
turn into a verdict (never another exception): Hypothesis over the SIP, XMPP and STUN/TCP readers
(the STUN one is the TURN client core the probes drive: bytes in, events out).
"""

from __future__ import annotations

import asyncio
import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.media.client import ClientConfig, TurnClient
from simulator.media.stun import Method
from simulator.probes.sip import SipFramingError, read_message
from simulator.probes.xmpp import StreamReader, XmppError

EXPECTED = (
    SipFramingError,
    XmppError,
    ValueError,
    EOFError,
    asyncio.IncompleteReadError,
)

chunks = st.lists(st.binary(max_size=200), max_size=6)
prefixes = st.sampled_from(
    [
        b"",
        b"SIP/2.0 200 OK\r\n",
        b"<?xml version='1.0'?><stream:stream ",
        b"\x01\x01\x00\x08\x21\x12\xa4\x42",
    ]
)


def _reader(data: list[bytes]) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    for chunk in data:
        reader.feed_data(chunk)
    reader.feed_eof()
    return reader


async def _drain_sip(data: list[bytes]) -> None:
    reader = _reader(data)
    for _ in range(10):
        await read_message(reader)


async def _drain_xmpp(data: list[bytes]) -> None:
    reader = StreamReader(_reader(data))
    for _ in range(10):
        await reader.next()


async def _drain_stun(data: list[bytes]) -> None:
    client = TurnClient(ClientConfig(stream=True))
    client.request(Method.BINDING, [], 0.0)
    for chunk in [*data, b""]:
        client.receive_data(chunk, 0.0)
    while client.next_event() is not None:
        pass


@settings(max_examples=150, deadline=None)
@given(prefix=prefixes, data=chunks)
def test_readers_only_raise_what_the_probes_handle(prefix: bytes, data: list[bytes]) -> None:
    for drain in (_drain_sip, _drain_xmpp, _drain_stun):
        with contextlib.suppress(*EXPECTED):
            asyncio.run(asyncio.wait_for(drain([prefix, *data]), 5))
