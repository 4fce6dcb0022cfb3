"""A SIP domain server: registrar with digest, a proxy to registered users, presence, federation.

The Front End, the partner Edge and the public IM provider emulators are this one server with
different settings: the Front End sends everything for other domains to the Edge's internal
interface; the partner and PIC find the other domain's Edge by DNS SRV
(``_sipfederationtls._tcp.<domain>``) and connect over MTLS with their own certificate. Every
connection (inbound or outbound) whose certificate names a host is reused to reach that host.

What it does: REGISTER with digest authentication (qop=auth) against the users of its settings,
storing the connection, Contact and Path (RFC 3327) of each binding; requests to a registered
user go to that binding (through the Edge when the user registered through it); 404 with
``ms-diagnostics: 4005`` for unknown users, 480 when not registered; SUBSCRIBE to ``presence`` is
answered 200 with a NOTIFY carrying PIDF (open while the user is registered, NOTIFYs again on
changes); OPTIONS to the server gets 200; SERVICE requests go to
:attr:`DomainServer.service_handlers`
keyed by Content-Type (the A/V team's MRAS handler plugs in there). INVITE/ACK/BYE pass through
with their SDP untouched.

Registrations expire (Expires honoured, at most 3600 s) and end with their connection.

A Lync client (it lists ``msrtc-event-categories`` in Supported; SIPE is one) gets what a Lync
Server 2013 Front End gives it (:mod:`simulator.sip.emulators.lync`, [MS-PRES]): roaming
contacts, roaming self data and provisioning, batch category subscriptions (``state`` of local
contacts, ``resubscribe`` for the others), and its published ``state`` as its availability.
Domains in :attr:`DomainServer.gateways` (the XMPP gateway) get MESSAGEs and presence
subscriptions handed over, and IM sessions (INVITE) answered on their behalf; a request from a
federated sender the Edge marks unverified reaches only users who list that sender.

What it trusts (issue 12): a request that came from outside through the Edge (it carries the
Edge's ``ms-edge-proxy-message-trust``, [MS-SIPRE] section 2.2.15, on the Edge's connection) has
its Route entries refused with 403 rather than followed; a next hop it cannot reach is answered
504 "Next hop unreachable" without the reason (which would turn the server into an internal port
scanner for the caller; the log has it); SERVICE handlers (MRAS) get only requests whose sender is
authenticated: verified by the Edge, or registered on the very connection the request came on.

Not implemented: forking to several bindings (the newest one wins), authentication of requests
other than REGISTER, transaction timers (the Edge has them; the emulators pass answers through).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from xml.sax.saxutils import escape

from sipmessage import Request, Response

from simulator import aioloop
from simulator.dns.resolver import LabResolver, ResolutionError
from simulator.sip.aio import ListenerSpec, SipListener, SipProtocol, connect_once, open_sip
from simulator.sip.build import (
    first_value,
    new_branch,
    new_tag,
    params,
    pop_first,
    pop_via,
    prepend,
    push_via,
    response_for,
    short_hash,
    top_via,
    uri_host,
    uri_of,
    uri_user,
)
from simulator.sip.emulators import lync
from simulator.sip.emulators.auth import Authenticator
from simulator.sip.ntlm import NtlmServer
from simulator.sip.proxy import TRUST_HEADER
from simulator.sip.validate import number
from simulator.tls import tls_failure_reason

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, SUBSCRIBE, NOTIFY, REGISTER, SERVICE"
ROAMING_CONTACTS = "vnd-microsoft-roaming-contacts"
SERVER = "RTC/5.0"
"""What a Lync Server 2013 Front End says in ``Server`` (SIPE reads its version from it)."""
MRAS_TYPE = "application/msrtc-media-relay-auth+xml"
NOT_FOUND = '4005;reason="Destination URI either not enabled for SIP or does not exist"'

MAX_EXPIRES = 3600

ServiceHandler = Callable[[Request], "Response | Awaitable[Response]"]


class GatewayLink(Protocol):
    """Another network reached through a gateway (Lync's XMPP gateway): what the Front End
    hands it (:mod:`simulator.sip.emulators.xmpp_bridge` wires the XMPP one)."""

    async def send_message(self, from_uri: str, to_address: str, text: str) -> None:
        """Send a MESSAGE's text; return once the other network has it, raise
        :class:`GatewayRefused` when it does not (``TimeoutError``, ``ConnectionError``)."""
        ...

    def subscribe(self, from_uri: str, to_address: str) -> None:
        """``from_uri`` subscribed to ``to_address``'s presence (SIP SUBSCRIBE)."""
        ...

    def unsubscribe(self, from_uri: str, to_address: str) -> None: ...


class GatewayRefused(Exception):
    """The other network refused or lost a MESSAGE: the SIP status and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass
class DomainConfig:
    domain: str
    """The SIP domain served (``contoso.lab``)."""
    fqdn: str
    """This server's own name (Route/Via; its certificate carries it)."""
    users: dict[str, str]
    """user name -> password (digest)."""
    federation_fqdn: str | None = None
    """Send every other domain to this host (Front End: the Edge's internal FQDN); None: DNS SRV."""
    federation_port: int = 5061
    trusted_peer_names: tuple[str, ...] = ()
    """Certificate names of peers allowed to send for other domains (empty: any verified cert)."""
    ntlm: bool = False
    """Offer [MS-SIPAE] NTLM besides digest and sign for NTLM endpoints (the Front End)."""
    contacts: dict[str, list[str]] = field(default_factory=dict)
    """user -> the SIP URIs of their contact list, served as Lync's roaming contacts."""


@dataclass
class Binding:
    proto: SipProtocol
    contact: str
    path: list[str]
    expires_at: float = float("inf")
    """Loop time after which the binding is gone (RFC 3261 10.3 step 7)."""
    sa: str | None = None
    """The opaque of the endpoint's NTLM security association (its messages are signed)."""


@dataclass
class Subscription:
    subscriber: str
    """The subscriber's From value (with tag): our NOTIFY's To."""
    notifier: str
    """Our To value (with tag): the NOTIFY's From."""
    call_id: str
    target: str
    """Where the NOTIFY goes (the subscriber's Contact URI)."""
    route: list[str]
    cseq: int = 0
    categories: bool = False
    """Notify with [MS-PRES] categories (a Lync client's batch subscription), not PIDF."""


class DomainServer:
    """Asyncio SIP server for one domain."""

    def __init__(
        self,
        config: DomainConfig,
        *,
        listeners: list[tuple[str, int, ssl.SSLContext]],
        client_context: ssl.SSLContext,
        resolver: LabResolver,
        label: str,
    ) -> None:
        self.config = config
        self.listen_specs = listeners
        self.client_context = client_context
        self.resolver = resolver
        self.label = label
        self.listeners: list[SipListener] = []
        self.bound: list[tuple[str, int]] = []
        self.our_hosts = {config.fqdn.lower(), config.domain.lower()}
        self.conns: dict[int, SipProtocol] = {}
        self.bindings: dict[str, list[Binding]] = {}
        self.subscriptions: dict[str, list[Subscription]] = {}
        ntlm = (
            NtlmServer(targetname=config.fqdn, users=config.users, domain=config.domain)
            if config.ntlm
            else None
        )
        self.auth = Authenticator(config.domain, config.users, ntlm)
        self.service_handlers: dict[str, ServiceHandler] = {}
        """Content-Type -> handler for SERVICE requests (e.g. MRAS credentials)."""
        self.gateways: dict[str, GatewayLink] = {}
        """Domain -> the gateway for MESSAGEs and presence subscriptions to that domain (the
        XMPP gateway: Lync reaches XMPP partners through it, not through SIP federation)."""
        self.presence_listeners: list[Callable[[str, bool], None]] = []
        """Told (``sip:user@domain``, available) whenever a local user signs in or out."""
        self.published: dict[str, int] = {}
        """Local users -> the availability their Lync client published ([MS-PRES] state)."""
        self.remote_presence: dict[str, bool] = {}
        """Gateway contacts (``sip:romeo@jabber.lab``) -> available, as the gateway reported."""
        self.received: list[Request] = []
        """Requests handled by the server itself (for tests), newest last, bounded."""
        self._connecting: dict[str, asyncio.Future[SipProtocol]] = {}
        self._tasks = aioloop.Tasks()

    async def start(self) -> list[tuple[str, int]]:
        for address, port, ctx in self.listen_specs:
            listener = SipListener(
                ListenerSpec(address, port, ctx, f"{self.label}/{port}", self._accepted, self)
            )
            self.bound.append(await listener.start())
            self.listeners.append(listener)
            self.our_hosts.add(address)
        return self.bound

    async def stop(self) -> None:
        for listener in self.listeners:
            await listener.stop()
        for proto in list(self.conns.values()):
            proto.close()
        self._tasks.cancel()

    def _accepted(self, proto: SipProtocol) -> None:
        self.conns[proto.id] = proto

    def on_close(self, proto: SipProtocol) -> None:
        self.conns.pop(proto.id, None)
        for aor, bindings in list(self.bindings.items()):
            kept = [b for b in bindings if b.proto is not proto]
            if len(kept) != len(bindings):
                self.bindings[aor] = kept
                if not kept:
                    del self.bindings[aor]
                    self.auth.unbind(aor)
                    self._notify_all(aor)

    # ------------------------------------------------------------------ requests

    def on_request(self, proto: SipProtocol, request: Request) -> None:
        method = request.method
        # our own Route entries
        while (routes := request.headers.getlist("Route")) and uri_host(
            uri_of(routes[0])
        ) in self.our_hosts:
            pop_first(request, "Route")
        if request.headers.getlist("Route"):
            if self._from_edge(proto, request):
                self._answer(
                    proto,
                    request,
                    403,
                    headers=[
                        (
                            "Warning",
                            f'399 {self.config.fqdn} "Route entries from outside are not followed"',
                        )
                    ],
                )
                return
            self._forward(proto, request)
            return
        host = request.uri.host.lower()
        user = request.uri.user
        local = host in self.our_hosts
        if method not in ("REGISTER", "ACK", "CANCEL") and (why := self.auth.check(request)):
            log.info("%s: %s refused: %s", self.label, method, why)
            self._answer(proto, request, 401, headers=self.auth.challenge())
            return
        if local and method == "REGISTER":
            self._register(proto, request)
            return
        if local and (why := self._unverified(proto, request)):
            log.info("%s: %s refused: %s", self.label, method, why)
            warning = f'399 {self.config.fqdn} "{why}"'
            self._answer(proto, request, 403, headers=[("Warning", warning)])
            return
        if local and method == "SERVICE":
            self._tasks.spawn(self._service(proto, request))
            return
        if local and (user is None or host != self.config.domain) and method == "OPTIONS":
            self._answer(
                proto,
                request,
                200,
                headers=[
                    (
                        "Allow",
                        ALLOW,
                    )
                ],
            )
            return
        event = (request.headers.get("Event") or "").split(";")[0].strip().lower()
        if method == "MESSAGE" and host in self.gateways:
            self._tasks.spawn(self._to_gateway(proto, request, self.gateways[host]))
            return
        if method == "SUBSCRIBE" and host in self.gateways and event == "presence":
            self._subscribe_gateway(proto, request, self.gateways[host])
            return
        if host in self.gateways and method in ("INVITE", "ACK", "BYE", "CANCEL", "INFO"):
            self._gateway_session(proto, request)
            return
        if local and method == "SUBSCRIBE" and event == "presence":
            ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype == lync.BATCH_TYPE and _same_user(request):
                self._subscribe_batch(proto, request)
            else:
                self._subscribe(proto, request)
            return
        if local and method == "SUBSCRIBE" and event == ROAMING_CONTACTS:
            self._subscribe_self(proto, request, event, *self._contact_list(request))
            return
        if local and method == "SUBSCRIBE" and event == lync.ROAMING_SELF:
            aor = uri_of(request.headers["To"]).split(";", 1)[0].lower()
            self._subscribe_self(proto, request, event, *lync.roaming_self(aor))
            return
        if local and method == "SUBSCRIBE" and event == lync.PROVISIONING_V2:
            mras = MRAS_TYPE in self.service_handlers
            self._subscribe_self(
                proto, request, event, *lync.provisioning(self.config.domain, mras=mras)
            )
            return
        self._forward(proto, request)

    def _answer(
        self,
        proto: SipProtocol,
        request: Request,
        code: int,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        if request.method == "ACK":
            return
        self._send(proto, response_for(request, code, reason, headers=headers or [], body=body))

    def _send(
        self, proto: SipProtocol, message: Request | Response, binding_sa: str | None = None
    ) -> None:
        """Send ``message`` on ``proto``, signed when it goes to an NTLM endpoint."""
        self.auth.sign(message, binding_sa)
        proto.send(message)

    def _register(self, proto: SipProtocol, request: Request) -> None:
        cfg = self.config
        aor_uri = uri_of(request.headers["To"])
        user = aor_uri.split(":", 1)[-1].split("@", 1)[0] if "@" in aor_uri else ""
        if uri_host(aor_uri) != cfg.domain:
            self._answer(proto, request, 403, "Not our domain")
            return
        verdict = self.auth.register(request)
        if verdict.challenge is not None or verdict.user != user.lower():
            log.info("%s: REGISTER %s: 401 (%s)", self.label, aor_uri, verdict.reason or "user")
            self._answer(proto, request, 401, headers=verdict.challenge or self.auth.challenge())
            return
        if verdict.sa is not None:
            self.auth.bind(request, verdict.sa)
        aor = f"sip:{user}@{cfg.domain}"
        contacts = request.headers.getlist("Contact")
        expires = request.headers.get("Expires")
        if (contacts and "expires=0" in contacts[0].replace(" ", "")) or (
            expires is not None and expires.strip() == "0"
        ):
            # RFC 3261 10.2.2: "*" removes every binding of the AOR, a Contact with expires 0
            # only its own (a client signing out late must not sign out the user's others)
            if contacts and contacts[0].strip() != "*":
                gone = {uri_of(c) for c in contacts}
                kept = [b for b in self.live_bindings(aor) if b.contact not in gone]
            else:
                kept = []
            if kept:
                self.bindings[aor] = kept
            else:
                self.bindings.pop(aor, None)
                self.auth.unbind(aor)
            self._answer(proto, request, 200)
            self._notify_all(aor)
            return
        contact = contacts[0] if contacts else f"<{aor}>"
        path = list(request.headers.getlist("Path"))
        asked = params(contact).get("expires") or expires or str(MAX_EXPIRES)
        seconds = min(number(asked) or MAX_EXPIRES, MAX_EXPIRES)
        now = asyncio.get_running_loop().time()
        binding = Binding(
            proto, uri_of(contact), path, now + seconds, verdict.sa.opaque if verdict.sa else None
        )
        kept = [b for b in self.live_bindings(aor) if b.contact != binding.contact]
        self.bindings[aor] = [*kept, binding]
        log.info(
            "%s: registered %s via %s%s",
            self.label,
            aor,
            proto.peer[0],
            " (through the Edge)" if path else "",
        )
        events = ["presence", ROAMING_CONTACTS]
        headers = [
            ("Contact", f"{contact.split(';expires')[0]};expires={seconds}"),
            ("Expires", str(seconds)),
        ]
        if _supports(request, "msrtc-event-categories"):
            # a Lync client: enhanced presence ([MS-PRES]) with batch subscriptions; it reads
            # these headers one value each (SIPE compares whole header values)
            headers += [("Supported", "msrtc-event-categories"), ("Supported", "adhoclist")]
            events += [lync.ROAMING_SELF, lync.PROVISIONING_V2]
        headers += [("Allow-Events", ",".join(events)), ("Server", SERVER)]
        if path:
            headers.append(("Path", ", ".join(path)))
            # a Lync client reads this: it signed in through the Access Edge (remote user)
            headers.append(("ms-user-logon-data", "RemoteUser"))
        self._answer(proto, request, 200, headers=headers)
        self._notify_all(aor)

    def _unverified(self, proto: SipProtocol, request: Request) -> str | None:
        """Why an unverified federated sender may not reach this user, or None.

        The Edge marks what a partner's users send ``ms-source-verified-user=unverified`` when
        that partner's verification level says so ([MS-SIPRE] section 2.2.15; New-CsAllowedDomain
        -VerificationLevel). This Front End then lets such a request reach a user only when the
        sender is on the user's contact list (an emulator policy, as a spam control).
        """
        if request.method not in ("MESSAGE", "INVITE", "SUBSCRIBE") or not self._is_edge(proto):
            return None
        trust = first_value(request.headers.get(TRUST_HEADER) or "")[0]
        fields = dict(part.strip().partition("=")[::2] for part in trust.split(";"))
        if fields.get("ms-source-network") not in ("federation", "publiccloud"):
            return None
        if fields.get("ms-source-verified-user") == "verified":
            return None
        sender = uri_of(request.headers.get("From") or "").split(";", 1)[0].lower()
        contacts = self.config.contacts.get((request.uri.user or "").lower(), [])
        if sender in (c.lower() for c in contacts):
            return None
        return "Unverified sender is not on the user's contact list"

    def _from_edge(self, proto: SipProtocol, request: Request) -> bool:
        """True when ``request`` came from outside through the Edge (or claims to)."""
        return request.headers.get(TRUST_HEADER) is not None or self._is_edge(proto)

    def _is_edge(self, proto: SipProtocol) -> bool:
        edge = self.config.federation_fqdn
        return edge is not None and proto.peer_cert is not None and proto.peer_cert.matches(edge)

    def authenticated_sender(self, proto: SipProtocol, request: Request) -> str | None:
        """``sip:user@domain`` of the sender when it is authenticated, else None.

        From outside, the Edge vouches for it: ``ms-source-verified-user=verified`` in its trust
        header, believed only on the Edge's own connection. Inside, the sender registered (with
        digest) on the connection the request came on.
        """
        sender = uri_of(request.headers.get("From") or "").split(";", 1)[0].lower()
        if self._is_edge(proto):
            trust = first_value(request.headers.get(TRUST_HEADER) or "")[0]
            fields = dict(part.strip().partition("=")[::2] for part in trust.split(";"))
            verified = fields.get("ms-source-verified-user") == "verified"
            user = fields.get("ms-source-type") == "InternetUser"  # [MS-SIPRE] 2.2.15
            return sender if verified and user else None
        if request.headers.get(TRUST_HEADER) is not None:
            return None  # a trust header that did not come from the Edge
        if any(b.proto is proto for b in self.live_bindings(sender)):
            return sender
        return None

    async def _service(self, proto: SipProtocol, request: Request) -> None:
        if self.authenticated_sender(proto, request) is None:
            warning = f'399 {self.config.fqdn} "SERVICE needs an authenticated sender"'
            self._answer(proto, request, 403, headers=[("Warning", warning)])
            return
        ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype == lync.PUBLISH_TYPE:
            self._publish(proto, request)
            return
        handler = self.service_handlers.get(ctype)
        if handler is None:
            self._answer(
                proto,
                request,
                415,
                headers=[("Accept", ", ".join(self.service_handlers) or "none")],
            )
            return
        result = handler(request)
        if inspect.isawaitable(result):
            result = await result
        assert isinstance(result, Response)
        self._send(proto, result)

    def _gateway_session(self, proto: SipProtocol, request: Request) -> None:
        """A Lync IM session with a contact of the gateway's network: the gateway is the other
        end of the INVITE dialog (200 with an IM SDP answer), whose MESSAGEs it carries to the
        contact (:meth:`_to_gateway`); BYE, INFO (typing) and CANCEL end or pass quietly.
        Sessions other than IM get 488: the gateway carries instant messages only."""
        if request.method == "ACK":
            return
        if request.method != "INVITE":
            self._answer(proto, request, 200)
            return
        sdp = request.body.decode("latin-1", "replace")
        if "m=message" not in sdp:
            warning = f'399 {self.config.fqdn} "The XMPP gateway carries instant messages only"'
            self._answer(proto, request, 488, headers=[("Warning", warning)])
            return
        address = self.bound[0][0] if self.bound else "0.0.0.0"
        answer = (
            f"v=0\r\no=- 0 0 IN IP4 {address}\r\ns=session\r\nc=IN IP4 {address}\r\n"
            "t=0 0\r\nm=message 5061 sip null\r\na=accept-types:text/plain text/html\r\n"
        ).encode()
        target = uri_of(request.headers["To"]).split(";", 1)[0]
        headers = [
            (name, value)
            for value in request.headers.getlist("Record-Route")
            for name in ("Record-Route",)
        ]
        headers += [
            ("Contact", f"<{target};transport=tls>"),
            ("Content-Type", "application/sdp"),
        ]
        self._answer(proto, request, 200, headers=headers, body=answer)

    def _publish(self, proto: SipProtocol, request: Request) -> None:
        """A Lync client publishes its state ([MS-PRES] category publication, SERVICE to its
        own URI): kept as its availability; its watchers are told."""
        aor = f"sip:{request.uri.user or ''}@{self.config.domain}".lower()
        sender = uri_of(request.headers.get("From") or "").split(";", 1)[0].lower()
        if sender != aor:
            self._answer(proto, request, 403, "Only your own presence")
            return
        availability = lync.published_availability(request.body)
        self._answer(proto, request, 200)
        if availability is not None and self.published.get(aor) != availability:
            self.published[aor] = availability
            self._notify_all(aor)

    async def _to_gateway(self, proto: SipProtocol, request: Request, link: GatewayLink) -> None:
        """A MESSAGE for the gateway's network: 200 only once that network has it."""
        from_uri = uri_of(request.headers.get("From") or "").split(";", 1)[0]
        to_address = f"{request.uri.user}@{request.uri.host}"
        ctype = (request.headers.get("Content-Type") or "text/plain").split(";")[0].strip()
        if not ctype.lower().startswith("text/"):  # typing notifications and the like
            self._answer(proto, request, 200)
            return
        text = _im_text(request)
        status, reason, warning = 200, None, None
        try:
            await link.send_message(from_uri, to_address, text)
        except GatewayRefused as exc:
            status, warning = exc.status, exc.reason
        except ConnectionError as exc:
            log.warning("XMPP gateway unavailable: %s", exc)
            status, reason = 503, "XMPP gateway unavailable"
        except TimeoutError:
            status, warning = 504, f"{request.uri.host} did not confirm delivery"
        except Exception:
            log.exception("XMPP gateway handler failed")
            status, reason = 500, "XMPP gateway failed"
        headers = [("Warning", f'399 {self.config.fqdn} "{warning}"')] if warning else []
        if status != 200:
            log.info("%s: MESSAGE to %s: %d %s", self.label, to_address, status, warning or reason)
        self._answer(proto, request, status, reason, headers=headers)

    def deliver_message(self, from_uri: str, to_uri: str, text: str) -> None:
        """Originate a MESSAGE from ``from_uri`` (e.g. an XMPP user) to a local user.

        Raises :class:`LookupError` when the user is unknown or has no live registration.
        """
        user = uri_user(to_uri) or ""
        aor = f"sip:{user}@{self.config.domain}"
        if user not in self.config.users:
            raise LookupError(f"{to_uri} is not a user of {self.config.domain}")
        if not self.live_bindings(aor):
            raise LookupError(f"{to_uri} is not registered")
        body = text.encode()
        request = Request("MESSAGE", _uri(aor), body)
        h = request.headers
        h.add("Via", f"SIP/2.0/TLS {self.config.fqdn}:5061;branch={new_branch('-uac')}")
        h.add("Max-Forwards", "70")
        h.add("From", f"<{from_uri}>;tag={new_tag()}")
        h.add("To", f"<{aor}>")
        h.add("Call-ID", f"{new_tag()}@{self.config.fqdn}")
        h.add("CSeq", "1 MESSAGE")
        h.add("Content-Type", "text/plain; charset=utf-8")
        h.add("Content-Length", str(len(body)))
        self._route_out(request, None)

    # ------------------------------------------------------------------ presence

    def _subscribe(self, proto: SipProtocol, request: Request) -> None:
        target = uri_of(request.headers["To"]).split(";", 1)[0]
        name = target.split(":", 1)[-1].split("@", 1)[0]
        if name not in self.config.users:
            self._not_found(proto, request)
            return
        expires = (request.headers.get("Expires") or "3600").strip()
        self._accept_subscription(proto, request, f"sip:{name}@{self.config.domain}", expires)

    def _accept_subscription(
        self, proto: SipProtocol, request: Request, aor: str, expires: str
    ) -> None:
        """200 to a presence SUBSCRIBE for ``aor`` (the first NOTIFY piggy-backed when the
        subscriber supports it, as Lync does), and the subscription kept for later NOTIFYs;
        ``Expires: 0`` ends it."""
        tag = new_tag()
        to_value = request.headers["To"]
        if "tag=" not in to_value:
            to_value = f"{to_value};tag={tag}"
        headers = [
            ("Expires", expires),
            ("Contact", f"<sip:{self.config.fqdn}:5061;transport=tls>"),
        ]
        piggyback = expires != "0" and _supports(request, "ms-piggyback-first-notify")
        body = b""
        if piggyback:  # the first NOTIFY's content rides on the 200, as Lync does
            body = self._pidf(aor)
            headers += [
                ("Event", "presence"),
                ("Content-Type", "application/pidf+xml"),
                ("ms-piggyback-cseq", "1"),
            ]
        self._send(proto, response_for(request, 200, to_tag=tag, headers=headers, body=body))
        call_id = request.headers["Call-ID"]
        if expires == "0":  # the dialog ends: a batch subscription's entries too
            for others in self.subscriptions.values():
                others[:] = [s for s in others if s.call_id != call_id]
            return
        subs = self.subscriptions.setdefault(aor, [])
        subs[:] = [s for s in subs if s.call_id != call_id][-50:]
        contact = request.headers.getlist("Contact")
        sub = Subscription(
            subscriber=request.headers["From"],
            notifier=to_value,
            call_id=call_id,
            target=uri_of(contact[0]) if contact else uri_of(request.headers["From"]),
            route=list(request.headers.getlist("Record-Route")),
            cseq=1 if piggyback else 0,
        )
        subs.append(sub)
        if not piggyback:
            self._notify(aor, sub)

    def _subscribe_gateway(self, proto: SipProtocol, request: Request, link: GatewayLink) -> None:
        """SUBSCRIBE to a contact of the gateway's network: the gateway subscribes and probes
        (:rfc:`6121`); NOTIFYs follow each presence it reports; Expires 0 unsubscribes."""
        target = uri_of(request.headers["To"]).split(";", 1)[0].lower()
        subscriber = uri_of(request.headers["From"]).split(";", 1)[0].lower()
        to_address = target.removeprefix("sip:")
        expires = (request.headers.get("Expires") or "3600").strip()
        try:
            if expires == "0":
                link.unsubscribe(subscriber, to_address)
            else:
                link.subscribe(subscriber, to_address)
        except ConnectionError as exc:
            log.warning("XMPP gateway unavailable: %s", exc)
            self._answer(proto, request, 503, "XMPP gateway unavailable")
            return
        self.remote_presence.setdefault(target, False)
        self._accept_subscription(proto, request, target, expires)

    def _contact_list(self, request: Request) -> tuple[str, bytes]:
        """Lync's roaming contact list ([MS-SIP] ``vnd-microsoft-roaming-contacts``): the
        user's own list, from the ``contacts`` setting."""
        user = uri_user(uri_of(request.headers["To"])) or ""
        contacts = "".join(  # the uri attribute carries no "sip:" (SIPE adds it back)
            f'<contact uri="{escape(uri.removeprefix("sip:"))}" name="" groups="1" '
            'subscribed="true" externals=""/>'
            for uri in self.config.contacts.get(user.lower(), [])
        )
        body = (
            '<contactList deltaNum="1" xmlns="http://schemas.microsoft.com/2006/09/sip/'
            f'contactlist"><group id="1" name="~" externals=""/>{contacts}</contactList>'
        ).encode()
        return "application/vnd-microsoft-roaming-contacts+xml", body

    def _subscribe_self(
        self, proto: SipProtocol, request: Request, event: str, content_type: str, body: bytes
    ) -> None:
        """A subscription of a user to their own data (contact list, roaming self data,
        provisioning): the first notification piggy-backed on the 200 when the client supports
        it ([MS-SIP] piggy-backed first notification), else in a NOTIFY."""
        aor = uri_of(request.headers["To"]).split(";", 1)[0]
        if uri_of(request.headers["From"]).split(";", 1)[0].lower() != aor.lower():
            self._answer(proto, request, 403, "Only your own data")
            return
        tag = new_tag()
        to_value = request.headers["To"]
        if "tag=" not in to_value:
            to_value = f"{to_value};tag={tag}"
        expires = (request.headers.get("Expires") or "3600").strip()
        if _supports(request, "ms-piggyback-first-notify"):
            headers = [
                ("Expires", expires),
                ("Event", event),
                ("Content-Type", content_type),
                ("ms-piggyback-cseq", "1"),
            ]
            self._send(proto, response_for(request, 200, to_tag=tag, headers=headers, body=body))
            return
        self._send(proto, response_for(request, 200, to_tag=tag, headers=[("Expires", expires)]))
        contact = request.headers.getlist("Contact")
        notify = Request("NOTIFY", _uri(uri_of(contact[0]) if contact else aor), body)
        h = notify.headers
        h.add("Via", f"SIP/2.0/TLS {self.config.fqdn}:5061;branch={new_branch('-uac')}")
        h.add("Max-Forwards", "70")
        for value in request.headers.getlist("Record-Route"):
            h.add("Route", value)
        h.add("From", to_value)
        h.add("To", request.headers["From"])
        h.add("Call-ID", request.headers["Call-ID"])
        h.add("CSeq", "1 NOTIFY")
        h.add("Event", event)
        state = "terminated" if expires == "0" else f"active;expires={expires}"
        h.add("Subscription-State", state)
        h.add("Content-Type", content_type)
        h.add("Content-Length", str(len(body)))
        self._route_out(notify, None)

    def _subscribe_batch(self, proto: SipProtocol, request: Request) -> None:
        """A Lync client's batch category subscription ([MS-PRES]; ``batchSub`` body): the
        state of the contacts this server hosts (and then NOTIFYs as it changes), and
        ``resubscribe`` for the others, which the client subscribes to at their own server."""
        owner = uri_of(request.headers["From"]).split(";", 1)[0].lower()
        expires = (request.headers.get("Expires") or "3600").strip()
        local: dict[str, int] = {}
        remote: list[str] = []
        for uri in lync.batch_resources(request.body)[:500]:
            aor = uri.lower()
            if uri_host(aor) == self.config.domain and (uri_user(aor) or "") in self.config.users:
                local[aor] = self.availability(aor)
            else:
                remote.append(aor)
        tag = new_tag()
        to_value = request.headers["To"]
        if "tag=" not in to_value:
            to_value = f"{to_value};tag={tag}"
        ctype, body = lync.batch_notification(owner, local, remote, _now_iso())
        headers = [
            ("Expires", expires),
            ("Contact", f"<sip:{self.config.fqdn}:5061;transport=tls>"),
        ]
        piggyback = _supports(request, "ms-piggyback-first-notify") and expires != "0"
        if piggyback:
            headers += [("Event", "presence"), ("Content-Type", ctype), ("ms-piggyback-cseq", "1")]
        self._send(
            proto,
            response_for(
                request, 200, to_tag=tag, headers=headers, body=body if piggyback else b""
            ),
        )
        call_id = request.headers["Call-ID"]
        contact = request.headers.getlist("Contact")
        for aor in local:
            subs = self.subscriptions.setdefault(aor, [])
            subs[:] = [s for s in subs if s.call_id != call_id][-50:]
            if expires == "0":
                continue
            sub = Subscription(
                subscriber=request.headers["From"],
                notifier=to_value,
                call_id=call_id,
                target=uri_of(contact[0]) if contact else owner,
                route=list(request.headers.getlist("Record-Route")),
                cseq=1 if piggyback else 0,
                categories=True,
            )
            subs.append(sub)
            if not piggyback:
                self._notify(aor, sub)

    def live_bindings(self, aor: str) -> list[Binding]:
        """The bindings of ``aor`` that have not expired."""
        now = asyncio.get_running_loop().time()
        bindings = [b for b in self.bindings.get(aor, []) if b.expires_at > now]
        if bindings:
            self.bindings[aor] = bindings
        else:
            self.bindings.pop(aor, None)
        return bindings

    def available(self, aor: str) -> bool:
        """Presence of ``aor``: a local user is available while registered (and not published
        offline); a gateway contact as the gateway last reported."""
        if aor in self.remote_presence:
            return self.remote_presence[aor]
        return self.availability(aor) < lync.OFFLINE_FROM

    def availability(self, aor: str) -> int:
        """[MS-PRES] availability of a local user: what their Lync client published while
        registered, 3500 (available) for other registered clients, 18500 (offline) when not
        registered."""
        if not self.live_bindings(aor):
            return lync.OFFLINE
        return self.published.get(aor.lower(), lync.AVAILABLE)

    def remote_presence_changed(self, aor: str, available: bool) -> None:
        """The gateway reported a contact's presence: NOTIFY its SIP subscribers."""
        aor = aor.lower()
        if self.remote_presence.get(aor) == available:
            return
        self.remote_presence[aor] = available
        self._notify_all(aor)

    def _pidf(self, aor: str) -> bytes:
        basic = "open" if self.available(aor) else "closed"
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\r\n'
            f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{aor}">'
            f'<tuple id="t1"><status><basic>{basic}</basic></status></tuple></presence>'
        ).encode()

    def _notify_all(self, aor: str) -> None:
        for sub in self.subscriptions.get(aor, []):
            self._notify(aor, sub)
        if aor not in self.remote_presence:
            for listener in self.presence_listeners:
                listener(aor, bool(self.live_bindings(aor)))

    def _notify(self, aor: str, sub: Subscription) -> None:
        sub.cseq += 1
        if sub.categories:
            ctype = lync.CATEGORIES_TYPE
            body = lync.state_categories(aor, self.availability(aor), _now_iso())
        else:
            ctype, body = "application/pidf+xml", self._pidf(aor)
        request = Request("NOTIFY", _uri(sub.target), body)
        h = request.headers
        h.add("Via", f"SIP/2.0/TLS {self.config.fqdn}:5061;branch={new_branch('-uac')}")
        h.add("Max-Forwards", "70")
        for value in sub.route:
            h.add("Route", value)
        h.add("From", sub.notifier)
        h.add("To", sub.subscriber)
        h.add("Call-ID", sub.call_id)
        h.add("CSeq", f"{sub.cseq} NOTIFY")
        h.add("Event", "presence")
        h.add("Subscription-State", "active;expires=3600")
        h.add("Content-Type", ctype)
        h.add("Content-Length", str(len(body)))
        self._route_out(request, None)

    # ------------------------------------------------------------------ proxying

    def _not_found(self, proto: SipProtocol, request: Request) -> None:
        diag = f'{NOT_FOUND};source="{self.config.fqdn}"'
        self._answer(proto, request, 404, headers=[("ms-diagnostics", diag)])

    def _forward(self, proto: SipProtocol, request: Request) -> None:
        mf = request.headers.get("Max-Forwards")
        hops = (number(mf) if mf is not None else 70) or 0
        if hops <= 0:
            self._answer(proto, request, 483)
            return
        request.headers.set("Max-Forwards", str(hops - 1))
        # stateless proxy branch (RFC 3261 16.11): derived from the received one, so a CANCEL
        # leaves with the branch of its INVITE
        their = params(top_via(request)).get("branch") or new_branch()
        branch = f"z9hG4bK-{self.label.replace('/', '')}-{proto.id}-{short_hash(their)}"
        push_via(request, f"SIP/2.0/TLS {self.config.fqdn}:5061;branch={branch}")
        self._route_out(request, proto)

    def _route_out(self, request: Request, upstream: SipProtocol | None) -> None:
        """Send a request on: by Route, else to a local binding, else to the other domain."""
        routes = request.headers.getlist("Route")
        if routes:
            first = uri_of(routes[0])
            port = _uri_port(first)
            self._tasks.spawn(self._send_to_host(uri_host(first), port, request, upstream))
            return
        host = request.uri.host.lower()
        if host in self.our_hosts:
            aor = f"sip:{request.uri.user}@{self.config.domain}"
            if (request.uri.user or "") not in self.config.users:
                if upstream is not None:
                    self._fail(upstream, request, 404)
                return
            bindings = self.live_bindings(aor)
            if not bindings:
                if upstream is not None:
                    self._fail(upstream, request, 480)
                return
            binding = bindings[-1]
            for value in reversed(binding.path):
                prepend(request, "Route", value)
            if binding.path:
                # through the Edge: the first Path entry names it
                self._tasks.spawn(
                    self._send_to_host(
                        uri_host(uri_of(binding.path[0])), 5061, request, upstream, binding.sa
                    )
                )
                return
            self._send(binding.proto, request, binding.sa)
            return
        if self.config.federation_fqdn is not None:
            self._tasks.spawn(
                self._send_to_host(
                    self.config.federation_fqdn, self.config.federation_port, request, upstream
                )
            )
        else:
            self._tasks.spawn(self._send_to_domain(host, request, upstream))

    def _fail(self, upstream: SipProtocol, request: Request, code: int, detail: str = "") -> None:
        if request.method == "ACK":
            return
        if code == 404:
            diag = [
                (
                    "ms-diagnostics",
                    f'{NOT_FOUND};source="{self.config.fqdn}"',
                )
            ]
        else:
            diag = [("Warning", f'399 {self.config.fqdn} "{detail}"')] if detail else []
        response = response_for(request, code, headers=diag)
        if (params(top_via(response)).get("branch") or "").startswith("z9hG4bK-"):
            pop_via(response)
        self._send(upstream, response)

    async def _send_to_domain(
        self, domain: str, request: Request, upstream: SipProtocol | None
    ) -> None:
        name = f"_sipfederationtls._tcp.{domain}"
        try:
            targets = await self.resolver.srv(name)
        except ResolutionError as exc:
            log.warning("%s: DNS SRV %s: %s", self.label, name, exc.reason)
            if upstream is not None:
                self._fail(upstream, request, 504, "Next hop unreachable")
            return
        await self._send_to_host(targets[0].target, targets[0].port, request, upstream)

    async def _send_to_host(
        self,
        host: str,
        port: int,
        request: Request,
        upstream: SipProtocol | None,
        binding_sa: str | None = None,
    ) -> None:
        host = host.lower()
        for proto in self.conns.values():
            if proto.peer_cert is not None and proto.peer_cert.matches(host):
                self._send(proto, request, binding_sa)
                return
        try:
            proto = await connect_once(self._connecting, host, lambda: self._connect(host, port))
        except Exception as exc:
            log.warning("%s: cannot reach %s: %s", self.label, host, exc)
            if upstream is not None:  # the reason stays in the log: no port-scan oracle
                self._fail(upstream, request, 504, "Next hop unreachable")
            return
        self._send(proto, request, binding_sa)

    async def _connect(self, host: str, port: int) -> SipProtocol:
        try:
            address = (await self.resolver.a(host))[0]
        except ResolutionError as exc:
            raise OSError(str(exc)) from None
        try:
            proto = await open_sip(
                self,
                address,
                port,
                self.client_context,
                host,
                label=f"{self.label}/out",
                local_address=self.listen_specs[0][0] if self.listen_specs else None,
            )
        except ssl.SSLError as exc:
            raise OSError(tls_failure_reason(exc)) from None
        self.conns[proto.id] = proto
        return proto

    # ------------------------------------------------------------------ responses

    def on_response(self, proto: SipProtocol, response: Response) -> None:
        via = top_via(response)
        branch = params(via).get("branch") or ""
        if "-uac" in branch:  # answer to our own NOTIFY
            if response.code >= 300:  # the subscriber is gone: the subscription ends (RFC 6665)
                call_id = response.headers.get("Call-ID")
                for subs in self.subscriptions.values():
                    subs[:] = [s for s in subs if s.call_id != call_id]
            return
        prefix = f"z9hG4bK-{self.label.replace('/', '')}-"
        if not branch.startswith(prefix):
            return
        pop_via(response)
        try:
            upstream_id = int(branch[len(prefix) :].split("-")[0])
        except ValueError:
            return
        upstream = self.conns.get(upstream_id)
        if upstream is not None:
            self._send(upstream, response)


def _same_user(request: Request) -> bool:
    """The request's From and To name the same user (a subscription to one's own data)."""
    frm = uri_of(request.headers.get("From") or "").split(";", 1)[0].lower()
    return frm == uri_of(request.headers.get("To") or "").split(";", 1)[0].lower()


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _im_text(request: Request) -> str:
    """The text of an IM: a ``text/plain`` body as is; other bodies (HTML) as received."""
    return request.body.decode("utf-8", "replace")


def _supports(request: Request, option: str) -> bool:
    """True when the request's Supported headers list ``option``."""
    return any(
        option == item.strip().lower()
        for value in request.headers.getlist("Supported")
        for item in value.split(",")
    )


def _uri(text: str) -> Any:
    from sipmessage import URI

    return URI.parse(text)


def _uri_port(uri: str) -> int:
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    rest = rest.split(";", 1)[0]
    if "@" in rest:
        rest = rest.rsplit("@", 1)[1]
    if ":" in rest:
        try:
            return int(rest.split(":", 1)[1])
        except ValueError:
            return 5061
    return 5061


__all__ = ["Binding", "DomainConfig", "DomainServer", "ServiceHandler"]
