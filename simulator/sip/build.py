"""Building and editing messages by their raw header values (no typed round trips).

A proxy touches few headers: it pushes and pops a Via, lowers Max-Forwards, adds Record-Route
and strips or adds a few others. These helpers edit :class:`sipmessage.Headers` value lists in
place, so forwarding never parses and re-prints the addresses it does not need.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterable

from sipmessage import URI, Headers, Request, Response

BRANCH_MAGIC = "z9hG4bK"

REASONS: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    488: "Not Acceptable Here",
    489: "Bad Event",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
}

_counter = itertools.count(1)


class IndexedHeaders(Headers):
    """sipmessage's :class:`Headers` with a lower-case name index for look-ups.

    sipmessage scans its list (lower-casing every name) on each ``get``/``getlist``; a proxy asks
    for a dozen headers per message. The index maps each lower-case name to the same value
    list sipmessage holds, so edits through ``getlist()`` stay visible; every mutator drops it.
    """

    _index: dict[str, list[str]] | None = None

    def _lookup(self) -> dict[str, list[str]]:
        index = self._index
        if index is None:
            index = {}
            for key, values in self._list:
                index.setdefault(key.lower(), values)
            self._index = index
        return index

    def get(self, key: str, default: str | None = None) -> str | None:
        index = self._index
        values = (self._lookup() if index is None else index).get(key.lower())
        return values[0] if values else default

    def getlist(self, key: str) -> list[str]:
        index = self._index
        values = (self._lookup() if index is None else index).get(key.lower())
        return values if values is not None else []

    def __getitem__(self, key: str) -> str:
        index = self._index
        values = (self._lookup() if index is None else index).get(key.lower())
        if not values:
            raise KeyError(key)
        return values[0]

    def add(self, key: str, value: str) -> None:
        self._index = None
        super().add(key, value)

    def remove(self, key: str) -> None:
        self._index = None
        super().remove(key)

    def set(self, key: str, value: str) -> None:
        self._index = None
        super().set(key, value)

    def setlist(self, key: str, values: list[str]) -> None:
        self._index = None
        super().setlist(key, values)

    def __str__(self) -> str:
        return "".join([f"{k}: {v}\r\n" for k, values in self._list for v in values]) + "\r\n"


def indexed_headers(
    listed: list[tuple[str, list[str]]], index: dict[str, list[str]]
) -> IndexedHeaders:
    """Headers from a parser that grouped them already: ``listed`` in sipmessage's layout
    (first spelling of each name, its values in order), ``index`` the same lists by lower-case
    name."""
    headers = IndexedHeaders.__new__(IndexedHeaders)  # Headers.__init__ would make a list
    headers._list = listed
    headers._index = index
    return headers


def new_tag() -> str:
    """A locally unique tag (deterministic counter; uniqueness is all RFC 3261 needs here)."""
    return f"es{next(_counter):x}"


def new_branch(prefix: str = "") -> str:
    return f"{BRANCH_MAGIC}{prefix}{next(_counter):x}"


def new_request(
    method: str,
    uri: str,
    *,
    via: str,
    from_value: str,
    contact: str,
    call_id: str,
    cseq: int,
    user_agent: str,
    to: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
    route: Iterable[str] = (),
) -> Request:
    """A request as a user agent client starts it (:rfc:`3261#section-8.1.1`): ``via`` is the
    sent-by (``host[:port]``) of a TLS Via with a new branch; ``headers`` are added after the
    mandatory ones (Max-Forwards, Contact and User-Agent given there replace ours). The one SIP
    client (:class:`~simulator.sip.emulators.ua.UserAgent`) and the SIP probes build with it."""
    request = Request(method, URI.parse(uri), body)
    h = request.headers
    h.add("Via", f"SIP/2.0/TLS {via};branch={new_branch('-ua')};rport")
    h.add("Max-Forwards", "70")
    for value in route:
        h.add("Route", value)
    h.add("From", from_value)
    h.add("To", to or f"<{uri.split(';', 1)[0]}>")
    h.add("Call-ID", call_id)
    h.add("CSeq", f"{cseq} {method}")
    h.add("Contact", contact)
    h.add("User-Agent", user_agent)
    for key, value in headers:
        if key.lower() in ("max-forwards", "contact", "user-agent"):
            h.set(key, value)
        else:
            h.add(key, value)
    if content_type:
        h.add("Content-Type", content_type)
    h.add("Content-Length", str(len(body)))
    return request


def in_invite_transaction(method: str, invite: Request, to: str) -> Request:
    """A request of ``invite``'s own client transaction: its CANCEL (:rfc:`3261#section-9.1`)
    or the ACK of a non-2xx final response (:rfc:`3261#section-17.1.1.3`). Same Request-URI,
    top Via (so the same branch), Route, From and Call-ID, the CSeq number with ``method``;
    ``to`` is the INVITE's To (CANCEL) or the response's (ACK)."""
    request = Request(method, invite.uri)
    h = request.headers
    h.add("Via", invite.headers.getlist("Via")[0])
    h.add("Max-Forwards", "70")
    for value in invite.headers.getlist("Route"):
        h.add("Route", value)
    h.add("From", invite.headers["From"])
    h.add("To", to)
    h.add("Call-ID", invite.headers["Call-ID"])
    h.add("CSeq", f"{invite.headers['CSeq'].split()[0]} {method}")
    h.add("Content-Length", "0")
    return request


def first_value(value: str) -> tuple[str, str]:
    """Split ``a, b, c`` into ``a`` and ``b, c`` (commas inside quotes and <> are kept)."""
    if "," not in value:
        return value.strip(), ""
    if '"' not in value and "<" not in value:
        first, _, rest = value.partition(",")
        return first.strip(), rest.strip()
    depth_q = False
    depth_a = 0
    for i, ch in enumerate(value):
        if ch == '"':
            depth_q = not depth_q
        elif not depth_q:
            if ch == "<":
                depth_a += 1
            elif ch == ">":
                depth_a -= 1
            elif ch == "," and depth_a == 0:
                return value[:i].strip(), value[i + 1 :].strip()
    return value.strip(), ""


def top_via(message: Request | Response) -> str:
    """The topmost Via value (raw)."""
    return first_value(message.headers.getlist("Via")[0])[0]


_PARAM_RE = re.compile(r";\s*([^;=\s]+)\s*(?:=\s*(\"[^\"]*\"|[^;\s]*))?")


def params(value: str) -> dict[str, str | None]:
    """Parameters of a raw Via/Route value (``;a=b;c``), keys lower-case."""
    out: dict[str, str | None] = {}
    tail = value.split(">", 1)[1] if ">" in value else value
    for m in _PARAM_RE.finditer(tail):
        out[m.group(1).lower()] = m.group(2)
    return out


def via_branch(via: str) -> str | None:
    value = params(via).get("branch")
    return value


def via_sent_by(via: str) -> str:
    """``host[:port]`` of a raw Via value, lower case."""
    head = via.split(";", 1)[0].strip()
    return head.split(None, 1)[1].lower() if " " in head else ""


def push_via(message: Request, via: str) -> None:
    """Insert ``via`` above every other Via (RFC 3261 section 16.6 step 8)."""
    values = message.headers.getlist("Via")
    if values:
        values.insert(0, via)
    else:
        message.headers.add("Via", via)


def pop_via(message: Response) -> str:
    """Remove and return the topmost Via value (RFC 3261 section 16.7 step 3)."""
    values = message.headers.getlist("Via")
    first, rest = first_value(values[0])
    if rest:
        values[0] = rest
    else:
        del values[0]
        if not values:
            message.headers.remove("Via")
    return first


def mark_received(message: Request, host: str, port: int) -> None:
    """Add ``received`` and fill ``rport`` on the top Via (RFC 3261 18.2.1, RFC 3581)."""
    values = message.headers.getlist("Via")
    first, rest = first_value(values[0])
    p = params(first)
    if "received" not in p:
        first += f";received={host}"
    if "rport" in p:
        first = re.sub(r";\s*rport(?:=[^;]*)?", f";rport={port}", first, count=1)
    values[0] = f"{first}, {rest}" if rest else first


def remove_header(message: Request | Response, name: str) -> bool:
    """Drop every value of ``name``; True when something was removed."""
    found = False
    while message.headers.getlist(name):
        message.headers.remove(name)
        found = True
    return found


def prepend(message: Request | Response, name: str, value: str) -> None:
    values = message.headers.getlist(name)
    if values:
        values.insert(0, value)
    else:
        message.headers.add(name, value)


def pop_first(message: Request | Response, name: str) -> str | None:
    """Remove and return the first value of a comma-list header such as Route."""
    values = message.headers.getlist(name)
    if not values:
        return None
    first, rest = first_value(values[0])
    if rest:
        values[0] = rest
    else:
        del values[0]
        if not values:
            message.headers.remove(name)
    return first


def uri_of(value: str) -> str:
    """The URI inside a name-addr (``<sip:...>``) or the addr-spec itself."""
    if "<" in value:
        return value.split("<", 1)[1].split(">", 1)[0]
    return value.split(";", 1)[0].strip()


def uri_host(uri: str) -> str:
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    if "@" in rest:
        rest = rest.rsplit("@", 1)[1]
    return rest.split(":", 1)[0].lower()


def uri_user(uri: str) -> str | None:
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    rest = rest.split(";", 1)[0]
    return rest.rsplit("@", 1)[0] if "@" in rest else None


def uri_params(uri: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for part in uri.split("?", 1)[0].split(";")[1:]:
        key, sep, value = part.partition("=")
        out[key.strip().lower()] = value.strip() if sep else None
    return out


def address_domain(value: str) -> str:
    """Domain of a From/To value."""
    return uri_host(uri_of(value))


def tag_of(value: str) -> str | None:
    return params(value).get("tag")


def short_hash(text: str) -> str:
    """12 hex digits naming ``text`` (branches derived from the received branch)."""
    return hashlib.blake2s(text.encode(), digest_size=6).hexdigest()


def loop_hash(request: Request, context: str = "") -> str:
    """What RFC 3261 section 16.6 step 8 puts in the branch so a loop can be told from a spiral.

    It covers the Request-URI, Call-ID, CSeq number and the From and To tags: a request that
    comes back with all of these unchanged has looped; one whose Request-URI changed spirals.
    An ACK hashes as if its To had no tag, so the ACK of a failure matches its INVITE's branch.
    ``context`` adds what else tells passes apart (the Edge: whether it came from a remote user
    and which Route entries it consumed, so a request that passes the Edge twice is a spiral).
    """
    h = request.headers
    cseq = (h.get("CSeq") or "").split(None, 1)[0] if h.get("CSeq") else ""
    uri = request.uri
    text = "|".join(
        (
            context,
            f"{uri.scheme}:{uri.user}@{uri.host}:{uri.port}{sorted(uri.parameters.items())}",
            h.get("Call-ID", "") or "",
            cseq,
            tag_of(h.get("From", "") or "") or "",
            "" if request.method == "ACK" else tag_of(h.get("To", "") or "") or "",
        )
    )
    return hashlib.blake2s(text.encode(), digest_size=6).hexdigest()


_RAW_URI = "_edgesim_raw_uri"


def remember_raw_uri(message: Request | Response, text: str) -> None:
    """Keep the Request-URI as it came, so forwarding need not print the parsed one again."""
    message.__dict__[_RAW_URI] = (text, getattr(message, "uri", None))


def to_bytes(message: Request | Response) -> bytes:
    """Serialise like ``bytes(message)``, reusing the Request-URI text as received if unchanged."""
    if isinstance(message, Request):
        raw = message.__dict__.get(_RAW_URI)
        uri = raw[0] if raw is not None and raw[1] is message.uri else str(message.uri)
        return f"{message.method} {uri} SIP/2.0\r\n{message.headers}".encode() + message.body
    return bytes(message)


def response_for(
    request: Request,
    code: int,
    reason: str | None = None,
    *,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    to_tag: str | None = None,
) -> Response:
    """A response to ``request`` (RFC 3261 section 8.2.6): copies Via, From, To, Call-ID, CSeq."""
    response = Response(code, reason or REASONS.get(code, "Unknown"), body)
    h = request.headers
    for value in h.getlist("Via"):
        response.headers.add("Via", value)
    response.headers.add("From", h["From"])
    to = h["To"]
    if code > 100 and tag_of(to) is None:
        to = f"{to};tag={to_tag or new_tag()}"
    response.headers.add("To", to)
    response.headers.add("Call-ID", h["Call-ID"])
    response.headers.add("CSeq", h["CSeq"])
    for name, value in headers:
        response.headers.add(name, value)
    response.headers.add("Content-Length", str(len(body)))
    return response


_COPY = ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq")


def response_for_head(head: bytes, code: int, reason: str) -> bytes | None:
    """A best-effort answer to a request that could not be parsed (None for a response).

    Copies the Via, From, To, Call-ID and CSeq lines as they are (the peer needs them to match
    the answer) and nothing else of what it sent.
    """
    lines = head.split(b"\r\n")
    if lines[0].startswith(b"SIP/"):
        return None
    out = [f"SIP/2.0 {code} {reason}".encode()]
    for line in lines[1:]:
        name, sep, _ = line.partition(b":")
        if sep and name.strip().lower().decode("latin-1") in _COPY:
            out.append(line)
    out.append(b"Content-Length: 0")
    return b"\r\n".join(out) + b"\r\n\r\n"
