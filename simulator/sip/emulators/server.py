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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from sipmessage import Request, Response

from simulator.dns.resolver import LabResolver, ResolutionError
from simulator.sip.aio import ListenerSpec, SipListener, SipProtocol, open_sip, tls_failure_reason
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
from simulator.sip.emulators.auth import Authenticator
from simulator.sip.ntlm import NtlmServer
from simulator.sip.proxy import TRUST_HEADER
from simulator.sip.validate import number

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, SUBSCRIBE, NOTIFY, REGISTER, SERVICE"
ROAMING_CONTACTS = "vnd-microsoft-roaming-contacts"
SERVER = "RTC/5.0"
"""What a Lync Server 2013 Front End says in ``Server`` (SIPE reads its version from it)."""
NOT_FOUND = '4005;reason="Destination URI either not enabled for SIP or does not exist"'

MAX_EXPIRES = 3600

ServiceHandler = Callable[[Request], "Response | Awaitable[Response]"]
GatewayHandler = Callable[[str, str, str], Awaitable[None]]
"""(from SIP URI, to address user@domain, text): hand a MESSAGE to another network."""


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
        self.gateways: dict[str, GatewayHandler] = {}
        """Domain -> handler for MESSAGEs to that domain (the XMPP gateway: Lync routes IM to
        XMPP partners through it, not through SIP federation)."""
        """Content-Type -> handler for SERVICE requests (e.g. MRAS credentials)."""
        self.received: list[Request] = []
        """Requests handled by the server itself (for tests), newest last, bounded."""
        self._connecting: dict[str, asyncio.Future[SipProtocol]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

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
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        if local and method == "SERVICE":
            self._spawn(self._service(proto, request))
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
        if method == "MESSAGE" and host in self.gateways:
            self._spawn(self._to_gateway(proto, request, self.gateways[host]))
            return
        event = (request.headers.get("Event") or "").split(";")[0].strip().lower()
        if local and method == "SUBSCRIBE" and event == "presence":
            self._subscribe(proto, request)
            return
        if local and method == "SUBSCRIBE" and event == ROAMING_CONTACTS:
            self._subscribe_contacts(proto, request)
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
            self.bindings.pop(aor, None)
            self._answer(proto, request, 200)
            self.auth.unbind(aor)
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
        headers = [
            ("Contact", f"{contact.split(';expires')[0]};expires={seconds}"),
            ("Expires", str(seconds)),
            ("Allow-Events", f"presence,{ROAMING_CONTACTS}"),  # SIPE does not trim
            ("Server", SERVER),
        ]
        if path:
            headers.append(("Path", ", ".join(path)))
            # a Lync client reads this: it signed in through the Access Edge (remote user)
            headers.append(("ms-user-logon-data", "RemoteUser"))
        self._answer(proto, request, 200, headers=headers)
        self._notify_all(aor)

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

    async def _to_gateway(
        self, proto: SipProtocol, request: Request, handler: GatewayHandler
    ) -> None:
        from_uri = uri_of(request.headers.get("From") or "")
        to_address = f"{request.uri.user}@{request.uri.host}"
        try:
            await handler(from_uri, to_address, request.body.decode("utf-8", "replace"))
        except ConnectionError as exc:
            log.warning("XMPP gateway unavailable: %s", exc)
            self._answer(proto, request, 503, "XMPP gateway unavailable")
            return
        except Exception:
            log.exception("XMPP gateway handler failed")
            self._answer(proto, request, 500, "XMPP gateway failed")
            return
        self._answer(proto, request, 200)

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
        expires = request.headers.get("Expires") or "3600"
        tag = new_tag()
        to_value = request.headers["To"]
        if "tag=" not in to_value:
            to_value = f"{to_value};tag={tag}"
        aor = f"sip:{name}@{self.config.domain}"
        headers = [
            ("Expires", expires),
            ("Contact", f"<sip:{self.config.fqdn}:5061;transport=tls>"),
        ]
        piggyback = expires.strip() != "0" and _supports(request, "ms-piggyback-first-notify")
        body = b""
        if piggyback:  # the first NOTIFY's content rides on the 200, as Lync does
            body = self._pidf(aor)
            headers += [
                ("Event", "presence"),
                ("Content-Type", "application/pidf+xml"),
                ("ms-piggyback-cseq", "1"),
            ]
        self._send(proto, response_for(request, 200, to_tag=tag, headers=headers, body=body))
        contact = request.headers.getlist("Contact")
        sub = Subscription(
            subscriber=request.headers["From"],
            notifier=to_value,
            call_id=request.headers["Call-ID"],
            target=uri_of(contact[0]) if contact else uri_of(request.headers["From"]),
            route=list(request.headers.getlist("Record-Route")),
            cseq=1 if piggyback else 0,
        )
        subs = self.subscriptions.setdefault(aor, [])
        subs[:] = [*[s for s in subs if s.call_id != sub.call_id][-50:], sub]
        if expires.strip() != "0" and not piggyback:
            self._notify(aor, sub)

    def _subscribe_contacts(self, proto: SipProtocol, request: Request) -> None:
        """Lync's roaming contact list ([MS-SIP] ``vnd-microsoft-roaming-contacts``): the user's
        own list, in the 200's NOTIFY; the list comes from the ``contacts`` setting."""
        aor = uri_of(request.headers["To"]).split(";", 1)[0]
        user = uri_user(aor) or ""
        if uri_of(request.headers["From"]).split(";", 1)[0].lower() != aor.lower():
            self._answer(proto, request, 403, "Only your own contact list")
            return
        tag = new_tag()
        to_value = request.headers["To"]
        if "tag=" not in to_value:
            to_value = f"{to_value};tag={tag}"
        expires = request.headers.get("Expires") or "3600"
        contacts = "".join(
            f'<contact uri="{escape(uri)}" name="" groups="1" subscribed="true" externals=""/>'
            for uri in self.config.contacts.get(user.lower(), [])
        )
        body = (
            '<contactList deltaNum="1" xmlns="http://schemas.microsoft.com/2006/09/sip/'
            f'contactlist"><group id="1" name="~" externals=""/>{contacts}</contactList>'
        ).encode()
        content_type = "application/vnd-microsoft-roaming-contacts+xml"
        if _supports(request, "ms-piggyback-first-notify"):
            # the first NOTIFY rides on the 200 ([MS-SIP]: piggy-backed first notification)
            headers = [
                ("Expires", expires),
                ("Event", ROAMING_CONTACTS),
                ("Content-Type", content_type),
                ("ms-piggyback-cseq", "1"),
            ]
            self._send(proto, response_for(request, 200, to_tag=tag, headers=headers, body=body))
            return
        self._send(
            proto,
            response_for(request, 200, to_tag=tag, headers=[("Expires", expires)]),
        )
        if expires.strip() == "0":
            return
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
        h.add("Event", ROAMING_CONTACTS)
        h.add("Subscription-State", f"active;expires={expires.strip()}")
        h.add("Content-Type", content_type)
        h.add("Content-Length", str(len(body)))
        self._route_out(notify, None)

    def live_bindings(self, aor: str) -> list[Binding]:
        """The bindings of ``aor`` that have not expired."""
        now = asyncio.get_running_loop().time()
        bindings = [b for b in self.bindings.get(aor, []) if b.expires_at > now]
        if bindings:
            self.bindings[aor] = bindings
        else:
            self.bindings.pop(aor, None)
        return bindings

    def _pidf(self, aor: str) -> bytes:
        basic = "open" if self.live_bindings(aor) else "closed"
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\r\n'
            f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{aor}">'
            f'<tuple id="t1"><status><basic>{basic}</basic></status></tuple></presence>'
        ).encode()

    def _notify_all(self, aor: str) -> None:
        for sub in self.subscriptions.get(aor, []):
            self._notify(aor, sub)

    def _notify(self, aor: str, sub: Subscription) -> None:
        sub.cseq += 1
        body = self._pidf(aor)
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
        h.add("Content-Type", "application/pidf+xml")
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
            self._spawn(self._send_to_host(uri_host(first), port, request, upstream))
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
                self._spawn(
                    self._send_to_host(
                        uri_host(uri_of(binding.path[0])), 5061, request, upstream, binding.sa
                    )
                )
                return
            self._send(binding.proto, request, binding.sa)
            return
        if self.config.federation_fqdn is not None:
            self._spawn(
                self._send_to_host(
                    self.config.federation_fqdn, self.config.federation_port, request, upstream
                )
            )
        else:
            self._spawn(self._send_to_domain(host, request, upstream))

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
        future = self._connecting.get(host)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._connecting[host] = future
            try:
                proto = await self._connect(host, port)
            except Exception as exc:
                future.set_exception(exc)
            else:
                future.set_result(proto)
            finally:
                self._connecting.pop(host, None)
        try:
            proto = await asyncio.shield(future)
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
        if "-uac" in branch:
            return  # answer to our own NOTIFY
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
