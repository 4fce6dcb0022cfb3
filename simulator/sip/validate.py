"""Parse a framed message with :mod:`sipmessage` and check the mandatory headers eagerly.

sipmessage parses header values only when a typed accessor is used, so a message with a broken
``From`` parses fine and fails later, deep in a handler. :func:`validate` checks, right away,
what RFC 3261 section 8.1.1 makes mandatory: Via, From, To, Call-ID, CSeq (and its method),
Max-Forwards (when present) and the Request-URI, and raises :class:`RemoteProtocolError` 400 with
a reason phrase that names the problem (never quoting the peer's bytes). The framing is intact
when it does, so the connection stays usable.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sipmessage import URI, Address, CSeq, Message, Request, Response, Via

from simulator.sip.build import index_headers, remember_raw_uri
from simulator.sip.errors import RemoteProtocolError
from simulator.sip.framing import Frame

MANDATORY: tuple[str, ...] = ("Via", "From", "To", "Call-ID", "CSeq")


def _bad(reason: str) -> RemoteProtocolError:
    return RemoteProtocolError(400, reason)


def parse(frame: Frame) -> Request | Response:
    """sipmessage's parse of a frame, with its errors turned into 400s that name the problem.

    The header section is put in canonical form first, because sipmessage keeps a header's name
    as written: folded lines are unfolded (RFC 3261 section 7.3.1), white space around the colon
    is dropped (``Name : value`` is legal and names ``Name``), so a header is always found, and
    stripped, by its name. A bare CR or LF inside a line gets 400 (a next hop might end the
    line there), and a Request-URI whose scheme is not sip or sips gets 416 (RFC 4475 section
    3.3.2).
    """
    try:
        text_head = frame.head.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("Header section is not valid UTF-8") from None
    lines = text_head.split("\r\n")
    start = lines[0]
    bits = start.split(" ", 2)
    is_request = len(bits) == 3 and bits[2] == "SIP/2.0"
    is_response = len(bits) == 3 and bits[0] == "SIP/2.0"
    if not (is_request or is_response):
        if len(bits) == 3 and (bits[2].startswith("SIP/") or bits[0].startswith("SIP/")):
            raise RemoteProtocolError(505, "Version Not Supported")
        raise _bad("Malformed start line")
    if "\r" in text_head.replace("\r\n", "\0") or "\n" in text_head.replace("\r\n", "\0"):
        raise _bad("Bare CR or LF in a header line")
    if is_response and not (bits[1].isascii() and bits[1].isdigit() and len(bits[1]) == 3):
        raise _bad("Malformed status code")
    if is_request:
        if not _is_token(bits[0]):
            raise _bad("Malformed method")
        scheme, colon, _ = bits[1].partition(":")
        if not colon or not _SCHEME_RE.fullmatch(scheme):
            raise _bad("Malformed Request-URI")
        if scheme.lower() not in ("sip", "sips"):
            raise RemoteProtocolError(416, "Unsupported URI Scheme")
    headers: list[list[str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if not headers:
                raise _bad("Malformed header line")
            value = line.strip(_WSP)
            if value:
                headers[-1][1] = f"{headers[-1][1]} {value}" if headers[-1][1] else value
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(_WSP)
        if not colon or not _is_token(name):
            raise _bad("Malformed header line")
        headers.append([name, value.strip(_WSP)])
    canonical = [start]
    for name, value in headers:
        if name.lower() in ("via", "v") and '"' not in value:
            value = _SEPARATOR_LWS.sub(r"\1", value)  # LWS around / ; = , means nothing
        canonical.append(f"{name}: {value}")
    try:
        message = Message.parse("\r\n".join(canonical).encode() + b"\r\n\r\n" + frame.body)
    except ValueError as exc:
        if "URI" in str(exc):
            raise _bad("Malformed Request-URI") from None
        raise _bad("Malformed message") from None
    index_headers(message)
    if is_request:
        remember_raw_uri(message, bits[1])
    return message


_WSP = " \t"
_SEPARATOR_LWS = re.compile(r"[ \t]*([/;=,])[ \t]*")

#: RFC 3986 section 3.1: ``scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )``.
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


def number(text: str) -> int | None:
    """``text`` as a decimal number of ASCII digits (as SIP's grammar has them), else None.

    ``str.isdigit`` also accepts superscripts and other scripts' digits, which ``int`` then
    either refuses (``"²"``) or reads (``"٣"``): neither is SIP.
    """
    text = text.strip()
    if not text or not text.isascii() or not text.isdigit() or len(text) > 10:
        return None
    return int(text)


_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")


def _is_token(text: str) -> bool:
    return bool(text) and all(c in _TOKEN_CHARS for c in text)


#: Header values already seen to parse (a proxy sees most of them twice: in the request, then
#: in its response). Parsing is deterministic, so a value that parsed once parses again.
_GOOD: set[str] = set()
_GOOD_MAX = 8192


def _parses(kind: str, value: str, parser: Callable[[str], object]) -> bool:
    key = kind + value
    if key in _GOOD:
        return True
    try:
        parser(value)
    except ValueError:
        return False
    if len(_GOOD) >= _GOOD_MAX:
        _GOOD.clear()
    _GOOD.add(key)
    return True


def known_good_via(value: str) -> None:
    """Record a Via value we wrote ourselves (or extended with received/rport) as valid."""
    if len(_GOOD) >= _GOOD_MAX:
        _GOOD.clear()
    _GOOD.add("v" + value)


def check(message: Request | Response, *, content_length_missing: bool = False) -> None:
    """Raise a 400 naming the first mandatory header that is missing or malformed."""
    headers = message.headers
    for name in MANDATORY:
        if not headers.getlist(name):
            raise _bad(f"Missing {name} header")
    for value in headers.getlist("Via"):
        if not _parses("v", value, Via.parse_many):
            raise _bad("Malformed Via header")
    for name in ("From", "To"):
        values = headers.getlist(name)
        if len(values) > 1:
            raise _bad(f"More than one {name} header")
        if not _parses("a", values[0], Address.parse):
            raise _bad(f"Malformed {name} header")
    call_ids = headers.getlist("Call-ID")
    if len(call_ids) > 1 or not call_ids[0].strip():
        raise _bad("Malformed Call-ID header")
    cseq_text = headers["CSeq"]
    if not _parses("c", cseq_text, CSeq.parse):
        raise _bad("Malformed CSeq header")
    sequence, method = cseq_text.split()
    seq = number(sequence)
    if seq is None or seq > 2**31 - 1:
        raise _bad("Malformed CSeq header")
    if isinstance(message, Request):
        if method != message.method:
            raise _bad("CSeq method does not match the request method")
        max_forwards = headers.get("Max-Forwards")
        if max_forwards is not None:
            hops = number(max_forwards)
            if hops is None or hops > 255:
                raise _bad("Malformed Max-Forwards header")
        if message.uri.scheme not in ("sip", "sips") or not message.uri.host:
            raise RemoteProtocolError(416, "Unsupported URI Scheme")
    if content_length_missing:
        raise _bad("Missing Content-Length header")


def validate(frame: Frame) -> Request | Response:
    """Parse and check a frame; raises :class:`RemoteProtocolError` (400) naming the problem."""
    message = parse(frame)
    check(message, content_length_missing=frame.content_length_missing)
    return message


def uri_domain(uri: URI) -> str:
    """The lower-case host of a URI (the domain of an address-of-record)."""
    return uri.host.lower()
