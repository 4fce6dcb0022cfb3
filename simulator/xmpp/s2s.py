"""Sans-IO stream negotiation on top of :class:`~simulator.xmpp.stream.XmlStream`.

Implemented, both sides of each:
- server-to-server (:rfc:`6120`): stream header checks (``jabber:server``, ``to`` must be a
  domain we serve -> ``<host-unknown/>``, ``from`` must be an allowed partner ->
  ``<policy-violation/>``), STARTTLS offered and required (:rfc:`6120#section-5`), then
  authentication of the peer domain by SASL EXTERNAL with its certificate (XEP-0178) or by
  Server Dialback (XEP-0220) with keys per XEP-0185; ``<db:verify>`` on verification streams;
- the Edge's internal MTLS link on 23456 (``Role.GATEWAY_SERVER`` / ``GATEWAY_CLIENT``): TLS
  from the first byte, the Front End authenticated by its certificate, stanzas both ways, and
  XEP-0198 acknowledgements (``<enable/>``, ``<r/>``, ``<a h=.../>``; no resumption): the Edge
  acknowledges a stanza only once it has handled it (delivered to the partner's server, or
  answered with an error), which the owner tells the session with :meth:`Session.acknowledge`;
- client-to-server for the partner emulator (``Role.C2S``): STARTTLS, SASL PLAIN, resource
  binding (:rfc:`6120#section-7`), the session and roster queries slixmpp sends.

Who may say what (:rfc:`6120#section-13.7.1.4`, XEP-0220, XEP-0288): a stanza on a
server-to-server stream is accepted only when its ``from`` and ``to`` domains are a pair
authenticated on that stream (``<invalid-from/>``, ``<host-unknown/>``, ``<improper-addressing/>``
otherwise), in both directions: on our outbound stream the peer may only speak for the domain we
dialled, to the domain we authenticated as. The initiating side checks that the receiving server's
certificate names the domain it dialled (XEP-0178, :rfc:`6125` DNS-ID;
:attr:`SessionConfig.verify_server_names`). One inbound stream asks for at most
:attr:`SessionConfig.max_dialback_requests` dialback verifications (each one is a back-connection);
a claim already being verified is not verified twice.

Not implemented: SASL mechanisms other than EXTERNAL and PLAIN, dialback errors beyond the
basic ones, piggybacking several domains on one stream (XEP-0288), stream management on
server-to-server and client streams, stream resumption.

A :class:`Session` emits the events of :mod:`simulator.xmpp.events`; the adapter runs TLS when
it sees :class:`TlsRequested` and reports back with :meth:`Session.tls_established`, and runs
the dialback back-connection on :class:`DialbackVerifyNeeded` then calls
:meth:`Session.dialback_verified`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import logging
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NoReturn

from simulator.limits import limit
from simulator.tls import PeerCertificate
from simulator.xmpp.errors import LocalProtocolError, RemoteProtocolError, StreamErrorCondition
from simulator.xmpp.events import (
    Authenticated,
    AuthenticationFailed,
    DialbackVerifyAnswered,
    DialbackVerifyNeeded,
    StanzaReceived,
    StanzasAcknowledged,
    StreamClosed,
    StreamErrorReceived,
    StreamOpened,
    TlsRequested,
    XmppEvent,
)
from simulator.xmpp.stream import (
    NS_BIND,
    NS_CLIENT,
    NS_DIALBACK,
    NS_DIALBACK_FEATURE,
    NS_ROSTER,
    NS_SASL,
    NS_SERVER,
    NS_SESSION,
    NS_STANZA_ERRORS,
    NS_STREAMS,
    NS_TLS,
    StreamLimits,
    StreamTimers,
    XmlStream,
    element,
    qname,
    split_qname,
)

log = logging.getLogger(__name__)

STANZA_TAGS = frozenset({"message", "presence", "iq"})
NS_SM = "urn:xmpp:sm:3"
"""XEP-0198 stream management (acknowledgements only, no resumption), on the 23456 link."""


class Role(enum.Enum):
    RECEIVING = "receiving"
    """Inbound server-to-server stream (we are the receiving server)."""
    INITIATING = "initiating"
    """Outbound server-to-server stream (we are the initiating server)."""
    VERIFYING = "verifying"
    """Outbound dialback back-connection that only carries ``<db:verify>``."""
    GATEWAY_SERVER = "gateway-server"
    """The Edge's side of the 23456 MTLS link."""
    GATEWAY_CLIENT = "gateway-client"
    """The Front End gateway's side of the 23456 MTLS link."""
    C2S = "c2s"
    """A client stream on a server (partner emulator)."""


class State(enum.Enum):
    AWAIT_HEADER = "await-header"
    AWAIT_FEATURES = "await-features"
    NEGOTIATING = "negotiating"
    READY = "ready"
    CLOSED = "closed"


def dialback_key(secret: bytes, receiving: str, originating: str, stream_id: str) -> str:
    """XEP-0185 section 3: HMAC-SHA256 keyed with the hex SHA-256 of the secret."""
    key = hashlib.sha256(secret).hexdigest().encode()
    message = f"{receiving} {originating} {stream_id}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def domain_of(jid: str | None) -> str | None:
    """The domainpart of a JID (:rfc:`7622#section-3.2`), lower case."""
    if not jid:
        return None
    rest = jid.split("@", 1)[1] if "@" in jid.split("/", 1)[0] else jid
    domain = rest.split("/", 1)[0].lower().rstrip(".")
    return domain or None


def bare_jid(jid: str) -> str:
    return jid.split("/", 1)[0]


@dataclass(frozen=True)
class SessionConfig:
    """What a session needs to know about our server."""

    local_domains: frozenset[str]
    """Domains we serve (``to`` of inbound streams, ``from`` of outbound ones)."""
    dialback_secret: bytes = b""
    """Secret for XEP-0185 dialback keys. Empty (the default) refuses to compute keys at all: a
    service passes the lab's generated secret (:mod:`simulator.pki.secrets`), so no key can be
    computed offline from anything that ships in the source."""
    partner_domains: frozenset[str] | None = None
    """Remote domains allowed to connect (None: any)."""
    allow_external: bool = True
    """Offer / try SASL EXTERNAL (XEP-0178)."""
    allow_dialback: bool = True
    """Offer / try Server Dialback (XEP-0220)."""
    gateway_names: tuple[str, ...] = ()
    """Certificate names accepted on the 23456 link (GATEWAY_SERVER)."""
    users: Mapping[str, str] = field(default_factory=dict)
    """C2S: username -> password."""
    limits: StreamLimits = field(default_factory=StreamLimits)
    timers: StreamTimers = field(default_factory=StreamTimers)
    verify_server_names: bool = True
    """Initiating and verifying streams: the receiving server's certificate must name the domain
    dialled (XEP-0178, :rfc:`6125`); off, any certificate chaining to a trusted CA encrypts
    (Prosody without ``s2s_secure_auth``)."""
    max_dialback_requests: int = limit(
        10,
        "dialback verifications (back-connections) per inbound stream (policy-violation)",
        "tests/xmpp/test_s2s_hardening.py::"
        "test_one_stream_cannot_make_the_edge_open_endless_back_connections",
    )
    """``<db:result>`` claims one inbound stream may have verified."""


class Session:
    """One XMPP connection's negotiation and stanza exchange (sans-IO)."""

    def __init__(
        self,
        role: Role,
        config: SessionConfig,
        *,
        now: float,
        stream_id: str,
        local_domain: str | None = None,
        remote_domain: str | None = None,
        peer_certificate: PeerCertificate | None = None,
        can_external: bool = False,
        verify_request: tuple[str, str] | None = None,
    ) -> None:
        """``stream_id`` is the id we give our stream (receiving roles) and a unique name for it
        in logs. Initiating roles name ``local_domain`` and ``remote_domain``. ``can_external``:
        our certificate authenticates ``local_domain``. ``verify_request`` is (peer's stream id,
        key) for a VERIFYING session. A GATEWAY_SERVER session gets the peer certificate up
        front (TLS ran before the first byte)."""
        self.role = role
        self.config = config
        self.stream_id = stream_id
        self.local_domain = local_domain
        self.remote_domain = remote_domain
        self.can_external = can_external
        self.verify_request = verify_request
        namespaces = frozenset({NS_CLIENT}) if role is Role.C2S else frozenset({NS_SERVER})
        self.stream = XmlStream(
            namespaces=namespaces, limits=config.limits, timers=config.timers, now=now
        )
        self.stream.namespace = next(iter(namespaces))
        self.stream.fallback_from = local_domain or next(iter(sorted(config.local_domains)), None)
        self.state = State.AWAIT_HEADER
        self.tls = role in (Role.GATEWAY_SERVER, Role.GATEWAY_CLIENT)
        self.peer_certificate = peer_certificate
        self.authenticated: set[str] = set()
        """Remote domains authenticated on this (inbound) stream."""
        self.authenticated_pairs: set[tuple[str, str]] = set()
        """(remote domain, our domain) pairs authenticated on this inbound stream."""
        self._dialback_requests = 0
        self.sasl_done = False
        self.external_failed = False
        self.peer_offers_dialback = False
        self.their_stream_id: str | None = None
        self.jid: str | None = None
        """C2S: the bound full JID."""
        self._c2s_user: str | None = None
        self.sm_enabled = False
        """XEP-0198 acknowledgements are on (gateway link)."""
        self._sm_requested = False
        self._sm_in = 0
        self._sm_out = 0
        self._sm_handled = 0
        self._events: list[XmppEvent] = []
        self._pending_dialback: set[tuple[str, str]] = set()
        if role is Role.GATEWAY_SERVER and not self._gateway_cert_ok():
            self.stream.send_error(
                StreamErrorCondition.NOT_AUTHORIZED,
                "the client certificate does not name an allowed Front End",
            )
            self.state = State.CLOSED

    def _gateway_cert_ok(self) -> bool:
        cert = self.peer_certificate
        if cert is None or not cert.client_auth:
            return False
        names = self.config.gateway_names
        return not names or any(cert.matches(name) for name in names)

    # ------------------------------------------------------------------ plumbing
    def start(self, now: float) -> None:
        """Initiating roles: send the first stream header."""
        if self.role in (Role.INITIATING, Role.VERIFYING, Role.GATEWAY_CLIENT):
            self._send_header(now)

    def _send_header(self, now: float | None = None) -> None:
        if self.role in (Role.INITIATING, Role.VERIFYING, Role.GATEWAY_CLIENT):
            self.stream.open(
                to=self.remote_domain,
                from_=self.local_domain,
                dialback=self.role is not Role.GATEWAY_CLIENT,
                now=now,
            )
        else:
            self.stream.open(
                to=self.remote_domain,
                from_=self.local_domain,
                id=self.stream_id,
                dialback=self.role is Role.RECEIVING,
                now=now,
            )

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed peer bytes; raises :class:`RemoteProtocolError` (error already queued)."""
        if self.state is State.CLOSED:
            return
        try:
            self.stream.receive_data(data, now)
            while (event := self.stream.next_event()) is not None:
                self._handle(event, now)
                if self.closed:
                    break
        except RemoteProtocolError:
            self.state = State.CLOSED
            self._drain_stream_events()
            raise

    def _drain_stream_events(self) -> None:
        while (event := self.stream.next_event()) is not None:
            if isinstance(event, StreamClosed | StreamErrorReceived):
                self._events.append(event)

    def _fail(self, condition: StreamErrorCondition, text: str) -> NoReturn:
        self.stream.send_error(condition, text)
        self.state = State.CLOSED
        self._drain_stream_events()
        raise RemoteProtocolError(condition, text)

    def next_event(self) -> XmppEvent | None:
        return self._events.pop(0) if self._events else None

    def data_to_send(self) -> bytes:
        return self.stream.data_to_send()

    def get_timer(self) -> float | None:
        return self.stream.get_timer()

    def handle_timer(self, now: float) -> None:
        self.stream.handle_timer(now)
        if self.stream.closed and self.state is not State.CLOSED:
            self.state = State.CLOSED
            self._drain_stream_events()

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    def close(self) -> None:
        self.stream.close()
        if self.state is not State.CLOSED:
            self.state = State.CLOSED

    def send_stanza(self, stanza: ET.Element, now: float | None = None) -> int:
        """Queue ``stanza``; returns its number for XEP-0198 acknowledgements (0 when off)."""
        if self.state is not State.READY:
            raise LocalProtocolError(f"send_stanza() in state {self.state.value}")
        self.stream.send(stanza, now)
        if self._sm_requested:
            self._sm_out += 1
            return self._sm_out
        return 0

    def acknowledge(self, handled: int) -> None:
        """XEP-0198: the first ``handled`` stanzas received are handled; tell the peer."""
        if not self.sm_enabled or handled <= self._sm_handled or self.state is not State.READY:
            return
        self._sm_handled = min(handled, self._sm_in)
        self.stream.send(element(qname(NS_SM, "a"), {"h": str(self._sm_handled)}))

    def _sm_element(self, local: str, elem: ET.Element) -> None:
        """XEP-0198 elements on the gateway link (both ends)."""
        if self.role is Role.GATEWAY_SERVER and local == "enable":
            self.sm_enabled = True
            self.stream.send(element(qname(NS_SM, "enabled")))
        elif local == "enabled" and self._sm_requested:
            self.sm_enabled = True
        elif local == "r" and self.sm_enabled:
            handled = self._sm_handled if self.role is Role.GATEWAY_SERVER else self._sm_in
            self.stream.send(element(qname(NS_SM, "a"), {"h": str(handled)}))
        elif local == "a" and self.role is Role.GATEWAY_CLIENT:
            h = elem.get("h") or ""
            if not h.isdigit() or int(h) > self._sm_out:
                self._fail(StreamErrorCondition.UNDEFINED_CONDITION, "bad XEP-0198 ack")
            self._events.append(StanzasAcknowledged(int(h)))
        elif local == "failed":
            self._sm_requested = False
        elif local != "a":
            self._fail(
                StreamErrorCondition.UNSUPPORTED_STANZA_TYPE, "unexpected stream management element"
            )

    # ------------------------------------------------------------------ adapter callbacks
    def tls_established(self, peer_certificate: PeerCertificate | None, now: float) -> None:
        """The TLS handshake that :class:`TlsRequested` asked for completed."""
        self.tls = True
        self.peer_certificate = peer_certificate
        self.stream.restart(now)
        self.state = State.AWAIT_HEADER
        if self.role in (Role.INITIATING, Role.VERIFYING):
            domain = self.remote_domain or ""
            if self.config.verify_server_names and (
                peer_certificate is None or not peer_certificate.matches(domain)
            ):
                # nothing is sent over a TLS session with the wrong server: the adapter closes
                self._auth_failed(f"the server certificate does not name {domain} (RFC 6125)")
                return
            self._send_header(now)

    def dialback_verified(self, originating: str, receiving: str, valid: bool) -> None:
        """Answer of the authoritative server for a :class:`DialbackVerifyNeeded`."""
        if self.state is State.CLOSED or (originating, receiving) not in self._pending_dialback:
            return
        self._pending_dialback.discard((originating, receiving))
        self.stream.send(
            element(
                qname(NS_DIALBACK, "result"),
                {"from": receiving, "to": originating, "type": "valid" if valid else "invalid"},
            )
        )
        if valid:
            self.authenticated.add(originating)
            self.authenticated_pairs.add((originating, receiving))
            self.state = State.READY
            self._events.append(Authenticated(originating, "dialback"))
        else:
            self.stream.send_error(
                StreamErrorCondition.NOT_AUTHORIZED, "dialback verification failed"
            )
            self.state = State.CLOSED
            self._drain_stream_events()

    # ------------------------------------------------------------------ dispatch
    def _handle(self, event: XmppEvent, now: float) -> None:
        if isinstance(event, StreamOpened):
            self._on_header(event, now)
        elif isinstance(event, StanzaReceived):
            self._on_element(event.element, now)
        elif isinstance(event, StreamErrorReceived):
            self._events.append(event)
        elif isinstance(event, StreamClosed):
            if not self.stream.closed_by_us:
                self.stream.close()
            self.state = State.CLOSED
            self._events.append(event)

    def _on_header(self, header: StreamOpened, now: float) -> None:
        self._events.append(header)
        if self.role in (Role.INITIATING, Role.VERIFYING, Role.GATEWAY_CLIENT):
            self.their_stream_id = header.id
            self.peer_offers_dialback = header.dialback
            self.state = State.AWAIT_FEATURES
            return
        to = (header.to or "").lower()
        if to not in self.config.local_domains:
            self.remote_domain = header.from_
            self._fail(
                StreamErrorCondition.HOST_UNKNOWN, "this server does not serve the requested domain"
            )
        self.local_domain = to
        self.stream.fallback_from = to
        remote = (header.from_ or "").lower() or None
        if self.role is Role.RECEIVING and remote is not None and not self._partner_allowed(remote):
            self._fail(
                StreamErrorCondition.POLICY_VIOLATION,
                "federation with the sending domain is not allowed",
            )
        self.remote_domain = remote if self.role is not Role.C2S else None
        self._send_header(now)
        self.stream.send(self._features())
        if self.role is Role.GATEWAY_SERVER:
            if self.state is not State.READY:
                self.state = State.READY
                self._events.append(Authenticated(remote or "gateway", "mtls"))
        elif (self.role is Role.C2S and self.jid is not None) or (
            self.role is Role.RECEIVING and self.sasl_done
        ):
            self.state = State.READY
        else:
            self.state = State.NEGOTIATING

    def _partner_allowed(self, domain: str) -> bool:
        allowed = self.config.partner_domains
        return allowed is None or domain in allowed

    def _features(self) -> ET.Element:
        features = element(qname(NS_STREAMS, "features"))
        if self.role is Role.GATEWAY_SERVER:
            features.append(element(qname(NS_SM, "sm")))
            return features
        if not self.tls:
            features.append(
                element(qname(NS_TLS, "starttls"), children=[element(qname(NS_TLS, "required"))])
            )
            return features
        if self.role is Role.C2S:
            if self._c2s_user is None:
                mechs = element(qname(NS_SASL, "mechanisms"))
                mechs.append(element(qname(NS_SASL, "mechanism"), text="PLAIN"))
                features.append(mechs)
            else:
                features.append(element(qname(NS_BIND, "bind")))
                features.append(
                    element(
                        qname(NS_SESSION, "session"),
                        children=[element(qname(NS_SESSION, "optional"))],
                    )
                )
            return features
        if self.sasl_done:
            return features
        cert = self.peer_certificate
        if (
            self.config.allow_external
            and cert is not None
            and self.remote_domain is not None
            and cert.matches(self.remote_domain)
        ):
            mechs = element(qname(NS_SASL, "mechanisms"))
            mechs.append(element(qname(NS_SASL, "mechanism"), text="EXTERNAL"))
            features.append(mechs)
        if self.config.allow_dialback:
            features.append(
                element(
                    qname(NS_DIALBACK_FEATURE, "dialback"),
                    children=[element(qname(NS_DIALBACK_FEATURE, "errors"))],
                )
            )
        return features

    def _on_element(self, elem: ET.Element, now: float) -> None:
        ns, local = split_qname(elem.tag)
        if self.role in (Role.INITIATING, Role.VERIFYING, Role.GATEWAY_CLIENT):
            self._initiating_element(elem, ns, local, now)
        else:
            self._receiving_element(elem, ns, local, now)

    # ------------------------------------------------------------------ receiving side
    def _receiving_element(self, elem: ET.Element, ns: str, local: str, now: float) -> None:
        if ns == NS_TLS and local == "starttls" and self.role is not Role.GATEWAY_SERVER:
            if self.tls:
                self._fail(StreamErrorCondition.POLICY_VIOLATION, "TLS is already established")
            self.stream.send(element(qname(NS_TLS, "proceed")))
            self._events.append(TlsRequested(server_side=True))
            return
        if not self.tls:
            self._fail(StreamErrorCondition.POLICY_VIOLATION, "STARTTLS is required first")
        if ns == NS_SASL and local == "auth":
            self._on_sasl_auth(elem, now)
            return
        if ns == NS_DIALBACK and self.role is Role.RECEIVING:
            if local == "result":
                self._on_db_result(elem)
                return
            if local == "verify":
                self._on_db_verify(elem)
                return
        if self.role is Role.C2S:
            self._c2s_element(elem, ns, local, now)
            return
        if ns == NS_SM and self.role is Role.GATEWAY_SERVER:
            self._sm_element(local, elem)
            return
        if local not in STANZA_TAGS or ns != NS_SERVER:
            self._fail(
                StreamErrorCondition.UNSUPPORTED_STANZA_TYPE, "unsupported element on this stream"
            )
        if self.state is not State.READY:
            self._fail(StreamErrorCondition.NOT_AUTHORIZED, "the stream is not authenticated")
        from_, to = elem.get("from"), elem.get("to")
        if not from_ or not to:
            self._fail(
                StreamErrorCondition.IMPROPER_ADDRESSING, "stanzas need both 'from' and 'to'"
            )
        if self.role is Role.RECEIVING:
            frm_domain, to_domain = domain_of(from_), domain_of(to)
            if frm_domain not in self.authenticated:
                self._fail(
                    StreamErrorCondition.INVALID_FROM,
                    "'from' is not a domain authenticated on this stream",
                )
            if to_domain not in self.config.local_domains:
                self._fail(
                    StreamErrorCondition.HOST_UNKNOWN, "'to' is not a domain this server serves"
                )
            if (frm_domain, to_domain) not in self.authenticated_pairs:
                self._fail(
                    StreamErrorCondition.HOST_UNKNOWN,
                    "'to' is not the domain authenticated for 'from' on this stream",
                )
        if self.sm_enabled:
            self._sm_in += 1
        self._events.append(StanzaReceived(elem, self._sm_in if self.sm_enabled else 0))

    def _on_sasl_auth(self, elem: ET.Element, now: float) -> None:
        mechanism = elem.get("mechanism", "")
        if self.role is Role.C2S:
            self._on_sasl_plain(elem, mechanism, now)
            return
        if mechanism != "EXTERNAL" or not self.config.allow_external or self.sasl_done:
            self._sasl_failure("invalid-mechanism")
            return
        text = (elem.text or "").strip()
        try:
            authzid = (
                base64.b64decode(text, validate=True).decode() if text not in ("", "=") else ""
            )
        except (binascii.Error, UnicodeDecodeError):
            self._sasl_failure("incorrect-encoding")
            return
        domain = (authzid or self.remote_domain or "").lower()
        cert = self.peer_certificate
        if (
            not domain
            or cert is None
            or not cert.matches(domain)
            or not self._partner_allowed(domain)
        ):
            self._sasl_failure("not-authorized")
            return
        self.stream.send(element(qname(NS_SASL, "success")))
        self.sasl_done = True
        self.authenticated.add(domain)
        self.authenticated_pairs.add((domain, self.local_domain or ""))
        self.remote_domain = domain
        self.stream.restart(now)
        self.state = State.READY
        self._events.append(Authenticated(domain, "sasl-external"))

    def _sasl_failure(self, condition: str) -> None:
        failure = element(qname(NS_SASL, "failure"), children=[element(qname(NS_SASL, condition))])
        self.stream.send(failure)

    def _on_db_result(self, elem: ET.Element) -> None:
        originating = (elem.get("from") or "").lower()
        receiving = (elem.get("to") or "").lower()
        key = (elem.text or "").strip()
        if not self.config.allow_dialback:
            self._fail(StreamErrorCondition.POLICY_VIOLATION, "dialback is not offered")
        if not originating or not receiving or not key:
            self._fail(
                StreamErrorCondition.IMPROPER_ADDRESSING, "db:result needs 'from', 'to' and a key"
            )
        error_condition = None
        if receiving not in self.config.local_domains:
            error_condition = "item-not-found"
        elif not self._partner_allowed(originating):
            error_condition = "forbidden"
        if error_condition is not None:
            reply = element(
                qname(NS_DIALBACK, "result"),
                {"from": receiving, "to": originating, "type": "error"},
                children=[
                    element(
                        qname(NS_SERVER, "error"),
                        {"type": "cancel"},
                        children=[element(qname(NS_STANZA_ERRORS, error_condition))],
                    )
                ],
            )
            self.stream.send(reply)
            return
        if (originating, receiving) in self._pending_dialback | self.authenticated_pairs:
            return  # being verified (or verified) already: no second back-connection
        self._dialback_requests += 1
        if self._dialback_requests > self.config.max_dialback_requests:
            self._fail(
                StreamErrorCondition.POLICY_VIOLATION,
                f"more than {self.config.max_dialback_requests} dialback requests on one stream",
            )
        self._pending_dialback.add((originating, receiving))
        self._events.append(DialbackVerifyNeeded(originating, receiving, self.stream_id, key))

    def _on_db_verify(self, elem: ET.Element) -> None:
        them = (elem.get("from") or "").lower()
        us = (elem.get("to") or "").lower()
        stream_id = elem.get("id") or ""
        key = (elem.text or "").strip()
        if not them or not us or not stream_id:
            self._fail(
                StreamErrorCondition.IMPROPER_ADDRESSING, "db:verify needs 'from', 'to' and 'id'"
            )
        if us not in self.config.local_domains:
            self._fail(StreamErrorCondition.HOST_UNKNOWN, "this server does not serve that domain")
        expected = dialback_key(self.config.dialback_secret, them, us, stream_id)
        valid = bool(self.config.dialback_secret) and hmac.compare_digest(
            expected.encode(), key.encode("utf-8", "surrogatepass")
        )
        self.stream.send(
            element(
                qname(NS_DIALBACK, "verify"),
                {"from": us, "to": them, "id": stream_id, "type": "valid" if valid else "invalid"},
            )
        )

    # ------------------------------------------------------------------ c2s (emulator)
    def _on_sasl_plain(self, elem: ET.Element, mechanism: str, now: float) -> None:
        if mechanism != "PLAIN" or self._c2s_user is not None:
            self._sasl_failure("invalid-mechanism")
            return
        try:
            raw = base64.b64decode((elem.text or "").strip(), validate=True).decode()
            _authzid, user, password = raw.split("\x00")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            self._sasl_failure("incorrect-encoding")
            return
        expected = self.config.users.get(user.lower())
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            self._sasl_failure("not-authorized")
            return
        self._c2s_user = user.lower()
        self.stream.send(element(qname(NS_SASL, "success")))
        self.stream.restart(now)
        self.state = State.AWAIT_HEADER

    def _c2s_element(self, elem: ET.Element, ns: str, local: str, now: float) -> None:
        if ns != NS_CLIENT or local not in STANZA_TAGS:
            self._fail(
                StreamErrorCondition.UNSUPPORTED_STANZA_TYPE, "unsupported element on this stream"
            )
        if self._c2s_user is None:
            self._fail(StreamErrorCondition.NOT_AUTHORIZED, "authenticate first")
        domain = self.local_domain or ""
        to = elem.get("to")
        if local == "iq" and (to is None or to.lower() == domain):
            self._c2s_server_iq(elem, domain)
            return
        if self.jid is None:
            self._fail(StreamErrorCondition.NOT_AUTHORIZED, "bind a resource first")
        elem.set("from", self.jid)  # presence without 'to' is a broadcast, the server's to route
        self._events.append(StanzaReceived(elem))

    def _c2s_server_iq(self, elem: ET.Element, domain: str) -> None:
        iq_type = elem.get("type")
        reply = element(qname(NS_CLIENT, "iq"), {"type": "result", "id": elem.get("id")})
        child = elem[0] if len(elem) else None
        child_tag = child.tag if child is not None else ""
        if iq_type in ("result", "error"):
            return
        if child_tag == qname(NS_BIND, "bind") and iq_type == "set" and self.jid is None:
            resource_el = child.find(qname(NS_BIND, "resource")) if child is not None else None
            resource = (resource_el.text or "").strip() if resource_el is not None else ""
            self.jid = f"{self._c2s_user}@{domain}/{resource or self.stream_id}"
            reply.append(
                element(
                    qname(NS_BIND, "bind"), children=[element(qname(NS_BIND, "jid"), text=self.jid)]
                )
            )
            self.state = State.READY
            self.stream.send(reply)
            self._events.append(Authenticated(domain, "sasl-plain", jid=self.jid))
            return
        if self.jid is not None:
            reply.set("to", self.jid)
        if child_tag == qname(NS_ROSTER, "query") and iq_type == "get":
            reply.append(element(qname(NS_ROSTER, "query")))
        elif child_tag in (qname(NS_SESSION, "session"), qname("urn:xmpp:ping", "ping")):
            pass
        else:
            reply.set("type", "error")
            reply.append(
                element(
                    qname(NS_CLIENT, "error"),
                    {"type": "cancel"},
                    children=[element(qname(NS_STANZA_ERRORS, "service-unavailable"))],
                )
            )
        if self.state is State.READY or child_tag:
            self.stream.send(reply)

    # ------------------------------------------------------------------ initiating side
    def _initiating_element(self, elem: ET.Element, ns: str, local: str, now: float) -> None:
        if ns == NS_STREAMS and local == "features":
            self._on_features(elem, now)
        elif ns == NS_TLS and local == "proceed":
            self._events.append(TlsRequested(server_side=False, server_name=self.remote_domain))
        elif ns == NS_TLS and local == "failure":
            self._auth_failed("the peer refused STARTTLS")
        elif ns == NS_SASL and local == "success":
            self.sasl_done = True
            self.stream.restart(now)
            self.state = State.AWAIT_HEADER
            self._send_header(now)
        elif ns == NS_SASL and local == "failure":
            self.external_failed = True
            if self.config.allow_dialback and self.peer_offers_dialback:
                self._send_db_result()
            else:
                self._auth_failed("SASL EXTERNAL failed and dialback is not available")
        elif ns == NS_DIALBACK and local == "result":
            if elem.get("type") == "valid":
                self.state = State.READY
                self._events.append(Authenticated(self.remote_domain or "", "dialback"))
            else:
                self._auth_failed(f"dialback result {elem.get('type') or 'missing type'}")
        elif ns == NS_DIALBACK and local == "verify":
            self._events.append(
                DialbackVerifyAnswered(
                    originating=(elem.get("from") or "").lower(),
                    receiving=(elem.get("to") or "").lower(),
                    stream_id=elem.get("id") or "",
                    valid=elem.get("type") == "valid",
                )
            )
            self.close()
        elif self.state is State.READY and ns == NS_SM and self.role is Role.GATEWAY_CLIENT:
            self._sm_element(local, elem)
        elif self.state is State.READY and ns == NS_SERVER and local in STANZA_TAGS:
            if self.role is Role.INITIATING:
                self._outbound_stanza(elem)
            else:  # the Front End's gateway: the Edge checked these on their way in
                if self._sm_requested:
                    self._sm_in += 1
                self._events.append(StanzaReceived(elem))
        else:
            self._fail(
                StreamErrorCondition.UNSUPPORTED_STANZA_TYPE, "unexpected element on this stream"
            )

    def _outbound_stanza(self, elem: ET.Element) -> None:
        """A stanza the peer sent on our outbound stream: it may only come from the domain we
        dialled (and authenticated), to the domain we authenticated as."""
        from_, to = elem.get("from"), elem.get("to")
        if not from_ or not to:
            self._fail(
                StreamErrorCondition.IMPROPER_ADDRESSING, "stanzas need both 'from' and 'to'"
            )
        if domain_of(from_) != (self.remote_domain or "").lower():
            self._fail(
                StreamErrorCondition.INVALID_FROM,
                "'from' is not the domain authenticated on this stream",
            )
        if domain_of(to) != (self.local_domain or "").lower():
            self._fail(
                StreamErrorCondition.HOST_UNKNOWN,
                "'to' is not the domain authenticated on this stream",
            )
        self._events.append(StanzaReceived(elem))

    def _auth_failed(self, reason: str) -> None:
        self._events.append(AuthenticationFailed(reason))
        self.stream.close()
        self.state = State.CLOSED

    def _on_features(self, features: ET.Element, now: float) -> None:
        if self.role is Role.GATEWAY_CLIENT:
            self.state = State.READY
            if features.find(qname(NS_SM, "sm")) is not None:
                self.stream.send(element(qname(NS_SM, "enable")))
                self._sm_requested = True
            self._events.append(Authenticated(self.remote_domain or "", "mtls"))
            return
        if not self.tls:
            if features.find(qname(NS_TLS, "starttls")) is not None:
                self.stream.send(element(qname(NS_TLS, "starttls")))
                self.state = State.NEGOTIATING
                return
            self._events.append(AuthenticationFailed("the peer does not offer STARTTLS"))
            self._fail(StreamErrorCondition.POLICY_VIOLATION, "STARTTLS is required")
        if self.role is Role.VERIFYING:
            assert self.verify_request is not None
            their_id, key = self.verify_request
            self.stream.send(
                element(
                    qname(NS_DIALBACK, "verify"),
                    {"from": self.local_domain, "to": self.remote_domain, "id": their_id},
                    text=key,
                )
            )
            self.state = State.NEGOTIATING
            return
        if self.sasl_done:
            self.state = State.READY
            self._events.append(Authenticated(self.remote_domain or "", "sasl-external"))
            return
        if features.find(qname(NS_DIALBACK_FEATURE, "dialback")) is not None:
            self.peer_offers_dialback = True
        mechanisms = [
            (m.text or "").strip()
            for m in features.iterfind(
                f"{qname(NS_SASL, 'mechanisms')}/{qname(NS_SASL, 'mechanism')}"
            )
        ]
        self.state = State.NEGOTIATING
        if "EXTERNAL" in mechanisms and self.can_external and self.config.allow_external:
            payload = base64.b64encode((self.local_domain or "").encode()).decode()
            self.stream.send(
                element(qname(NS_SASL, "auth"), {"mechanism": "EXTERNAL"}, text=payload)
            )
            return
        if self.config.allow_dialback and self.peer_offers_dialback:
            self._send_db_result()
            return
        self._auth_failed("no authentication method in common (SASL EXTERNAL, dialback)")

    def _send_db_result(self) -> None:
        if not self.config.dialback_secret:
            self._auth_failed("no dialback secret configured")
            return
        if not self.their_stream_id:
            self._auth_failed("the peer's stream has no id: dialback impossible")
            return
        key = dialback_key(
            self.config.dialback_secret,
            self.remote_domain or "",
            self.local_domain or "",
            self.their_stream_id,
        )
        self.stream.send(
            element(
                qname(NS_DIALBACK, "result"),
                {"from": self.local_domain, "to": self.remote_domain},
                text=key,
            )
        )
