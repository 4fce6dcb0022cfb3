"""Shared helpers for the XMPP lab tests: raw stream probes (clients: simulator.xmpp.harness)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path


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
