"""STUN and ChannelData over streams: whole, byte by byte, at random splits; garbage closes."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.media import stun
from simulator.media.errors import FramingError
from simulator.media.framing import Rfc4571Framer, StreamFramer
from simulator.media.stun import Message, MessageClass, Method

BINDING = stun.encode(Message(Method.BINDING, MessageClass.REQUEST, b"123456789012"))
CHANNEL_DATA = struct.pack("!HH", 0x4000, 5) + b"hello" + b"\x00\x00\x00"  # padded to 12
EMPTY_CHANNEL_DATA = struct.pack("!HH", 0x4FFF, 0)
STREAM = BINDING + CHANNEL_DATA + EMPTY_CHANNEL_DATA + BINDING
EXPECTED = [BINDING, CHANNEL_DATA, EMPTY_CHANNEL_DATA, BINDING]


def test_whole_stream() -> None:
    assert StreamFramer().frames(STREAM) == EXPECTED


def test_one_byte_at_a_time() -> None:
    framer = StreamFramer()
    out = []
    for i in range(len(STREAM)):
        out += framer.frames(STREAM[i : i + 1])
    assert out == EXPECTED
    assert framer.buffered == 0


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=8))
def test_random_split_points(cuts: list[int]) -> None:
    framer = StreamFramer()
    points = [0, *sorted(cuts), len(STREAM)]
    out = []
    for a, b in itertools.pairwise(points):
        out += framer.frames(STREAM[a:b])
    assert out == EXPECTED


@pytest.mark.parametrize(
    "garbage", [b"\x80\x00\x00\x00", b"\x16\x03\x01\x02\x00\x01\x00\x00\x01\xfc\x03\x03"]
)
def test_bytes_that_are_neither_stun_nor_channel_data_close_the_stream(garbage: bytes) -> None:
    framer = StreamFramer()
    assert framer.frames(BINDING) == [BINDING]
    with pytest.raises(FramingError):
        framer.frames(garbage)


def test_raw_bytes_after_the_last_frame_are_handed_over() -> None:
    framer = StreamFramer()
    framer.feed(BINDING + b"raw media after ConnectionBind")
    assert framer.next_frame() == BINDING
    assert framer.take_buffer() == b"raw media after ConnectionBind"


@given(st.binary(max_size=300))
def test_any_bytes_give_frames_or_framing_error(data: bytes) -> None:
    framer = StreamFramer()
    try:
        for frame in framer.frames(data):
            assert len(frame) >= 4
    except FramingError:
        pass


def test_rfc4571_framing() -> None:
    framer = Rfc4571Framer()
    packets = [b"rtp-1", b"", b"x" * 1000]
    wire = b"".join(Rfc4571Framer.frame(p) for p in packets)
    assert framer.frames(wire[:3]) == []
    assert framer.frames(wire[3:]) == packets
    with pytest.raises(ValueError):
        Rfc4571Framer.frame(bytes(70000))
