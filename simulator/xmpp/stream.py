"""Sans-IO XML stream (:rfc:`6120#section-4`): bytes in, events out; stanzas in, bytes out.

Implemented:
- incremental parsing with pyexpat; a stanza is a depth-1 element, handed out as an
  ElementTree element and dropped from the tree afterwards (nothing accumulates under the root);
- UTF-8 only (:rfc:`6120#section-11.6`): an XML declaration naming another encoding ends the
  stream with ``<unsupported-encoding/>``;
- restricted XML (:rfc:`6120#section-11.1`): a DOCTYPE, entity declaration, processing
  instruction or comment ends the stream with ``<restricted-xml/>``;
- hard limits (:class:`StreamLimits`): stanza size, element depth, attributes per element
  (namespace declarations included) and
  bytes buffered without a complete stanza end the stream with ``<policy-violation/>``; input is
  fed to expat in small slices so that memory stays bounded whatever the peer sends at once;
- malformed XML ends the stream with ``<not-well-formed/>``, a wrong stream namespace with
  ``<invalid-namespace/>``;
- serialisation of stanzas relative to the stream's default namespace, stream headers, stream
  errors (:rfc:`6120#section-4.9`) and the closing tag;
- restart after STARTTLS / SASL (:rfc:`6120#section-4.3.3`): a new parser; plaintext that
  arrives after ``<starttls/>`` or ``<proceed/>`` and before the restart is an error;
- an idle timer (``<connection-timeout/>``) and whitespace keep-alives (:rfc:`6120#section-4.6.1`).

Not implemented: stream management (XEP-0198), compression, ``xml:lang`` negotiation.

Stream errors never quote the peer's bytes back.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from xml.parsers import expat

from simulator.limits import limit
from simulator.xmpp.errors import LocalProtocolError, RemoteProtocolError, StreamErrorCondition
from simulator.xmpp.events import (
    StanzaReceived,
    StreamClosed,
    StreamErrorReceived,
    StreamOpened,
    XmppEvent,
)

log = logging.getLogger(__name__)

NS_STREAMS = "http://etherx.jabber.org/streams"
NS_SERVER = "jabber:server"
NS_CLIENT = "jabber:client"
NS_DIALBACK = "jabber:server:dialback"
NS_DIALBACK_FEATURE = "urn:xmpp:features:dialback"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZA_ERRORS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_XML = "http://www.w3.org/XML/1998/namespace"
NS_ROSTER = "jabber:iq:roster"

#: Prefixes declared on our stream headers; serialised elements in these namespaces use them.
HEADER_PREFIXES: dict[str, str] = {NS_STREAMS: "stream", NS_DIALBACK: "db"}

_SLICE = 4096
_INVALID_XML_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


_TS = "tests/xmpp/test_stream.py::"


@dataclass(frozen=True)
class StreamLimits:
    """Hard limits on what a peer may make us buffer."""

    max_stanza_bytes: int = limit(
        256 * 1024,
        "stanza, bytes (policy-violation)",
        _TS + "test_bad_input_gets_the_exact_stream_error",
    )
    """Largest stanza, in bytes on the wire (Prosody's default s2s limit is 512 KiB)."""
    max_buffered_bytes: int = limit(
        256 * 1024,
        "bytes without a complete stanza (policy-violation)",
        _TS + "test_unclosed_tags_fed_in_chunks_stop_at_the_buffer_limit",
    )
    """Bytes accepted without a stanza (or the stream header) being completed."""
    max_depth: int = limit(
        32, "element depth (policy-violation)", _TS + "test_bad_input_gets_the_exact_stream_error"
    )
    """Deepest element nesting, counting the stream root as depth 1."""
    max_attributes: int = limit(
        32,
        "attributes and namespace declarations per element (policy-violation)",
        "tests/xmpp/test_s2s_hardening.py::"
        "test_namespace_declarations_count_against_the_attribute_limit",
    )
    """Attributes per element, namespace declarations included."""


@dataclass(frozen=True)
class StreamTimers:
    """Idle timeout and keep-alive interval, in seconds (None disables)."""

    idle_timeout: float | None = limit(
        300.0,
        "idle: nothing received, s (connection-timeout)",
        "tests/xmpp/test_stream.py::test_idle_timeout_and_keepalive",
    )
    """Close with ``<connection-timeout/>`` when nothing arrives for this long."""
    keepalive_interval: float | None = 60.0
    """Send a single space when we have sent nothing for this long."""


class _Violation(Exception):
    def __init__(self, condition: StreamErrorCondition, text: str) -> None:
        self.condition = condition
        self.text = text


def qname(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


def split_qname(tag: str) -> tuple[str, str]:
    """``{ns}local`` -> (ns, local); a tag without namespace has ns ``""``."""
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


_NEEDS_ESCAPE = re.compile("[&<>'\"\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _escape_text(text: str) -> str:
    if not _NEEDS_ESCAPE.search(text):
        return text
    text = _INVALID_XML_CHARS.sub("", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escape_attr(value: str) -> str:
    if not _NEEDS_ESCAPE.search(value):
        return value
    return _escape_text(value).replace("'", "&apos;").replace('"', "&quot;")


def serialize(
    element: ET.Element,
    parent_ns: str = NS_SERVER,
    prefixes: Mapping[str, str] = HEADER_PREFIXES,
) -> str:
    """Serialise ``element`` for a stream whose default namespace is ``parent_ns``.

    Elements in a namespace of ``prefixes`` use the prefix declared on the stream header
    (``db:result``); other namespaces are declared with ``xmlns`` where they change.
    """
    ns, local = split_qname(element.tag)
    child_ns = parent_ns
    if ns in prefixes:
        name = f"{prefixes[ns]}:{local}"
        decl = ""
    elif ns == parent_ns or not ns:
        name = local
        decl = ""
    else:
        name = local
        decl = f" xmlns='{_escape_attr(ns)}'"
        child_ns = ns
    parts = [f"<{name}{decl}"]
    for key, value in element.attrib.items():
        akey_ns, akey = split_qname(key)
        if akey_ns == NS_XML:
            akey = f"xml:{akey}"
        elif akey_ns:
            raise LocalProtocolError(f"cannot serialise attribute {key}")
        parts.append(f" {akey}='{_escape_attr(value)}'")
    if len(element) == 0 and not element.text:
        parts.append("/>")
    else:
        parts.append(">")
        if element.text:
            parts.append(_escape_text(element.text))
        for child in element:
            parts.append(serialize(child, child_ns, prefixes))
            if child.tail:
                parts.append(_escape_text(child.tail))
        parts.append(f"</{name}>")
    return "".join(parts)


def stream_header(
    *,
    namespace: str,
    to: str | None,
    from_: str | None,
    id: str | None = None,
    version: str = "1.0",
    dialback: bool = False,
) -> str:
    attrs = [f"xmlns='{namespace}'", f"xmlns:stream='{NS_STREAMS}'"]
    if dialback:
        attrs.append(f"xmlns:db='{NS_DIALBACK}'")
    for key, value in (("to", to), ("from", from_), ("id", id), ("version", version)):
        if value is not None:
            attrs.append(f"{key}='{_escape_attr(value)}'")
    return "<?xml version='1.0'?><stream:stream " + " ".join(attrs) + ">"


def stream_error_xml(condition: StreamErrorCondition, text: str | None = None) -> str:
    body = f"<{condition.value} xmlns='{NS_STREAM_ERRORS}'/>"
    if text:
        body += f"<text xmlns='{NS_STREAM_ERRORS}'>{_escape_text(text)}</text>"
    return f"<stream:error>{body}</stream:error>"


class XmlStream:
    """One direction-agnostic XML stream: our header and stanzas out, the peer's events in.

    ``receive_data(b"", now)`` signals end of file. Every method that consumes peer bytes raises
    :class:`RemoteProtocolError` after it has queued the stream error and closing tag.
    """

    def __init__(
        self,
        *,
        namespaces: frozenset[str] = frozenset({NS_SERVER}),
        limits: StreamLimits | None = None,
        timers: StreamTimers | None = None,
        now: float = 0.0,
    ) -> None:
        self.namespaces = namespaces
        """Acceptable default namespaces of the peer's stream."""
        self.limits = limits or StreamLimits()
        self.timers = timers or StreamTimers(None, None)
        self.namespace = next(iter(sorted(namespaces)))
        """Our stream's default namespace (set by :meth:`open`)."""
        self._out: list[str] = []
        self._events: deque[XmppEvent] = deque()
        self.header_sent = False
        self.header_received = False
        self.closed_by_us = False
        self.closed = False
        """True when the stream is over (either side closed or failed)."""
        self.fallback_from: str | None = None
        """``from`` of the header we send when we must answer an error before opening."""
        self._tls_pending = False
        self._last_received = now
        self._last_sent = now
        self._new_parser()

    # ------------------------------------------------------------------ parser
    def _new_parser(self) -> None:
        parser = expat.ParserCreate(encoding="UTF-8", namespace_separator=" ")
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        parser.buffer_text = True
        parser.StartElementHandler = self._on_start
        parser.EndElementHandler = self._on_end
        parser.CharacterDataHandler = self._on_text
        parser.StartNamespaceDeclHandler = self._on_ns
        parser.XmlDeclHandler = self._on_xml_declaration
        parser.StartDoctypeDeclHandler = self._on_restricted_doctype
        parser.EntityDeclHandler = self._on_restricted_entity
        parser.CommentHandler = self._on_restricted_comment
        parser.ProcessingInstructionHandler = self._on_restricted_pi
        parser.ExternalEntityRefHandler = self._on_restricted_external
        self._parser = parser
        self._depth = 0
        self._stack: list[ET.Element] = []
        self._root_ns: dict[str | None, str] = {}
        self._declarations = 0
        """Namespace declarations on the element about to start."""
        self._fed = 0
        self._boundary = 0
        self._stanza_start = -1
        self.header_received = False

    @staticmethod
    def _tag(name: str) -> str:
        ns, sep, local = name.rpartition(" ")
        return f"{{{ns}}}{local}" if sep else name

    def _on_restricted_doctype(self, *args: object) -> None:
        raise _Violation(
            StreamErrorCondition.RESTRICTED_XML, "DOCTYPE declarations are not allowed"
        )

    def _on_restricted_entity(self, *args: object) -> None:
        raise _Violation(StreamErrorCondition.RESTRICTED_XML, "entity declarations are not allowed")

    def _on_restricted_comment(self, *args: object) -> None:
        raise _Violation(StreamErrorCondition.RESTRICTED_XML, "comments are not allowed")

    def _on_restricted_pi(self, *args: object) -> None:
        raise _Violation(
            StreamErrorCondition.RESTRICTED_XML, "processing instructions are not allowed"
        )

    def _on_restricted_external(self, *args: object) -> int:
        raise _Violation(StreamErrorCondition.RESTRICTED_XML, "external entities are not allowed")

    def _on_xml_declaration(self, version: str, encoding: str | None, standalone: int) -> None:
        if encoding is not None and encoding.lower() not in ("utf-8", "utf8"):
            raise _Violation(
                StreamErrorCondition.UNSUPPORTED_ENCODING, "XMPP streams are UTF-8 only"
            )

    def _on_ns(self, prefix: str | None, uri: str) -> None:
        self._declarations += 1
        if self._depth == 0:
            self._root_ns[prefix] = uri

    def _check_after_tls(self) -> None:
        if self._tls_pending:
            raise _Violation(
                StreamErrorCondition.POLICY_VIOLATION,
                "data received after STARTTLS before the TLS handshake",
            )

    def _on_start(self, name: str, attrs: dict[str, str]) -> None:
        self._check_after_tls()
        declarations, self._declarations = self._declarations, 0
        if len(attrs) + declarations > self.limits.max_attributes:
            raise _Violation(
                StreamErrorCondition.POLICY_VIOLATION,
                f"more than {self.limits.max_attributes} attributes on an element",
            )
        if self._depth + 1 > self.limits.max_depth:
            raise _Violation(
                StreamErrorCondition.POLICY_VIOLATION,
                f"elements nested deeper than {self.limits.max_depth}",
            )
        tag = self._tag(name)
        attrib = {self._tag(k): v for k, v in attrs.items()}
        self._depth += 1
        if self._depth == 1:
            self._open_root(tag, attrib)
            return
        if self._depth == 2:
            self._stanza_start = self._parser.CurrentByteIndex
            element = ET.Element(tag, attrib)
        else:
            element = ET.SubElement(self._stack[-1], tag, attrib)
        self._stack.append(element)

    def _open_root(self, tag: str, attrib: dict[str, str]) -> None:
        if tag != qname(NS_STREAMS, "stream"):
            raise _Violation(
                StreamErrorCondition.INVALID_NAMESPACE,
                "the root element must be stream in namespace " + NS_STREAMS,
            )
        default_ns = self._root_ns.get(None, "")
        if default_ns not in self.namespaces:
            raise _Violation(
                StreamErrorCondition.INVALID_NAMESPACE,
                "the default namespace must be " + " or ".join(sorted(self.namespaces)),
            )
        self.header_received = True
        self._boundary = self._parser.CurrentByteIndex
        self._events.append(
            StreamOpened(
                to=attrib.get("to"),
                from_=attrib.get("from"),
                id=attrib.get("id"),
                version=attrib.get("version"),
                namespace=default_ns,
                dialback=NS_DIALBACK in self._root_ns.values(),
            )
        )

    def _on_end(self, name: str) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._events.append(StreamClosed(clean=True))
            self.closed = True
            return
        element = self._stack.pop()
        if self._depth > 1:
            return
        end = self._parser.CurrentByteIndex
        if end - self._stanza_start > self.limits.max_stanza_bytes:
            raise _Violation(
                StreamErrorCondition.POLICY_VIOLATION,
                f"stanza larger than {self.limits.max_stanza_bytes} bytes",
            )
        self._boundary = end
        self._stanza_start = -1
        if element.tag == qname(NS_STREAMS, "error"):
            condition = "undefined-condition"
            text = None
            for child in element:
                ns, local = split_qname(child.tag)
                if ns == NS_STREAM_ERRORS and local == "text":
                    text = child.text
                elif ns == NS_STREAM_ERRORS:
                    condition = local
            self._events.append(StreamErrorReceived(condition, text))
            return
        if element.tag in (qname(NS_TLS, "starttls"), qname(NS_TLS, "proceed")):
            self._tls_pending = True
        self._events.append(StanzaReceived(element))

    def _on_text(self, data: str) -> None:
        if self._depth >= 2:
            parent = self._stack[-1]
            if len(parent):
                last = parent[-1]
                last.tail = (last.tail or "") + data
            else:
                parent.text = (parent.text or "") + data
            return
        if data.strip():
            raise _Violation(
                StreamErrorCondition.NOT_WELL_FORMED, "text outside stanzas is not allowed"
            )
        # whitespace between stanzas: a keep-alive, it completes nothing but is not buffered
        self._boundary = self._parser.CurrentByteIndex + len(data.encode())

    # ------------------------------------------------------------------ input
    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes from the peer; ``b""`` means the connection reached end of file."""
        if self.closed:
            return
        self._last_received = now
        if not data:
            self.closed = True
            self._events.append(StreamClosed(clean=False))
            return
        if self._tls_pending:
            self._fail(
                StreamErrorCondition.POLICY_VIOLATION,
                "data received after STARTTLS before the TLS handshake",
            )
        try:
            for start in range(0, len(data), _SLICE):
                piece = data[start : start + _SLICE]
                self._fed += len(piece)
                self._parser.Parse(piece, False)
                if self.closed:
                    return
                self._check_limits()
            if self._tls_pending:
                tail = data[data.rfind(b">") + 1 :]
                if tail.strip():
                    self._check_after_tls()
        except _Violation as exc:
            self._fail(exc.condition, exc.text)
        except expat.ExpatError as exc:
            self._fail(
                StreamErrorCondition.NOT_WELL_FORMED,
                f"XML syntax error: {expat.ErrorString(exc.code)}",
            )
        except RecursionError:  # pragma: no cover - depth limit comes first
            self._fail(StreamErrorCondition.POLICY_VIOLATION, "elements nested too deep")
        except (ValueError, LookupError, UnicodeError):  # a codec expat asked Python for
            self._fail(StreamErrorCondition.UNSUPPORTED_ENCODING, "XMPP streams are UTF-8 only")

    def _check_limits(self) -> None:
        if self._stanza_start >= 0:
            if self._fed - self._stanza_start > self.limits.max_stanza_bytes:
                raise _Violation(
                    StreamErrorCondition.POLICY_VIOLATION,
                    f"stanza larger than {self.limits.max_stanza_bytes} bytes",
                )
        elif self._fed - self._boundary > self.limits.max_buffered_bytes:
            raise _Violation(
                StreamErrorCondition.POLICY_VIOLATION,
                f"more than {self.limits.max_buffered_bytes} bytes without a complete stanza",
            )

    def _fail(self, condition: StreamErrorCondition, text: str) -> None:
        self.send_error(condition, text)
        raise RemoteProtocolError(condition, text)

    def next_event(self) -> XmppEvent | None:
        return self._events.popleft() if self._events else None

    def push_event(self, event: XmppEvent) -> None:
        """For the cores built on this stream: queue an event of their own."""
        self._events.append(event)

    # ------------------------------------------------------------------ output
    def open(
        self,
        *,
        to: str | None,
        from_: str | None,
        id: str | None = None,
        namespace: str | None = None,
        dialback: bool = False,
        now: float | None = None,
    ) -> None:
        """Send our stream header."""
        if self.header_sent:
            raise LocalProtocolError("stream header already sent")
        if namespace is not None:
            self.namespace = namespace
        self._write(
            stream_header(namespace=self.namespace, to=to, from_=from_, id=id, dialback=dialback),
            now,
        )
        self.header_sent = True

    def send(self, element: ET.Element, now: float | None = None) -> None:
        """Send one stanza or stream-level element."""
        if not self.header_sent:
            raise LocalProtocolError("send() before open()")
        if self.closed_by_us:
            raise LocalProtocolError("send() after close()")
        self._write(serialize(element, self.namespace), now)

    def send_whitespace(self, now: float | None = None) -> None:
        if self.header_sent and not self.closed_by_us:
            self._write(" ", now)

    def send_error(self, condition: StreamErrorCondition, text: str | None = None) -> None:
        """Queue ``<stream:error>`` and the closing tag (opening our header first if needed,
        :rfc:`6120#section-4.9.1.2`)."""
        if self.closed_by_us:
            return
        if not self.header_sent:
            self.open(to=None, from_=self.fallback_from)
        self._write(stream_error_xml(condition, text))
        self.close()
        if not self.closed:
            self.closed = True
        self._events.append(StreamClosed(clean=False, error=condition.value))

    def close(self) -> None:
        """Queue ``</stream:stream>``."""
        if self.closed_by_us:
            return
        if self.header_sent:
            self._write("</stream:stream>")
        self.closed_by_us = True

    def _write(self, text: str, now: float | None = None) -> None:
        self._out.append(text)
        if now is not None:
            self._last_sent = now

    def data_to_send(self) -> bytes:
        if not self._out:
            return b""
        data = "".join(self._out).encode()
        self._out.clear()
        return data

    # ------------------------------------------------------------------ restarts
    def restart(self, now: float | None = None) -> None:
        """Start a new stream on the same connection (after TLS or SASL): new parser, and we
        send a new header."""
        self._tls_pending = False
        self.header_sent = False
        self._new_parser()
        if now is not None:
            self._last_received = now

    @property
    def tls_pending(self) -> bool:
        return self._tls_pending

    # ------------------------------------------------------------------ timers
    def get_timer(self) -> float | None:
        deadlines = []
        if self.closed:
            return None
        if self.timers.idle_timeout is not None:
            deadlines.append(self._last_received + self.timers.idle_timeout)
        if self.timers.keepalive_interval is not None and self.header_sent:
            deadlines.append(self._last_sent + self.timers.keepalive_interval)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        if self.closed:
            return
        idle = self.timers.idle_timeout
        if idle is not None and now >= self._last_received + idle:
            self.send_error(
                StreamErrorCondition.CONNECTION_TIMEOUT, f"nothing received for {idle:g} s"
            )
            return
        keepalive = self.timers.keepalive_interval
        if keepalive is not None and self.header_sent and now >= self._last_sent + keepalive:
            self.send_whitespace(now)


def element(
    tag: str,
    attrib: Mapping[str, str | None] | None = None,
    text: str | None = None,
    children: list[ET.Element] | None = None,
) -> ET.Element:
    """Build an element; attributes whose value is None are left out."""
    elem = ET.Element(tag, {k: v for k, v in (attrib or {}).items() if v is not None})
    if text is not None:
        elem.text = text
    for child in children or []:
        elem.append(child)
    return elem
