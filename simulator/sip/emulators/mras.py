"""The Front End's MRAS: answers SIP SERVICE credentialsRequests with A/V Edge credentials.

Lync clients get their media relay credentials from the Front End, not from the A/V Edge: a SIP
SERVICE request carrying an ``application/msrtc-media-relay-auth+xml`` credentialsRequest is
answered with a username, a password, their lifetime and the media relay list. The credentials
are time-limited ones derived from the secret the Front End shares with the A/V Edge
(:func:`simulator.media.mras.answer_credentials_request`), so the relay accepts them without
knowing the user. Configured in the topology::

    [services.front-end.service_handlers]
    "application/msrtc-media-relay-auth+xml" = "simulator.sip.emulators.mras:factory"
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sipmessage import Address, Request, Response

from simulator.lab.services import ServiceContext
from simulator.lab.topology import Topology
from simulator.media.mras import (
    MediaRelay,
    MrasError,
    answer_credentials_request,
)
from simulator.sip.build import response_for

CONTENT_TYPE = "application/msrtc-media-relay-auth+xml"


def factory(ctx: ServiceContext) -> Callable[[Request], Response]:
    """The SERVICE handler of a Front End: one relay list and secret for the whole topology."""
    relays = relays_from_topology(ctx.topology)
    secret = str(ctx.settings["shared_secret"]).encode()

    def handle(request: Request) -> Response:
        try:
            uri = Address.parse(request.headers["From"]).uri
            identity = f"{uri.user}@{uri.host}"
        except (KeyError, ValueError):
            return response_for(request, 400, "Bad From header")
        try:
            body = answer_credentials_request(
                request.body, identity=identity, relays=relays, secret=secret, now=time.time()
            )
        except MrasError as exc:
            return response_for(request, 400, f"Bad credentialsRequest: {exc}")
        return response_for(request, 200, body=body, headers=[("Content-Type", CONTENT_TYPE)])

    return handle


def relays_from_topology(topology: Topology) -> list[MediaRelay]:
    """The media relay list of the topology's A/V Edges (hosts running ``av-edge``).

    ``internet``: the interface with a ``relay`` listener (its FQDN, UDP ``stun-udp`` port and
    TCP ``turn-tls``/``turn-tcp`` port, 443 preferred); ``intranet``: the host's other interfaces
    with STUN/TURN listeners. The list names FQDNs, which the lab DNS resolves in every runner.
    """
    relays: list[MediaRelay] = []
    for host in topology.hosts:
        if "av-edge" not in host.services:
            continue
        listeners = host.listeners_of("av-edge")
        relay_ifaces = {lst.interface for lst in listeners if lst.proto == "relay"}
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
