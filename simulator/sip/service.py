"""The SIP lab services: Access Edge, Front End, partner Edge and public IM provider.

Each is built from its :class:`~simulator.lab.services.ServiceContext`: listeners and addresses
from the topology, certificates from the lab PKI, settings from ``[services.<name>]``, loaded
typed at start (:class:`AccessEdgeSettings`, :class:`SipDomainSettings`; keys in docs/sip.md):
an unknown key or a value of the wrong type is a ConfigError naming the topology file and the
entry. ``check`` (:func:`options_check`) sends an OPTIONS over TLS (presenting the service's own
certificate where the listener asks for one) and is satisfied by any SIP response.
"""

from __future__ import annotations

import importlib
import logging
import ssl
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from simulator.errors import ConfigError
from simulator.lab.services import BoundListener, ServiceContext
from simulator.lab.topology import Interface, Listener
from simulator.pki import CertPaths
from simulator.settings import setting
from simulator.sip.aio import AccessEdge, EdgeListeners
from simulator.sip.emulators.server import DomainConfig, DomainServer, ServiceHandler
from simulator.sip.emulators.ua import UserAgent
from simulator.sip.proxy import EdgeConfig
from simulator.tls import client_context, server_context

log = logging.getLogger(__name__)


#: ``tls_max_version`` of ``[services.access-edge]``: "1.2" caps the Edge as Lync Server 2013 on
#: Windows Server 2012 R2 is capped (no TLS 1.3 there), so a peer that insists on 1.3 fails.
TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def _tls_version(value: object) -> ssl.TLSVersion:
    version = TLS_VERSIONS.get(str(value))
    if version is None:
        raise ValueError(f"must be one of {', '.join(TLS_VERSIONS)}")
    return version


@dataclass(frozen=True)
class AccessEdgeSettings(EdgeConfig):
    """``[services.access-edge]``: the Edge's policy and limits (:class:`EdgeConfig`; where a
    key is missing, ``served_domains`` is the host's domain, ``external_fqdn`` and
    ``internal_fqdn`` the interfaces' FQDNs, ``internal_peer_names`` the
    ``internal_next_hop``), and the service's TLS."""

    trusted_cas: tuple[str, ...] = ("public", "fabrikam")
    """CAs (ids of the topology's ``cas``) whose client certificates MTLS 5061 on the Access
    interface accepts."""
    internal_cas: tuple[str, ...] = ("internal",)
    """CAs whose client certificates MTLS 5061 on the internal interface accepts."""
    tls_max_version: ssl.TLSVersion = setting(ssl.TLSVersion.TLSv1_3, parse=_tls_version)
    """The newest TLS version offered and accepted: ``"1.3"`` or ``"1.2"``
    (:data:`TLS_VERSIONS`)."""


@dataclass(frozen=True)
class SipDomainSettings:
    """``[services.front-end]``, ``[services.partner-edge]``, ``[services.pic]``: one SIP
    domain's registrar and proxy (:class:`DomainServer`)."""

    domain: str | None = None
    """The SIP domain served (default: the host's domain)."""
    fqdn: str | None = None
    """The server's FQDN (default: the FQDN of the first listener's interface, else the
    domain)."""
    users: dict[str, str] = setting(factory=dict, what="a table name = password")
    """User name -> password (the topology lists names; each lab generates their passwords,
    :mod:`simulator.pki.secrets`)."""
    trusted_cas: tuple[str, ...] | None = None
    """CAs whose certificates the server trusts (default: the service's own, internal for the
    Front End, public and fabrikam for the others)."""
    edge_fqdn: str | None = None
    """Where requests for other domains go (the Front End's default: the internal interface
    of the topology's Access Edge)."""
    service_handlers: dict[str, str] = setting(
        factory=dict, what='a table "content/type" = "module:factory"'
    )
    """Content type of a SIP SERVICE -> ``module:factory`` of its handler (the factory gets the
    ServiceContext and returns the handler)."""
    contacts: dict[str, tuple[str, ...]] = setting(
        factory=dict, what='a table user = ["sip:...", ...]'
    )
    """User -> the SIP URIs of its contact list (served as Lync's roaming contacts)."""
    ntlm: bool | None = None
    """Offer [MS-SIPAE] NTLM besides digest (default: true for the Front End only)."""


def _trust(ctx: ServiceContext, ids: tuple[str, ...], key: str = "trusted_cas") -> list[Path]:
    """The certificates of the CAs ``ids`` (setting ``key``), each a CA of the topology."""
    known = {ca.id for ca in ctx.topology.cas}
    for ca in ids:
        if ca not in known:
            raise ConfigError(
                ctx.topology.path, f"services.{ctx.service}.{key}", f"unknown CA {ca!r}"
            )
    return [ctx.pki.ca_cert(ca) for ca in ids]


def _sip_server(context: ssl.SSLContext) -> ssl.SSLContext:
    """No TLS 1.3 session tickets: sipsak (GnuTLS) reads a ticket as an empty SIP answer."""
    context.num_tickets = 0
    return context


def _cert(ctx: ServiceContext, iface: Interface) -> CertPaths:
    return ctx.pki.interface_cert(iface)


async def options_check(
    bound: BoundListener,
    cert: CertPaths | None,
    trust: list[Path],
    name: str | None,
    domain: str | None = None,
    *,
    want_200: bool = False,
) -> str | None:
    """SIP OPTIONS over TLS to a lab listener, presenting ``cert`` (where the listener asks
    for one) and checking the server's certificate names ``name`` (when given): None when it
    answers (any SIP response, or only a 200 with ``want_200``), else the reason."""
    context = client_context(trust, cert=cert, check_hostname=name is not None)
    try:
        async with UserAgent(
            f"sip:check@{domain or name or bound.address}",
            host=bound.address,
            port=bound.port,
            context=context,
            server_name=name,
        ) as ua:
            response = await ua.options(
                f"sip:{bound.address}:{bound.port};transport=tls", timeout=2.5
            )
    except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
        return f"no SIP answer: {exc or type(exc).__name__}"
    if want_200 and response.code != 200:
        return f"OPTIONS answered {response.code} {response.phrase}"
    return None


class AccessEdgeService:
    """The Access Edge: TLS 443 and MTLS 5061 on the Access interface, MTLS 5061 inside."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        settings = ctx.typed_settings(AccessEdgeSettings)
        self.federation_trust = _trust(ctx, settings.trusted_cas)
        self.internal_trust = _trust(ctx, settings.internal_cas, "internal_cas")
        self.tls_max = settings.tls_max_version
        self.external_iface: Interface | None = None
        self.internal_iface: Interface | None = None
        self.kinds: dict[Listener, str] = {}
        for lst in ctx.listeners:
            iface = ctx.host.interface(lst.interface)
            if lst.proto == "sip-tls":
                self.kinds[lst] = "client"
                self.external_iface = iface
            elif lst.proto == "sip-mtls" and ctx.topology.zone(iface.zone).public:
                self.kinds[lst] = "federation"
                self.external_iface = iface
            elif lst.proto == "sip-mtls":
                self.kinds[lst] = "internal"
                self.internal_iface = iface
        given = set(ctx.settings)
        defaults: dict[str, Any] = {}
        if ctx.host.domain and "served_domains" not in given:
            defaults["served_domains"] = (ctx.host.domain,)
        external, internal = self.external_iface, self.internal_iface
        if external is not None and external.fqdn and "external_fqdn" not in given:
            defaults["external_fqdn"] = external.fqdn
        if internal is not None and internal.fqdn and "internal_fqdn" not in given:
            defaults["internal_fqdn"] = internal.fqdn
        if "internal_next_hop" in given and "internal_peer_names" not in given:
            defaults["internal_peer_names"] = (settings.internal_next_hop.lower(),)
        self.config: EdgeConfig = replace(settings, **defaults)
        self.edge: AccessEdge | None = None

    async def start(self) -> list[BoundListener]:
        ctx = self.ctx
        specs: dict[str, tuple[str, int, ssl.SSLContext] | None] = {
            "client": None,
            "federation": None,
            "internal": None,
        }
        for lst, kind in self.kinds.items():
            iface = ctx.host.interface(lst.interface)
            cert = _cert(ctx, iface)
            if kind == "client":
                context = server_context(cert)
            elif kind == "federation":
                context = server_context(
                    cert, client_trust=self.federation_trust, require_client_cert=True
                )
            else:
                context = server_context(
                    cert, client_trust=self.internal_trust, require_client_cert=True
                )
            context.maximum_version = self.tls_max
            specs[kind] = (ctx.address(iface), lst.port, _sip_server(context))
        external_cert = _cert(ctx, self.external_iface) if self.external_iface else None
        internal_cert = _cert(ctx, self.internal_iface) if self.internal_iface else None
        federation_client = client_context(self.federation_trust, cert=external_cert)
        internal_client = client_context(self.internal_trust, cert=internal_cert)
        for client in (federation_client, internal_client):
            client.maximum_version = self.tls_max
        self.edge = AccessEdge(
            self.config,
            EdgeListeners(specs["client"], specs["federation"], specs["internal"]),
            federation_client=federation_client,
            internal_client=internal_client,
            external_resolver=ctx.resolver(self.external_iface)
            if self.external_iface
            else ctx.resolver(),
            internal_resolver=ctx.resolver(self.internal_iface)
            if self.internal_iface
            else ctx.resolver(),
        )
        bound = await self.edge.start()
        out: list[BoundListener] = []
        for lst, kind in self.kinds.items():
            address, port = bound[kind]
            out.append(BoundListener(lst, "tcp", address, port))
        return out

    async def check(self, bound: BoundListener) -> str | None:
        kind = self.kinds.get(bound.listener)
        iface = self.ctx.host.interface(bound.listener.interface)
        cert = None if kind == "client" else _cert(self.ctx, iface)
        return await options_check(
            bound, cert, [self.ctx.pki.trust_bundle], iface.fqdn, self.config.served_domains[0]
        )

    async def stop(self) -> None:
        if self.edge is not None:
            await self.edge.stop()


class _DomainService:
    """Front End, partner Edge and PIC: one :class:`DomainServer` on every SIP listener."""

    default_cas: tuple[str, ...] = ("public",)
    federation_via_edge = False
    default_ntlm = False
    """Offer [MS-SIPAE] NTLM besides digest where the setting ``ntlm`` is not given."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        settings = ctx.typed_settings(SipDomainSettings)
        cas = settings.trusted_cas
        self.trust = _trust(ctx, cas if cas is not None else self.default_cas)
        domain = (settings.domain if settings.domain is not None else ctx.host.domain or "").lower()
        if not domain:
            raise ConfigError(ctx.topology.path, f"services.{ctx.service}", "no domain")
        self.iface = (
            ctx.host.interface(ctx.listeners[0].interface)
            if ctx.listeners
            else ctx.host.interfaces[0]
        )
        fqdn = (settings.fqdn if settings.fqdn is not None else self.iface.fqdn or domain).lower()
        edge = settings.edge_fqdn
        self.handler_factories = {k.lower(): v for k, v in settings.service_handlers.items()}
        if self.federation_via_edge and edge is None:
            edge = self._find_edge_internal()
        self.config = DomainConfig(
            domain,
            fqdn,
            dict(settings.users),
            federation_fqdn=edge.lower() if edge else None,
            ntlm=settings.ntlm if settings.ntlm is not None else self.default_ntlm,
            contacts={k.lower(): list(v) for k, v in settings.contacts.items()},
        )
        self.server: DomainServer | None = None

    def _find_edge_internal(self) -> str | None:
        for host in self.ctx.topology.hosts_with_role("edge"):
            for lst in host.listeners_of("access-edge"):
                iface = host.interface(lst.interface)
                if lst.proto == "sip-mtls" and not self.ctx.topology.zone(iface.zone).public:
                    return iface.fqdn
        return None

    async def start(self) -> list[BoundListener]:
        ctx = self.ctx
        cert = _cert(ctx, self.iface)
        listens = []
        for lst in ctx.listeners:
            iface = ctx.host.interface(lst.interface)
            context = server_context(
                _cert(ctx, iface), client_trust=self.trust, require_client_cert=False
            )
            listens.append((ctx.address(iface), lst.port, _sip_server(context)))
        self.server = DomainServer(
            self.config,
            listeners=listens,
            client_context=client_context(self.trust, cert=cert),
            resolver=ctx.resolver(self.iface),
            label=ctx.service,
        )
        for content_type, target in self.handler_factories.items():
            self.server.service_handlers[content_type] = self._load_handler(content_type, target)
        bound = await self.server.start()
        return [
            BoundListener(lst, "tcp", a, p)
            for lst, (a, p) in zip(ctx.listeners, bound, strict=True)
        ]

    def _load_handler(self, content_type: str, target: str) -> ServiceHandler:
        """``module:factory``; the factory gets the ServiceContext and returns the handler."""
        entry = f"services.{self.ctx.service}.service_handlers.{content_type}"
        module_name, _, attr = target.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(
                self.ctx.topology.path, entry, f"cannot load {target}: {exc}"
            ) from None
        handler = factory(self.ctx)
        if not callable(handler):
            raise ConfigError(self.ctx.topology.path, entry, f"{target} did not return a handler")
        return handler  # type: ignore[no-any-return]

    async def check(self, bound: BoundListener) -> str | None:
        iface = self.ctx.host.interface(bound.listener.interface)
        return await options_check(
            bound, None, [self.ctx.pki.trust_bundle], iface.fqdn, self.config.domain
        )

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()


class FrontEndService(_DomainService):
    """contoso.lab's Front End pool: registrar, IM, presence; other domains go to the Edge."""

    default_cas = ("internal",)
    federation_via_edge = True
    default_ntlm = True


class PartnerEdgeService(_DomainService):
    """fabrikam.lab's Edge and registrar in one."""

    default_cas = ("public", "fabrikam")


class PublicImService(_DomainService):
    """A public IM provider (pic.lab)."""

    default_cas = ("public", "fabrikam")
