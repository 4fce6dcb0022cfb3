"""The Edge's A/V Authentication service: MRAS over SIP/MTLS on TCP 5062, internal interface.

Lync's Front End does not mint A/V Edge credentials: it passes a client's SIP SERVICE
``credentialsRequest`` to the A/V Authentication service of the Edge over SIP/MTLS/TCP 5062
(Lync Server 2013 port summaries, the internal interface's table: "Authentication of A/V users
(A/V authentication service) from Front End Server or Front End pool IP address"), and that
service, "collocated with, and [providing] authentication services for, the A/V Edge service"
(Perimeter network VoIP components), answers with credentials the A/V Edge accepts. MRAS uses the
certificate of the Edge's internal interface. The lab does the same: this listener belongs to
the ``av-edge`` service (``proto = "sip-mtls"`` on the internal interface, port 5062), shares its
secret with the TURN core in the same process, and nothing else in the lab knows that secret.

What it accepts (:class:`AvAuthServer`):

- TLS with a client certificate that chains to the trusted CAs (the internal one by default);
- ``SERVICE`` with an ``application/msrtc-media-relay-auth+xml`` body from a trusted server (the
  certificate names a Front End of the topology): 200 with a credentialsResponse for the
  identity the Front End vouches for (the request's From), 400 for a bad body, 403 from any
  other certificate, 415 for another content type;
- ``OPTIONS`` (keep-alives, probes, the lab's own check): 200; any other method 405.

The sans-IO part (parse, answer) is :mod:`simulator.media.mras`; the SIP connections are
:mod:`simulator.sip.aio`'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sipmessage import Request, Response

from simulator.lab.topology import Host, Interface, Topology
from simulator.media.mras import CONTENT_TYPE, MediaRelay, MrasError, answer_credentials_request
from simulator.pki import CertPaths
from simulator.sip.aio import ListenerSpec, SipListener, SipProtocol
from simulator.sip.build import response_for, uri_of
from simulator.tls import server_context

log = logging.getLogger(__name__)

SERVICE_NAME = "av-edge"
"""The lab service that owns the A/V Authentication listener (collocated with the A/V Edge)."""


@dataclass(frozen=True)
class MrasTarget:
    """Where a Front End reaches the A/V Authentication service."""

    host: str
    """The Edge host's id."""
    interface: Interface
    fqdn: str
    """The internal interface's FQDN (the certificate name the Front End checks)."""
    port: int


def mras_target(topology: Topology) -> MrasTarget | None:
    """The A/V Authentication service of the topology: the ``sip-mtls`` listener of the host
    running ``av-edge`` (None when the topology has none)."""
    for host in topology.hosts:
        for lst in host.listeners_of(SERVICE_NAME):
            if lst.proto == "sip-mtls":
                iface = host.interface(lst.interface)
                return MrasTarget(host.id, iface, iface.fqdn or str(iface.address), lst.port)
    return None


def trusted_servers(topology: Topology) -> tuple[str, ...]:
    """Certificate names the A/V Authentication service answers: every FQDN of the topology's
    Front End hosts (Lync trusts the servers of its topology, the Front End pool among them)."""
    names: list[str] = []
    for host in topology.hosts_with_role("front-end"):
        for iface in host.interfaces:
            names += [name.lower() for name in iface.fqdns]
    return tuple(dict.fromkeys(names))


def relays_from_topology(topology: Topology) -> list[MediaRelay]:
    """The media relay list of the topology's A/V Edges (hosts running ``av-edge``).

    ``internet``: the interface with a ``relay`` listener (its FQDN, UDP ``stun-udp`` port and
    TCP ``turn-tls``/``turn-tcp`` port, 443 preferred); ``intranet``: the host's other interfaces
    with STUN/TURN listeners. The list names FQDNs, which the lab DNS resolves in every runner.
    """
    relays: list[MediaRelay] = []
    for host in topology.hosts:
        if SERVICE_NAME not in host.services:
            continue
        relays += _relays_of(host)
    return relays


def _relays_of(host: Host) -> list[MediaRelay]:
    listeners = host.listeners_of(SERVICE_NAME)
    relay_ifaces = {lst.interface for lst in listeners if lst.proto == "relay"}
    relays: list[MediaRelay] = []
    for iface in host.interfaces:
        mine = [lst for lst in listeners if lst.interface == iface.id]
        udp = next((lst.port for lst in mine if lst.proto == "stun-udp"), None)
        tcp_ports = sorted(
            (lst.real_port != 443, lst.port)
            for lst in mine
            if lst.proto in ("turn-tls", "turn-tcp")
        )
        tcp = tcp_ports[0][1] if tcp_ports else None
        if udp is None and tcp is None:
            continue
        location = "internet" if iface.id in relay_ifaces else "intranet"
        relays.append(MediaRelay(location, iface.fqdn or str(iface.address), udp, tcp))
    return relays


class AvAuthServer:
    """MRAS on one SIP/MTLS listener: credentials for the Front End's forwarded requests."""

    def __init__(
        self,
        address: str,
        port: int,
        *,
        cert: CertPaths,
        client_trust: Iterable[Path],
        trusted: Sequence[str],
        relays: list[MediaRelay],
        secret: bytes,
        fqdn: str,
    ) -> None:
        context = server_context(cert, client_trust=list(client_trust), require_client_cert=True)
        context.num_tickets = 0
        self.trusted = tuple(trusted)
        self.relays = relays
        self.secret = secret
        self.fqdn = fqdn
        self.answered = 0
        """credentialsResponses sent (for tests and logs)."""
        self.listener = SipListener(
            ListenerSpec(address, port, context, "av-auth", lambda proto: None, self)
        )

    async def start(self) -> tuple[str, int]:
        return await self.listener.start()

    async def stop(self) -> None:
        await self.listener.stop()

    # ------------------------------------------------------------------ SipOwner

    def on_request(self, proto: SipProtocol, request: Request) -> None:
        if request.method == "ACK":  # never answered (RFC 3261 section 17.2.1)
            return
        proto.send(self.answer(proto, request, time.time()))

    def on_response(self, proto: SipProtocol, response: Response) -> None:
        log.debug("av-auth: stray response %s from %s", response.code, proto.peer[0])

    def on_close(self, proto: SipProtocol) -> None:
        pass

    def answer(self, proto: SipProtocol, request: Request, now: float) -> Response:
        """The answer to one request on ``proto`` (see the module docstring)."""
        method = request.method
        if method == "OPTIONS":
            return response_for(request, 200, headers=[("Allow", "SERVICE, OPTIONS")])
        if method != "SERVICE":
            return response_for(request, 405, headers=[("Allow", "SERVICE, OPTIONS")])
        cert = proto.peer_cert
        if cert is None or not any(cert.matches(name) for name in self.trusted):
            who = ", ".join(cert.names()) if cert is not None else "no certificate"
            log.warning(
                "av-auth: SERVICE from %s refused: %s is not a trusted server", proto.peer[0], who
            )
            warning = f'399 {self.fqdn} "{who} is not a trusted server of this topology"'
            return response_for(request, 403, headers=[("Warning", warning)])
        ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != CONTENT_TYPE:
            return response_for(request, 415, headers=[("Accept", CONTENT_TYPE)])
        identity = uri_of(request.headers.get("From") or "").split(";", 1)[0]
        if identity.lower().startswith("sip:"):
            identity = identity[4:]
        try:
            body = answer_credentials_request(
                request.body, identity=identity, relays=self.relays, secret=self.secret, now=now
            )
        except MrasError as exc:
            return response_for(request, 400, f"Bad credentialsRequest: {exc}")
        self.answered += 1
        return response_for(request, 200, body=body, headers=[("Content-Type", CONTENT_TYPE)])


__all__ = [
    "AvAuthServer",
    "MrasTarget",
    "mras_target",
    "relays_from_topology",
    "trusted_servers",
]
