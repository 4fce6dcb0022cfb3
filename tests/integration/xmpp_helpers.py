"""Shared helpers for the XMPP lab tests: slixmpp clients and raw stream probes."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import slixmpp

STREAM_HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:server'"
    " xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback'"
    " to='{to}' from='{frm}' version='1.0'>"
)


class ChatClient(slixmpp.ClientXMPP):  # type: ignore[misc]
    """A slixmpp user that records the chat messages it receives."""

    def __init__(self, jid: str, password: str, ca: Path) -> None:
        super().__init__(jid, password)
        self.ca_certs = ca
        self.enable_direct_tls = False
        self.received: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
        self.started = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("message", self._on_message)
        self.add_event_handler("failed_auth", self._on_failed)

    def _on_start(self, _event: object) -> None:
        self.send_presence()
        if not self.started.done():
            self.started.set_result(True)

    def _on_failed(self, _event: object) -> None:
        if not self.started.done():
            self.started.set_exception(RuntimeError("authentication failed"))

    def _on_message(self, msg: slixmpp.Message) -> None:
        self.received.put_nowait((str(msg["from"]), str(msg["type"]), str(msg["body"])))

    async def login(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.connect(host, port)
        await asyncio.wait_for(self.started, timeout)


async def raw_stream(host: str, port: int, payload: bytes, timeout: float = 5.0) -> bytes:
    """Send ``payload`` on a plain TCP connection; return everything until the peer closes."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(payload)
        await writer.drain()
        data = b""
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                data += chunk
                if len(data) > 1_000_000:
                    break
        return data
    except (ConnectionResetError, BrokenPipeError):
        return data if "data" in locals() else b""
    finally:
        writer.close()


def tls_client(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert and key:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx
