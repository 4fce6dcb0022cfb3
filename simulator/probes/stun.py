"""``stun-udp``: a STUN Binding request over UDP (:rfc:`5389#section-7`), with the mapped address.

Retransmits with doubling intervals (RFC 5389 §7.2.1) until the probe's deadline. The codec is
``aioice.stun``; a datagram that does not parse is reported as what came back instead.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

from aioice import stun

from simulator.probes.base import Outcome, Phase, Verdict, classify, describe_bytes
from simulator.probes.net import Steps
from simulator.probes.spec import ProbeSpec

INITIAL_RTO = 0.25


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | Exception] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self.queue.put_nowait(exc)


async def open_udp(
    spec: ProbeSpec, address: str, port: int
) -> tuple[asyncio.DatagramTransport, _Datagrams]:
    """A connected UDP socket, so ICMP port unreachable comes back as ConnectionRefusedError."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        _Datagrams,
        local_addr=(spec.bind, 0) if spec.bind else None,
        remote_addr=(address, port),
        family=socket.AF_INET,
    )
    return transport, protocol


def parse(data: bytes) -> stun.Message:
    """``aioice.stun.parse_message`` with every failure as ValueError."""
    try:
        return stun.parse_message(data)
    except (ValueError, struct.error, IndexError, KeyError) as exc:
        raise ValueError(f"not a STUN message: {exc}") from None


async def transact(
    steps: Steps,
    transport: asyncio.DatagramTransport,
    protocol: _Datagrams,
    request: stun.Message,
    name: str = "response",
) -> stun.Message:
    """Send ``request`` until a response with its transaction id arrives (or the deadline)."""
    rto = INITIAL_RTO
    data = bytes(request)

    async def exchange() -> stun.Message:
        nonlocal rto
        loop = asyncio.get_running_loop()
        for _ in range(10):
            transport.sendto(data)
            until = loop.time() + rto
            while (left := until - loop.time()) > 0:
                try:
                    got = await asyncio.wait_for(protocol.queue.get(), left)
                except TimeoutError:
                    break
                if isinstance(got, Exception):
                    raise got
                message = parse(got) if got[:1] in (b"\x00", b"\x01") else None
                if message is None:
                    raise ValueError(f"answered {describe_bytes(got)}: not STUN")
                if message.transaction_id == request.transaction_id:
                    return message
            rto *= 2
        raise TimeoutError

    return await steps.run(name, Phase.CONNECT, exchange())


async def probe_stun_udp(spec: ProbeSpec) -> Outcome:
    steps = Steps(spec.timeout)
    transport = None
    try:
        transport, protocol = await open_udp(spec, spec.address, spec.port)
        request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
        response = await transact(steps, transport, protocol, request)
        if response.message_class is not stun.Class.RESPONSE:
            code = response.attributes.get("ERROR-CODE")
            return Outcome(
                Verdict.PROTOCOL_FAILED,
                f"Binding answered with error {code}",
                {"error": str(code)},
                steps.timings,
            )
        mapped = response.attributes.get("XOR-MAPPED-ADDRESS") or response.attributes.get(
            "MAPPED-ADDRESS"
        )
        if not mapped:
            return Outcome(
                Verdict.PROTOCOL_FAILED,
                "Binding success without a mapped address",
                {},
                steps.timings,
            )
        details = {"mapped": f"{mapped[0]}:{mapped[1]}"}
        if software := response.attributes.get("SOFTWARE"):
            details["server"] = software
        return Outcome(
            Verdict.PASSED,
            f"STUN Binding success, mapped address {mapped[0]}:{mapped[1]}",
            details,
            steps.timings,
        )
    except ValueError as exc:
        return Outcome(Verdict.PROTOCOL_FAILED, str(exc), {}, steps.timings)
    except (OSError, TimeoutError) as exc:
        c = classify(exc, Phase.CONNECT, spec.timeout)
        if c.verdict is Verdict.REFUSED and isinstance(exc, ConnectionRefusedError):
            c = type(c)(Verdict.REFUSED, "ICMP port unreachable")
        return Outcome(c.verdict, c.reason, {}, steps.timings)
    finally:
        if transport is not None:
            transport.close()
