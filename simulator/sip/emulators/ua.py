"""A SIP user agent over TLS (optionally with a client certificate), for probes, scenarios, tests.

::

    async with UserAgent("sip:alice@contoso.lab", password="...", host=..., port=443,
                         context=client_context(trust), server_name="sip.contoso.lab") as ua:
        await ua.register()
        response = await ua.message("sip:bob@contoso.lab", "hello")
        incoming = await asyncio.wait_for(ua.incoming.get(), 5)

Every request returns its final response (a future per transaction, bounded by ``timeout``);
401/407 challenges are answered once with digest. Incoming MESSAGE, NOTIFY, OPTIONS, BYE and
INVITE are answered 200 automatically (INVITE with :attr:`UserAgent.answer_sdp`) and put on
:attr:`UserAgent.incoming`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import socket
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType

from sipmessage import Request, Response

from simulator.sip import digest
from simulator.sip.aio import SipProtocol, open_sip
from simulator.sip.build import (
    in_invite_transaction,
    new_request,
    new_tag,
    params,
    response_for,
    top_via,
    uri_of,
)
from simulator.tls import tls_failure_reason

DEFAULT_TIMEOUT = 10.0


@dataclass
class Dialog:
    call_id: str
    local: str
    """Our From (with tag)."""
    remote: str
    """Their To (with tag)."""
    target: str
    """Remote target (their Contact URI)."""
    route: list[str]
    cseq: int


class UserAgent:
    """One user's SIP client over one TLS connection."""

    _ids = itertools.count(1)

    def __init__(
        self,
        aor: str,
        *,
        host: str,
        port: int,
        context: ssl.SSLContext,
        server_name: str | None,
        password: str | None = None,
        display: str = "",
        answer_sdp: bytes | None = None,
        local_address: str | None = None,
        auto_answer: bool = True,
        sock_factory: Callable[[], socket.socket] | None = None,
    ) -> None:
        self.local_address = local_address
        self.sock_factory = sock_factory
        """Makes the socket to connect with (a lab host's namespace); None: an ordinary one."""
        self.auto_answer = auto_answer
        """False: incoming requests are queued but never answered (a silent user agent)."""
        self.aor = aor
        self.user = aor.split(":", 1)[1].split("@", 1)[0]
        self.domain = aor.rsplit("@", 1)[1]
        self.password = password
        self.host = host
        self.port = port
        self.context = context
        self.server_name = server_name
        self.display = display
        self.instance = f"ep{next(self._ids)}"
        self.contact = f"<sip:{self.user}@{self.domain};gr={self.instance};transport=tls>"
        self.answer_sdp = answer_sdp
        self.proto: SipProtocol | None = None
        self.incoming: asyncio.Queue[Request] = asyncio.Queue()
        self.dialogs: dict[str, Dialog] = {}
        self._pending: dict[str, asyncio.Future[Response]] = {}
        self._cancels: dict[str, asyncio.Future[Response]] = {}
        self._cseq = itertools.count(1)

    async def __aenter__(self) -> UserAgent:
        await self.connect()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        self.proto = await open_sip(
            self,
            self.host,
            self.port,
            self.context,
            self.server_name,
            label="ua",
            local_address=self.local_address,
            sock=self.sock_factory() if self.sock_factory is not None else None,
        )

    async def close(self) -> None:
        if self.proto is not None:
            self.proto.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.proto.closed), 2)

    # ------------------------------------------------------------------ owner callbacks

    @staticmethod
    def _closed_reason(proto: SipProtocol) -> str:
        if isinstance(proto.lost_reason, ssl.SSLError):
            return f"connection closed by TLS: {tls_failure_reason(proto.lost_reason)}"
        return "connection closed"

    def on_close(self, proto: SipProtocol) -> None:
        reason = self._closed_reason(proto)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError(reason))

    def on_response(self, proto: SipProtocol, response: Response) -> None:
        branch = params(top_via(response)).get("branch") or ""
        if (response.headers.get("CSeq") or "").endswith("CANCEL"):
            cancel = self._cancels.get(response.headers.get("Call-ID") or "")
            if cancel is not None and not cancel.done():
                cancel.set_result(response)
            return
        future = self._pending.get(branch)
        if future is not None and not future.done() and response.code >= 200:
            future.set_result(response)

    def on_request(self, proto: SipProtocol, request: Request) -> None:
        method = request.method
        if method == "ACK":
            self.incoming.put_nowait(request)
            return
        if not self.auto_answer:
            self.incoming.put_nowait(request)
            return
        headers: list[tuple[str, str]] = []
        body = b""
        tag = new_tag()
        if method == "INVITE":
            headers.append(("Contact", self.contact))
            for value in request.headers.getlist("Record-Route"):
                headers.append(("Record-Route", value))
            if self.answer_sdp is not None:
                body = self.answer_sdp
            elif request.body:
                body = request.body
            if body:
                headers.append(("Content-Type", "application/sdp"))
            contact = request.headers.getlist("Contact")
            self.dialogs[request.headers["Call-ID"]] = Dialog(
                request.headers["Call-ID"],
                f"{request.headers['To']};tag={tag}",
                request.headers["From"],
                uri_of(contact[0]) if contact else uri_of(request.headers["From"]),
                list(request.headers.getlist("Record-Route")),
                100,
            )
        proto.send(response_for(request, 200, headers=headers, body=body, to_tag=tag))
        self.incoming.put_nowait(request)

    # ------------------------------------------------------------------ requests

    def build(
        self,
        method: str,
        uri: str,
        *,
        to: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        call_id: str | None = None,
        cseq: int | None = None,
        from_value: str | None = None,
        route: Iterable[str] = (),
    ) -> Request:
        name = f'"{self.display}" ' if self.display else ""
        return new_request(
            method,
            uri,
            via=f"{self.instance}.invalid",
            from_value=from_value or f"{name}<{self.aor}>;tag={new_tag()}",
            contact=self.contact,
            call_id=call_id or f"{secrets.token_hex(8)}@{self.instance}",
            cseq=cseq if cseq is not None else next(self._cseq),
            user_agent="edgesim-ua/0.1",
            to=to,
            headers=headers,
            body=body,
            content_type=content_type,
            route=route,
        )

    async def send(self, request: Request, *, timeout: float = DEFAULT_TIMEOUT) -> Response:
        """Send a request and wait for its final response."""
        if self.proto is None:
            raise ConnectionError("not connected")
        if self.proto.closed.done():  # closed before we wrote (TLS 1.3: a refused certificate)
            raise ConnectionError(self._closed_reason(self.proto))
        branch = params(top_via(request)).get("branch") or ""
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[branch] = future
        try:
            self.proto.send(request)
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(branch, None)

    async def request(
        self, method: str, uri: str, *, timeout: float = DEFAULT_TIMEOUT, **kw: object
    ) -> Response:
        """Send ``method`` to ``uri``; answer one digest challenge if there is a password."""
        request = self.build(method, uri, **kw)  # type: ignore[arg-type]
        response = await self.send(request, timeout=timeout)
        if response.code in (401, 407) and self.password is not None:
            header = "WWW-Authenticate" if response.code == 401 else "Proxy-Authenticate"
            offered = response.headers.getlist(header)
            # a Lync server offers NTLM first ([MS-SIPAE]); this agent speaks digest
            challenge_value = next(
                (v for v in offered if v.lstrip().lower().startswith("digest")), None
            )
            if challenge_value:
                auth = digest.authorization(
                    challenge_value=challenge_value,
                    username=self.user,
                    password=self.password,
                    method=method,
                    uri=uri,
                    cnonce=secrets.token_hex(4),
                )
                extra = list(kw.pop("headers", ()))  # type: ignore[call-overload]
                extra.append(
                    ("Authorization" if response.code == 401 else "Proxy-Authorization", auth)
                )
                retry = self.build(
                    method,
                    uri,
                    headers=extra,
                    call_id=request.headers["Call-ID"],
                    from_value=request.headers["From"],
                    **kw,  # type: ignore[arg-type]
                )
                response = await self.send(retry, timeout=timeout)
        return response

    async def register(self, *, expires: int = 3600, timeout: float = DEFAULT_TIMEOUT) -> Response:
        return await self.request(
            "REGISTER",
            f"sip:{self.domain}",
            to=f"<{self.aor}>",
            timeout=timeout,
            headers=[("Expires", str(expires))],
        )

    async def message(self, to: str, text: str, *, timeout: float = DEFAULT_TIMEOUT) -> Response:
        return await self.request(
            "MESSAGE", to, body=text.encode(), content_type="text/plain", timeout=timeout
        )

    async def options(self, uri: str, *, timeout: float = DEFAULT_TIMEOUT) -> Response:
        return await self.request("OPTIONS", uri, timeout=timeout)

    async def subscribe(
        self, uri: str, *, event: str = "presence", timeout: float = DEFAULT_TIMEOUT
    ) -> Response:
        return await self.request(
            "SUBSCRIBE",
            uri,
            timeout=timeout,
            headers=[("Event", event), ("Accept", "application/pidf+xml"), ("Expires", "3600")],
        )

    def in_dialog(self, method: str, dialog: Dialog, cseq: int) -> Request:
        """A request inside ``dialog`` (:rfc:`3261#section-12.2.1.1`): to its remote target,
        along its route set, with its tags and Call-ID."""
        return self.build(
            method,
            dialog.target,
            to=dialog.remote,
            call_id=dialog.call_id,
            cseq=cseq,
            from_value=dialog.local,
            route=dialog.route,
        )

    async def invite(
        self, uri: str, sdp: bytes, *, timeout: float = DEFAULT_TIMEOUT
    ) -> tuple[Response, Dialog | None]:
        """INVITE; on 2xx the ACK is sent and the dialog returned (for :meth:`bye`)."""
        request = self.build("INVITE", uri, body=sdp, content_type="application/sdp")
        return await self.send_invite(request, timeout=timeout)

    async def send_invite(
        self, request: Request, *, timeout: float = DEFAULT_TIMEOUT
    ) -> tuple[Response, Dialog | None]:
        """Send a built INVITE (see :meth:`cancel`); ACKs the final response (RFC 3261 17.1.1.3)."""
        uri = str(request.uri)
        response = await self.send(request, timeout=timeout)
        if not 200 <= response.code < 300:
            # the ACK of a failure belongs to the INVITE transaction: same branch, same Route
            assert self.proto is not None
            self.proto.send(in_invite_transaction("ACK", request, response.headers["To"]))
            return response, None
        cseq = int(request.headers["CSeq"].split()[0])
        contact = response.headers.getlist("Contact")
        dialog = Dialog(
            request.headers["Call-ID"],
            request.headers["From"],
            response.headers["To"],
            uri_of(contact[0]) if contact else uri,
            list(reversed(response.headers.getlist("Record-Route"))),
            cseq,
        )
        assert self.proto is not None
        self.proto.send(self.in_dialog("ACK", dialog, cseq))
        return response, dialog

    async def cancel(self, invite: Request, *, timeout: float = DEFAULT_TIMEOUT) -> Response:
        """CANCEL a pending INVITE built with :meth:`build` (RFC 3261 section 9.1)."""
        request = in_invite_transaction("CANCEL", invite, invite.headers["To"])
        h = request.headers
        if self.proto is None:
            raise ConnectionError("not connected")
        # the answer to the CANCEL has the INVITE's branch too: wait for it by CSeq method
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._cancels[h["Call-ID"]] = future
        try:
            self.proto.send(request)
            return await asyncio.wait_for(future, timeout)
        finally:
            self._cancels.pop(h["Call-ID"], None)

    async def bye(self, dialog: Dialog, *, timeout: float = DEFAULT_TIMEOUT) -> Response:
        dialog.cseq += 1
        return await self.send(self.in_dialog("BYE", dialog, dialog.cseq), timeout=timeout)

    async def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (for malformed-input tests)."""
        if self.proto is None:
            raise ConnectionError("not connected")
        self.proto.send_bytes(data)
