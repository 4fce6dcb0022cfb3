"""The Front End's side of MRAS: SIP SERVICE credentialsRequests go to the Edge over TCP 5062.

Lync clients ask their Front End for media relay credentials (a SIP SERVICE request carrying an
``application/msrtc-media-relay-auth+xml`` credentialsRequest), and the Front End passes the
request to the Edge's A/V Authentication service over SIP/MTLS/TCP 5062 on the Edge's internal
interface (Lync Server 2013 port summaries, internal interface: "Authentication of A/V users
(A/V authentication service) from Front End Server or Front End pool"), which answers with the
credentials and the media relay list (:mod:`simulator.media.avauth`). The Front End holds no
secret of the Edge. Configured in the topology::

    [services.front-end.service_handlers]
    "application/msrtc-media-relay-auth+xml" = "simulator.sip.emulators.mras:factory"

The handler checks that the request asks for its own sender (the Front End authenticated the
sender before it calls the handler), then forwards it on one MTLS connection, opened when first
needed (the Front End's certificate, the Edge's internal name checked) and opened again when it
closed. The Edge's answer goes back to the client as it came (status, reason, body). When the
Edge cannot be reached, the client gets ``504 Server Time-out`` with ``ms-diagnostics: 1046``
("Failed to connect to a peer server", [MS-OCER]; the code a Lync server gives when its peer
server does not answer), naming the hop: this is how a firewall that drops 5062 breaks A/V
sign-in, as in production.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sipmessage import Address, Request, Response

from simulator.dns.resolver import LabResolver, ResolutionError
from simulator.errors import ConfigError
from simulator.lab.services import ServiceContext
from simulator.media.avauth import mras_target
from simulator.media.mras import CONTENT_TYPE, MrasError, parse_credentials_request
from simulator.sip.build import response_for
from simulator.sip.emulators.ua import UserAgent
from simulator.sip.proxy import DIAGNOSTICS
from simulator.tls import client_context

log = logging.getLogger(__name__)

TIMEOUT = 5.0
"""Seconds the Front End waits for the A/V Authentication service (connect, then answer)."""


@dataclass(kw_only=True, eq=False)
class MrasForwarder:
    """Forwards credentialsRequests to the Edge's A/V Authentication service over MTLS."""

    fqdn: str
    """The Edge's internal name (resolved, and checked in its certificate)."""
    port: int
    context: ssl.SSLContext
    """The Front End's client context (its certificate: MTLS)."""
    resolver: LabResolver
    local_fqdn: str
    """The Front End's name (the From of the SERVICE, the source in ms-diagnostics)."""
    local_address: str | None = None
    timeout: float = TIMEOUT
    _ua: UserAgent | None = field(default=None, init=False, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    @property
    def hop(self) -> str:
        return f"the A/V Authentication service {self.fqdn}:{self.port}"

    async def _connected(self) -> UserAgent:
        async with self._lock:
            ua = self._ua
            if ua is not None and ua.proto is not None and not ua.proto.closed.done():
                return ua
            address = (await self.resolver.a(self.fqdn))[0]
            ua = UserAgent(
                f"sip:mras@{self.local_fqdn}",
                host=address,
                port=self.port,
                context=self.context,
                server_name=self.fqdn,
                local_address=self.local_address,
            )
            await ua.connect()
            self._ua = ua
            return ua

    async def forward(self, request: Request, identity: str) -> Response:
        """The client's answer: the Edge's, or 504 with ``ms-diagnostics`` when it is out of
        reach."""
        try:
            async with asyncio.timeout(self.timeout * 2):
                ua = await self._connected()
                answer = await ua.request(
                    "SERVICE",
                    f"sip:{self.fqdn}:{self.port};transport=tls",
                    body=request.body,
                    content_type=CONTENT_TYPE,
                    from_value=f"<sip:{identity}>;tag={request_tag(request)}",
                    timeout=self.timeout,
                )
        except ResolutionError as exc:
            return self._unreachable(request, f"cannot resolve {self.fqdn}: {exc}")
        except (OSError, TimeoutError) as exc:  # refused, dropped, TLS, closed
            await self.close()
            why = "no answer" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            return self._unreachable(request, why)
        headers = [("Content-Type", CONTENT_TYPE)] if answer.body else []
        for name in ("Warning", "ms-diagnostics"):
            value = answer.headers.get(name)
            if value:
                headers.append((name, value))
        return response_for(request, answer.code, answer.phrase, body=answer.body, headers=headers)

    def _unreachable(self, request: Request, why: str) -> Response:
        log.warning("MRAS: %s unreachable: %s", self.hop, why)
        status, diag = DIAGNOSTICS["connect"]
        value = (
            f'{diag.code};source="{self.local_fqdn}";reason="{diag.reason}";'
            f'PeerServer="{self.fqdn}:{self.port}";Detail="{why}"'
        )
        warning = f'399 {self.local_fqdn} "{self.hop} is unreachable: {why}"'
        return response_for(
            request, status, headers=[("ms-diagnostics", value), ("Warning", warning)]
        )

    async def close(self) -> None:
        ua, self._ua = self._ua, None
        if ua is not None:
            await ua.close()


def request_tag(request: Request) -> str:
    """The From tag of ``request`` (the forwarded request keeps it)."""
    value = request.headers.get("From") or ""
    _, _, tag = value.partition(";tag=")
    return tag.split(";", 1)[0] or "mras"


def factory(ctx: ServiceContext) -> Callable[[Request], Awaitable[Response]]:
    """The SERVICE handler of a Front End: forwards to the topology's A/V Authentication service."""
    target = mras_target(ctx.topology)
    if target is None:
        raise ConfigError(
            ctx.topology.path,
            f"services.{ctx.service}.service_handlers",
            "MRAS needs an A/V Authentication listener (av-edge, proto sip-mtls, port 5062)",
        )
    iface = ctx.host.interfaces[0]
    forwarder = MrasForwarder(
        fqdn=target.fqdn,
        port=target.port,
        context=client_context(
            [ctx.pki.ca_cert(target.interface.ca or "internal")],
            cert=ctx.pki.require(ctx.pki.interface_cert(iface)),
        ),
        resolver=ctx.resolver(iface),
        local_fqdn=iface.fqdn or str(iface.address),
        local_address=ctx.address(iface),
    )

    async def handle(request: Request) -> Response:
        try:
            uri = Address.parse(request.headers["From"]).uri
            identity = f"{uri.user}@{uri.host}"
        except (KeyError, ValueError):
            return response_for(request, 400, "Bad From header")
        try:
            asked = parse_credentials_request(request.body).identity
        except MrasError as exc:
            return response_for(request, 400, f"Bad credentialsRequest: {exc}")
        if _user(asked) != identity.lower():
            return response_for(
                request, 400, "Bad credentialsRequest: credentials asked for another identity"
            )
        return await forwarder.forward(request, identity)

    return handle


def _user(uri: str) -> str:
    uri = uri.strip().strip("<>").lower()
    return uri[4:] if uri.startswith("sip:") else uri


__all__ = ["CONTENT_TYPE", "MrasForwarder", "factory"]
