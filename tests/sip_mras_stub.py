"""A SERVICE handler factory for the settings-hook test (``module:factory``)."""

from __future__ import annotations

from collections.abc import Callable

from sipmessage import Request, Response

from simulator.lab.services import ServiceContext
from simulator.sip.build import response_for


def factory(ctx: ServiceContext) -> Callable[[Request], Response]:
    def handle(request: Request) -> Response:
        body = f"<credentials host='{ctx.host.id}'/>".encode()
        return response_for(
            request, 200, body=body, headers=[("Content-Type", "application/x-test")]
        )

    return handle
