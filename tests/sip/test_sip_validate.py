"""Eager validation: each broken mandatory header gets 400 with a reason that names it."""

from __future__ import annotations

import pytest
from sipmessage import Request

from simulator.sip.errors import RemoteProtocolError
from simulator.sip.framing import Frame
from simulator.sip.validate import validate
from tests.sip.sip_helpers import message


def frame_of(data: bytes) -> Frame:
    head, _, body = data.partition(b"\r\n\r\n")
    return Frame(head, body)


def replace_line(data: bytes, name: str, value: str | None) -> bytes:
    lines = data.split(b"\r\n")
    out = []
    for line in lines:
        if line.lower().startswith(name.lower().encode() + b":"):
            if value is not None:
                out.append(f"{name}: {value}".encode())
            continue
        out.append(line)
    return b"\r\n".join(out)


def test_valid_request_parses() -> None:
    request = validate(frame_of(message()))
    assert isinstance(request, Request) and request.method == "MESSAGE"
    assert request.body == b"hello"


@pytest.mark.parametrize(
    ("name", "value", "status", "reason"),
    [
        ("Via", None, 400, "Missing Via header"),
        ("Via", "SIP/2.0/TLS", 400, "Malformed Via header"),
        ("From", None, 400, "Missing From header"),
        ("From", "<<nope", 400, "Malformed From header"),
        ("To", None, 400, "Missing To header"),
        ("To", "sip:a b c", 400, "Malformed To header"),
        ("Call-ID", None, 400, "Missing Call-ID header"),
        ("Call-ID", "", 400, "Malformed Call-ID header"),
        ("CSeq", None, 400, "Missing CSeq header"),
        ("CSeq", "one MESSAGE", 400, "Malformed CSeq header"),
        ("CSeq", "1 INVITE", 400, "CSeq method does not match the request method"),
        ("Max-Forwards", "lots", 400, "Malformed Max-Forwards header"),
        ("Max-Forwards", "256", 400, "Malformed Max-Forwards header"),
    ],
)
def test_mandatory_headers(name: str, value: str | None, status: int, reason: str) -> None:
    data = replace_line(message(), name, value)
    with pytest.raises(RemoteProtocolError) as info:
        validate(frame_of(data))
    assert (info.value.status, info.value.reason, info.value.fatal) == (status, reason, False)


@pytest.mark.parametrize(
    ("start", "status", "reason"),
    [
        (b"MESSAGE sip:bob@contoso.lab SIP/3.0", 505, "Version Not Supported"),
        (b"MESSAGE", 400, "Malformed start line"),
        (b"MESS@GE sip:bob@contoso.lab SIP/2.0", 400, "Malformed method"),
        (b"MESSAGE not-a-uri SIP/2.0", 400, "Malformed Request-URI"),
        (b"MESSAGE tel:+15550100 SIP/2.0", 416, "Unsupported URI Scheme"),
        (b"SIP/2.0 2x0 OK", 400, "Malformed status code"),
    ],
)
def test_start_line(start: bytes, status: int, reason: str) -> None:
    data = message()
    data = start + data[data.index(b"\r\n") :]
    with pytest.raises(RemoteProtocolError) as info:
        validate(frame_of(data))
    assert (info.value.status, info.value.reason) == (status, reason)


def test_header_line_without_colon() -> None:
    data = message().replace(b"Content-Type: text/plain", b"Content-Type text/plain")
    with pytest.raises(RemoteProtocolError) as info:
        validate(frame_of(data))
    assert info.value.reason == "Malformed header line"


def test_not_utf8() -> None:
    data = message().replace(b"Call-ID: call-1", b"Call-ID: \xff\xfe")
    with pytest.raises(RemoteProtocolError) as info:
        validate(frame_of(data))
    assert info.value.reason == "Header section is not valid UTF-8"


def test_compact_forms_are_accepted() -> None:
    data = (
        message()
        .replace(b"From:", b"f:")
        .replace(b"To:", b"t:")
        .replace(b"Via:", b"v:")
        .replace(b"Call-ID:", b"i:")
    )
    assert validate(frame_of(data)).call_id == "call-1"
