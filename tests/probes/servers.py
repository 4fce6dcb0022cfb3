"""Real loopback servers for the probe tests: TLS/MTLS SIP responders with lab certificates."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from simulator.lab.topology import load_topology
from simulator.pki import CertPaths, LabPki
from simulator.tls import server_context

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

SERVER_ADDRESS = "127.0.113.10"  # fabrikam's wan address in the local runner
CLIENT_ADDRESS = "127.51.100.130"  # the Edge's internal interface in the local runner


async def sip_responder(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer one OPTIONS with 200 OK, copying Via/From/To/Call-ID/CSeq."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    copied = [
        ln for ln in lines[1:] if ln.split(":", 1)[0] in ("Via", "From", "To", "Call-ID", "CSeq")
    ]
    writer.write(
        (
            "SIP/2.0 200 OK\r\n" + "\r\n".join(copied) + "\r\nServer: test-responder\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    await writer.drain()


@dataclass
class Server:
    address: str
    port: int
    accepted: asyncio.Queue[ssl.SSLObject | None]


class TlsStream:
    """Server side of TLS over an asyncio stream with a MemoryBIO.

    Unlike asyncio's own TLS server (which drops the connection without flushing the alert when
    the handshake fails), this sends OpenSSL's alert as any real TLS server does, so the client
    learns *why* (unknown CA, certificate required ...).
    """

    def __init__(
        self, ctx: ssl.SSLContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.reader, self.writer = reader, writer
        self.buffer = b""

    def _flush(self) -> None:
        if data := self.outgoing.read():
            self.writer.write(data)

    async def _fill(self) -> bool:
        data = await self.reader.read(65536)
        if not data:
            self.incoming.write_eof()
            return False
        self.incoming.write(data)
        return True

    async def handshake(self) -> bool:
        for _ in range(50):
            try:
                self.obj.do_handshake()
                self._flush()
                return True
            except ssl.SSLWantReadError:
                self._flush()
                if not await self._fill():
                    return False
            except ssl.SSLError:
                self._flush()  # the alert
                await self.writer.drain()
                return False
        return False

    async def read(self, n: int = 65536) -> bytes:
        if self.buffer:
            data, self.buffer = self.buffer[:n], self.buffer[n:]
            return data
        for _ in range(1000):
            try:
                data = self.obj.read(n)
                self._flush()
                return data
            except ssl.SSLWantReadError:
                self._flush()
                if not await self._fill():
                    return b""
            except ssl.SSLError:
                self._flush()
                return b""
        return b""

    async def readuntil(self, separator: bytes) -> bytes:
        while separator not in self.buffer:
            chunk = await self.read()
            if not chunk:
                raise asyncio.IncompleteReadError(self.buffer, None)
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(separator)
        return head + separator

    def write(self, data: bytes) -> None:
        self.obj.write(data)
        self._flush()

    async def drain(self) -> None:
        await self.writer.drain()

    def get_extra_info(self, name: str) -> object:
        if name == "ssl_object":
            return self.obj
        return self.writer.get_extra_info(name)


@contextlib.asynccontextmanager
async def serve(
    ctx: ssl.SSLContext | None, handler: Handler, address: str = SERVER_ADDRESS
) -> AsyncIterator[Server]:
    """A TCP server on ``address`` (TLS with ``ctx``), running ``handler`` once per connection."""
    accepted: asyncio.Queue[ssl.SSLObject | None] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                if ctx is None:
                    accepted.put_nowait(None)
                    await handler(reader, writer)
                    return
                tls = TlsStream(ctx, reader, writer)
                if not await tls.handshake():
                    return
                accepted.put_nowait(tls.obj)
                await handler(tls, tls)  # type: ignore[arg-type]
        except (OSError, EOFError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_client, address, 0)
    try:
        yield Server(address, server.sockets[0].getsockname()[1], accepted)
    finally:
        server.close()
        await server.wait_closed()


def fabrikam_server_ctx(
    pki: LabPki, cert: CertPaths | None = None, *, mtls: bool = False, max_tls12: bool = False
) -> ssl.SSLContext:
    ctx = server_context(
        cert or pki.host_cert("fabrikam", "fabrikam"),
        client_trust=[pki.ca_cert("internal")] if mtls else [],
        require_client_cert=mtls,
    )
    if max_tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def write_isolated_topology(path: Path) -> Path:
    """The default lab on loopback addresses of its own (127.<100 + pid % 100>.x.y), written to
    ``path``, so a lab another process runs on the default loopback addresses does not collide."""
    return load_topology().relocated(100 + os.getpid() % 100).write(path).path
