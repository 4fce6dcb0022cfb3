"""TURN answers coturn does not give: no RFC 6062, not STUN at all (scripted servers)."""

from __future__ import annotations

import asyncio
import struct

from aioice import stun

from simulator.probes.base import Verdict
from simulator.probes.spec import ProbeSpec, TurnCredentials
from simulator.probes.turn import probe_relay_tcp_egress, probe_turn_tcp
from tests.probes.conftest import SERVER_ADDRESS, serve


async def answer_with_error(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer the first request with 442 Unsupported Transport Protocol (RFC 6062 §6.3)."""
    header = await reader.readexactly(20)
    body = await reader.readexactly(struct.unpack("!H", header[2:4])[0])
    request = stun.parse_message(header + body)
    response = stun.Message(request.message_method, stun.Class.ERROR, request.transaction_id)
    response.attributes["ERROR-CODE"] = (442, "Unsupported Transport Protocol")
    writer.write(bytes(response))
    await writer.drain()


async def test_server_without_rfc6062_is_protocol_failed_and_says_so() -> None:
    async with serve(None, answer_with_error) as server:
        spec = ProbeSpec(
            "relay-tcp-egress",
            SERVER_ADDRESS,
            server.port,
            peer=("127.0.113.50", 5004),
            turn=TurnCredentials("u", "p"),
            timeout=1,
        )
        outcome = await probe_relay_tcp_egress(spec)
    assert outcome.verdict is Verdict.PROTOCOL_FAILED
    assert outcome.reason == (
        "the TURN server lacks RFC 6062 TCP relays: "
        "Allocate answered 442 Unsupported Transport Protocol"
    )


async def test_a_web_server_on_the_turn_port_is_protocol_failed() -> None:
    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n\r\n")
        await writer.drain()

    async with serve(None, http) as server:
        outcome = await probe_turn_tcp(
            ProbeSpec("turn-tcp", SERVER_ADDRESS, server.port, timeout=1)
        )
    assert outcome.verdict is Verdict.PROTOCOL_FAILED
    assert outcome.reason.startswith("answered 'HTTP/1.1 400 Bad Request.'")
    assert outcome.reason.endswith(": not STUN")
