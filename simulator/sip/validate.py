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

from sipmessage import URI, Address, CSeq, Request, Response, Via
from sipmessage.message import COMPACT_FORMS

from simulator.sip.build import indexed_headers, remember_raw_uri
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
    if text_head.count("\r") != len(lines) - 1 or text_head.count("\n") != len(lines) - 1:
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
    listed: list[tuple[str, list[str]]] = []
    index: dict[str, list[str]] = {}
    if "\r\n " in text_head or "\r\n\t" in text_head:
        entries = [_entry(name, value) for name, value in _unfolded(lines)]
    else:  # no folded lines: each line is a header on its own, most seen before
        entries = []
        for line in lines[1:]:
            entry = _LINES.get(line)
            if entry is None:
                raw, colon, value = line.partition(":")
                if not colon:
                    raise _bad("Malformed header line")
                named = _NAMES.get(raw)
                if named is None:
                    named = _name(raw)
                name, low = named
                value = value.strip(_WSP)
                if low == "via" and '"' not in value:
                    value = via_without_lws(value)
                entry = (name, low, value.strip())
                if low not in _UNIQUE:
                    if len(_LINES) >= _LINES_MAX:
                        _LINES.clear()
                    _LINES[line] = entry
            entries.append(entry)
    # One parse: the message is built from the lines split above, as sipmessage's
    # Message.parse would build it from their canonical form ("Name: value"), without
    # printing them again for it to split a second time.
    message: Request | Response
    if is_request:
        try:
            uri = _request_uri(bits[1])
        except ValueError:
            raise _bad("Malformed Request-URI") from None
        message = Request(bits[0], uri, frame.body)
    else:
        message = Response(int(bits[1]), bits[2], frame.body)
    for name, low, value in entries:
        values = index.get(low)
        if values is None:
            values = index[low] = [value]
            listed.append((name, values))
        else:
            values.append(value)
    message.headers = indexed_headers(listed, index)
    if is_request:
        remember_raw_uri(message, bits[1])
    return message


def _unfolded(lines: list[str]) -> list[tuple[str, str]]:
    """Header lines with continuation lines joined to theirs (RFC 3261 section 7.3.1)."""
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
        if not colon:
            raise _bad("Malformed header line")
        headers.append([name.rstrip(_WSP), value.strip(_WSP)])
    return [(name, value) for name, value in headers]


def _name(raw: str) -> tuple[str, str]:
    """A header name as written before the colon -> the name as sipmessage keeps it (compact
    forms in full) and its lower case; 400 when it is not a token. Remembered."""
    name = raw.rstrip(_WSP)
    if not _is_token(name):
        raise _bad("Malformed header line")
    low = name.lower()
    full = COMPACT_FORMS.get(low)
    if full is not None:
        name, low = full, full.lower()
    if len(_NAMES) >= _LINES_MAX:
        _NAMES.clear()
    _NAMES[raw] = (name, low)
    return name, low


def _entry(name: str, value: str) -> tuple[str, str, str]:
    """Name as sipmessage keeps it (compact forms in full), its lower case, and the value as
    Message.parse strips it (white space around Via's separators dropped)."""
    name, low = _name(name)
    if low == "via" and '"' not in value:
        value = via_without_lws(value)
    return name, low, value.strip()


#: Header lines already split and checked (most lines of a proxy's traffic repeat: To, CSeq,
#: Content-Type, the trust header...); bounded.
_LINES: dict[str, tuple[str, str, str]] = {}
_LINES_MAX = 8192
#: Header names as written, already checked (:func:`_name`); bounded.
_NAMES: dict[str, tuple[str, str]] = {}
#: Headers whose lines hardly ever repeat (branches, tags, call ids): not worth remembering.
_UNIQUE = frozenset({"via", "call-id", "from"})


#: Request-URIs already parsed (sipmessage's URI is frozen, so one object serves every
#: message that carries the same text); bounded.
_URIS: dict[str, URI] = {}
_URIS_MAX = 4096


def _request_uri(text: str) -> URI:
    """``URI.parse(text)``, remembered: a proxy sees the same few Request-URIs again and again."""
    uri = _URIS.get(text)
    if uri is None:
        uri = URI.parse(text)
        if len(_URIS) >= _URIS_MAX:
            _URIS.clear()
        _URIS[text] = uri
    return uri


_WSP = " \t"
_SEPARATOR_LWS = re.compile(r"[ \t]*([/;=,])[ \t]*")
_SEPARATOR_LWS_ANY = re.compile(r"[ \t][/;=,]|[/;=,][ \t]")


def via_without_lws(value: str) -> str:
    """A Via value without the white space around ``/ ; = ,`` (optional white space between
    tokens and separators, SWS in RFC 3261 section 25.1), as sipmessage's Message.parse drops it.

    Most Via lines have none, and the most common rest is several Vias on one line joined by
    ", " (SIPp's ``[last_Via:]`` answers so): dropping that one space is a ``str.replace``;
    anything else left takes the regular expression (the same result, held by
    tests/sip/test_sip_validate.py).
    """
    joined = value.replace(", ", ",") if ", " in value else value
    if _SEPARATOR_LWS_ANY.search(joined) is None:
        return joined
    return _SEPARATOR_LWS.sub(r"\1", value)


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


_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


def _is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None


#: Header values already seen to parse (a proxy sees most of them twice: in the request, then
#: in its response). Parsing is deterministic, so a value that parsed once parses again.
_GOOD: set[str] = set()
_GOOD_MAX = 8192

# Plain shapes of Via, From/To and CSeq values that sipmessage's grammar accepts (a strict
# subset of it: ASCII, single spaces, token parameters), checked with one regular expression
# instead of sipmessage's parse; anything else takes sipmessage's parse as before.
# tests/sip/test_sip_validate.py holds the subset property (every string these match parses).
_LABEL = r"[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*"
_HOST = rf"(?:(?:{_LABEL}\.)*[A-Za-z]+(?:-[A-Za-z0-9]+)*|[0-9]{{1,3}}(?:\.[0-9]{{1,3}}){{3}})"
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_PARAMS = rf"(?:;{_TOKEN}(?:={_TOKEN})?)*"
_ONE_VIA = rf"SIP/2\.0/[A-Za-z]+(?:-[A-Za-z]+)? {_HOST}(?::[0-9]{{1,5}})?{_PARAMS}"
FAST_VIA = re.compile(rf"{_ONE_VIA}(?:, ?{_ONE_VIA})*")
_URI_PART = r"[A-Za-z0-9._~+-]+"
_SIP_URI = (
    rf"sips?:(?:{_URI_PART}@)?{_HOST}(?::[0-9]{{1,5}})?(?:;{_URI_PART}(?:=[A-Za-z0-9._~+:-]+)?)*"
)
FAST_ADDRESS = re.compile(rf'(?:"[A-Za-z0-9._-]+(?: [A-Za-z0-9._-]+)*" ?)?<{_SIP_URI}>{_PARAMS}')
FAST_CSEQ = re.compile(r"[0-9]{1,10} [A-Za-z]+")


def _parses(kind: str, value: str, parser: Callable[[str], object], fast: re.Pattern[str]) -> bool:
    key = kind + value
    if key in _GOOD or fast.fullmatch(value) is not None:
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
    found = [headers.getlist(name) for name in MANDATORY]
    for name, values in zip(MANDATORY, found, strict=True):
        if not values:
            raise _bad(f"Missing {name} header")
    vias, froms, tos, call_ids, _cseqs = found
    for value in vias:
        if not _parses("v", value, Via.parse_many, FAST_VIA):
            raise _bad("Malformed Via header")
    for name, values in (("From", froms), ("To", tos)):
        if len(values) > 1:
            raise _bad(f"More than one {name} header")
        if not _parses("a", values[0], Address.parse, FAST_ADDRESS):
            raise _bad(f"Malformed {name} header")
    if len(call_ids) > 1 or not call_ids[0].strip():
        raise _bad("Malformed Call-ID header")
    cseq_text = headers["CSeq"]
    if not _parses("c", cseq_text, CSeq.parse, FAST_CSEQ):
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
