"""Sans-IO core of the Access Edge: routing by domain and side, federation policy, as actions.

The adapter (:mod:`simulator.sip.aio`) tells the core about connections ("flows") and hands it
validated messages; the core answers with :class:`Send`, :class:`Forward` and
:class:`VerifyPartner` actions and never touches a socket or a clock (``now`` is an argument).

What it does to a request (RFC 3261 section 16 as a stateful proxy, reliable transports only):

1. Max-Forwards 0 gets 483; otherwise it is lowered by one (16.3 step 3, 16.6 step 3).
2. The headers only the Edge asserts (:data:`EDGE_ASSERTED`: ``ms-edge-proxy-message-trust``,
   which [MS-SIPRE] section 2.2.15 lets only the SIP proxy add, "MUST NOT be added by the
   protocol client"; ``P-Asserted-Identity``, RFC 3325 section 5) are stripped, by their
   canonical name, from requests and responses arriving from outside; the Edge adds its own
   trust header to what it passes inside. A ``Record-Route`` or ``Path`` entry naming the Edge
   itself from outside gets 403 (it would steer the Front End's requests to another flow).
3. Route entries that name the Edge are popped (loose routing, 16.4); an ``edgeflow`` parameter
   in them names the client connection an in-dialog request or a request to a remote user goes to.
4. Loop detection (16.3 step 4): the branch of every Via the Edge pushes carries a hash of the
   Request-URI, Call-ID, CSeq number, tags and the Route entries it consumed (whether it came
   from a remote user, and the ``edgeflow`` it was routed to); a request that comes back with a
   Via of ours with the same hash has looped and gets 482 (a spiral, such as a remote user's
   request to a partner that passes the Edge twice, differs in those and passes).
5. Side and policy (Set-CsAccessEdgeConfiguration, New-CsAllowedDomain, New-CsBlockedDomain,
   public providers): remote users (443) reach the internal next hop only; federated peers (5061)
   must send from a domain allowed by policy whose Edge FQDN their certificate carries, and only to
   a domain the Edge serves; the Front End (internal 5061) reaches allowed partners, public IM
   providers or, with partner discovery, any domain found by DNS SRV. Anything else gets 403.
6. Via with ``received``/``rport`` on the previous hop, our own Via on top, double
   Record-Route (RFC 5658) on dialog-creating requests, ``Path`` (RFC 3327) on REGISTERs from
   remote users so the Front End can reach them back through the same connection. What leaves
   the organisation carries only our Via: the inside's entries travel sealed in its
   ``ms-internal-info`` parameter ([MS-SIPRE]'s Via extension) and are restored on the response.
7. The trust header says how far the Edge vouches for the sender: per partner, its
   verification level (``AlwaysVerifiable``, ``AlwaysUnverifiable``, ``UseSourceVerification``).

Responses go back by their top Via, and only when they arrive on the flow their request left on
(anything else is dropped: a remote user must not answer its own REGISTER, nor the internet
reach the Front End's connection); Timer B/F (:mod:`.transaction`) gives 408 when the next hop
stays silent; the adapter reports next hops it could not reach with
:meth:`EdgeProxy.next_hop_failed`,
which answers 504 with the ``ms-diagnostics`` code a real Edge gives ([MS-OCER] section 7.2;
see :data:`DIAGNOSTICS`).

Not implemented: forking, CANCEL matching (CANCEL and ACK are forwarded statelessly), UDP.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import itertools
import logging
import os
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sipmessage import Request, Response

from simulator.settings import Invalid, convert, lowered, setting
from simulator.sip.build import (
    BRANCH_MAGIC,
    address_domain,
    loop_hash,
    mark_received,
    params,
    pop_first,
    pop_via,
    prepend,
    push_via,
    remove_header,
    response_for,
    short_hash,
    top_via,
    uri_host,
    uri_of,
    uri_params,
    via_branch,
    via_sent_by,
)
from simulator.sip.connection import SipLimits
from simulator.sip.transaction import TIMEOUT, ClientTransaction
from simulator.sip.validate import known_good_via, number

log = logging.getLogger(__name__)

TRUST_HEADER = "ms-edge-proxy-message-trust"
#: Headers only the Edge may assert on what it passes inside; stripped from all that comes from
#: outside ([MS-SIPRE] section 2.2.15 for the trust header, RFC 3325 section 5).
EDGE_ASSERTED: tuple[str, ...] = (TRUST_HEADER, "P-Asserted-Identity")
#: Refusals (and dropped responses) :attr:`EdgeProxy.refusals` keeps, newest last.
REFUSALS_KEPT = 100
#: Answered responses remembered for late retransmissions (2xx to INVITE), per branch.
COMPLETED_KEPT = 4096
DIAGNOSTICS_HEADER = "ms-diagnostics"
BRANCH_PREFIX = "z9hG4bK-es"


class Side(Enum):
    """Where a connection comes from, as the Edge sees it."""

    CLIENT = "client"
    """Remote users: TLS 443 on the Access interface (server certificate only)."""
    FEDERATION = "federation"
    """Federated partners and public IM providers: MTLS 5061 on the Access interface."""
    INTERNAL = "internal"
    """The Front End pool: MTLS 5061 on the internal interface."""


@dataclass(frozen=True)
class Diagnostic:
    """An ``ms-diagnostics`` code as a Lync Edge reports it ([MS-OCER] section 2.2.1.1)."""

    code: int
    reason: str
    extra: tuple[tuple[str, str], ...] = ()
    """Further parameters as real Edges add them (``WinsockFailureCode``, ...)."""


_TLS_FAILED = "Failed to complete TLS negotiation with a federated peer server"

#: The ``ms-diagnostics`` codes the Edge emits, with the status it answers and the reason text.
#: Codes and texts from [MS-OCER] section 7.2 (SipStack ErrorIds 1000-1999 of the current
#: release), written as they appear on the wire: without the table's closing period. 1046 and
#: 1047 lie beyond the part of that table the project could read (it ends at 1014); their texts
#: come from published Lync traces (docs/sip.md lists each code with its source).
DIAGNOSTICS: dict[str, tuple[int, Diagnostic]] = {
    "srv": (504, Diagnostic(1008, "Unable to resolve DNS SRV record")),
    "dns-a": (504, Diagnostic(1014, "Unable to resolve DNS A record")),
    "untrusted": (
        504,
        Diagnostic(1010, "Certificate trust with next-hop server could not be established"),
    ),
    "connect": (504, Diagnostic(1046, "Failed to connect to a peer server")),
    "tls": (504, Diagnostic(1047, _TLS_FAILED)),
    # the partner reset the connection in the handshake (e.g. it does not trust our
    # certificate): a Lync Edge reports the Winsock error too, as published client traces show
    "tls-reset": (
        504,
        Diagnostic(
            1047,
            _TLS_FAILED,
            (
                ("WinsockFailureCode", "10054(WSAECONNRESET)"),
                ("WinsockFailureDescription", "The peer forced closure of the connection"),
            ),
        ),
    ),
    # federation policy refuses the destination domain (blocked, not allowed, federation or
    # public IM connectivity off)
    "domain": (403, Diagnostic(1005, "Cannot route to destination domain")),
}


@dataclass(frozen=True)
class Partner:
    """A domain the Edge may federate with."""

    domain: str
    proxy_fqdn: str | None = None
    """The partner's Access Edge FQDN (ProxyFqdn); None: found by DNS SRV."""
    kind: str = "partner"
    """``partner`` (allowed domain), ``pic`` (public IM provider) or ``discovered``."""
    verification_level: str = "AlwaysVerifiable"
    """How the Edge vouches for this partner's senders (New-CsAllowedDomain
    -VerificationLevel, MSFT_SIPFederationPartnerTable.UserVerificationLevel):
    ``AlwaysVerifiable`` (``ms-source-verified-user=verified``), ``AlwaysUnverifiable``
    (``unverified``) or ``UseSourceVerification`` (what the partner's own trust header said,
    ``unverified`` without one)."""


VERIFICATION_LEVELS = ("AlwaysVerifiable", "AlwaysUnverifiable", "UseSourceVerification")


@dataclass(frozen=True)
class Refusal:
    reason: str


@dataclass(frozen=True)
class EdgeConfig:
    """The Access Edge's settings (``[services.access-edge]``; see docs/sip.md for the keys)."""

    served_domains: tuple[str, ...] = setting(("contoso.lab",), parse=lowered)
    """SIP domains of the organisation (requests to them go inside)."""
    external_fqdn: str = "sip.contoso.lab"
    """The Access interface's FQDN (Via, Record-Route, certificate)."""
    internal_fqdn: str = "edge-int.contoso.lab"
    """The internal interface's FQDN."""
    internal_next_hop: str = "pool.contoso.lab"
    """The Front End pool FQDN: where everything for the served domains goes."""
    internal_next_hop_port: int = 5061
    """The Front End pool's port."""
    internal_peer_names: tuple[str, ...] = setting(("pool.contoso.lab",), parse=lowered)
    """Certificate names accepted from the internal side (the service's default: the
    :attr:`internal_next_hop` given)."""
    allow_outside_users: bool = True
    """Remote user access on 443 (AllowOutsideUsers)."""
    allow_federated_users: bool = True
    """Federation with partner domains (AllowFederatedUsers)."""
    enable_partner_discovery: bool = False
    """Open federation: any domain not blocked, Edge found by DNS SRV (EnablePartnerDiscovery)."""
    enable_public_im: bool = True
    """Federation with the public IM providers listed in :attr:`public_providers`."""
    allowed_domains: tuple[Partner, ...] = setting((), parse=lambda v: _partners(v, "partner"))
    """Federation partners (New-CsAllowedDomain): each a domain, or a table ``{ domain,
    proxy_fqdn, verification_level }``."""
    blocked_domains: tuple[str, ...] = setting((), parse=lowered)
    """Domains refused whatever else the policy says (New-CsBlockedDomain)."""
    public_providers: tuple[Partner, ...] = setting((), parse=lambda v: _partners(v, "pic"))
    """Public IM providers, entries as in :attr:`allowed_domains`."""
    transaction_timeout: float = TIMEOUT
    """Timer B/F: seconds before a silent next hop earns the caller a 408."""
    max_message_bytes: int = 64 * 1024
    """Messages above this get 513 and the connection closes."""
    client_limits: SipLimits = field(
        default_factory=lambda: SipLimits(max_connections=20_000, max_per_source=256)
    )
    """TLS 443 (remote users): caps, timeouts, sizes (``[services.access-edge.client_limits]``)."""
    federation_limits: SipLimits = field(
        default_factory=lambda: SipLimits(max_connections=2_000, max_per_source=64)
    )
    """MTLS 5061 on the Access interface (partners, public IM providers)."""
    internal_limits: SipLimits = field(
        default_factory=lambda: SipLimits(max_connections=1_000, max_per_source=256)
    )
    """MTLS 5061 on the internal interface (the Front End pool)."""

    def limits_for(self, side: Side) -> SipLimits:
        """The limits of ``side``'s listener, with :attr:`max_message_bytes` applied."""
        limits = {
            Side.CLIENT: self.client_limits,
            Side.FEDERATION: self.federation_limits,
            Side.INTERNAL: self.internal_limits,
        }[side]
        return replace(limits, max_message_bytes=self.max_message_bytes)

    def partner_by_fqdn(self, host: str) -> Partner | None:
        """The allowed partner or provider whose Edge is ``host`` (its ProxyFqdn), if any."""
        host = host.lower()
        for partner in (*self.allowed_domains, *self.public_providers):
            if partner.proxy_fqdn == host and not isinstance(
                self.partner_for(partner.domain), Refusal
            ):
                return partner
        return None

    def partner_for(self, domain: str) -> Partner | Refusal:
        """Federation policy for ``domain``, in the order a Lync Edge applies it."""
        domain = domain.lower()
        if domain in self.blocked_domains:
            return Refusal(f"domain {domain} is blocked")
        for pic in self.public_providers:
            if pic.domain == domain:
                if not self.enable_public_im:
                    return Refusal(f"public IM connectivity is disabled ({domain})")
                return pic
        if not self.allow_federated_users:
            return Refusal("federation is disabled")
        for partner in self.allowed_domains:
            if partner.domain == domain:
                return partner
        if self.enable_partner_discovery:
            return Partner(domain, None, "discovered")
        return Refusal(f"domain {domain} is not an allowed partner domain")


def _trust_value(
    source_type: str,
    fqdn: str,
    verified: str,
    network: str | None = None,
    remote_fqdn: str | None = None,
) -> str:
    """The ``ms-edge-proxy-message-trust`` value the Edge adds to what it passes inside.

    [MS-SIPRE] section 2.2.15: ``ms-source-type`` is ``InternetUser`` (a remote user),
    ``DirectPartner`` (an allowed domain with its Edge's FQDN), ``AutoFederation`` (an allowed
    domain without one, or a partner found by DNS SRV) or ``AuthorizedServer`` (a public IM
    provider); ``ms-source-network`` is ``federation`` or ``publiccloud`` (the grammar has no
    value for a remote user, so none is sent for one); ``ms-remote-fqdn`` names a public IM
    provider's server (section 3.10.1.5).
    """
    value = f"ms-source-type={source_type};ms-ep-fqdn={fqdn};ms-source-verified-user={verified}"
    if network is not None:
        value += f";ms-source-network={network}"
    if remote_fqdn is not None:
        value += f";ms-remote-fqdn={remote_fqdn}"
    return value


def _partners(value: object, kind: str) -> tuple[Partner, ...]:
    """``allowed_domains`` or ``public_providers`` of a settings table (``kind``: ``partner``
    or ``pic``): each entry a domain, or a table ``{ domain, proxy_fqdn, verification_level }``."""
    if not isinstance(value, list | tuple):
        raise Invalid("must be a list of domains or tables { domain, proxy_fqdn, ... }")
    return tuple(_partner(entry, kind) for entry in value)


def _partner(entry: object, kind: str) -> Partner:
    if isinstance(entry, str):
        return Partner(entry.lower(), None, kind)
    if not isinstance(entry, Mapping):
        raise Invalid(f"a {kind} entry must be a domain or a table, not {entry!r}")
    unknown = set(entry) - {"domain", "proxy_fqdn", "verification_level"}
    if unknown:
        raise Invalid(f"unknown keys in a {kind} entry: {', '.join(sorted(unknown))}")
    if "domain" not in entry:
        raise Invalid(f"a {kind} entry needs a domain")
    domain = convert(str, entry["domain"])
    proxy = convert(str | None, entry.get("proxy_fqdn"))
    level = convert(str, entry.get("verification_level", "AlwaysVerifiable"))
    if level not in VERIFICATION_LEVELS:
        raise Invalid(
            f"verification_level {level!r} is not one of {', '.join(VERIFICATION_LEVELS)}"
        )
    return Partner(domain.lower(), proxy.lower() if proxy else None, kind, level)


def _claimed_verification(request: Request) -> str:
    """What a partner's own ``ms-edge-proxy-message-trust`` said of its sender (before the
    Edge strips it): ``verified`` or ``unverified`` ([MS-SIPRE] section 2.2.15)."""
    for value in request.headers.getlist(TRUST_HEADER):
        for part in value.split(";"):
            name, _, text = part.strip().partition("=")
            if name.lower() == "ms-source-verified-user" and text.strip().lower() == "verified":
                return "verified"
    return "unverified"


@dataclass
class Flow:
    """What the core knows of one connection."""

    id: int
    side: Side
    peer: tuple[str, int]
    names: tuple[str, ...] = ()
    """Names in the peer's verified certificate (empty without one)."""
    outbound: bool = False
    domains: set[str] = field(default_factory=set)
    """Federation: the partner domains this connection is authenticated for."""
    user: str | None = None
    """Client flows: the address-of-record that registered through this connection."""
    _matched: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)
    """Answers of :meth:`matches` so far (``names`` never change; few FQDNs are asked)."""

    def matches(self, fqdn: str) -> bool:
        """True when the peer's certificate names ``fqdn`` (a ``*.`` name covers one label)."""
        known = self._matched.get(fqdn)
        if known is not None:
            return known
        lower = fqdn.lower()
        result = any(
            n == lower or (n.startswith("*.") and lower.split(".", 1)[-1] == n[2:])
            for n in self.names
        )
        if len(self._matched) < 64:
            self._matched[fqdn] = result
        return result


@dataclass(frozen=True)
class ToFlow:
    flow_id: int


@dataclass(frozen=True)
class ToInternal:
    pass


@dataclass(frozen=True)
class ToPartner:
    partner: Partner


Target = ToFlow | ToInternal | ToPartner


@dataclass(frozen=True)
class Send:
    """Write ``message`` on flow ``flow_id``."""

    flow_id: int
    message: Request | Response


@dataclass(frozen=True)
class Forward:
    """Send ``request`` to ``target`` (connecting first if no connection is there)."""

    target: Target
    request: Request
    branch: str


@dataclass(frozen=True)
class VerifyPartner:
    """Open federation: check by DNS SRV that flow ``flow_id`` may speak for ``domain``.

    Answer with :meth:`EdgeProxy.partner_verified`, which handles ``request`` again.
    """

    flow_id: int
    domain: str
    request: Request


Action = Send | Forward | VerifyPartner


class _Answered(NamedTuple):
    """What is kept of an answered transaction for late responses: the two flows (a tuple of
    ints, which the cycle collector stops tracking: thousands are kept)."""

    upstream: int
    downstream: int | None


@dataclass
class _Pending:
    client: ClientTransaction
    upstream: int
    request: Request
    downstream: int | None = None
    """The flow the request left on (once the adapter has sent it)."""


class EdgeProxy:
    """The Access Edge's routing and policy."""

    def __init__(
        self, config: EdgeConfig, *, our_hosts: Iterable[str] = (), secret: bytes | None = None
    ) -> None:
        """``secret`` (32 bytes) seals the inside's Via entries into ``ms-internal-info``; a
        random one by default."""
        self.config = config
        self._sealer = AESGCM(secret if secret is not None else os.urandom(32))
        self._nonces = itertools.count(1)
        self.our_hosts = {config.external_fqdn.lower(), config.internal_fqdn.lower(), *our_hosts}
        self.flows: dict[int, Flow] = {}
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self._completed: OrderedDict[str, _Answered] = OrderedDict()
        """Transactions already answered, for the responses that may still follow (16.7)."""
        self._timers: list[tuple[float, str]] = []
        self.refusals: list[str] = []
        """Every refusal's reason, newest last (bounded), besides the log."""
        self._internal_flow_id = 0
        """:meth:`internal_flow`'s answer while that flow is open (0: none yet)."""

    # ------------------------------------------------------------------ flows

    def flow_opened(
        self,
        side: Side,
        peer: tuple[str, int],
        names: Iterable[str] = (),
        *,
        outbound: bool = False,
        domains: Iterable[str] = (),
    ) -> Flow:
        flow = Flow(
            next(self._ids), side, peer, tuple(n.lower() for n in names), outbound, set(domains)
        )
        if side is Side.FEDERATION and not outbound:
            for partner in (*self.config.allowed_domains, *self.config.public_providers):
                if partner.proxy_fqdn and flow.matches(partner.proxy_fqdn):
                    flow.domains.add(partner.domain)
        self.flows[flow.id] = flow
        return flow

    def flow_closed(self, flow_id: int) -> list[Action]:
        """Forget a connection; requests still waiting on it get 503 (RFC 3261 16.9)."""
        self.flows.pop(flow_id, None)
        actions: list[Action] = []
        for branch, pending in list(self._pending.items()):
            if pending.upstream == flow_id:
                # nobody left to answer; remembered so that the answer still on its way is
                # recognised (and dropped quietly) rather than taken for a stray response
                del self._pending[branch]
                self._remember(branch, pending)
            elif pending.downstream == flow_id:
                del self._pending[branch]
                log.warning("next hop closed the connection: 503 for %s", pending.request.method)
                warning = f'399 {self.config.external_fqdn} "Next hop closed the connection"'
                response = response_for(pending.request, 503, headers=[("Warning", warning)])
                if self._unwind(response):
                    actions.append(Send(pending.upstream, response))
        return actions

    def sent_on(self, branch: str, flow_id: int) -> None:
        """The adapter sent the request of ``branch`` on ``flow_id``."""
        pending = self._pending.get(branch)
        if pending is not None:
            pending.downstream = flow_id

    def flow_for_partner(self, domain: str) -> Flow | None:
        """An open federation connection (either direction) that speaks for ``domain``."""
        for flow in self.flows.values():
            if flow.side is Side.FEDERATION and domain in flow.domains:
                return flow
        return None

    def internal_flow(self) -> Flow | None:
        """The first open internal connection to the next hop (remembered while it is open,
        so routing inside does not walk every connection of every remote user)."""
        flow = self.flows.get(self._internal_flow_id)
        if flow is not None:
            return flow
        for flow in self.flows.values():
            if flow.side is Side.INTERNAL and self._internal_ok(flow):
                self._internal_flow_id = flow.id
                return flow
        return None

    def _internal_ok(self, flow: Flow) -> bool:
        return any(flow.matches(name) for name in self.config.internal_peer_names)

    # ------------------------------------------------------------------ helpers

    def _note_refusal(self, text: str) -> None:
        """Keep ``text`` in :attr:`refusals`, the newest :data:`REFUSALS_KEPT` only."""
        self.refusals.append(text)
        del self.refusals[:-REFUSALS_KEPT]

    def _refuse(
        self, flow: Flow, request: Request, code: int, reason: str, diagnostic: str | None = None
    ) -> list[Action]:
        """Answer ``code`` with a Warning naming ``reason`` (and the ``ms-diagnostics`` of the
        :data:`DIAGNOSTICS` key ``diagnostic``, whose status then replaces ``code``)."""
        text = (
            f"{request.method} from {flow.side.value} flow {flow.id} ({flow.peer[0]}): "
            f"{code} {reason}"
        )
        log.warning("refused %s", text)
        self._note_refusal(text)
        if request.method == "ACK":
            return []
        if diagnostic is not None:
            return [Send(flow.id, self._diagnostic_response(request, diagnostic, reason, None))]
        warning = f'399 {self.config.external_fqdn} "{reason}"'
        return [Send(flow.id, response_for(request, code, headers=[("Warning", warning)]))]

    def _diagnostic_response(
        self, request: Request, kind: str, detail: str, peer: str | None
    ) -> Response:
        code, diag = DIAGNOSTICS[kind]
        value = f'{diag.code};reason="{diag.reason}"'
        value += "".join(f';{name}="{text}"' for name, text in diag.extra)
        value += f';source="{self.config.external_fqdn}"'
        if peer:
            value += f';PeerServer="{peer}"'
        headers = [
            (DIAGNOSTICS_HEADER, value),
            ("Warning", f'399 {self.config.external_fqdn} "{detail}"'),
        ]
        return response_for(request, code, headers=headers)

    def _strip_asserted(self, message: Request | Response, flow: Flow) -> None:
        for name in EDGE_ASSERTED:
            if remove_header(message, name):
                log.info("stripped %s from %s flow %d", name, flow.side.value, flow.id)

    def _seal(self, vias: str, branch: str) -> str:
        """``vias`` encrypted and authenticated for ``ms-internal-info`` (the Via parameter
        [MS-SIPRE]'s Via header field extension defines, ``via-ms-internal-info =
        "ms-internal-info=" quoted-string``), bound to ``branch``."""
        nonce = next(self._nonces).to_bytes(12, "big")
        sealed = self._sealer.encrypt(nonce, vias.encode(), branch.encode())
        return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def _unsealed(self, token: str, branch: str) -> str | None:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            return self._sealer.decrypt(raw[:12], raw[12:], branch.encode()).decode()
        except (binascii.Error, ValueError, InvalidTag, UnicodeDecodeError):
            return None

    def _unwind(self, response: Response) -> bool:
        """Pop our Via (RFC 3261 16.7 step 3) and put back the inside's Via entries it sealed.

        False when nothing is left to route by, or the sealed entries do not verify.
        """
        ours = pop_via(response)
        token = params(ours).get("ms-internal-info")
        if token is not None:
            inside = self._unsealed(token.strip('"'), via_branch(ours) or "")
            if inside is None:
                log.warning("dropped response %d: ms-internal-info does not verify", response.code)
                return False
            prepend(response, "Via", inside)
        return bool(response.headers.getlist("Via"))

    def _remember(self, branch: str, pending: _Pending) -> None:
        """Keep a finished (or orphaned) transaction for the answers that may still follow."""
        self._completed[branch] = _Answered(pending.upstream, pending.downstream)
        while len(self._completed) > COMPLETED_KEPT:
            self._completed.popitem(last=False)

    def _is_ours(self, uri: str) -> bool:
        return uri_host(uri) in self.our_hosts

    def _sent_by(self, side: Side) -> str:
        if side is Side.INTERNAL:
            return f"{self.config.internal_fqdn}:5061"
        return f"{self.config.external_fqdn}:5061"

    # ------------------------------------------------------------------ requests

    def receive_request(self, flow_id: int, request: Request, now: float) -> list[Action]:
        """Route one validated request that arrived on ``flow_id``."""
        flow = self.flows.get(flow_id)
        if flow is None:
            return []
        headers = request.headers
        method = request.method

        # 1. Max-Forwards (RFC 3261 16.3 step 3)
        mf_text = headers.get("Max-Forwards")
        max_forwards = (number(mf_text) if mf_text is not None else 70) or 0
        if max_forwards <= 0:
            return self._refuse(flow, request, 483, "Too Many Hops")

        # 2. the trust header is the Edge's to set: never believe one from outside (a partner's
        # own claim is read first, for UseSourceVerification)
        claimed = "unverified"
        if flow.side is not Side.INTERNAL:
            if flow.side is Side.FEDERATION:
                claimed = _claimed_verification(request)
            self._strip_asserted(request, flow)

        # 3. Route entries naming the Edge (loose routing, 16.4)
        edgeflow: int | None = None
        consumed: list[str] = []
        while True:
            routes = headers.getlist("Route")
            if not routes:
                break
            first = uri_of(routes[0].split(",", 1)[0])
            if not self._is_ours(first):
                break
            pop_first(request, "Route")
            consumed.append(first.lower())
            named = number(uri_params(first).get("edgeflow") or "")
            if named is not None:
                edgeflow = named

        # 4. loop detection (16.3 step 4): the Route entries consumed are part of the hash, so
        # a NOTIFY from a partner to a remote user (in through the federation route set, out
        # through the remote user's Path) spirals rather than loops
        context = f"{flow.side is Side.CLIENT}|{edgeflow}|{'|'.join(consumed)}"
        lhash = loop_hash(request, context)
        marker = f"{BRANCH_PREFIX}{lhash}-"
        for value in headers.getlist("Via"):
            if marker not in value:
                continue
            for via in value.split(","):
                branch = via_branch(via) or ""
                if branch.startswith(marker) and via_sent_by(via) in (
                    self._sent_by(Side.INTERNAL),
                    self._sent_by(Side.FEDERATION),
                ):
                    return self._refuse(flow, request, 482, "Loop Detected")

        # Record-Route and Path entries naming the Edge are the Edge's own: from outside they
        # would make the Front End's requests come back to another client's flow
        if flow.side is not Side.INTERNAL:
            for name in ("Record-Route", "Path"):
                for value in headers.getlist(name):
                    if any(self._is_ours(uri_of(v)) for v in value.split(",")):
                        return self._refuse(
                            flow, request, 403, f"{name} entry naming this Edge from outside"
                        )

        # 5. OPTIONS to the Edge itself
        if method == "OPTIONS" and request.uri.host.lower() in self.our_hosts and edgeflow is None:
            allow = (
                "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, SUBSCRIBE, NOTIFY, REGISTER, SERVICE"
            )
            return [
                Send(
                    flow.id,
                    response_for(
                        request, 200, headers=[("Allow", allow), ("Accept", "application/sdp")]
                    ),
                )
            ]

        # 6. side and policy
        cfg = self.config
        from_domain = address_domain(headers["From"])
        target_domain = request.uri.host.lower()
        target: Target
        trust: str | None = None
        if flow.side is Side.CLIENT:
            if not cfg.allow_outside_users:
                return self._refuse(flow, request, 403, "Remote user access is disabled")
            if from_domain not in cfg.served_domains:
                return self._refuse(
                    flow, request, 403, f"From domain {from_domain} is not served here"
                )
            target = ToInternal()
            sender = uri_of(headers["From"]).split(";", 1)[0]
            verified = "verified" if flow.user == sender else "unverified"
            trust = _trust_value("InternetUser", cfg.external_fqdn, verified)
            if method == "REGISTER":
                prepend(
                    request,
                    "Path",
                    f"<sip:{cfg.internal_fqdn}:5061;transport=tls;lr;edgeflow={flow.id}>",
                )
        elif flow.side is Side.FEDERATION:
            if from_domain in cfg.served_domains:
                return self._refuse(
                    flow, request, 403, f"A federated peer cannot send as {from_domain}"
                )
            decision = cfg.partner_for(from_domain)
            if isinstance(decision, Refusal):
                return self._refuse(flow, request, 403, decision.reason)
            if from_domain not in flow.domains:
                if decision.proxy_fqdn is not None:
                    if not flow.matches(decision.proxy_fqdn):
                        return self._refuse(
                            flow,
                            request,
                            403,
                            f"Peer certificate does not match the Edge FQDN of {from_domain} "
                            f"({decision.proxy_fqdn})",
                        )
                    flow.domains.add(from_domain)
                else:
                    return [VerifyPartner(flow.id, from_domain, request)]
            if target_domain not in cfg.served_domains and target_domain not in self.our_hosts:
                return self._refuse(
                    flow, request, 403, f"Domain {target_domain} is not served here"
                )
            target = ToInternal()
            verified = {
                "AlwaysVerifiable": "verified",
                "AlwaysUnverifiable": "unverified",
                "UseSourceVerification": claimed,
            }[decision.verification_level]
            if decision.kind == "pic":
                trust = _trust_value(
                    "AuthorizedServer",
                    cfg.external_fqdn,
                    verified,
                    "publiccloud",
                    decision.proxy_fqdn or (flow.names[0] if flow.names else None),
                )
            else:
                source_type = "DirectPartner" if decision.proxy_fqdn else "AutoFederation"
                trust = _trust_value(source_type, cfg.external_fqdn, verified, "federation")
        else:  # INTERNAL
            if not self._internal_ok(flow):
                return self._refuse(flow, request, 403, "Peer is not the internal next hop")
            if edgeflow is not None:
                if edgeflow not in self.flows or self.flows[edgeflow].side is Side.INTERNAL:
                    return self._refuse(
                        flow, request, 480, "The remote user is no longer connected"
                    )
                target = ToFlow(edgeflow)
            elif target_domain in cfg.served_domains:
                return self._refuse(flow, request, 480, f"No route to {target_domain} user outside")
            else:
                decision = cfg.partner_for(target_domain)
                if isinstance(decision, Refusal):
                    # an in-dialog request addressed to a partner's Edge itself (its Contact)
                    by_fqdn = cfg.partner_by_fqdn(target_domain)
                    if by_fqdn is None:
                        return self._refuse(flow, request, 403, decision.reason, "domain")
                    decision = by_fqdn
                target = ToPartner(decision)

        # 7. forward
        if trust is not None:
            headers.add(TRUST_HEADER, trust)
        headers.set("Max-Forwards", str(max_forwards - 1))
        their_branch = via_branch(top_via(request)) or ""
        mark_received(request, flow.peer[0], flow.peer[1])
        out_side = Side.INTERNAL if isinstance(target, ToInternal) else Side.FEDERATION
        # RFC 3261 16.11: the branch follows from the one received, so a CANCEL (and the ACK
        # of a failure) leaves with the branch of the INVITE it belongs to.
        if their_branch.startswith(BRANCH_MAGIC):
            tail = short_hash(their_branch)
        else:
            tail = f"n{next(self._seq):x}"
        branch = f"{marker}{flow.id}-{tail}"
        known_good_via(headers.getlist("Via")[0])  # validated on the way in, then extended
        our_via = f"SIP/2.0/TLS {self._sent_by(out_side)};branch={branch}"
        if flow.side is Side.INTERNAL and not isinstance(target, ToInternal):
            # leaving the organisation: the inside's Via entries (Front End, internal clients)
            # travel sealed in our own Via and come back with the response
            inside = ", ".join(headers.getlist("Via"))
            remove_header(request, "Via")
            our_via += f';ms-internal-info="{self._seal(inside, branch)}"'
        known_good_via(our_via)
        push_via(request, our_via)
        if method in ("INVITE", "SUBSCRIBE"):
            client_flow = (
                flow.id
                if flow.side is Side.CLIENT
                else (target.flow_id if isinstance(target, ToFlow) else None)
            )
            tail = f";edgeflow={client_flow}" if client_flow is not None else ""
            ext_port = 443 if client_flow is not None else 5061
            inner = f"<sip:{cfg.internal_fqdn}:5061;transport=tls;lr{tail}>"
            outer = f"<sip:{cfg.external_fqdn}:{ext_port};transport=tls;lr{tail}>"
            # RFC 5658 double Record-Route: the entry facing the next hop goes on top
            first, second = (inner, outer) if out_side is Side.INTERNAL else (outer, inner)
            prepend(request, "Record-Route", second)
            prepend(request, "Record-Route", first)
        if method not in ("ACK", "CANCEL"):
            client = ClientTransaction(method, now, timeout=cfg.transaction_timeout)
            self._pending[branch] = _Pending(client, flow.id, request)
            deadline = client.get_timer()
            if deadline is not None:
                heapq.heappush(self._timers, (deadline, branch))
        return [Forward(target, request, branch)]

    def partner_verified(
        self, flow_id: int, domain: str, edge_fqdns: Iterable[str], request: Request, now: float
    ) -> list[Action]:
        """Open federation: ``edge_fqdns`` are the SRV targets found for ``domain`` (or none)."""
        flow = self.flows.get(flow_id)
        if flow is None:
            return []
        fqdns = list(edge_fqdns)
        if any(flow.matches(f) for f in fqdns):
            flow.domains.add(domain)
            return self.receive_request(flow_id, request, now)
        if not fqdns:
            return self._refuse(
                flow, request, 403, f"No DNS SRV record for {domain}: cannot verify the peer"
            )
        return self._refuse(
            flow, request, 403, f"Peer certificate does not match the DNS SRV target of {domain}"
        )

    # ------------------------------------------------------------------ responses

    def receive_response(self, flow_id: int, response: Response, now: float) -> list[Action]:
        """Route a response back by its top Via (RFC 3261 16.7).

        Only a response that arrives on the flow its request left on is routed: the branch is
        ours to read, not the peer's to choose (a remote user answering its own REGISTER, or
        the internet answering for the Front End, is dropped and logged).
        """
        flow = self.flows.get(flow_id)
        if flow is None:
            return []
        via = top_via(response)
        branch = params(via).get("branch") or ""
        if not branch.startswith(BRANCH_PREFIX):
            log.info("dropped a response whose top Via is not ours (flow %d)", flow_id)
            return []
        pending = self._pending.get(branch)
        record: _Pending | _Answered | None = pending or self._completed.get(branch)
        if record is None or record.downstream != flow_id:
            text = (
                f"response {response.code} on {flow.side.value} flow {flow_id} "
                f"({flow.peer[0]}): not the flow its request left on"
            )
            log.warning("dropped %s", text)
            self._note_refusal(text)
            return []
        if not self._unwind(response):
            return []
        if flow.side is not Side.INTERNAL:
            self._strip_asserted(response, flow)
        cseq_method = (response.headers.get("CSeq") or " ").split()[-1]
        up = self.flows.get(record.upstream)
        if pending is not None and cseq_method == pending.request.method:
            pending.client.receive_response(response.code)
            if pending.client.terminated:
                del self._pending[branch]
                self._remember(branch, pending)
            if (
                up is not None
                and up.side is Side.CLIENT
                and flow.side is Side.INTERNAL
                and 200 <= response.code < 300
                and pending.request.method == "REGISTER"
            ):
                up.user = uri_of(pending.request.headers["To"]).split(";", 1)[0]
        if up is None:
            log.info("answer %d to a caller that has left (flow %d)", response.code, flow_id)
            return []
        return [Send(record.upstream, response)]

    # ------------------------------------------------------------------ failures and timers

    def next_hop_failed(
        self, branch: str, kind: str, detail: str, peer: str | None = None
    ) -> list[Action]:
        """The adapter could not reach the next hop: ``kind`` is a key of :data:`DIAGNOSTICS`."""
        pending = self._pending.pop(branch, None)
        if pending is None:
            return []
        log.warning("next hop failed for %s: %s", pending.request.method, detail)
        self._note_refusal(f"{pending.request.method}: {detail}")
        response = self._diagnostic_response(pending.request, kind, detail, peer)
        if not self._unwind(response):
            return []
        return [Send(pending.upstream, response)]

    def get_timer(self) -> float | None:
        while self._timers and self._timers[0][1] not in self._pending:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def handle_timer(self, now: float) -> list[Action]:
        """408 to the caller of every request whose next hop stayed silent (Timer B/F)."""
        actions: list[Action] = []
        while self._timers and self._timers[0][0] <= now:
            _, branch = heapq.heappop(self._timers)
            pending = self._pending.get(branch)
            if pending is None or not pending.client.handle_timer(now):
                continue
            del self._pending[branch]
            log.warning("next hop silent for %s (branch %s): 408", pending.request.method, branch)
            response = response_for(
                pending.request,
                408,
                headers=[("Warning", f'399 {self.config.external_fqdn} "Next hop did not answer"')],
            )
            if self._unwind(response):
                actions.append(Send(pending.upstream, response))
        return actions
