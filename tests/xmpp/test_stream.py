"""The sans-IO XML stream: splits, limits, restricted XML, serialisation (no event loop)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.xmpp.errors import RemoteProtocolError
from simulator.xmpp.events import StanzaReceived, StreamClosed, StreamOpened
from simulator.xmpp.stream import (
    NS_SERVER,
    StreamLimits,
    StreamTimers,
    XmlStream,
    element,
    qname,
    serialize,
)

HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:server'"
    b" xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback'"
    b" to='contoso.lab' from='jabber.lab' version='1.0'>"
)
STANZAS = (
    b"<message from='romeo@jabber.lab/a' to='alice@contoso.lab' type='chat'>"
    b"<body>caf\xc3\xa9 &amp; &lt;tea&gt;</body><x xmlns='urn:example'><y a='1'/>tail</x></message>"
    b" \n "
    b"<db:result from='jabber.lab' to='contoso.lab'>abc</db:result>"
    b"<iq type='get' id='1' from='jabber.lab' to='contoso.lab'><ping xmlns='urn:xmpp:ping'/></iq>"
    b"</stream:stream>"
)
WHOLE = HEADER + STANZAS


def feed(chunks: list[bytes], stream: XmlStream | None = None) -> list[object]:
    stream = stream or XmlStream()
    events: list[object] = []
    for chunk in chunks:
        if not chunk:
            continue  # b"" would mean end of file
        stream.receive_data(chunk, 0.0)
        while (event := stream.next_event()) is not None:
            events.append(event)
    return events


def summary(events: Sequence[object]) -> list[object]:
    return [serialize(e.element) if isinstance(e, StanzaReceived) else e for e in events]


EXPECTED = summary(feed([WHOLE]))


def test_whole_stream_events() -> None:
    assert EXPECTED[0] == StreamOpened(
        to="contoso.lab",
        from_="jabber.lab",
        id=None,
        version="1.0",
        namespace=NS_SERVER,
        dialback=True,
    )
    assert EXPECTED[1] == (
        "<message from='romeo@jabber.lab/a' to='alice@contoso.lab' type='chat'>"
        "<body>café &amp; &lt;tea&gt;</body><x xmlns='urn:example'><y a='1'/>tail</x></message>"
    )
    assert EXPECTED[2] == "<db:result from='jabber.lab' to='contoso.lab'>abc</db:result>"
    assert str(EXPECTED[3]).startswith("<iq ")
    assert EXPECTED[4] == StreamClosed(clean=True)
    assert len(EXPECTED) == 5


def test_byte_at_a_time() -> None:
    assert summary(feed([WHOLE[i : i + 1] for i in range(len(WHOLE))])) == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=len(WHOLE)), max_size=20))
@settings(max_examples=100, deadline=None)
def test_random_splits(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(WHOLE)]
    chunks = [WHOLE[a:b] for a, b in itertools.pairwise(points)]
    assert summary(feed(chunks)) == EXPECTED


@given(st.binary(max_size=400))
@settings(max_examples=300, deadline=None)
def test_any_bytes_give_events_or_remote_protocol_error(data: bytes) -> None:
    stream = XmlStream(limits=StreamLimits(max_stanza_bytes=200, max_buffered_bytes=200))
    for prefix in (b"", HEADER):
        try:
            feed([prefix, data], XmlStream(limits=stream.limits))
        except RemoteProtocolError as exc:
            assert exc.condition.value in {
                "not-well-formed",
                "restricted-xml",
                "policy-violation",
                "invalid-namespace",
            }


def test_random_garbage_after_header_is_not_well_formed() -> None:
    rng = random.Random(4)
    for _ in range(50):
        junk = bytes(rng.randrange(256) for _ in range(64))
        with pytest.raises(RemoteProtocolError) as raised:
            feed([HEADER, b"<message>", junk])
        assert raised.value.condition.value == "not-well-formed", junk


BILLION_LAUGHS = (
    b"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
    + b"".join(
        f"<!ENTITY lol{i} '{('&lol' + str(i - 1) + ';') * 10 if i > 1 else '&lol;' * 10}'>".encode()
        for i in range(1, 10)
    )
    + b"]><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>"
    + b"<message><body>&lol9;</body></message>"
)


@pytest.mark.parametrize(
    ("name", "chunks", "condition", "text"),
    [
        (
            "doctype",
            [b"<!DOCTYPE stream>" + HEADER[21:]],
            "restricted-xml",
            "DOCTYPE declarations are not allowed",
        ),
        (
            "entity",
            [b"<!DOCTYPE s [<!ENTITY x 'y'>]>"],
            "restricted-xml",
            "DOCTYPE declarations are not allowed",
        ),
        (
            "billion-laughs",
            [BILLION_LAUGHS],
            "restricted-xml",
            "DOCTYPE declarations are not allowed",
        ),
        ("comment", [HEADER, b"<!-- hi -->"], "restricted-xml", "comments are not allowed"),
        (
            "pi",
            [HEADER, b"<?evil x?>"],
            "restricted-xml",
            "processing instructions are not allowed",
        ),
        (
            "bad-xml",
            [HEADER, b"<message><body></message>"],
            "not-well-formed",
            "XML syntax error: mismatched tag",
        ),
        (
            "undefined-entity",
            [HEADER, b"<message>&lol;</message>"],
            "not-well-formed",
            "XML syntax error: undefined entity",
        ),
        (
            "text-at-top",
            [HEADER, b"hello"],
            "not-well-formed",
            "text outside stanzas is not allowed",
        ),
        (
            "wrong-root",
            [b"<stream xmlns='jabber:server'>"],
            "invalid-namespace",
            "the root element must be stream in namespace http://etherx.jabber.org/streams",
        ),
        (
            "wrong-ns",
            [HEADER.replace(b"'jabber:server'", b"'jabber:x'")],
            "invalid-namespace",
            "the default namespace must be jabber:server",
        ),
        (
            "deep",
            [HEADER, b"<message>" + b"<a>" * 40],
            "policy-violation",
            "elements nested deeper than 32",
        ),
        (
            "attributes",
            [HEADER, b"<message " + b" ".join(b"a%d='1'" % i for i in range(40)) + b"/>"],
            "policy-violation",
            "more than 32 attributes on an element",
        ),
        (
            "oversize",
            [HEADER, b"<message><body>" + b"x" * 300_000 + b"</body></message>"],
            "policy-violation",
            "stanza larger than 262144 bytes",
        ),
        (
            "unclosed-start-tag",
            [HEADER, b"<message to='" + b"a" * 300_000],
            "policy-violation",
            "more than 262144 bytes without a complete stanza",
        ),
        (
            "after-starttls",
            [HEADER, b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><message/>"],
            "policy-violation",
            "data received after STARTTLS before the TLS handshake",
        ),
    ],
)
def test_bad_input_gets_the_exact_stream_error(
    name: str, chunks: list[bytes], condition: str, text: str
) -> None:
    stream = XmlStream()
    stream.fallback_from = "contoso.lab"
    with pytest.raises(RemoteProtocolError) as info:
        feed(chunks, stream)
    assert (info.value.condition.value, info.value.text) == (condition, text)
    out = stream.data_to_send().decode()
    assert out.endswith(
        f"<stream:error><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        f"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>{text}</text></stream:error>"
        "</stream:stream>"
    )
    assert out.startswith("<?xml version='1.0'?><stream:stream ")  # header sent before the error
    assert "lol" not in out and "evil" not in out  # nothing of the peer's bytes echoed
    assert stream.closed


def test_unclosed_tags_fed_in_chunks_stop_at_the_buffer_limit() -> None:
    stream = XmlStream(limits=StreamLimits(max_stanza_bytes=10_000, max_buffered_bytes=10_000))
    stream.receive_data(HEADER + b"<message>", 0.0)
    fed = 0
    with pytest.raises(RemoteProtocolError) as info:
        for _ in range(1000):
            stream.receive_data(b"<b>x</b>" * 100, 0.0)
            fed += 800
    assert info.value.condition.value == "policy-violation"
    assert fed <= 10_000  # stopped as soon as the limit was crossed


def test_data_after_proceed_in_a_later_chunk_is_refused() -> None:
    stream = XmlStream()
    feed([HEADER, b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"], stream)
    assert stream.tls_pending
    with pytest.raises(RemoteProtocolError) as info:
        stream.receive_data(b"<message/>", 0.0)
    assert info.value.text == "data received after STARTTLS before the TLS handshake"


def test_restart_after_tls_takes_a_new_header() -> None:
    stream = XmlStream()
    feed([HEADER, b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"], stream)
    stream.restart()
    events = feed([HEADER, b"<message from='a@jabber.lab' to='b@contoso.lab'/>"], stream)
    assert isinstance(events[0], StreamOpened)
    assert isinstance(events[1], StanzaReceived)


def test_root_keeps_no_stanzas() -> None:
    stream = XmlStream()
    stream.receive_data(HEADER, 0.0)
    for _ in range(2000):
        stream.receive_data(
            b"<message from='a@jabber.lab' to='b@contoso.lab'><body>x</body></message>", 0.0
        )
        while stream.next_event():
            pass
    assert stream._stack == []


def test_serialize_escapes_and_prefixes() -> None:
    msg = element(qname(NS_SERVER, "message"), {"to": "a'b@x", "from": None}, text="<&>\x00")
    assert serialize(msg) == "<message to='a&apos;b@x'>&lt;&amp;&gt;</message>"


def test_idle_timeout_and_keepalive() -> None:
    stream = XmlStream(timers=StreamTimers(idle_timeout=30.0, keepalive_interval=10.0), now=0.0)
    stream.open(to="jabber.lab", from_="contoso.lab", now=0.0)
    stream.data_to_send()
    assert stream.get_timer() == 10.0
    stream.handle_timer(10.0)
    assert stream.data_to_send() == b" "
    stream.handle_timer(30.0)
    assert stream.data_to_send().endswith(
        b"<connection-timeout xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        b"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>nothing received for 30 s</text>"
        b"</stream:error></stream:stream>"
    )
    assert stream.next_event() == StreamClosed(clean=False, error="connection-timeout")
