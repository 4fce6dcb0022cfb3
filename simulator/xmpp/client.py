"""The one XMPP client of the tree: a user on a server's client port (RFC 6120 c2s, slixmpp).

Scenarios (:func:`simulator.scenario.clients.xmpp_user`), the XMPP lab tests, the Prosody and
ejabberd interop tests and the benchmarks drive users with :class:`ChatClient`. The server side
and the Edge speak the package's sans-IO core (:mod:`simulator.xmpp.s2s`); this client is
slixmpp, a real third-party implementation, so the Edge is tested against a peer it did not write.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import slixmpp
from slixmpp import JID


class ChatClient(slixmpp.ClientXMPP):
    """An XMPP user (slixmpp, c2s with STARTTLS): records the chat messages and presence it
    receives. ``source`` binds its socket to a local address; ``sock_factory`` makes the socket
    (a lab host's network namespace, already bound), so a ladder shows the user on its host."""

    def __init__(
        self,
        jid: str,
        password: str,
        ca: Path,
        *,
        source: str | None = None,
        sock_factory: Callable[[], socket.socket] | None = None,
    ) -> None:
        super().__init__(jid, password)
        self.source = source
        self.sock_factory = sock_factory
        self.failures: asyncio.Queue[object] = asyncio.Queue()
        """Why connection attempts failed (slixmpp's ``connection_failed``)."""
        self.add_event_handler("connection_failed", self.failures.put_nowait)
        self.ca_certs = ca
        self.enable_direct_tls = False
        self.received: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
        self.presences: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        """(bare JID, ``available`` or ``unavailable``) as presence arrives."""
        self.started: asyncio.Future[bool] = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("message", self._on_message)
        self.add_event_handler("failed_auth", self._on_failed)
        for kind in ("available", "unavailable"):
            self.add_event_handler(f"presence_{kind}", self._on_presence)

    def _on_start(self, _event: object) -> None:
        self.send_presence()
        if not self.started.done():
            self.started.set_result(True)

    def _on_failed(self, _event: object) -> None:
        if not self.started.done():
            self.started.set_exception(RuntimeError("authentication failed"))

    def _on_presence(self, presence: slixmpp.Presence) -> None:
        kind = "unavailable" if presence["type"] == "unavailable" else "available"
        self.presences.put_nowait((str(presence["from"]).split("/")[0].lower(), kind))

    def _on_message(self, msg: slixmpp.Message) -> None:
        self.received.put_nowait((str(msg["from"]), str(msg["type"]), str(msg["body"])))

    async def login(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.connect(host, port)
        await asyncio.wait_for(self.started, timeout)

    def send_chat(self, to: str, text: str) -> None:
        """Send a one-to-one chat message (``type='chat'``) to the JID ``to``."""
        self.send_message(mto=JID(to), mbody=text, mtype="chat")

    async def _attempt_connection(  # slixmpp's connect step, with local_addr
        self, host: str, port: int, tls: bool, server_hostname: str | None
    ) -> bool:
        if self.source is None and self.sock_factory is None:
            return bool(await super()._attempt_connection(host, port, tls, server_hostname))
        self.event_when_connected = "connected"
        self._connect_loop_wait += 1
        if self._current_connection_attempt is None:
            return False
        try:
            if self.sock_factory is not None:
                sock = self.sock_factory()
                await self.loop.sock_connect(sock, (host, port))
                await self.loop.create_connection(
                    lambda: self,
                    sock=sock,
                    ssl=self.get_ssl_context() if tls else None,
                    server_hostname=server_hostname if tls else None,
                )
            else:
                await self.loop.create_connection(
                    lambda: self,
                    host,
                    port,
                    ssl=self.get_ssl_context() if tls else None,
                    server_hostname=server_hostname,
                    local_addr=(self.source, 0) if self.source else None,
                )
        except OSError as exc:
            self.event("connection_failed", exc)
            return False
        self._connect_loop_wait = 0
        return True
