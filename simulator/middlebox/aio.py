"""The inspecting proxy: accepts the flows the firewall diverts to it, terminates TLS with a
certificate its own CA signs for the name the client asked for, and opens its own TLS to the
real destination, from the client's address (a transparent proxy, as an inline firewall is).

Per flow (:meth:`InspectingProxy.handle`):

1. the first bytes decide (:func:`simulator.middlebox.records.first_bytes`): not a TLS record,
   the flow is reset; a TLS handshake record goes to the box's TLS stack (OpenSSL, TLS 1.2 and
   later, as current inspection products accept);
2. the handshake runs over memory BIOs, so that a refused one sends OpenSSL's alert before the
   close (the [MS-TURN] pseudo-TLS ClientHello gets ``protocol version``); the certificate is
   minted for the SNI, or for the destination address when the client sends none;
3. the upstream leg: a socket bound to the client's address (``IP_TRANSPARENT``) connects to the
   original destination (the accepted socket's own address: the firewall diverts with
   ``tproxy``, which keeps it) and runs TLS there, verifying the server against the box's trust
   store (the lab's public CAs, as a box on the internet edge trusts public CAs);
4. bytes are copied both ways until either side closes or the flow is idle for ``idle``.

Bounded: at most ``max_flows`` flows at once (more are reset), handshake bytes capped, every
wait under a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import socket
import ssl
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from simulator.middlebox.ca import InspectionCa
from simulator.middlebox.records import RECORD_HEADER, FirstBytes, describe, first_bytes
from simulator.tls import client_context, tls_failure_reason

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0
IDLE_TIMEOUT = 120.0
MAX_FLOWS = 256
MAX_HANDSHAKE_BYTES = 64 * 1024
LEAF_CACHE = 64
CHUNK = 65536


def transparent_listener(port: int, host: str = "0.0.0.0") -> socket.socket:
    """A listening socket that accepts connections addressed anywhere (``IP_TRANSPARENT``),
    for the ``tproxy`` rule that diverts the flows to it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_IP, socket.IP_TRANSPARENT, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a box that drops a flow it will not pass."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _TlsServerEnd:
    """The client-facing TLS of one flow, over memory BIOs on a stream."""

    def __init__(
        self, obj: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO,
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
    ) -> None:  # fmt: skip
        self.obj, self.incoming, self.outgoing = obj, incoming, outgoing
        self.reader, self.writer = reader, writer

    async def flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def _fill(self, timeout: float) -> bool:
        async with asyncio.timeout(timeout):
            chunk = await self.reader.read(CHUNK)
        if not chunk:
            self.incoming.write_eof()
            return False
        self.incoming.write(chunk)
        return True

    async def handshake(self) -> None:
        """Complete the server handshake; on an SSLError its alert is sent first."""
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            taken = 0
            while True:
                try:
                    self.obj.do_handshake()
                    await self.flush()
                    return
                except ssl.SSLWantReadError:
                    await self.flush()
                    taken += 1
                    if taken * CHUNK > MAX_HANDSHAKE_BYTES or not await self._fill(
                        HANDSHAKE_TIMEOUT
                    ):
                        raise ConnectionResetError("the client left in the handshake") from None
                except ssl.SSLError:
                    with contextlib.suppress(OSError):
                        await self.flush()  # the alert OpenSSL wrote
                    raise

    async def read(self, idle: float) -> bytes:
        """Decrypted bytes from the client; b"" at its end."""
        while True:
            try:
                return self.obj.read(CHUNK)
            except ssl.SSLWantReadError:
                await self.flush()
                if not await self._fill(idle):
                    with contextlib.suppress(ssl.SSLError):
                        return self.obj.read(CHUNK)
                    return b""
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""

    async def write(self, data: bytes) -> None:
        self.obj.write(data)
        await self.flush()


class InspectingProxy:
    """SSL inspection of the flows diverted to :meth:`serve`'s socket."""

    def __init__(
        self,
        ca: InspectionCa,
        workdir: Path,
        *,
        upstream_trust: Sequence[Path],
        idle: float = IDLE_TIMEOUT,
        max_flows: int = MAX_FLOWS,
        transparent: bool = True,
        upstream: Callable[[tuple[str, int]], tuple[str, int]] | None = None,
    ) -> None:
        """``transparent``: the upstream leg leaves from the client's address (in the lab's
        middlebox namespace; needs CAP_NET_ADMIN); ``upstream`` maps the address a flow was
        accepted on to where its server is (default: the same, as ``tproxy`` keeps it)."""
        self.ca = ca
        self.transparent = transparent
        self.upstream = upstream
        self.workdir = workdir
        self.idle = idle
        self.max_flows = max_flows
        self.stats: Counter[str] = Counter()
        self._flows = 0
        self._leaves: dict[str, ssl.SSLContext] = {}
        self._names: dict[int, str] = {}
        self._upstream_sni = client_context(upstream_trust)
        self._upstream_ip = client_context(upstream_trust, check_hostname=False)

    # ------------------------------------------------------------ certificates
    def leaf_context(self, name: str) -> ssl.SSLContext:
        """A server context presenting a certificate for ``name`` (minted once, cached)."""
        ctx = self._leaves.get(name)
        if ctx is not None:
            return ctx
        leaf = self.ca.issue(name, datetime.datetime.now(datetime.UTC))
        stem = self.workdir / f"leaf-{len(self._leaves) % LEAF_CACHE}"
        cert, key = stem.with_suffix(".crt"), stem.with_suffix(".key")
        cert.write_bytes(leaf.cert_pem + self.ca.cert_pem)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(leaf.key_pem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(cert), str(key))
        ctx.sni_callback = self._sni
        if len(self._leaves) >= LEAF_CACHE:
            self._leaves.pop(next(iter(self._leaves)))
        self._leaves[name] = ctx
        return ctx

    def _sni(self, obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        if name:
            self._names[id(obj)] = name
            obj.context = self.leaf_context(name)

    # ------------------------------------------------------------ flows
    async def serve(self, sock: socket.socket) -> asyncio.Server:
        return await asyncio.start_server(self.handle, sock=sock)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = writer.get_extra_info("peername")[:2]
        dest = writer.get_extra_info("sockname")[:2]
        if self._flows >= self.max_flows:
            self.stats["over-limit"] += 1
            _reset(writer)
            return
        self._flows += 1
        try:
            await self._flow(reader, writer, client, dest)
        except Exception as exc:  # one flow's failure never stops the box
            log.warning("%s:%s -> %s:%s: %s", *client, *dest, exc)
            writer.transport.abort()
        finally:
            self._flows -= 1

    async def _flow(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: tuple[str, int],
        dest: tuple[str, int],
    ) -> None:
        flow = f"{client[0]}:{client[1]} -> {dest[0]}:{dest[1]}"
        first = b""
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                while first_bytes(first) is FirstBytes.MORE or len(first) < RECORD_HEADER:
                    chunk = await reader.read(CHUNK)
                    if not chunk:
                        writer.close()
                        return
                    first += chunk
                    if first_bytes(first) is FirstBytes.NOT_TLS:
                        break
        except TimeoutError:
            self.stats["no-hello"] += 1
            _reset(writer)
            return
        if first_bytes(first) is FirstBytes.NOT_TLS:
            self.stats["not-tls"] += 1
            log.info("%s: %s: reset", flow, describe(first))
            _reset(writer)
            return
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        incoming.write(first)
        obj = self.leaf_context(dest[0]).wrap_bio(incoming, outgoing, server_side=True)
        end = _TlsServerEnd(obj, incoming, outgoing, reader, writer)
        try:
            await end.handshake()
        except ssl.SSLError as exc:
            self.stats["refused"] += 1
            log.info("%s: %s refused: %s", flow, describe(first), tls_failure_reason(exc))
            writer.close()
            return
        except (OSError, TimeoutError) as exc:
            self.stats["client-left"] += 1
            log.info("%s: handshake not completed: %s", flow, exc)
            writer.transport.abort()
            return
        finally:
            name = self._names.pop(id(obj), None)
        self.stats["inspected"] += 1
        try:
            up_reader, up_writer = await self._upstream(client, dest, name)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self.stats["upstream-failed"] += 1
            log.info("%s: upstream failed: %s", flow, tls_failure_reason(exc))
            writer.transport.abort()
            return
        log.info("%s: inspecting (%s)", flow, name or dest[0])
        try:
            await self._copy(end, up_reader, up_writer)
        finally:
            up_writer.transport.abort()
            writer.close()

    async def _upstream(
        self, client: tuple[str, int], dest: tuple[str, int], name: str | None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """TLS to the real destination from the client's address (transparent)."""
        if self.upstream is not None:
            dest = self.upstream(dest)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if self.transparent:
                sock.setsockopt(socket.SOL_IP, socket.IP_TRANSPARENT, 1)
                sock.bind((client[0], 0))
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await loop.sock_connect(sock, dest)
                ctx = self._upstream_sni if name else self._upstream_ip
                return await asyncio.open_connection(sock=sock, ssl=ctx, server_hostname=name or "")
        except BaseException:
            sock.close()
            raise

    async def _copy(
        self, end: _TlsServerEnd, up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter
    ) -> None:
        async def to_server() -> None:
            while data := await end.read(self.idle):
                up_writer.write(data)
                await up_writer.drain()

        async def to_client() -> None:
            while True:
                async with asyncio.timeout(self.idle):
                    data = await up_reader.read(CHUNK)
                if not data:
                    return
                await end.write(data)

        tasks = [asyncio.create_task(to_server()), asyncio.create_task(to_client())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(
                    asyncio.CancelledError, OSError, TimeoutError, ssl.SSLError
                ):
                    await task
