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
from simulator.media.mras import (
    MrasError,
    answer_credentials_request,
    relays_from_topology,
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
