"""The SIP lab services: Access Edge, Front End, partner Edge and public IM provider.

Each is built from its :class:`~simulator.lab.services.ServiceContext`: listeners and addresses
from the topology, certificates from the lab PKI, settings from ``[services.<name>]`` (keys in
docs/sip.md). ``check`` sends an OPTIONS over TLS (presenting the service's own certificate
where the listener asks for one) and is satisfied by any SIP response.
"""

from __future__ import annotations

import importlib
import logging
import ssl
from typing import Any

from simulator.errors import ConfigError
from simulator.lab.services import BoundListener, ServiceContext
from simulator.lab.topology import Interface, Listener
from simulator.pki import CertPaths
from simulator.sip.aio import AccessEdge, EdgeListeners
from simulator.sip.emulators.server import DomainConfig, DomainServer, ServiceHandler
from simulator.sip.emulators.ua import UserAgent
from simulator.sip.proxy import EdgeConfig
from simulator.tls import client_context, server_context

log = logging.getLogger(__name__)


#: ``tls_max_version`` of ``[services.access-edge]``: "1.2" caps the Edge as Lync Server 2013 on
#: Windows Server 2012 R2 is capped (no TLS 1.3 there), so a peer that insists on 1.3 fails.
TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def _trust(ctx: ServiceContext, cas: Any, default: list[str]) -> list[Any]:
    ids = list(cas) if cas is not None else default
    known = {ca.id for ca in ctx.topology.cas}
    for ca in ids:
        if ca not in known:
            raise ConfigError(
                ctx.topology.path, f"services.{ctx.service}.trusted_cas", f"unknown CA {ca!r}"
            )
    return [ctx.pki.ca_cert(ca) for ca in ids]


def _sip_server(context: ssl.SSLContext) -> ssl.SSLContext:
    """No TLS 1.3 session tickets: sipsak (GnuTLS) reads a ticket as an empty SIP answer."""
    context.num_tickets = 0
    return context


def _cert(ctx: ServiceContext, iface: Interface) -> CertPaths:
    return ctx.pki.interface_cert(iface)


async def _check_options(
    bound: BoundListener, cert: CertPaths | None, trust: list[Any], name: str | None, domain: str
) -> str | None:
    context = client_context(trust, cert=cert, check_hostname=name is not None)
    try:
        async with UserAgent(
            f"sip:check@{domain}",
            host=bound.address,
            port=bound.port,
            context=context,
            server_name=name,
        ) as ua:
            await ua.options(f"sip:{bound.address}:{bound.port};transport=tls", timeout=2.5)
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        return f"no SIP answer: {exc or type(exc).__name__}"
    return None


class AccessEdgeService:
    """The Access Edge: TLS 443 and MTLS 5061 on the Access interface, MTLS 5061 inside."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        settings = dict(ctx.settings)
        federation_cas = settings.pop("trusted_cas", None)
        internal_cas = settings.pop("internal_cas", None)
        self.federation_trust = _trust(ctx, federation_cas, ["public", "fabrikam"])
        self.internal_trust = _trust(ctx, internal_cas, ["internal"])
        tls_max = str(settings.pop("tls_max_version", "1.3"))
        if tls_max not in TLS_VERSIONS:
            raise ConfigError(
                ctx.topology.path,
                "services.access-edge.tls_max_version",
                f"must be one of {', '.join(TLS_VERSIONS)}",
            )
        self.tls_max = TLS_VERSIONS[tls_max]
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
        defaults: dict[str, Any] = {}
        if ctx.host.domain:
            defaults["served_domains"] = (ctx.host.domain,)
        if self.external_iface is not None and self.external_iface.fqdn:
            defaults["external_fqdn"] = self.external_iface.fqdn
        if self.internal_iface is not None and self.internal_iface.fqdn:
            defaults["internal_fqdn"] = self.internal_iface.fqdn
        if "internal_next_hop" in settings and "internal_peer_names" not in settings:
            defaults["internal_peer_names"] = (str(settings["internal_next_hop"]).lower(),)
        try:
            self.config = EdgeConfig.from_settings(settings, **defaults)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(ctx.topology.path, "services.access-edge", str(exc)) from None
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
        return await _check_options(
            bound, cert, [self.ctx.pki.trust_bundle], iface.fqdn, self.config.served_domains[0]
        )

    async def stop(self) -> None:
        if self.edge is not None:
            await self.edge.stop()


class _DomainService:
    """Front End, partner Edge and PIC: one :class:`DomainServer` on every SIP listener."""

    default_cas: list[str] = ["public"]
    federation_via_edge = False
    default_ntlm = False
    """Offer [MS-SIPAE] NTLM besides digest (setting ``ntlm``)."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        settings = dict(ctx.settings)
        cas = settings.pop("trusted_cas", None)
        self.trust = _trust(ctx, cas, self.default_cas)
        users = settings.pop("users", {})
        # The A/V Edge's shared secret, for the MRAS handler (simulator.sip.emulators.mras).
        settings.pop("shared_secret", None)
        if not isinstance(users, dict):
            raise ConfigError(
                ctx.topology.path,
                f"services.{ctx.service}.users",
                "must be a table name = password",
            )
        domain = str(settings.pop("domain", ctx.host.domain or "")).lower()
        if not domain:
            raise ConfigError(ctx.topology.path, f"services.{ctx.service}", "no domain")
        self.iface = (
            ctx.host.interface(ctx.listeners[0].interface)
            if ctx.listeners
            else ctx.host.interfaces[0]
        )
        fqdn = str(settings.pop("fqdn", self.iface.fqdn or domain)).lower()
        edge = settings.pop("edge_fqdn", None)
        handlers = settings.pop("service_handlers", {})
        contacts = settings.pop("contacts", {})
        if not isinstance(contacts, dict) or not all(
            isinstance(v, list) for v in contacts.values()
        ):
            raise ConfigError(
                ctx.topology.path,
                f"services.{ctx.service}.contacts",
                'must be a table user = ["sip:...", ...]',
            )
        ntlm = settings.pop("ntlm", self.default_ntlm)
        if not isinstance(ntlm, bool):
            raise ConfigError(
                ctx.topology.path, f"services.{ctx.service}.ntlm", "must be true or false"
            )
        if not isinstance(handlers, dict):
            raise ConfigError(
                ctx.topology.path,
                f"services.{ctx.service}.service_handlers",
                'must be a table "content/type" = "module:factory"',
            )
        self.handler_factories = {str(k).lower(): str(v) for k, v in handlers.items()}
        if self.federation_via_edge and edge is None:
            edge = self._find_edge_internal()
        unknown = set(settings)
        if unknown:
            raise ConfigError(
                ctx.topology.path,
                f"services.{ctx.service}",
                f"unknown settings: {', '.join(sorted(unknown))}",
            )
        self.config = DomainConfig(
            domain,
            fqdn,
            {str(k): str(v) for k, v in users.items()},
            federation_fqdn=str(edge).lower() if edge else None,
            ntlm=ntlm,
            contacts={str(k).lower(): [str(u) for u in v] for k, v in contacts.items()},
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
        return await _check_options(
            bound, None, [self.ctx.pki.trust_bundle], iface.fqdn, self.config.domain
        )

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()


class FrontEndService(_DomainService):
    """contoso.lab's Front End pool: registrar, IM, presence; other domains go to the Edge."""

    default_cas = ["internal"]
    federation_via_edge = True
    default_ntlm = True


class PartnerEdgeService(_DomainService):
    """fabrikam.lab's Edge and registrar in one."""

    default_cas = ["public", "fabrikam"]


class PublicImService(_DomainService):
    """A public IM provider (pic.lab)."""

    default_cas = ["public", "fabrikam"]
